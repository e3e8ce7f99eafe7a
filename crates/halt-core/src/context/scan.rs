//! Reads the fields of a call's JSON text in one pass.
//!
//! It reads all of JSON except what it hands to `serde_json` token by token (strings with
//! escapes, numbers other than small non-negative integers), so every value it builds is the
//! value `serde_json` builds. On any text it is not sure of (invalid JSON, nesting deeper than
//! [`MAX_DEPTH`]) it answers `None`, and the caller takes the general path, which finds the
//! same call or says what is wrong.

use std::borrow::Cow;

use serde_json::{Map, Value};

use super::{Field, Fields, Slot};

/// Deeper values are left to the general path (`serde_json` refuses more than 128 levels).
const MAX_DEPTH: usize = 100;

/// The fields of a call object, or `None` when the general path must decide.
pub(super) fn fields(text: &str) -> Option<Fields> {
    let mut s = Scanner { text, bytes: text.as_bytes(), at: 0 };
    s.skip_space();
    s.expect(b'{')?;
    let mut fields = Fields::default();
    s.items(b'}', |s| {
        let key = s.string()?;
        s.colon()?;
        match Field::of(&key) {
            Some(field) => s.field(field, &mut fields),
            None => s.value(1).map(drop),
        }
    })?;
    s.skip_space();
    (s.at == s.bytes.len()).then_some(fields)
}

/// How many of the first `bytes` may stand in a JSON string as they are: up to the first quote,
/// backslash or control character. Eight bytes at a time: in each test below, a byte's high bit
/// is set where the byte is one looked for, and in later bytes only past one (borrows run from
/// the low byte up), so the lowest set bit is in the first such byte.
fn plain_len(bytes: &[u8]) -> usize {
    const ONES: u64 = u64::from_le_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_le_bytes([0x80; 8]);
    let zero_byte = |w: u64| w.wrapping_sub(ONES) & !w & HIGH;
    let mut at = 0;
    while let Some(chunk) = bytes.get(at..at + 8) {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_le_bytes(word);
        let found = (w.wrapping_sub(ONES * 0x20) & !w & HIGH)
            | zero_byte(w ^ (ONES * u64::from(b'"')))
            | zero_byte(w ^ (ONES * u64::from(b'\\')));
        if found != 0 {
            return at + found.trailing_zeros() as usize / 8;
        }
        at += 8;
    }
    at + bytes[at..].iter().take_while(|&&b| b >= 0x20 && b != b'"' && b != b'\\').count()
}

struct Scanner<'a> {
    text: &'a str,
    bytes: &'a [u8],
    /// The next byte to read; always at a character boundary.
    at: usize,
}

impl<'a> Scanner<'a> {
    fn skip_space(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.bytes.get(self.at) {
            self.at += 1;
        }
    }

    /// Steps over `byte` if it comes next.
    fn eat(&mut self, byte: u8) -> bool {
        let next = self.bytes.get(self.at) == Some(&byte);
        self.at += usize::from(next);
        next
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        self.eat(byte).then_some(())
    }

    fn colon(&mut self) -> Option<()> {
        self.skip_space();
        self.expect(b':')?;
        self.skip_space();
        Some(())
    }

    /// After an item of an array or object: `Some(true)` at its `close`, `Some(false)` at a
    /// comma, `None` otherwise.
    fn end_of_item(&mut self, close: u8) -> Option<bool> {
        self.skip_space();
        if self.eat(b',') {
            self.skip_space();
            Some(false)
        } else {
            self.expect(close).map(|()| true)
        }
    }

    /// The items of an array or object whose opening byte was just read, up to `close`; `item`
    /// reads each one.
    fn items(&mut self, close: u8, mut item: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.skip_space();
        if self.eat(close) {
            return Some(());
        }
        loop {
            item(self)?;
            if self.end_of_item(close)? {
                return Some(());
            }
        }
    }

