//! The typed matchers: each reads one argument value and says whether it matches, does not, or
//! cannot be read (a value that fails to parse, which never lets an `allow` rule match).

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use halt_core::Money;
use serde_json::Value;

/// A matcher's answer for one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tri {
    Yes,
    No,
    /// The value is of the right kind but cannot be read (a path that climbs above its root, a
    /// URL or number that does not parse).
    Unknown,
}

impl Tri {
    pub(crate) fn not(self) -> Self {
        match self {
            Self::Yes => Self::No,
            Self::No => Self::Yes,
            Self::Unknown => Self::Unknown,
        }
    }

    pub(crate) fn and(self, other: Self) -> Self {
        match (self, other) {
            (Self::No, _) | (_, Self::No) => Self::No,
            (Self::Yes, Self::Yes) => Self::Yes,
            _ => Self::Unknown,
        }
    }

    pub(crate) fn or(self, other: Self) -> Self {
        match (self, other) {
            (Self::Yes, _) | (_, Self::Yes) => Self::Yes,
            (Self::No, Self::No) => Self::No,
            _ => Self::Unknown,
        }
    }
}

/// Builds a glob set; `literal_separator`: `*` stays within one path segment.
pub(crate) fn globs(patterns: &[String], literal_separator: bool, ignore_case: bool) -> Result<GlobSet, String> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        let pattern = if ignore_case { p.to_lowercase() } else { p.clone() };
        let glob = GlobBuilder::new(&pattern)
            .literal_separator(literal_separator)
            .backslash_escape(true)
            .empty_alternates(false)
            .build()
            .map_err(|e| format!("`{p}`: {}", e.kind()))?;
        b.add(glob);
    }
    b.build().map_err(|e| e.to_string())
}

/// How many times percent-encoding is undone: enough for double encoding, bounded.
const DECODE_ROUNDS: usize = 3;

/// A path as a tool would resolve it: percent-encoding undone, backslashes read as separators,
/// `.` and `..` and repeated or trailing separators resolved, case folded when asked. `None`
/// when it climbs above its root, or holds a NUL.
pub(crate) fn normalize_path(raw: &str, ignore_case: bool) -> Option<String> {
    let mut text = raw.to_owned();
    for _ in 0..DECODE_ROUNDS {
        let decoded = percent_encoding::percent_decode_str(&text).decode_utf8_lossy().into_owned();
        if decoded == text {
            break;
        }
        text = decoded;
    }
    if text.contains('\0') {
        return None;
    }
    let text = text.replace('\\', "/");
    let absolute = text.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for seg in text.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            s => parts.push(s),
        }
    }
    let mut out = if absolute { String::from("/") } else { String::new() };
    out.push_str(&parts.join("/"));
    if ignore_case {
        out = out.to_lowercase();
    }
    Some(out)
}

/// A URL's parts, with its host as an address when it is one (in any of the forms a resolver
/// accepts: dotted, shortened, decimal, hex, IPv6, IPv4-mapped IPv6).
pub(crate) struct Url<'a> {
    pub(crate) scheme: Cow<'a, str>,
    pub(crate) host: Cow<'a, str>,
    pub(crate) ip: Option<IpAddr>,
    pub(crate) port: Option<u16>,
}

pub(crate) fn parse_url(raw: &str) -> Option<Url<'_>> {
    plain_url(raw).or_else(|| whatwg_url(raw))
}

