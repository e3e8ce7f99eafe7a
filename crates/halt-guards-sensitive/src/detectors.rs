//! The built-in detectors: a pattern that finds candidates, and a check that keeps only real
//! ones (Luhn for cards, the SSA's rules for SSNs, mod-97 for IBANs, a JSON header for JWTs,
//! entropy for generic secrets, and no placeholders anywhere).

/// A built-in detector.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Detector {
    /// Its name, usable in `blocked_patterns`.
    pub(crate) name: &'static str,
    /// The candidate pattern (ASCII word boundaries, ASCII digits).
    pub(crate) pattern: &'static str,
    /// The capture group whose span is the sensitive value (0: the whole match).
    pub(crate) group: usize,
    /// Keeps only real findings.
    pub(crate) check: fn(&str) -> bool,
    /// What may touch a finding on either side.
    pub(crate) edges: Edges,
}

/// What may stand right before and after a finding. Numbers are not words: `ssn_123-45-6789`
/// and `id_4111111111111111_x` hold an SSN and a card although no word boundary sets them off.
/// (Their patterns also start with "a line's start or a character that is not a digit", and
/// capture the number after it: an unanchored count of digits would start a candidate at every
/// digit of a long text.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Edges {
    /// Whatever the pattern itself asserts.
    Pattern,
    /// Anything but an ASCII digit (a longer run of digits is another number).
    NotDigit,
    /// Anything but an ASCII letter or digit.
    NotAlphanumeric,
}

impl Edges {
    /// Whether the span `start..end` of `text` has edges this allows.
    pub(crate) fn allow(self, text: &str, start: usize, end: usize) -> bool {
        let bad: fn(&u8) -> bool = match self {
            Self::Pattern => return true,
            Self::NotDigit => u8::is_ascii_digit,
            Self::NotAlphanumeric => u8::is_ascii_alphanumeric,
        };
        let bytes = text.as_bytes();
        let before = start.checked_sub(1).and_then(|i| bytes.get(i));
        !(before.is_some_and(bad) || bytes.get(end).is_some_and(bad))
    }
}

/// The names that stand for several detectors.
pub(crate) const GROUPS: [(&str, &[&str]); 1] = [(
    "api_key",
    &[
        "aws_key",
        "github_token",
        "slack_token",
        "stripe_key",
        "google_api_key",
        "openai_key",
        "anthropic_key",
        "private_key",
        "generic_secret",
    ],
)];

