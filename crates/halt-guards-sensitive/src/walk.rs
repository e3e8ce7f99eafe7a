//! The walk over a JSON value that finds, and redacts, what the patterns and fields match.

use serde_json::{Map, Value};

use crate::redact::{Context, Finding, NumberText, Prescan, Redactor, ScanError, number_text, preview, push_index};

pub(crate) struct Walk<'a> {
    pub(crate) redactor: &'a Redactor,
    pub(crate) bytes: usize,
    pub(crate) findings: Vec<Finding>,
    pub(crate) redact: bool,
    /// What the pre-pass learned (nothing is known without it).
    pub(crate) prescan: Option<Prescan>,
    /// The number of texts (strings and numbers) walked so far.
    pub(crate) texts: usize,
    /// The number of arrays and objects below the root walked (or skipped) so far.
    pub(crate) containers: usize,
    pub(crate) numbers: NumberText,
    /// Set while a text under a `version` key is scanned: no address is found in it.
    pub(crate) not_address: bool,
}

/// Whether a sensitive field's value holds anything to report: text, a number, or a list or
/// object that is not empty (`{"password": ["hunter2"]}`, `{"pin": 1234}`).
pub(crate) fn holds_data(v: &Value) -> bool {
    match v {
        Value::String(s) => !s.is_empty(),
        Value::Number(_) => true,
        Value::Array(items) => !items.is_empty(),
        Value::Object(map) => !map.is_empty(),
        Value::Null | Value::Bool(_) => false,
    }
}

/// `text` with each span replaced by `[REDACTED:<pattern>]`; overlapping spans merge, and the
/// earliest, then longest, names the merged span.
pub(crate) fn redacted(text: &str, mut spans: Vec<(usize, usize, usize)>, redactor: &Redactor) -> String {
    spans.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    let mut iter = spans.into_iter().peekable();
    while let Some((s, mut e, i)) = iter.next() {
        while let Some(&(s2, e2, _)) = iter.peek() {
            if s2 < e {
                e = e.max(e2);
                iter.next();
            } else {
                break;
            }
        }
        if s >= at {
            out.push_str(&text[at..s]);
            out.push_str("[REDACTED:");
            out.push_str(&redactor.patterns[i].name);
            out.push(']');
            at = e;
        }
    }
    out.push_str(&text[at..]);
    out
}

impl<'a> Walk<'a> {
    pub(crate) fn new(redactor: &'a Redactor, redact: bool) -> Self {
        Walk {
            redactor,
            bytes: 0,
            findings: Vec::new(),
            redact,
            prescan: None,
            texts: 0,
            containers: 0,
            numbers: NumberText::default(),
            not_address: false,
        }
    }

    /// Counts a text; whether it may hold a match.
    pub(crate) fn next_text(&mut self) -> bool {
        let i = self.texts;
        self.texts += 1;
        self.prescan.as_ref().is_none_or(|p| p.suspects.get(i).copied().unwrap_or(true))
    }

    /// Counts an array or object; true (having counted what is inside) when the pre-pass knows
    /// it holds nothing to find.
    pub(crate) fn skip_container(&mut self) -> bool {
        let Some(p) = &self.prescan else { return false };
        let Some(node) = p.nodes.get(self.containers).copied() else { return false };
        self.containers += 1;
        let suspect = p.suspects.get(self.texts..self.texts + node.texts).is_none_or(|s| s.contains(&true));
        if node.fields || suspect {
            return false;
        }
        self.texts += node.texts;
        self.containers += node.nodes;
        true
    }

    pub(crate) fn count(&mut self, n: usize) -> Result<(), ScanError> {
        self.bytes = self.bytes.saturating_add(n);
        if self.bytes > self.redactor.max_bytes {
            return Err(ScanError::TooLarge { limit: self.redactor.max_bytes });
        }
        Ok(())
    }

    pub(crate) fn check_depth(&self, path: &str, depth: usize) -> Result<(), ScanError> {
        if depth > self.redactor.max_depth {
            return Err(ScanError::TooDeep { path: path.to_owned(), limit: self.redactor.max_depth });
        }
        Ok(())
    }

