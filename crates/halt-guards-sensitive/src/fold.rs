//! What a text is scanned as: [`fold`].

/// What a text is scanned as: full-width and other-script digits and letters as ASCII, every
/// dash as `-`, every space as ` `, wide dots as `.`, and invisible characters left out, so
/// `４１１１\u{200b}1111…` and `4111‐1111…` are the card they spell. With, for each byte of it,
/// where its character starts in `text` (and `text.len()` at its end). `None` for ASCII text,
/// which is scanned as it is.
#[inline]
pub(crate) fn fold(text: &str) -> Option<(String, Vec<usize>)> {
    if text.is_ascii() { None } else { Some(fold_text(text)) }
}

/// [`fold`] for a text that is not ASCII.
pub(crate) fn fold_text(text: &str) -> (String, Vec<usize>) {
    let mut out = String::with_capacity(text.len());
    let mut map = Vec::with_capacity(text.len() + 1);
    for (at, c) in text.char_indices() {
        if halt_core::names::is_default_ignorable(c) {
            continue;
        }
        let folded = fold_char(c);
        out.push(folded);
        map.extend(std::iter::repeat_n(at, folded.len_utf8()));
    }
    map.push(text.len());
    (out, map)
}

/// One character as it is scanned (see [`fold`]).
pub(crate) fn fold_char(c: char) -> char {
    /// The zeros of Unicode's decimal digit runs (each zero to nine in order) outside ASCII,
    /// in the Basic Multilingual Plane.
    const DIGIT_ZEROS: [u32; 36] = [
        0x0660, 0x06F0, 0x07C0, 0x0966, 0x09E6, 0x0A66, 0x0AE6, 0x0B66, 0x0BE6, 0x0C66, 0x0CE6, 0x0D66, 0x0DE6, 0x0E50,
        0x0ED0, 0x0F20, 0x1040, 0x1090, 0x17E0, 0x1810, 0x1946, 0x19D0, 0x1A80, 0x1A90, 0x1B50, 0x1BB0, 0x1C40, 0x1C50,
        0xA620, 0xA8D0, 0xA900, 0xA9D0, 0xA9F0, 0xAA50, 0xABF0, 0xFF10,
    ];
    let code = u32::from(c);
    if let Some(zero) = DIGIT_ZEROS.iter().find(|&&z| (z..z + 10).contains(&code)) {
        return char::from_digit(code - zero, 10).unwrap_or(c);
    }
    // The mathematical digits: five runs of zero to nine.
    if (0x1D7CE..=0x1D7FF).contains(&code) {
        return char::from_digit((code - 0x1D7CE) % 10, 10).unwrap_or(c);
    }
    match c {
        // Full-width ASCII.
        '\u{FF01}'..='\u{FF5E}' => char::from_u32(code - 0xFEE0).unwrap_or(c),
        '\u{2010}'..='\u{2015}' | '\u{2212}' | '\u{FE58}' | '\u{FE63}' | '\u{2043}' => '-',
        '\u{2024}' | '\u{3002}' | '\u{FF61}' | '\u{00B7}' | '\u{2027}' => '.',
        c if c.is_whitespace() => ' ',
        c => c,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folding_finds_numbers_written_in_other_characters() {
        let (folded, map) = fold("４１\u{200b}1\u{2011}x").unwrap();
        assert_eq!(folded, "411-x");
        assert_eq!(map.len(), folded.len() + 1);
        assert_eq!(map[0], 0);
        assert_eq!(map[2], "４１\u{200b}".len(), "the invisible character is left out");
        assert_eq!(*map.last().unwrap(), "４１\u{200b}1\u{2011}x".len());
        assert_eq!(fold_char('\u{0663}'), '3', "Arabic-Indic three");
        assert_eq!(fold_char('\u{1D7D9}'), '1', "double-struck one");
        assert_eq!(fold_char('\u{00a0}'), ' ');
        assert!(fold("plain").is_none());
    }
}