/// The common URL read without the full parser: an `http` or `https` URL of printable ASCII
/// whose host is a plain domain name (letters, digits, dots, hyphens; no punycode; not ending
/// in a number) with at most a numeric port. For exactly these, the WHATWG parser's host and port
/// are the text's own, lowercased; anything else (userinfo, percent signs, brackets, numeric or
/// odd hosts, spaces) is left to it. A test checks the two agree.
pub(crate) fn plain_url(raw: &str) -> Option<Url<'_>> {
    let bytes = raw.as_bytes();
    let (scheme, default_port, start) = if bytes.len() > 8 && bytes[..8].eq_ignore_ascii_case(b"https://") {
        ("https", 443, 8)
    } else if bytes.len() > 7 && bytes[..7].eq_ignore_ascii_case(b"http://") {
        ("http", 80, 7)
    } else {
        return None;
    };
    // One pass over the authority: the host's bytes, where its port starts, its last label.
    let mut end = bytes.len();
    let mut colon = None;
    let mut label_start = start;
    let mut last_label = (start, start);
    for (i, &b) in bytes.iter().enumerate().skip(start) {
        match b {
            b'/' | b'\\' | b'?' | b'#' => {
                end = i;
                break;
            }
            b':' if colon.is_none() => colon = Some(i),
            b'0'..=b'9' => {}
            b'a'..=b'z' | b'A'..=b'Z' | b'-' if colon.is_none() => {}
            b'.' if colon.is_none() => {
                if i == label_start {
                    return None;
                }
                last_label = (label_start, i);
                label_start = i + 1;
            }
            _ => return None,
        }
    }
    // What follows the authority is the WHATWG parser's to judge only if it is printable ASCII:
    // a space or a control character anywhere sends the whole URL there.
    if !bytes[end..].iter().all(u8::is_ascii_graphic) {
        return None;
    }
    let host_end = colon.unwrap_or(end);
    let port = match colon {
        Some(c) => {
            let digits = &raw[c + 1..end];
            if digits.is_empty() || digits.len() > 5 {
                return None;
            }
            digits.parse::<u16>().ok()?
        }
        None => default_port,
    };
    // The last label: the one after the last dot, unless the host ends with a dot.
    if label_start < host_end {
        last_label = (label_start, host_end);
    } else if label_start == start {
        return None;
    }
    let host = &raw[start..host_end];
    let host = host.strip_suffix('.').unwrap_or(host);
    let last = &raw[last_label.0..last_label.1];
    if host.is_empty()
        || last.is_empty()
        || last.bytes().all(|b| b.is_ascii_digit())
        || last.len() >= 2 && last.as_bytes()[..2].eq_ignore_ascii_case(b"0x")
        // Punycode is the full parser's to check (anywhere in the host, to be safe).
        || host.as_bytes().windows(4).any(|w| w.eq_ignore_ascii_case(b"xn--"))
    {
        return None;
    }
    let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    };
    Some(Url { scheme: Cow::Borrowed(scheme), host, ip: None, port: Some(port) })
}

/// Any URL, by the WHATWG parser (the one `reqwest` uses).
pub(crate) fn whatwg_url(raw: &str) -> Option<Url<'static>> {
    let parsed = url::Url::parse(raw.trim()).ok()?;
    let host = parsed.host()?;
    let (name, ip) = match host {
        url::Host::Domain(d) => {
            let d = d.trim_end_matches('.').to_lowercase();
            let ip = d.parse::<IpAddr>().ok();
            (d, ip)
        }
        url::Host::Ipv4(v4) => (v4.to_string(), Some(IpAddr::V4(v4))),
        url::Host::Ipv6(v6) => {
            let ip = v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4);
            (ip.to_string(), Some(ip))
        }
    };
    let scheme = Cow::Owned(parsed.scheme().to_owned());
    Some(Url { scheme, host: Cow::Owned(name), ip, port: parsed.port_or_known_default() })
}

/// Whether a host is on a private network: loopback, RFC 1918, carrier-grade NAT, link-local
/// (the cloud metadata address among them), unspecified, IPv6 unique-local, and `localhost`.
pub(crate) fn is_private(url: &Url<'_>) -> bool {
    if url.host == "localhost" || url.host.ends_with(".localhost") {
        return true;
    }
    match url.ip {
        Some(IpAddr::V4(v4)) => private_v4(v4),
        Some(IpAddr::V6(v6)) => private_v6(v6),
        None => false,
    }
}

fn private_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
}

fn private_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    ip.is_loopback() || ip.is_unspecified() || (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80
}

/// The domain of an email address (`Name <a@b.c>` too), lowercased, without a trailing dot;
/// `None` for anything that is not one address.
pub(crate) fn email_domain(raw: &str) -> Option<String> {
    let s = raw.trim();
    let s = match (s.rfind('<'), s.ends_with('>')) {
        (Some(open), true) => &s[open + 1..s.len() - 1],
        _ => s,
    };
    let (local, domain) = s.split_once('@')?;
    if local.is_empty()
        || domain.contains('@')
        || domain.contains(char::is_whitespace)
        || local.contains(char::is_whitespace)
    {
        return None;
    }
    let domain = domain.trim_end_matches('.').to_lowercase();
    if domain.is_empty() || domain.starts_with('.') || domain.contains("..") {
        return None;
    }
    Some(domain)
}