    /// Appends an object's key to `path`, scanned like a text: a key that holds sensitive data
    /// is reported, stands redacted in the paths below it, and comes back redacted.
    pub(crate) fn key(&mut self, key: &str, path: &mut String, suspect: bool) -> Option<String> {
        path.push('.');
        let spans = if suspect { self.redactor.spans(key) } else { Vec::new() };
        if spans.is_empty() {
            path.push_str(key);
            return None;
        }
        let names: Vec<usize> = spans.iter().map(|(_, _, i)| *i).collect();
        let clean = redacted(key, spans, self.redactor);
        path.push_str(&clean);
        for i in names {
            self.findings.push(Finding {
                pattern: self.redactor.patterns[i].name.clone(),
                path: path.clone(),
                preview: preview(key),
            });
        }
        Some(clean)
    }

    /// Reports every text and number inside a sensitive field's value (walking lists and
    /// objects), redacting each when `self.redact`; counts what it walks as the pre-pass did.
    pub(crate) fn field_value(
        &mut self,
        name: &str,
        v: &mut Value,
        path: &mut String,
        depth: usize,
    ) -> Result<(), ScanError> {
        self.check_depth(path, depth)?;
        match v {
            Value::String(s) if s.is_empty() => {
                self.texts += 1;
            }
            Value::String(_) | Value::Number(_) => {
                self.texts += 1;
                let shown = match &*v {
                    Value::String(s) => {
                        self.count(s.len())?;
                        preview(s)
                    }
                    other => preview(&other.to_string()),
                };
                self.findings.push(Finding { pattern: format!("field:{name}"), path: path.clone(), preview: shown });
                if self.redact {
                    *v = Value::String(format!("[REDACTED:{name}]"));
                }
            }
            Value::Array(items) => {
                self.containers += 1;
                for (i, item) in items.iter_mut().enumerate() {
                    let len = path.len();
                    push_index(path, i);
                    self.field_value(name, item, path, depth + 1)?;
                    path.truncate(len);
                }
            }
            Value::Object(map) => {
                self.containers += 1;
                let mut renamed = Vec::new();
                for (k, item) in map.iter_mut() {
                    self.count(k.len())?;
                    let len = path.len();
                    let suspect = self.next_text();
                    if let Some(clean) = self.key(k, path, suspect) {
                        renamed.push((k.clone(), clean));
                    }
                    self.field_value(name, item, path, depth + 1)?;
                    path.truncate(len);
                }
                if self.redact {
                    rename(map, renamed);
                }
            }
            Value::Null | Value::Bool(_) => {}
        }
        Ok(())
    }

