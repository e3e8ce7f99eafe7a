//! Rules compiled once: globs, regular expressions and numbers read when the policy loads, so
//! that a decision only reads the fields its rules name.

use globset::GlobSet;
use halt_core::names::{self, NamePatterns};
use halt_core::{Decision, JsonObject};
use regex::Regex;
use serde_json::Value;

use crate::matchers::{Tri, Url, email_domain, globs, is_private, normalize_path, number, parse_url};
use crate::{Condition, RuleConfig, RuleDecision};

/// The largest compiled regular expression, in bytes.
const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// The deepest nesting of `all` / `any` / `not`.
const MAX_DEPTH: usize = 16;

/// A policy mistake: the setting's path and what is wrong.
pub(crate) type Mistake = (String, String);

#[derive(Debug)]
pub(crate) struct Rule {
    functions: NamePatterns,
    condition: Option<Cond>,
    decision: RuleDecision,
    reason: String,
}

#[derive(Debug)]
enum Cond {
    All(Vec<Cond>),
    Any(Vec<Cond>),
    Not(Box<Cond>),
    Leaf { field: Vec<Seg>, matchers: Vec<Matcher> },
}

#[derive(Debug)]
enum Seg {
    Key(String),
    Any,
}

#[derive(Debug)]
enum Matcher {
    Path { globs: GlobSet, ignore_case: bool },
    Url { schemes: Option<Vec<String>>, hosts: Option<GlobSet>, ports: Option<Vec<u16>>, private: Option<bool> },
    Email(GlobSet),
    Compare(Op, i64),
    OneOf(Vec<Value>),
    Regex(Regex),
    Exists(bool),
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Gt,
    Ge,
    Lt,
    Le,
}

impl Rule {
    pub(crate) fn compile(index: usize, r: &RuleConfig) -> Result<Self, Mistake> {
        let at = format!("rules[{index}]");
        let functions = NamePatterns::new(&r.functions).map_err(|e| (format!("{at}.functions"), e.to_string()))?;
        if r.functions.is_empty() {
            return Err((format!("{at}.functions"), "name at least one function pattern (`*` for all)".into()));
        }
        let condition = match &r.condition {
            Some(c) => Some(compile(c, &format!("{at}.where"), 0)?),
            None => None,
        };
        let name = r.name.clone().unwrap_or_else(|| format!("rule {}", index + 1));
        let field = r.condition.as_ref().and_then(first_field).unwrap_or_default();
        let template = r.reason.clone().unwrap_or_else(|| match r.decision {
            RuleDecision::Allow => "allowed by rule `{rule}`".into(),
            RuleDecision::RequireApproval => "rule `{rule}` asks for approval".into(),
            RuleDecision::Deny => "denied by rule `{rule}`".into(),
        });
        // Filled in now: the reason names the rule and the field, never a value of the call.
        let reason = template.replace("{rule}", &name).replace("{field}", &field);
        Ok(Self { functions, condition, decision: r.decision, reason })
    }

    pub(crate) fn covers(&self, function: &str) -> bool {
        // The function the guard is given is already normalised.
        self.functions.is_match_normalized(function)
    }

    /// Whether the rule matches these arguments. An `allow` rule needs every condition to hold on
    /// values that could be read; a restrictive rule matches what cannot be read too.
    pub(crate) fn matches(&self, args: &JsonObject) -> bool {
        let Some(cond) = &self.condition else { return true };
        let allow = self.decision == RuleDecision::Allow;
        // For an allow, a condition on several values holds only if it holds for each; for a
        // restrictive rule, if it holds for any.
        let mut urls = Urls::default();
        match eval(cond, args, !allow, &mut urls) {
            Tri::Yes => true,
            Tri::No => false,
            Tri::Unknown => !allow,
        }
    }

    pub(crate) fn decision(&self) -> Decision {
        match self.decision {
            RuleDecision::Allow => Decision::allow(self.reason.clone()),
            RuleDecision::RequireApproval => Decision::require_approval(self.reason.clone()),
            RuleDecision::Deny => Decision::deny(self.reason.clone()),
        }
    }
}

fn first_field(c: &Condition) -> Option<String> {
    c.field.clone().or_else(|| {
        c.all
            .iter()
            .chain(c.any.iter())
            .flatten()
            .find_map(first_field)
            .or_else(|| c.not.as_deref().and_then(first_field))
    })
}