    /// The entries of an object whose `{` was just read, each key with its value (read at
    /// `depth`) given to `entry`.
    fn entries(&mut self, depth: usize, mut entry: impl FnMut(Cow<'a, str>, Value)) -> Option<()> {
        self.items(b'}', |s| {
            let key = s.string()?;
            s.colon()?;
            let value = s.value(depth)?;
            entry(key, value);
            Some(())
        })
    }

    /// A top-level field of the call, straight into its slot when it has the type wanted (the
    /// usual case); any other value through [`Fields::set_field`].
    fn field(&mut self, field: Field, fields: &mut Fields) -> Option<()> {
        let text = |s: &mut Self| s.string().map(|t| Slot::Got(t.into_owned()));
        match (field, *self.bytes.get(self.at)?) {
            (Field::FunctionName, b'"') => fields.function_name = text(self)?,
            (Field::CallId, b'"') => fields.call_id = text(self)?,
            (Field::AgentId, b'"') => fields.agent_id = text(self)?,
            (Field::SessionId, b'"') => fields.session_id = text(self)?,
            (Field::Arguments, b'{') => fields.arguments = Slot::Got(self.object(1)?),
            (Field::Metadata, b'{') => fields.metadata = Slot::Got(self.object(1)?),
            _ => fields.set_field(field, self.value(1)?),
        }
        Some(())
    }

    /// An object, its `{` next, read at `depth` (below [`MAX_DEPTH`]).
    fn object(&mut self, depth: usize) -> Option<Map<String, Value>> {
        self.at += 1;
        let mut map = Map::new();
        self.entries(depth + 1, |key, value| {
            map.insert(key.into_owned(), value);
        })?;
        Some(map)
    }

    fn value(&mut self, depth: usize) -> Option<Value> {
        Some(match *self.bytes.get(self.at)? {
            b'"' => Value::String(self.string()?.into_owned()),
            b'{' if depth < MAX_DEPTH => Value::Object(self.object(depth)?),
            b'[' if depth < MAX_DEPTH => {
                self.at += 1;
                let mut items = Vec::new();
                self.items(b']', |s| {
                    items.push(s.value(depth + 1)?);
                    Some(())
                })?;
                Value::Array(items)
            }
            b't' => self.word("true", Value::Bool(true))?,
            b'f' => self.word("false", Value::Bool(false))?,
            b'n' => self.word("null", Value::Null)?,
            b'-' | b'0'..=b'9' => self.number()?,
            _ => return None,
        })
    }

    fn word(&mut self, word: &str, value: Value) -> Option<Value> {
        let end = self.at + word.len();
        (self.bytes.get(self.at..end)? == word.as_bytes()).then(|| {
            self.at = end;
            value
        })
    }

    /// A string, its opening quote next.
    fn string(&mut self) -> Option<Cow<'a, str>> {
        let open = self.at;
        self.expect(b'"')?;
        let start = self.at;
        self.at += plain_len(&self.bytes[start..]);
        match *self.bytes.get(self.at)? {
            b'"' => {
                self.at += 1;
                return Some(Cow::Borrowed(&self.text[start..self.at - 1]));
            }
            b'\\' => {}
            // A control character must be escaped.
            _ => return None,
        }
        // Escapes: find where the string ends (an escape's next byte never ends it), and let
        // serde_json decode it.
        loop {
            match *self.bytes.get(self.at)? {
                b'"' => break,
                b'\\' => self.at += 2,
                _ => self.at += 1,
            }
        }
        self.at += 1;
        serde_json::from_str::<String>(self.text.get(open..self.at)?).ok().map(Cow::Owned)
    }

    fn number(&mut self) -> Option<Value> {
        let start = self.at;
        while let Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') = self.bytes.get(self.at) {
            self.at += 1;
        }
        let token = &self.text[start..self.at];
        // Up to 19 digits always fit a u64; no leading zero (JSON has none).
        let plain = token.len() <= 19
            && token.bytes().all(|b| b.is_ascii_digit())
            && (token.len() == 1 || !token.starts_with('0'));
        if plain {
            let n = token.bytes().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
            return Some(Value::from(n));
        }
        serde_json::from_str::<serde_json::Number>(token).ok().map(Value::Number)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::Value;