/// Every built-in detector.
pub(crate) const DETECTORS: [Detector; 17] = [
    Detector {
        name: "email",
        pattern: r"(?-u:\b)[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24}(?-u:\b)",
        group: 0,
        // An address is personal data whatever its domain.
        edges: Edges::Pattern,
        check: |_| true,
    },
    Detector {
        name: "ssn",
        pattern: r"(?:(?m:^)|[^0-9])([0-9]{3}[-. ][0-9]{2}[-. ][0-9]{4})",
        group: 1,
        check: valid_ssn,
        edges: Edges::NotDigit,
    },
    Detector {
        name: "credit_card",
        pattern: r"(?:(?m:^)|[^0-9])([0-9](?:[ .-]?[0-9]){12,18})",
        group: 1,
        check: valid_card,
        edges: Edges::NotDigit,
    },
    Detector {
        name: "phone_us",
        // Written with separators, or in E.164 form (`+14155552671`).
        pattern: r"(?:(?m:^)|[^0-9])((?:\+1[-. ]?)?(?:\([2-9][0-9]{2}\) ?|[2-9][0-9]{2}[-. ])[2-9][0-9]{2}[-. ][0-9]{4}|\+1[2-9][0-9]{2}[2-9][0-9]{6})",
        group: 1,
        check: valid_nanp,
        edges: Edges::NotDigit,
    },
    Detector {
        name: "ip_address",
        pattern: r"(?:(?m:^)|[^0-9A-Za-z])((?:[0-9]{1,3}\.){3}[0-9]{1,3})",
        group: 1,
        check: valid_ipv4,
        // `v1.2.3.4` is a version.
        edges: Edges::NotAlphanumeric,
    },
    Detector {
        name: "iban",
        pattern: r"(?:(?m:^)|[^0-9A-Za-z])([A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?)",
        group: 1,
        check: valid_iban,
        edges: Edges::NotAlphanumeric,
    },
    Detector {
        name: "aws_key",
        pattern: r"(?-u:\b)(?:AKIA|ASIA)[0-9A-Z]{16}(?-u:\b)",
        group: 0,
        edges: Edges::Pattern,
        // Every format-valid key counts, AWS's documented example key too (it is what a leaked
        // key looks like in a test); only filler such as `AKIAXXXXXXXXXXXXXXXX` does not.
        check: |v| !is_filler(v),
    },
    Detector {
        name: "jwt",
        pattern: r"(?-u:\b)eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{10,}",
        group: 0,
        edges: Edges::Pattern,
        check: valid_jwt,
    },
    Detector {
        name: "private_key",
        // PEM (`RSA`, `EC`, `OPENSSH`, `ENCRYPTED`, …) and PGP (`… PRIVATE KEY BLOCK`) forms.
        pattern: r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----(?s:.*?)(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|\z)",
        group: 0,
        edges: Edges::Pattern,
        check: has_key_body,
    },
    Detector {
        name: "github_token",
        pattern: r"(?-u:\b)(?:gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{60,90})(?-u:\b)",
        group: 0,
        edges: Edges::Pattern,
        check: not_placeholder,
    },
    Detector {
        name: "slack_token",
        // Bot, user and legacy tokens; app-level tokens; and incoming-webhook URLs, where the
        // URL itself is the credential.
        pattern: r"(?-u:\b)(?:xox[abposr]-[0-9A-Za-z]{8,}(?:-[0-9A-Za-z]{4,})+|xapp-[0-9]-[A-Z0-9]{8,}-[0-9]{6,}-[0-9a-f]{32,}|hooks\.slack\.com/services/T[A-Z0-9]{6,}/B[A-Z0-9]{6,}/[A-Za-z0-9]{16,})",
        group: 0,
        edges: Edges::Pattern,
        check: not_placeholder,
    },
    Detector {
        name: "stripe_key",
        pattern: r"(?-u:\b)(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{16,99}(?-u:\b)",
        group: 0,
        edges: Edges::Pattern,
        check: not_placeholder,
    },
    Detector {
        name: "google_api_key",
        pattern: r"(?-u:\b)(AIza[0-9A-Za-z_-]{35})(?:[^0-9A-Za-z_-]|\z)",
        group: 1,
        edges: Edges::Pattern,
        check: not_placeholder,
    },
    Detector {
        name: "openai_key",
        pattern: r"(?-u:\b)sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{32,}",
        group: 0,
        edges: Edges::Pattern,
        check: openai_not_anthropic,
    },
    Detector {
        name: "anthropic_key",
        pattern: r"(?-u:\b)sk-ant-(?:api|admin)[0-9]{2}-[A-Za-z0-9_-]{32,}",
        group: 0,
        edges: Edges::Pattern,
        check: not_placeholder,
    },
    Detector {
        name: "generic_secret",
        pattern: r#"(?i)(?-u:\b)(?:api[_-]?key|apikey|secret|secret[_-]?key|client[_-]?secret|access[_-]?key|auth[_-]?token|access[_-]?token|token|passw(?:or)?d|pwd)["']?\s*[:=]\s*["']?([A-Za-z0-9_\-./+=!@#$%^&*]{12,})"#,
        group: 1,
        edges: Edges::Pattern,
        check: high_entropy_secret,
    },
    Detector {
        name: "password_field",
        pattern: r#"(?i)(?-u:\b)(?:password|passwd|pwd|secret|token)["']?\s*[:=]\s*["']?([^\s"',;]{3,})"#,
        group: 1,
        edges: Edges::Pattern,
        check: |v| !is_short_placeholder(v),
    },
];