fn compile(c: &Condition, at: &str, depth: usize) -> Result<Cond, Mistake> {
    if depth > MAX_DEPTH {
        return Err((at.to_owned(), format!("conditions nest deeper than {MAX_DEPTH}")));
    }
    let kinds = [c.all.is_some(), c.any.is_some(), c.not.is_some(), c.field.is_some()].iter().filter(|b| **b).count();
    if kinds != 1 {
        return Err((
            at.to_owned(),
            "a condition is exactly one of `all`, `any`, `not`, or a `field` with matchers".into(),
        ));
    }
    if let Some(list) = &c.all {
        let children = list.iter().enumerate().map(|(i, c)| compile(c, &format!("{at}.all[{i}]"), depth + 1));
        return Ok(Cond::All(children.collect::<Result<_, _>>()?));
    }
    if let Some(list) = &c.any {
        let children = list.iter().enumerate().map(|(i, c)| compile(c, &format!("{at}.any[{i}]"), depth + 1));
        return Ok(Cond::Any(children.collect::<Result<_, _>>()?));
    }
    if let Some(inner) = &c.not {
        return Ok(Cond::Not(Box::new(compile(inner, &format!("{at}.not"), depth + 1)?)));
    }
    let raw_field = c.field.as_deref().unwrap_or_default();
    let field =
        parse_field(raw_field).ok_or_else(|| (format!("{at}.field"), format!("`{raw_field}` is not a dotted path")))?;
    let mut matchers = Vec::new();
    if let Some(p) = &c.path {
        let g = globs(&p.glob, true, p.ignore_case).map_err(|e| (format!("{at}.path.glob"), e))?;
        matchers.push(Matcher::Path { globs: g, ignore_case: p.ignore_case });
    }
    if let Some(u) = &c.url {
        let hosts = match &u.host {
            Some(h) => {
                let lower: Vec<String> = h.iter().map(|s| s.to_lowercase()).collect();
                Some(globs(&lower, false, false).map_err(|e| (format!("{at}.url.host"), e))?)
            }
            None => None,
        };
        let schemes = u.scheme.as_ref().map(|s| s.iter().map(|x| x.to_lowercase()).collect());
        matchers.push(Matcher::Url { schemes, hosts, ports: u.port.clone(), private: u.private_network });
    }
    if let Some(domains) = &c.email_domain {
        let lower: Vec<String> = domains.iter().map(|d| d.trim_end_matches('.').to_lowercase()).collect();
        matchers.push(Matcher::Email(globs(&lower, false, false).map_err(|e| (format!("{at}.email_domain"), e))?));
    }
    for (op, literal, key) in [(Op::Gt, &c.gt, ">"), (Op::Ge, &c.ge, ">="), (Op::Lt, &c.lt, "<"), (Op::Le, &c.le, "<=")]
    {
        if let Some(v) = literal {
            let n = number(v).map_err(|()| (format!("{at}.{key}"), "must be a number".to_owned()))?;
            matchers.push(Matcher::Compare(op, n));
        }
    }
    if let Some(values) = &c.one_of {
        matchers.push(Matcher::OneOf(values.clone()));
    }
    if let Some(pattern) = &c.regex {
        let re = regex::RegexBuilder::new(pattern)
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(|e| (format!("{at}.regex"), e.to_string()))?;
        matchers.push(Matcher::Regex(re));
    }
    if let Some(e) = c.exists {
        matchers.push(Matcher::Exists(e));
    }
    if matchers.is_empty() {
        return Err((
            at.to_owned(),
            "a `field` needs a matcher: path, url, email_domain, >, >=, <, <=, one_of, regex or exists".into(),
        ));
    }
    Ok(Cond::Leaf { field, matchers })
}

fn parse_field(raw: &str) -> Option<Vec<Seg>> {
    if raw.trim().is_empty() {
        return None;
    }
    raw.split('.')
        .map(|s| match s.trim() {
            "" => None,
            "*" => Some(Seg::Any),
            key => Some(Seg::Key(names::normalize(key).into_owned())),
        })
        .collect()
}

/// The values at `field` in `args` (keys compared normalised, so `Path` and `PATH` are `path`).
fn lookup<'a>(args: &'a JsonObject, field: &[Seg]) -> Vec<&'a Value> {
    let mut here: Vec<&Value> = Vec::new();
    let mut next: Vec<&Value> = Vec::new();
    let Some((first, rest)) = field.split_first() else { return here };
    step_object(args, first, &mut here);
    for seg in rest {
        next.clear();
        for v in &here {
            match v {
                Value::Object(map) => step_object(map, seg, &mut next),
                Value::Array(items) if matches!(seg, Seg::Any) => next.extend(items.iter()),
                _ => {}
            }
        }
        std::mem::swap(&mut here, &mut next);
    }
    here
}

fn step_object<'a>(map: &'a JsonObject, seg: &Seg, out: &mut Vec<&'a Value>) {
    match seg {
        Seg::Any => out.extend(map.values()),
        Seg::Key(key) => {
            for (k, v) in map {
                if same_key(k, key) {
                    out.push(v);
                }
            }
        }
    }
}