    use crate::CallContext;

    /// The call (or message) the general path finds in `text`.
    fn general(text: &str) -> Result<CallContext, String> {
        serde_json::from_str::<Value>(text)
            .map_err(|e| format!("invalid JSON: {e}"))
            .and_then(|v| CallContext::from_json(v).map_err(|e| e.to_string()))
    }

    fn reads_as_the_general_path(text: &str) {
        let fast = CallContext::from_json_str(text).map_err(|e| e.to_string());
        match (general(text), fast) {
            (Ok(mut general), Ok(fast)) => {
                // A generated id differs each time.
                if general.call_id.starts_with("call-") && fast.call_id.starts_with("call-") {
                    general.call_id.clone_from(&fast.call_id);
                }
                assert_eq!(general, fast, "{text}");
            }
            (general, fast) => assert_eq!(general.err(), fast.err(), "{text}"),
        }
        // The scan takes every valid object not nested too deep: the general path is not
        // doing its work.
        if let Ok(v @ Value::Object(_)) = serde_json::from_str::<Value>(text) {
            assert_eq!(super::fields(text).is_some(), depth(&v) <= super::MAX_DEPTH, "{text}");
        }
    }

    fn depth(v: &Value) -> usize {
        match v {
            Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
            Value::Object(entries) => 1 + entries.values().map(depth).max().unwrap_or(0),
            _ => 0,
        }
    }

    const SPACE: [&str; 5] = ["", " ", "\n", "\t ", "\r\n"];
    const NUMBERS: [&str; 24] = [
        "0",
        "7",
        "-0",
        "-7",
        "0.0",
        "-0.0",
        "1.5",
        "12.5e3",
        "1E+2",
        "1e-2",
        "01",
        "-01",
        "1.",
        ".5",
        "1e",
        "-",
        "18446744073709551615",
        "18446744073709551616",
        "9999999999999999999",
        "-9223372036854775808",
        "-9223372036854775809",
        "1e400",
        "0.1e-400",
        "1795046400",
    ];
    const STRINGS: [&str; 16] = [
        r#""""#,
        r#""f""#,
        r#""a\"b""#,
        r#""\u00e9""#,
        r#""\ud83d\ude00""#,
        r#""\ud800""#,
        r#""é""#,
        r#""t\tab""#,
        r#""x\/y""#,
        r#""\q""#,
        "\"raw\u{1}\"",
        r#""\\""#,
        r#""a\\\"""#,
        r#""function\u005fname""#,
        r#""ünï""#,
        r#""unterminated"#,
    ];
    const KEYS: [&str; 9] = [
        "function_name",
        "call_id",
        "agent_id",
        "session_id",
        "timestamp",
        "arguments",
        "metadata",
        "x",
        "function\\u005fname",
    ];
    const INSERTS: [&str; 16] =
        ["\\", "\"", ",", "}", "]", "{", "[", ":", " ", "0", "-", "e", "tru", "null", "\u{1}", "é"];