/// The detector of a name.
pub(crate) fn find(name: &str) -> Option<&'static Detector> {
    DETECTORS.iter().find(|d| d.name == name)
}

/// Values that are obviously examples, not secrets: `sk-...`, `YOUR_API_KEY`, `xxxx`, `<token>`,
/// `changeme`, the AWS documentation's keys.
///
/// Only the value as a whole counts: a real secret with `example` or `xxxx` appended is still a
/// secret (appending a marker must not be a way to smuggle one out).
pub(crate) fn is_placeholder(v: &str) -> bool {
    is_placeholder_beyond(v, 8)
}

/// As [`is_placeholder`], for values that may be short (passwords): placeholder words must be
/// all there is.
fn is_short_placeholder(v: &str) -> bool {
    is_placeholder_beyond(v, 1)
}

/// A placeholder, or fewer than `min_rest` characters once placeholder words are taken out.
fn is_placeholder_beyond(v: &str, min_rest: usize) -> bool {
    const KNOWN_EXAMPLES: [&str; 2] = ["akiaiosfodnn7example", "wjalrxutnfemi/k7mdeng/bpxrficyexamplekey"];
    const WORDS: [&str; 18] = [
        "your",
        "api",
        "key",
        "token",
        "secret",
        "here",
        "example",
        "sample",
        "dummy",
        "placeholder",
        "changeme",
        "redacted",
        "insert",
        "replace",
        "fake",
        "test",
        "sk",
        "my",
    ];
    let lower = v.to_ascii_lowercase();
    if KNOWN_EXAMPLES.contains(&lower.as_str()) || ["...", "<", ">", "{{", "}}"].iter().any(|m| lower.contains(m)) {
        return true;
    }
    if is_filler(&lower) {
        return true;
    }
    // Nothing much left once the usual placeholder words are taken out.
    let mut rest: String = lower.chars().filter(char::is_ascii_alphanumeric).collect();
    for w in WORDS {
        rest = rest.replace(w, "");
    }
    rest.len() < min_rest
}

/// A North American number whose area code can exist: not an N11 service code (211 … 911).
fn valid_nanp(v: &str) -> bool {
    let d = digits(v);
    let d = if d.len() == 11 { &d[1..] } else { &d[..] };
    d.len() == 10 && !(d[1] == 1 && d[2] == 1)
}

/// Low variety: `xxxx`, `aaaa`, `0000`, or mostly `x`.
fn is_filler(v: &str) -> bool {
    let alnum: Vec<char> = v.chars().filter(char::is_ascii_alphanumeric).map(|c| c.to_ascii_lowercase()).collect();
    let distinct: std::collections::BTreeSet<char> = alnum.iter().copied().collect();
    let xs = alnum.iter().filter(|c| **c == 'x').count();
    distinct.len() <= 2 || xs * 2 >= alnum.len()
}

/// A private key block with a body: a run of at least 32 base64 characters after its header. A
/// text that only mentions the header (documentation, an error message) is not a key.
fn has_key_body(v: &str) -> bool {
    let body = v.split_once("-----").and_then(|(_, rest)| rest.split_once("-----")).map_or("", |(_, rest)| rest);
    body.split(|c: char| c.is_whitespace() || c == '-')
        .any(|t| t.len() >= 32 && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'='))
}

fn not_placeholder(v: &str) -> bool {
    !is_placeholder(v)
}

fn digits(v: &str) -> Vec<u8> {
    v.bytes().filter(u8::is_ascii_digit).map(|b| b - b'0').collect()
}

