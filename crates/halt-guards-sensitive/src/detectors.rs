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
    /// The capture group whose span is the sensitive value (0: the whole match; 1: the first
    /// group that took part in the match, so that each alternative of a pattern has its own).
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
    /// Not inside the authority of a URL: no `://` before it in the same word with no `/`, `?`
    /// or `#` between.
    NotInUrlAuthority,
    /// As `NotAlphanumeric`, and no dot next to a digit beyond it: a network address, not one
    /// part of a longer dotted number (`1.3.6.1.4.1.2021`).
    Address,
}

impl Edges {
    /// Whether the span `start..end` of `text` has edges this allows.
    pub(crate) fn allow(self, text: &str, start: usize, end: usize) -> bool {
        let bad: fn(&u8) -> bool = match self {
            Self::Pattern => return true,
            Self::NotInUrlAuthority => {
                let word_start = text[..start].rfind(char::is_whitespace).map_or(0, |i| i + 1);
                let before = &text[word_start..start];
                return before.rfind("://").is_none_or(|at| before[at + 3..].contains(['/', '?', '#']));
            }
            Self::Address => {
                let bytes = text.as_bytes();
                let dotted_before = start >= 2 && bytes[start - 1] == b'.' && bytes[start - 2].is_ascii_digit();
                let dotted_after = bytes.get(end) == Some(&b'.') && bytes.get(end + 1).is_some_and(u8::is_ascii_digit);
                return !dotted_before && !dotted_after && Self::NotAlphanumeric.allow(text, start, end);
            }
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
        // An address is personal data whatever its domain; `user@host` in a URL's authority
        // (`https://user@example.com`, `postgres://app:pw@db.internal`) is no address.
        edges: Edges::NotInUrlAuthority,
        check: |_| true,
    },
    Detector {
        name: "ssn",
        // Written with separators; or nine bare digits right after the word "SSN" (`SSN:
        // 123456789`, `ssn=123456789`), where the label is masked with them.
        pattern: r"(?:(?m:^)|[^0-9])([0-9]{3}[-. ][0-9]{2}[-. ][0-9]{4})|(?i:(?-u:\b)(ssn(?:\s*(?:#|no\.?|number))?[\s:=#'\x22]{1,4}[0-9]{9}))",
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
        // Ten bare digits count only right after a word that says it is a phone number.
        pattern: r"(?:(?m:^)|[^0-9])((?:\+1[-. ]?)?(?:\([2-9][0-9]{2}\) ?|[2-9][0-9]{2}[-. ])[2-9][0-9]{2}[-. ][0-9]{4}|\+1[2-9][0-9]{2}[2-9][0-9]{6})|(?i:(?-u:\b)((?:phone|mobile|cell|tel)[\s:=#'\x22]{1,4}1?[2-9][0-9]{2}[2-9][0-9]{6}))",
        group: 1,
        check: valid_nanp,
        edges: Edges::NotDigit,
    },
    Detector {
        name: "ip_address",
        // IPv4; IPv6, full or compressed. A four-part number right after `version`, `build` or
        // `release` is taken with the word, to be refused as a version (`app_version: 1.2.3.4`).
        pattern: r"(?:(?m:^)|[^0-9A-Za-z:.])((?i:(?:version|build|release)[\x22']?[ \t]*[:=]?[ \t]*[\x22']?v?)?(?:[0-9]{1,3}\.){3}[0-9]{1,3}|[0-9A-Fa-f]*:[0-9A-Fa-f]*:[0-9A-Fa-f:.]*)",
        group: 1,
        check: valid_ip,
        // `v1.2.3.4` is a version; `1.3.6.1.4.1` (an SNMP OID) is no address.
        edges: Edges::Address,
    },
    Detector {
        name: "iban",
        // Upper case, or lower case as some print it (`gb82 west 1234 ...`).
        pattern: r"(?:(?m:^)|[^0-9A-Za-z])([A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?|[a-z]{2}[0-9]{2}(?: ?[a-z0-9]{4}){2,7}(?: ?[a-z0-9]{1,4})?)",
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
        // A random-looking value after a secret-like key (`client_secret: ...`, `DB_PASSWORD=...`),
        // taken with its key, whose words must name a secret (`max_tokens`, `token_count` and
        // `next_page_token` do not); after `--api-key` and the like; after `Bearer` / `Basic`;
        // or the password in a URL's userinfo (`postgres://app:...@db`), taken with its colon.
        pattern: r#"(?i)(?:(?:(?m:^)|[^A-Za-z0-9_.-])([A-Za-z0-9_.-]*?(?:api[_-]?key|apikey|secret(?:[_-]?key)?|(?:access|private|signing|encryption|master)[_-]?key|token|passw(?:or)?d|pwd|passphrase|credentials?|authorization)[A-Za-z0-9_.-]*?["']?\s*[:=]\s*["']?(?:bearer\s+|basic\s+)?[A-Za-z0-9_\-./+=!@#$%^&*~]{8,})|(?:(?m:^)|\s)(--(?:api[_-]?key|secret|token|password|passphrase)\s+["']?[A-Za-z0-9_\-./+=!@#$%^&*~]{8,})|(?-u:\b)((?:bearer|basic)\s+[A-Za-z0-9._~+/-]{8,}=*)|://[^\s:/@'"]*(:[^\s@/'"]{3,})@)"#,
        group: 1,
        edges: Edges::Pattern,
        check: generic_secret,
    },
    Detector {
        name: "password_field",
        pattern: r#"(?i)(?-u:\b)(?:password|passwd|pwd|secret|token)["']?\s*[:=]\s*["']?([^\s"',;]{3,})"#,
        group: 1,
        edges: Edges::Pattern,
        check: |v| !is_short_placeholder(v) && !is_reference(v),
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

/// Ten (or eleven, from 1) bare digits of a North American number that can exist: an area code
/// and an exchange that start with 2 to 9, and no N11 area code.
pub(crate) fn valid_nanp_digits(v: &str) -> bool {
    let d = digits(v);
    let d = if d.len() == 11 && d[0] == 1 { &d[1..] } else { &d[..] };
    d.len() == 10 && d[0] >= 2 && d[3] >= 2 && valid_nanp(v)
}

/// Nine bare digits that the SSA could have issued.
pub(crate) fn valid_ssn_digits(v: &str) -> bool {
    v.len() == 9 && valid_ssn(&format!("{}-{}-{}", &v[..3], &v[3..5], &v[5..]))
}

/// Whether a key's words name a secret: `secret`, `token`, `password`, `passphrase`,
/// `credentials`, `authorization`, an API, access, private or signing key. Words about the secret
/// rather than the secret (`token_type`, `page_token`, `max_tokens`, `password_hint`) do not.
pub(crate) fn secret_like_key(words: &[String]) -> bool {
    const ABOUT: [&str; 21] = [
        "page", "count", "max", "min", "limit", "length", "len", "size", "type", "expiry", "expires", "id", "name",
        "url", "uri", "path", "file", "hint", "hash", "usage", "policy",
    ];
    const SECRET: [&str; 12] = [
        "secret",
        "token",
        "password",
        "passwd",
        "pwd",
        "passphrase",
        "credential",
        "credentials",
        "authorization",
        "apikey",
        "secretkey",
        "accesskey",
    ];
    const KEY_OF: [&str; 6] = ["api", "access", "private", "signing", "encryption", "master"];
    if words.iter().any(|w| ABOUT.contains(&w.as_str())) {
        return false;
    }
    const ENDINGS: [&str; 5] = ["token", "secret", "password", "passwd", "apikey"];
    words.iter().any(|w| SECRET.contains(&w.as_str()) || ENDINGS.iter().any(|e| w.ends_with(e)))
        || words.windows(2).any(|p| KEY_OF.contains(&p[0].as_str()) && p[1] == "key")
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
    // After the word "SSN", nine bare digits; else two separators of one kind.
    let labelled = v.starts_with(|c: char| c.is_ascii_alphabetic());
    let seps: Vec<char> = v.chars().filter(|c| !c.is_ascii_digit()).collect();
    if !labelled && (seps.len() != 2 || seps[0] != seps[1]) {
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

/// An IPv4 or IPv6 address, not a version number.
fn valid_ip(v: &str) -> bool {
    // Taken with `version`, `build` or `release` before it: a version.
    if v.starts_with(|c: char| c.is_ascii_alphabetic()) && !v.contains(':') {
        return false;
    }
    if v.contains(':') {
        // A sentence may end right after it.
        return valid_ipv6(v.trim_end_matches('.'));
    }
    valid_ipv4(v)
}

/// An IPv6 address written as one: eight groups, or fewer around a `::`, with at least two
/// groups and one digit (not a time such as `10:30:00`, a MAC address, or `std::io`).
fn valid_ipv6(v: &str) -> bool {
    let groups = v.split(':').filter(|g| !g.is_empty()).count();
    let full = v.matches(':').count() == 7 && !v.contains("::");
    (full || v.contains("::"))
        && groups >= 2
        && v.bytes().any(|b| b.is_ascii_digit())
        && v.parse::<std::net::Ipv6Addr>().is_ok()
}

fn valid_ipv4(v: &str) -> bool {
    let parts: Vec<&str> = v.split('.').collect();
    parts.len() == 4
        && parts.iter().all(|p| p.parse::<u16>().is_ok_and(|n| n <= 255) && (p.len() == 1 || !p.starts_with('0')))
}

/// An IBAN: 15 to 34 characters whose mod-97 check (country and check digits moved to the end)
/// gives 1; written in lower case, its country must be one that issues IBANs.
fn valid_iban(v: &str) -> bool {
    let s: String = v.chars().filter(|c| !c.is_whitespace()).map(|c| c.to_ascii_uppercase()).collect();
    if v.starts_with(|c: char| c.is_ascii_lowercase()) && !s.get(..2).is_some_and(|c| IBAN_COUNTRIES.contains(&c)) {
        return false;
    }
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

/// The countries that issue IBANs.
const IBAN_COUNTRIES: [&str; 89] = [
    "AD", "AE", "AL", "AT", "AZ", "BA", "BE", "BG", "BH", "BI", "BR", "BY", "CH", "CR", "CY", "CZ", "DE", "DJ", "DK",
    "DO", "EE", "EG", "ES", "FI", "FK", "FO", "FR", "GB", "GE", "GI", "GL", "GR", "GT", "HN", "HR", "HU", "IE", "IL",
    "IQ", "IS", "IT", "JO", "KW", "KZ", "LB", "LC", "LI", "LT", "LU", "LV", "LY", "MC", "MD", "ME", "MK", "MN", "MR",
    "MT", "MU", "NI", "NL", "NO", "OM", "PK", "PL", "PS", "PT", "QA", "RO", "RS", "RU", "SA", "SC", "SD", "SE", "SI",
    "SK", "SM", "SO", "ST", "SV", "TL", "TN", "TR", "UA", "VA", "VG", "XK", "YE",
];

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

/// A value that looks generated (the thresholds `generic_secret` uses):
/// - at least 12 characters;
/// - letters mixed with digits or symbols;
/// - at least 3.5 bits of entropy per character, or `log2(length) - 0.5` for a value shorter
///   than 16 (a 12-character value cannot reach 3.5);
/// - not a placeholder, a `${VAR}` / `$(cmd)` / `%VAR%` reference, a path or a URL.
///
/// Low-entropy passwords (`hunter2`) are not judged here: `password_field` catches them by key.
pub(crate) fn high_entropy_secret(v: &str) -> bool {
    #[allow(clippy::cast_precision_loss, reason = "a length below 2^52")]
    let needed = ((v.len() as f64).log2() - 0.5).min(3.5);
    let letters = v.bytes().any(|b| b.is_ascii_alphabetic());
    let others = v.bytes().any(|b| !b.is_ascii_alphabetic());
    v.len() >= 12 && letters && others && entropy(v) >= needed && !is_reference(v) && not_placeholder(v)
}

/// A reference to a secret kept elsewhere, not a secret: `${VAR}`, `$(cmd)`, `$VAR`, `%VAR%`,
/// a path, a URL.
fn is_reference(v: &str) -> bool {
    v.starts_with('$')
        || (v.starts_with('%') && v.ends_with('%'))
        || v.starts_with('/')
        || v.starts_with("./")
        || v.starts_with("~/")
        || v.contains("://")
}

/// What `generic_secret` found: a random-looking value, `Bearer <opaque token>`,
/// `Basic <base64 of user:password>`, or `:<password>` from a URL's userinfo.
fn generic_secret(v: &str) -> bool {
    let unquote = |t: &str| t.trim().trim_matches(['"', '\'']).to_owned();
    if let Some(password) = v.strip_prefix(':') {
        // A URL's userinfo.
        let lower = password.to_ascii_lowercase();
        return !is_reference(password)
            && !["password", "pass", "passwd", "secret", "xxx", "***", "****"].contains(&lower.as_str())
            && !is_short_placeholder(password);
    }
    if let Some(flag) = v.strip_prefix("--") {
        // `--api-key VALUE`.
        return flag.split_once(char::is_whitespace).is_some_and(|(_, value)| secret_value(&unquote(value)));
    }
    let scheme = v.split(char::is_whitespace).next().unwrap_or("");
    if scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("basic") {
        return secret_value(v);
    }
    // `key: value`: the key's words name a secret, and the value is one.
    v.find([':', '=']).is_some_and(|sep| {
        let key = unquote(&v[..sep]);
        secret_like_key(&crate::keys::words(&key)) && secret_value(&unquote(&v[sep + 1..]))
    })
}

/// A secret-like key's value that is a secret: random-looking (and in no vendor's format, which
/// its own detector reports), `Bearer <opaque token>`, or `Basic <base64 of user:password>`.
pub(crate) fn secret_value(v: &str) -> bool {
    let (scheme, rest) = v.split_once(char::is_whitespace).unwrap_or(("", v));
    let rest = rest.trim_start();
    if scheme.eq_ignore_ascii_case("basic") {
        return base64url_decode(rest)
            .and_then(|b| String::from_utf8(b).ok())
            .is_some_and(|t| t.len() >= 3 && t.contains(':') && !is_short_placeholder(&t.replace(':', "")));
    }
    if scheme.eq_ignore_ascii_case("bearer") {
        return rest.len() >= 16 && !known_format(rest) && high_entropy_secret(rest);
    }
    !known_format(v) && high_entropy_secret(v)
}

/// A value in a vendor's format, which its own detector reports (a JWT, a Slack, Stripe, OpenAI,
/// GitHub, AWS or Google key): not a generic secret.
fn known_format(v: &str) -> bool {
    const PREFIXES: [&str; 15] = [
        "eyJ",
        "xox",
        "xapp-",
        "sk-",
        "sk_",
        "rk_",
        "ghp_",
        "gho_",
        "ghu_",
        "ghs_",
        "ghr_",
        "github_pat_",
        "AKIA",
        "ASIA",
        "AIza",
    ];
    PREFIXES.iter().any(|p| v.starts_with(p))
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