/// Whether an argument's key is `key` (normalised): a plain ASCII key is compared without case,
/// any other is normalised first (full-width letters, zero-width characters).
fn same_key(k: &str, key: &str) -> bool {
    if k.is_ascii() && !k.starts_with(char::is_whitespace) && !k.ends_with(char::is_whitespace) {
        k.eq_ignore_ascii_case(key)
    } else {
        names::normalize(k) == key
    }
}

/// Evaluates a condition; `any_value`: a leaf on several values holds if it holds for any (else
/// for each). `not` turns that around, so that a negated condition is as strict as a plain one.
fn eval<'a>(cond: &Cond, args: &'a JsonObject, any_value: bool, urls: &mut Urls<'a>) -> Tri {
    match cond {
        Cond::All(list) => list.iter().fold(Tri::Yes, |acc, c| acc.and(eval(c, args, any_value, urls))),
        Cond::Any(list) => list.iter().fold(Tri::No, |acc, c| acc.or(eval(c, args, any_value, urls))),
        Cond::Not(inner) => eval(inner, args, !any_value, urls).not(),
        Cond::Leaf { field, matchers } => {
            let values = lookup(args, field);
            if let [Matcher::Exists(want)] = matchers.as_slice() {
                return if values.is_empty() != *want { Tri::Yes } else { Tri::No };
            }
            if values.is_empty() {
                // A missing field does not match.
                return Tri::No;
            }
            let each = values.iter().map(|v| matchers.iter().fold(Tri::Yes, |acc, m| acc.and(one(m, v, urls))));
            if any_value { each.fold(Tri::No, Tri::or) } else { each.fold(Tri::Yes, Tri::and) }
        }
    }
}

/// One matcher on one value: wrong type is `No`, a value that does not parse is `Unknown`.
fn one<'a>(m: &Matcher, v: &'a Value, urls: &mut Urls<'a>) -> Tri {
    match m {
        Matcher::Exists(want) => {
            if *want {
                Tri::Yes
            } else {
                Tri::No
            }
        }
        Matcher::Path { globs, ignore_case } => match v {
            Value::String(s) => match normalize_path(s, *ignore_case) {
                Some(p) => yes(globs.is_match(&p) || globs.is_match(format!("/{}", p.trim_start_matches('/')))),
                None => Tri::Unknown,
            },
            _ => Tri::No,
        },
        Matcher::Url { schemes, hosts, ports, private } => match v {
            Value::String(s) => match urls.parse(s) {
                Some(u) => yes(schemes.as_ref().is_none_or(|list| list.iter().any(|s| *s == u.scheme))
                    && hosts.as_ref().is_none_or(|g| g.is_match(u.host.as_ref()))
                    && ports.as_ref().is_none_or(|list| u.port.is_some_and(|p| list.contains(&p)))
                    && private.is_none_or(|want| is_private(u) == want)),
                None => Tri::Unknown,
            },
            _ => Tri::No,
        },
        Matcher::Email(globs) => match v {
            Value::String(s) => match email_domain(s) {
                Some(d) => yes(globs.is_match(&d)),
                None => Tri::Unknown,
            },
            _ => Tri::No,
        },
        Matcher::Compare(op, limit) => match v {
            Value::Number(_) | Value::String(_) => match number(v) {
                Ok(n) => yes(match op {
                    Op::Gt => n > *limit,
                    Op::Ge => n >= *limit,
                    Op::Lt => n < *limit,
                    Op::Le => n <= *limit,
                }),
                Err(()) => Tri::Unknown,
            },
            _ => Tri::No,
        },
        Matcher::OneOf(values) => yes(values.contains(v)),
        Matcher::Regex(re) => match v {
            Value::String(s) => yes(re.is_match(s)),
            _ => Tri::No,
        },
    }
}

/// The URLs one evaluation has parsed: several rules often read the same one. The first two are
/// kept inline (no allocation for the usual call).
#[derive(Default)]
struct Urls<'a> {
    inline: [Option<(&'a str, Option<Url<'a>>)>; 2],
    more: Vec<(&'a str, Option<Url<'a>>)>,
}

impl<'a> Urls<'a> {
    fn parse(&mut self, s: &'a str) -> Option<&Url<'a>> {
        let same = |t: &str| std::ptr::eq(t, s);
        if let Some(i) = self.inline.iter().position(|e| e.as_ref().is_some_and(|(t, _)| same(t))) {
            return self.inline[i].as_ref().and_then(|(_, u)| u.as_ref());
        }
        if let Some(i) = self.more.iter().position(|(t, _)| same(t)) {
            return self.more[i].1.as_ref();
        }
        let parsed = (s, parse_url(s));
        match self.inline.iter().position(Option::is_none) {
            Some(i) => self.inline[i].insert(parsed).1.as_ref(),
            None => {
                self.more.push(parsed);
                self.more.last().and_then(|(_, u)| u.as_ref())
            }
        }
    }
}

fn yes(b: bool) -> Tri {
    if b { Tri::Yes } else { Tri::No }
}