/// The Social Security Administration's rules: area not 000, 666 or 900-999; group not 00;
/// serial not 0000; and the separators consistent.
fn valid_ssn(v: &str) -> bool {
    let d = digits(v);
    if d.len() != 9 {
        return false;
    }
    let seps: Vec<char> = v.chars().filter(|c| !c.is_ascii_digit()).collect();
    if seps.len() != 2 || seps[0] != seps[1] {
        return false;
    }
    let area = u32::from(d[0]) * 100 + u32::from(d[1]) * 10 + u32::from(d[2]);
    let group = d[3] * 10 + d[4];
    let serial = d[5..].iter().all(|x| *x == 0);
    area != 0 && area != 666 && area < 900 && group != 0 && !serial
}

/// The Luhn checksum.
pub(crate) fn luhn(d: &[u8]) -> bool {
    let sum: u32 = d
        .iter()
        .rev()
        .enumerate()
        .map(|(i, x)| {
            let x = u32::from(*x);
            if !i.is_multiple_of(2) {
                let y = x * 2;
                if y > 9 { y - 9 } else { y }
            } else {
                x
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// A card number: 13 to 19 digits with one kind of separator at most, a known issuer prefix with
/// a length that issuer uses, and a valid Luhn checksum.
fn valid_card(v: &str) -> bool {
    let d = digits(v);
    // One kind of separator at most.
    let mut seps = v.chars().filter(|c| !c.is_ascii_digit());
    let first = seps.next();
    if seps.any(|c| Some(c) != first) || !(13..=19).contains(&d.len()) {
        return false;
    }
    let prefix = |n: usize| d.iter().take(n).fold(0u32, |acc, x| acc * 10 + u32::from(*x));
    let len = d.len();
    let issuer = match d[0] {
        4 => matches!(len, 13 | 16 | 19),
        5 => (51..=55).contains(&prefix(2)) && len == 16,
        2 => (2221..=2720).contains(&prefix(4)) && len == 16,
        3 => {
            (matches!(prefix(2), 34 | 37) && len == 15)
                || ((3528..=3589).contains(&prefix(4)) && (16..=19).contains(&len))
                || ((matches!(prefix(2), 36 | 38 | 39) || (300..=305).contains(&prefix(3))) && (14..=19).contains(&len))
        }
        6 => {
            (prefix(4) == 6011 || prefix(2) == 65 || (644..=649).contains(&prefix(3)) || prefix(2) == 62)
                && (16..=19).contains(&len)
        }
        _ => false,
    };
    issuer && luhn(&d) && !d.iter().all(|x| *x == d[0])
}

fn valid_ipv4(v: &str) -> bool {
    let parts: Vec<&str> = v.split('.').collect();
    parts.len() == 4
        && parts.iter().all(|p| p.parse::<u16>().is_ok_and(|n| n <= 255) && (p.len() == 1 || !p.starts_with('0')))
}

/// An IBAN: 15 to 34 characters whose mod-97 check (country and check digits moved to the end)
/// gives 1.
fn valid_iban(v: &str) -> bool {
    let s: String = v.chars().filter(|c| !c.is_whitespace()).collect();
    if !(15..=34).contains(&s.len()) {
        return false;
    }
    let rearranged = format!("{}{}", &s[4..], &s[..4]);
    let mut rem: u32 = 0;
    for c in rearranged.chars() {
        let n = match c {
            '0'..='9' => u32::from(c) - u32::from('0'),
            'A'..='Z' => u32::from(c) - u32::from('A') + 10,
            _ => return false,
        };
        rem = if n >= 10 { (rem * 100 + n) % 97 } else { (rem * 10 + n) % 97 };
    }
    rem == 1
}

/// A JWT: its header decodes (base64url) to a JSON object.
fn valid_jwt(v: &str) -> bool {
    let header = v.split('.').next().unwrap_or("");
    base64url_decode(header)
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .is_some_and(|h| h.is_object())
}

fn base64url_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut buf: u32 = 0;
    let mut bits = 0;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            b'=' => break,
            _ => return None,
        };
        buf = (buf << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((buf >> bits) & 0xff).ok()?);
        }
    }
    Some(out)
}

