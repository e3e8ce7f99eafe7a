//! Finding a key path in the policy text, for error positions. Works on block-style YAML and on
//! JSON; when a key cannot be found, the position of the deepest one found is used.

use crate::Seg;

/// The 1-based line and column of the key at the end of `path`, or of its deepest found
/// ancestor.
pub(crate) fn locate(text: &str, path: &[Seg]) -> Option<(usize, usize)> {
    let mut pos = 0;
    let mut found = None;
    for seg in path {
        let next = match seg {
            Seg::Key(k) => find_key(text, pos, k),
            Seg::Index(i) => find_item(text, pos, *i),
        };
        match next {
            Some(p) => {
                pos = p;
                found = Some(p);
            }
            None => break,
        }
    }
    found.map(|p| line_col(text, p))
}

/// The 1-based line and column (in characters) of a byte offset.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// The offset of the next occurrence of `key` used as a mapping key (`key:`, `"key":`).
fn find_key(text: &str, from: usize, key: &str) -> Option<usize> {
    let mut start = from;
    while let Some(i) = text.get(start..)?.find(key) {
        let at = start + i;
        let before = text[..at].chars().next_back();
        let quoted = matches!(before, Some('"' | '\''));
        let boundary = before.is_none_or(|c| c.is_whitespace() || matches!(c, '{' | ',' | '"' | '\'' | '-'));
        let mut after = &text[at + key.len()..];
        if quoted {
            after = after.get(1..).unwrap_or("");
        }
        if boundary && after.trim_start_matches([' ', '\t']).starts_with(':') {
            return Some(if quoted { at - 1 } else { at });
        }
        start = at + key.len();
    }
    None
}

/// The offset of the `index`-th item (`- `) of the block list that follows `from`.
fn find_item(text: &str, from: usize, index: usize) -> Option<usize> {
    let mut offset = from;
    let mut indent = None;
    let mut seen = 0;
    for line in text.get(from..)?.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let this_indent = line.len() - trimmed.len();
        if trimmed.starts_with("- ") || trimmed.trim_end() == "-" {
            let want = *indent.get_or_insert(this_indent);
            if this_indent == want {
                if seen == index {
                    return Some(offset + this_indent);
                }
                seen += 1;
            }
        }
        offset += line.len();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(s: &str) -> Seg {
        Seg::Key(s.to_owned())
    }

    #[test]
    fn finds_block_and_json_keys() {
        let yaml = "guards:\n  budget:\n    max_daily_spend: 1\n  scope:\n    deny_functions: []\n";
        assert_eq!(locate(yaml, &[k("guards"), k("scope"), k("deny_functions")]), Some((5, 5)));
        assert_eq!(locate(yaml, &[k("guards"), k("budget"), k("nope")]), Some((2, 3)));
        let json = r#"{"guards": {"budget": {"max_daily_spend": 1}}}"#;
        assert_eq!(locate(json, &[k("guards"), k("budget"), k("max_daily_spend")]), Some((1, 24)));
    }

    #[test]
    fn finds_list_items() {
        let yaml = "guards:\n  - type: budget\n    name: a\n  - type: budget\n    name: b\n    bad: 1\n";
        assert_eq!(locate(yaml, &[k("guards"), Seg::Index(1), k("bad")]), Some((6, 5)));
        assert_eq!(locate(yaml, &[k("guards"), Seg::Index(1)]), Some((4, 3)));
    }
}