/// A number at money precision (millionths), signed: a JSON number or a string holding one.
pub(crate) fn number(v: &Value) -> Result<i64, ()> {
    let text = match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.trim().to_owned(),
        _ => return Err(()),
    };
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.as_str()),
    };
    let money: Money = digits.parse().map_err(|_| ())?;
    let micros = money.micros();
    Ok(if negative { -micros } else { micros })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_as_a_tool_would() {
        let n = |p: &str| normalize_path(p, false);
        assert_eq!(n("a/../protected/x").as_deref(), Some("protected/x"));
        assert_eq!(n("./protected//x/").as_deref(), Some("protected/x"));
        assert_eq!(n("/etc/./passwd").as_deref(), Some("/etc/passwd"));
        assert_eq!(n("PROTECTED\\x").as_deref(), Some("PROTECTED/x"));
        assert_eq!(normalize_path("PROTECTED\\x", true).as_deref(), Some("protected/x"));
        assert_eq!(n("%2e%2e/etc").as_deref(), None, "climbs above its root");
        assert_eq!(n("a/%2e%2e/etc/passwd").as_deref(), Some("etc/passwd"));
        assert_eq!(n("a/%252e%252e/b").as_deref(), Some("b"), "double encoding");
        assert_eq!(n("/../etc").as_deref(), None);
        assert_eq!(n("a\0b"), None);
    }

    #[test]
    fn urls_name_their_real_host() {
        for raw in [
            "http://127.1",
            "http://0x7f000001",
            "http://2130706433/",
            "http://[::ffff:127.0.0.1]",
            "http://[::1]:8080",
            "http://169.254.169.254/latest/meta-data",
            "http://10.0.0.8",
            "http://LOCALHOST.",
            "http://[fd00::1]",
        ] {
            let u = parse_url(raw).unwrap();
            assert!(is_private(&u), "{raw} is private: host {}", u.host);
        }
        let u = parse_url("http://good.com@evil.com/x").unwrap();
        assert_eq!(u.host, "evil.com");
        assert_eq!(parse_url("http://evil.com\\@good.com/").unwrap().host, "evil.com");
        assert_eq!(
            parse_url("HTTPS://API.Example.COM.:8443/x").map(|u| (u.host.into_owned(), u.port)),
            Some(("api.example.com".into(), Some(8443)))
        );
        assert!(!is_private(&parse_url("https://example.com").unwrap()));
        assert!(!is_private(&parse_url("http://8.8.8.8").unwrap()));
        assert!(parse_url("not a url").is_none());
    }

    #[test]
    fn the_plain_reading_agrees_with_the_full_parser() {
        let hosts = [
            "example.com",
            "EXAMPLE.com",
            "a.b.c",
            "localhost",
            "x-y.z",
            "1.2.3.4",
            "127.1",
            "0x7f.1",
            "a.0x10",
            "123",
            "a..b",
            "xn--nxasmq6b.com",
            "a.b.",
            "a_b.com",
            "exa mple.com",
            "ex%61mple.com",
            "[::1]",
            "a@b",
            "-a.com",
            "a.-b",
            "abc.def",
            "9abc.com",
            "a.b.c.d.e",
        ];
        let tails = ["", "/", "/p?q=1", "?x", "#f", "\\\\x", ":80", ":8080/", ":", ":99999", ":0", ":08"];
        let schemes = ["http", "https", "HTTP", "ftp", "ws"];
        let mut agreed = 0;
        for scheme in schemes {
            for host in hosts {
                for tail in tails {
                    let raw = format!("{scheme}://{host}{tail}");
                    if let Some(fast) = plain_url(&raw) {
                        let full = whatwg_url(&raw).expect(&raw);
                        assert_eq!((fast.scheme, fast.host, fast.port), (full.scheme, full.host, full.port), "{raw}");
                        agreed += 1;
                    }
                }
            }
        }
        assert!(agreed > 100, "the plain reading covers the common URLs: {agreed}");
    }

    #[test]
    fn emails_and_numbers_read_strictly() {
        assert_eq!(email_domain("Bob <bob@Example.COM.>").as_deref(), Some("example.com"));
        assert_eq!(email_domain("a@b@c"), None);
        assert_eq!(email_domain("no-at-sign"), None);
        assert_eq!(number(&serde_json::json!("1e3")), Ok(1_000_000_000));
        assert_eq!(number(&serde_json::json!(-2.5)), Ok(-2_500_000));
        assert_eq!(number(&serde_json::json!("NaN")), Err(()));
        assert_eq!(number(&serde_json::json!(true)), Err(()));
    }
}