fn openai_not_anthropic(v: &str) -> bool {
    !v.starts_with("sk-ant-") && not_placeholder(v)
}

/// Shannon entropy in bits per character.
pub(crate) fn entropy(v: &str) -> f64 {
    let mut counts = [0u32; 256];
    let mut n = 0u32;
    for b in v.bytes() {
        counts[usize::from(b)] += 1;
        n += 1;
    }
    if n == 0 {
        return 0.0;
    }
    let n = f64::from(n);
    counts.iter().filter(|c| **c > 0).map(|c| f64::from(*c) / n).map(|p| -p * p.log2()).sum()
}

/// A value that looks generated: long enough, varied characters (entropy of at least 3.5 bits
/// per character), mixing letters with digits or symbols, and no placeholder.
pub(crate) fn high_entropy_secret(v: &str) -> bool {
    let letters = v.bytes().any(|b| b.is_ascii_alphabetic());
    let others = v.bytes().any(|b| !b.is_ascii_alphabetic());
    v.len() >= 12 && letters && others && entropy(v) >= 3.5 && not_placeholder(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_and_cards() {
        assert!(valid_card("4111 1111 1111 1111"));
        assert!(valid_card("4111-1111-1111-1111"));
        assert!(valid_card("5500005555555559"));
        assert!(valid_card("378282246310005"));
        assert!(!valid_card("4111 1111 1111 1112"), "Luhn");
        assert!(!valid_card("4111-1111 1111-1111"), "mixed separators");
        assert!(!valid_card("1234567812345670"), "no issuer starts with 1");
        assert!(!valid_card("4444444444444448") || luhn(&digits("4444444444444448")));
    }

    #[test]
    fn ssn_rules() {
        assert!(valid_ssn("123-45-6789"));
        assert!(valid_ssn("123 45 6789"));
        for bad in ["000-12-3456", "666-12-3456", "900-12-3456", "123-00-4567", "123-45-0000", "123-45 6789"] {
            assert!(!valid_ssn(bad), "{bad}");
        }
    }

    #[test]
    fn iban_check_digits() {
        assert!(valid_iban("GB82 WEST 1234 5698 7654 32"));
        assert!(valid_iban("DE89370400440532013000"));
        assert!(!valid_iban("GB82 WEST 1234 5698 7654 33"));
    }

    #[test]
    fn jwt_header() {
        assert!(valid_jwt(
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
        ));
        assert!(!valid_jwt("eyJub3QganNvbg.eyJzdWIiOiIxIn0.abcdefghijklmnop"));
    }

    #[test]
    fn placeholders() {
        for p in [
            "sk-...",
            "YOUR_API_KEY",
            "xxxxxxxxxxxxxxxx",
            "<token>",
            "AKIAIOSFODNN7EXAMPLE",
            "aaaaaaaaaaaa",
            "sk-your-key-here",
            "changeme123456",
            "dummydummydummy",
            "sk_live_xxxxxxxxxxxxxxxxxxxxxxxx",
        ] {
            assert!(is_placeholder(p), "{p}");
        }
        // A marker appended to a real secret does not hide it.
        for real in [
            "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
            "sk_live_4eC39HqLyjWDarjtT1zdp7dcEXAMPLE",
            "AKIAZ7Q3KJ2LMNEXAMPLE",
            "q8Zt2LmX9vR4kP7wN3sBxxxx",
        ] {
            assert!(!is_placeholder(real), "{real}");
        }
    }

    #[test]
    fn entropy_separates_words_from_keys() {
        assert!(!high_entropy_secret("correcthorsebattery"));
        assert!(high_entropy_secret("q8Zt2LmX9vR4kP7wN3sB"));
    }
}