    /// Walks `v`, which sits `depth` levels below the root (the root is 0), redacting in place
    /// when `self.redact`.
    pub(crate) fn value(&mut self, v: &mut Value, path: &mut String, depth: usize) -> Result<(), ScanError> {
        self.check_depth(path, depth)?;
        match v {
            Value::String(s) => {
                self.count(s.len())?;
                if let Some(new) = self.text(s, path) {
                    *s = new;
                }
            }
            Value::Number(n) => {
                let text = number_text(n, &mut self.numbers).to_owned();
                self.count(text.len())?;
                if let Some(new) = self.text(&text, path) {
                    *v = Value::String(new);
                }
            }
            Value::Array(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    let len = path.len();
                    push_index(path, i);
                    self.value(item, path, depth + 1)?;
                    path.truncate(len);
                }
            }
            Value::Object(map) => {
                let mut renamed = Vec::new();
                for (k, item) in map.iter_mut() {
                    self.count(k.len())?;
                    let len = path.len();
                    if let Some(clean) = self.key(k, path, true) {
                        renamed.push((k.clone(), clean));
                    }
                    match self.redactor.field(k) {
                        Some(f) if holds_data(item) => {
                            let name = f.name.clone();
                            self.field_value(&name, item, path, depth + 1)?;
                        }
                        _ => match self.redactor.context(k, item) {
                            Some(Context::Detector(i)) => {
                                self.check_depth(path, depth + 1)?;
                                self.context_finding(i, item, path)?;
                            }
                            Some(Context::NotAddress) => {
                                self.not_address = true;
                                let walked = self.value(item, path, depth + 1);
                                self.not_address = false;
                                walked?;
                            }
                            None => self.value(item, path, depth + 1)?,
                        },
                    }
                    path.truncate(len);
                }
                if self.redact {
                    rename(map, renamed);
                }
            }
            Value::Null | Value::Bool(_) => {}
        }
        Ok(())
    }

    /// As [`Walk::value`], reading only.
    pub(crate) fn value_ref(&mut self, v: &Value, path: &mut String, depth: usize) -> Result<(), ScanError> {
        // With the pre-pass's verdict at hand, the limits are known to hold.
        let verified = self.prescan.is_some();
        if !verified {
            self.check_depth(path, depth)?;
        }
        match v {
            Value::String(s) => {
                if !verified {
                    self.count(s.len())?;
                }
                if self.next_text() {
                    self.text(s, path);
                }
            }
            Value::Number(n) => {
                let suspect = self.next_text();
                if suspect || !verified {
                    let mut numbers = std::mem::take(&mut self.numbers);
                    let text = number_text(n, &mut numbers);
                    if !verified {
                        self.count(text.len())?;
                    }
                    if suspect {
                        self.text(text, path);
                    }
                    self.numbers = numbers;
                }
            }
            Value::Array(_) | Value::Object(_) if self.skip_container() => {}
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let len = path.len();
                    push_index(path, i);
                    self.value_ref(item, path, depth + 1)?;
                    path.truncate(len);
                }
            }
            Value::Object(map) => self.object_ref(map, path, depth)?,
            Value::Null | Value::Bool(_) => {}
        }
        Ok(())
    }

    pub(crate) fn object_ref(
        &mut self,
        map: &Map<String, Value>,
        path: &mut String,
        depth: usize,
    ) -> Result<(), ScanError> {
        for (k, item) in map {
            if self.prescan.is_none() {
                self.count(k.len())?;
            }
            let len = path.len();
            let suspect = self.next_text();
            self.key(k, path, suspect);
            match self.redactor.field(k) {
                Some(f) if holds_data(item) => {
                    // Reported whole, not scanned (a copy, read only: sensitive fields are rare).
                    let name = f.name.clone();
                    let mut copy = item.clone();
                    self.field_value(&name, &mut copy, path, depth + 1)?;
                }
                _ => match self.redactor.context(k, item) {
                    Some(Context::Detector(i)) => {
                        let mut copy = item.clone();
                        self.context_finding(i, &mut copy, path)?;
                    }
                    Some(Context::NotAddress) => {
                        self.not_address = true;
                        let walked = self.value_ref(item, path, depth + 1);
                        self.not_address = false;
                        walked?;
                    }
                    None => self.value_ref(item, path, depth + 1)?,
                },
            }
            path.truncate(len);
        }
        Ok(())
    }

    /// Reports a text or number that its key makes a finding of pattern `i` (redacting it when
    /// `self.redact`); counts it as the pre-pass did.
    pub(crate) fn context_finding(&mut self, i: usize, v: &mut Value, path: &str) -> Result<(), ScanError> {
        let verified = self.prescan.is_some();
        let _ = self.next_text();
        let shown = match &*v {
            Value::String(s) => {
                if !verified {
                    self.count(s.len())?;
                }
                preview(s)
            }
            other => {
                let text = other.to_string();
                if !verified {
                    self.count(text.len())?;
                }
                preview(&text)
            }
        };
        let name = self.redactor.patterns[i].name.clone();
        if self.redact {
            *v = Value::String(format!("[REDACTED:{name}]"));
        }
        self.findings.push(Finding { pattern: name, path: path.to_owned(), preview: shown });
        Ok(())
    }

    /// Records the findings of one text; returns its redacted form when redacting and something
    /// was found.
    pub(crate) fn text(&mut self, text: &str, path: &str) -> Option<String> {
        let mut spans = self.redactor.spans(text);
        if self.not_address {
            spans.retain(|(_, _, i)| self.redactor.patterns[*i].name != "ip_address");
        }
        if spans.is_empty() {
            return None;
        }
        for (s, e, i) in &spans {
            self.findings.push(Finding {
                pattern: self.redactor.patterns[*i].name.clone(),
                path: path.to_owned(),
                preview: preview(&text[*s..*e]),
            });
        }
        self.redact.then(|| redacted(text, spans, self.redactor))
    }
}

/// Gives the keys in `renamed` their redacted names (a name already taken gets `#2`, `#3`, ...).
pub(crate) fn rename(map: &mut Map<String, Value>, renamed: Vec<(String, String)>) {
    for (old, clean) in renamed {
        let Some(item) = map.remove(&old) else { continue };
        let mut name = clean.clone();
        let mut n = 1;
        while map.contains_key(&name) {
            n += 1;
            name = format!("{clean}#{n}");
        }
        map.insert(name, item);
    }
}