    fn space() -> impl Strategy<Value = &'static str> {
        proptest::sample::select(&SPACE[..])
    }

    fn value() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            proptest::sample::select(&NUMBERS[..]).prop_map(str::to_owned),
            proptest::sample::select(&STRINGS[..]).prop_map(str::to_owned),
            proptest::sample::select(&["true", "false", "null", "nul", "True"][..]).prop_map(str::to_owned),
        ];
        leaf.prop_recursive(4, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec((space(), inner.clone()), 0..4).prop_map(|items| {
                    let items: Vec<String> = items.into_iter().map(|(s, v)| format!("{s}{v}{s}")).collect();
                    format!("[{}]", items.join(","))
                }),
                proptest::collection::vec((space(), proptest::sample::select(&STRINGS[..]), inner), 0..4).prop_map(
                    |entries| {
                        let entries: Vec<String> =
                            entries.into_iter().map(|(s, k, v)| format!("{s}{k}{s}:{s}{v}")).collect();
                        format!("{{{}}}", entries.join(","))
                    }
                ),
            ]
        })
    }

    /// Mostly well-formed calls, with fields of every type, and now and then an edit that may
    /// break the text anywhere.
    fn call_text() -> impl Strategy<Value = String> {
        let field = (
            proptest::sample::select(&KEYS[..]),
            prop_oneof![3 => Just(r#""f""#.to_owned()), 1 => Just("12.5".to_owned()), 4 => value()],
            space(),
        );
        let edit = proptest::option::weighted(
            0.3,
            (any::<proptest::sample::Index>(), 0..3usize, proptest::sample::select(&INSERTS[..])),
        );
        (proptest::collection::vec(field, 0..5), space(), edit).prop_map(|(fields, s, edit)| {
            let mut entries = vec![r#""function_name":"f""#.to_owned()];
            entries.extend(fields.into_iter().map(|(k, v, s)| format!("{s}\"{k}\"{s}:{s}{v}")));
            let mut text = format!("{s}{{{}}}{s}", entries.join(","));
            if let Some((at, cut, insert)) = edit {
                let mut at = at.index(text.len() + 1);
                while !text.is_char_boundary(at) {
                    at -= 1;
                }
                let mut end = (at + cut).min(text.len());
                while !text.is_char_boundary(end) {
                    end += 1;
                }
                text.replace_range(at..end, insert);
            }
            text
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]
        #[test]
        fn every_text_reads_as_the_general_path_reads_it(text in call_text()) {
            reads_as_the_general_path(&text);
        }
    }

    #[test]
    fn plain_runs_end_at_the_first_byte_a_string_must_escape() {
        let specials = (0u8..0x20).chain([b'"', b'\\']);
        let harmless = [b'a', b' ', b'!', b'#', b'[', b']', b'~', 0x7f, 0x80, 0xc3, 0xff];
        for len in [0, 1, 7, 8, 9, 15, 16, 17, 24, 31] {
            for fill in harmless {
                let mut bytes = vec![fill; len];
                assert_eq!(super::plain_len(&bytes), len);
                for at in 0..len {
                    for special in specials.clone() {
                        bytes[at] = special;
                        // A second special later changes nothing.
                        if at + 3 < len {
                            bytes[at + 3] = b'"';
                        }
                        assert_eq!(super::plain_len(&bytes), at, "{bytes:?}");
                        bytes.fill(fill);
                    }
                }
            }
        }
    }

    #[test]
    fn deep_values_are_left_to_the_general_path() {
        for depth in [97, 98, 99, 100, 127, 128, 200] {
            let text =
                format!(r#"{{"function_name":"f","arguments":{{"a":{}1{}}}}}"#, "[".repeat(depth), "]".repeat(depth));
            reads_as_the_general_path(&text);
        }
    }

    #[test]
    fn odd_texts_read_as_the_general_path_reads_them() {
        for text in [
            "",
            " ",
            "{",
            "{}",
            "{ }",
            r#"{"function_name":"f",}"#,
            r#"{"function_name":"f"} {}"#,
            r#"{"function_name":"f"}x"#,
            r#"{"function_name" "f"}"#,
            r#"{function_name:"f"}"#,
            r#"{"function_name":"f","arguments":{"a":1,}}"#,
            r#"{"function_name":"f","arguments":[1,]}"#,
            r#"{"function_name":"f","arguments":{"a":1 "b":2}}"#,
            r#"{"function_name":"f","arguments":{"a":1},"arguments":{"b":2}}"#,
            r#"{"function_name":"f","arguments":{"a":1,"a":2}}"#,
            r#"{"function_name":"f","timestamp":1795046400}"#,
            r#"{"function_name":"f","timestamp":-1}"#,
            r#"{"function_name":"\u0066"}"#,
            "{\"function_name\":\"f\\",
            "{\"function_name\":\"f\\\"",
            "\u{feff}{\"function_name\":\"f\"}",
        ] {
            reads_as_the_general_path(text);
        }
    }
}
