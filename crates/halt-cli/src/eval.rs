//! `agenthalt eval`: a streaming dry run of a policy over recorded calls.

use std::collections::BTreeMap;
use std::io::{BufWriter, Read, Write};
use std::ops::{ControlFlow, Range};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};

use halt_config::PolicyLoader;
use halt_core::{
    CallContext, Clock, Decision, DecisionKind, Outcome, ReplayClock, SystemClock, Timestamp, async_trait,
};
use halt_engine::{ApprovalError, ApprovalHandler, ApprovalRequest, ApprovalResponse, Engine};
use serde::Serialize;

use crate::{ApprovalsArg, ClockArg, EvalArgs, report};

/// Answers every approval request the same way (`--approve-all` or not): `eval` has no human
/// to ask.
#[derive(Debug)]
struct FixedAnswer(bool);

#[async_trait]
impl ApprovalHandler for FixedAnswer {
    async fn request_approval(&self, _: &ApprovalRequest<'_>) -> Result<ApprovalResponse, ApprovalError> {
        Ok(if self.0 {
            ApprovalResponse::approve("agenthalt eval --approve-all")
        } else {
            ApprovalResponse::refuse("agenthalt eval")
        })
    }
}

#[derive(Serialize)]
struct ErrorLine<'a> {
    line: u64,
    error: &'a str,
}

/// Every kind of decision, for counting by kind.
const KINDS: [DecisionKind; 4] =
    [DecisionKind::Allow, DecisionKind::Modify, DecisionKind::RequireApproval, DecisionKind::Deny];

/// Counts by decision kind, in the order of [`KINDS`].
type KindCounts = [u64; 4];

fn count(counts: &mut KindCounts, kind: DecisionKind) {
    if let Some(i) = KINDS.iter().position(|k| *k == kind) {
        counts[i] += 1;
    }
}

#[derive(Default)]
struct Summary {
    calls: u64,
    errors: u64,
    executed: u64,
    by_decision: KindCounts,
    /// By guard, in the order first seen (sorted when printed).
    by_guard: Vec<GuardTally>,
}

/// One guard's counts, with its name as written in output lines.
struct GuardTally {
    name: String,
    counts: KindCounts,
    /// The name as a JSON string: written once, copied into every line.
    json: Vec<u8>,
    /// Its decisions with a constant reason, as written: copied while they repeat.
    written: Vec<Written>,
}

/// A decision as written in a line, to copy while the same one repeats (most reasons are
/// constants: "In scope", "Within budget").
struct Written {
    kind: DecisionKind,
    reason: Box<str>,
    risk: u64,
    /// Its reason as a JSON string (`text[..reason_len]`), then its whole entry in `guards`.
    text: Vec<u8>,
    reason_len: usize,
}

impl Written {
    fn is(&self, kind: DecisionKind, reason: &str, risk: u64) -> bool {
        self.kind == kind && self.risk == risk && *self.reason == *reason
    }

    fn reason(&self) -> &[u8] {
        &self.text[..self.reason_len]
    }

    fn entry(&self) -> &[u8] {
        &self.text[self.reason_len..]
    }
}

/// How many decisions a guard keeps written (the first ones it makes: a guard has a few with a
/// constant reason, and they come early).
const WRITTEN_PER_GUARD: usize = 8;

impl GuardTally {
    /// The index of `d` in `written`, written now if it is new and there is room; `None` when
    /// there is none.
    fn written(&mut self, d: &Decision) -> std::io::Result<Option<usize>> {
        let (reason, kind, risk) = (d.reason(), d.kind(), d.risk_score().to_bits());
        if let Some(found) = self.written.iter().position(|w| w.is(kind, reason, risk)) {
            return Ok(Some(found));
        }
        if self.written.len() == WRITTEN_PER_GUARD {
            return Ok(None);
        }
        let mut text = Vec::new();
        json_str(&mut text, reason)?;
        let reason_len = text.len();
        entry_head(&mut text, &self.json, kind);
        text.extend_from_within(..reason_len);
        entry_tail(&mut text, d.risk_score())?;
        self.written.push(Written { kind, reason: reason.into(), risk, text, reason_len });
        Ok(Some(self.written.len() - 1))
    }
}

impl Summary {
    /// The index of the tally of guard `name`, the `place`-th to decide in a call.
    fn tally(&mut self, place: usize, name: &str) -> std::io::Result<usize> {
        // Guards mostly decide in the same order on every call: try the same place first.
        if self.by_guard.get(place).is_some_and(|t| t.name == name) {
            return Ok(place);
        }
        if let Some(found) = self.by_guard.iter().position(|t| t.name == name) {
            return Ok(found);
        }
        let mut json = Vec::new();
        json_str(&mut json, name)?;
        self.by_guard.push(GuardTally {
            name: name.to_owned(),
            counts: KindCounts::default(),
            json,
            written: Vec::new(),
        });
        Ok(self.by_guard.len() - 1)
    }
}

pub(crate) fn run(args: &EvalArgs) -> ExitCode {
    let policy = match PolicyLoader::new().load_file(&args.config) {
        Ok(p) => p,
        Err(e) => {
            report(&e);
            return ExitCode::from(2);
        }
    };
    let clock: Arc<dyn Clock> = match args.clock {
        ClockArg::System => Arc::new(SystemClock),
        ClockArg::Replay => Arc::new(ReplayClock::new(Timestamp::EPOCH)),
    };
    let approvals: Arc<dyn ApprovalHandler> = match (args.approve_all, args.approvals) {
        (true, _) | (false, ApprovalsArg::ApproveAll) => Arc::new(FixedAnswer(true)),
        (false, ApprovalsArg::Deny) => Arc::new(FixedAnswer(false)),
        (false, ApprovalsArg::Console) => {
            if let Err(why) = halt_hil::Console::terminal_ready() {
                report(&format!("--approvals console needs a terminal: {why}"));
                return ExitCode::from(2);
            }
            Arc::new(halt_hil::Console::new(std::time::Duration::from_secs_f64(policy.approvals.timeout_seconds)))
        }
    };
    let audit = match &args.audit {
        Some(path) => match eval_audit(path, &policy, &args.config) {
            Ok(log) => Some(log),
            Err(e) => {
                report(&format!("cannot write the audit to {}: {e}", path.display()));
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    let mut builder = policy.engine_builder();
    if let Some(log) = &audit {
        builder = builder.recorder(Arc::new(log.clone()));
    }
    let engine = builder
        .clock_arc(clock)
        .approval_handler_arc(approvals)
        // A dry run settles nothing: keep no receipts.
        .settle_window(std::time::Duration::ZERO)
        .build()
        .and_then(|e| policy.apply_enabled(e));
    let engine = match engine {
        Ok(e) => e,
        Err(e) => {
            report(&e);
            return ExitCode::from(2);
        }
    };
    let input: Box<dyn Read + Send> = if args.input == "-" {
        Box::new(std::io::stdin())
    } else {
        match std::fs::File::open(&args.input) {
            Ok(f) => Box::new(f),
            Err(e) => {
                report(&format!("cannot read {}: {e}", args.input));
                return ExitCode::FAILURE;
            }
        }
    };
    let (summary, result) = pipeline(&engine, input);
    if args.summary {
        print_summary(&summary);
    }
    if let Some(log) = audit {
        log.close();
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report(&format!("I/O failure: {e}"));
            ExitCode::FAILURE
        }
    }
}

/// The audit of a run: every entry written (the run waits for the writer rather than drop one).
fn eval_audit(
    path: &std::path::Path,
    policy: &halt_config::Policy,
    origin: &std::path::Path,
) -> Result<halt_audit::AuditLog, String> {
    let file = halt_audit::FileSink::open(path, halt_audit::Rotation::default()).map_err(|e| e.to_string())?;
    let config = halt_audit::AuditConfig {
        on_full: halt_audit::OnFull::Wait,
        policy_version: policy.version.clone(),
        ..halt_audit::AuditConfig::default()
    };
    let log = halt_audit::AuditLog::new(vec![Box::new(file)], config).map_err(|e| e.to_string())?;
    log.policy_loaded(&policy.version, &origin.display().to_string(), policy.guards.len());
    Ok(log)
}

/// One output line, to write.
#[allow(clippy::large_enum_variant, reason = "invalid lines are rare; boxing outcomes costs an allocation a line")]
enum Answer {
    Outcome(Outcome),
    Invalid { line: u64, error: String },
}

/// Answers travel to the writer in batches, so that handing them over costs little; the first
/// are smaller, growing twofold, so that output starts soon.
const BATCH: usize = 1024;
const FIRST_BATCH: usize = 64;

/// Reads calls, evaluates them in order (`Engine::evaluate_stream`, which reads and prepares
/// them on a thread of its own) and writes the answers on a third thread, in constant memory.
fn pipeline(engine: &Engine, input: Box<dyn Read + Send>) -> (Summary, std::io::Result<()>) {
    let (answer_tx, answer_rx) = std::sync::mpsc::sync_channel::<Vec<Answer>>(4);
    let read_error = Mutex::new(None);
    std::thread::scope(|scope| {
        let writer = match std::thread::Builder::new()
            .name("eval-write".into())
            .spawn_scoped(scope, move || write(&answer_rx))
        {
            Ok(w) => w,
            Err(e) => return (Summary::default(), Err(e)),
        };
        let calls = Calls { lines: Lines::new(input), line_no: 0, error: &read_error };
        let mut size = FIRST_BATCH;
        let mut batch = Vec::with_capacity(size);
        let streamed = engine.evaluate_stream(calls, |answer| {
            batch.push(match answer {
                Ok(outcome) => Answer::Outcome(outcome),
                Err((line, error)) => Answer::Invalid { line, error },
            });
            if batch.len() == size {
                size = (size * 2).min(BATCH);
                // The writer stopped on an error: it reports it.
                if answer_tx.send(std::mem::replace(&mut batch, Vec::with_capacity(size))).is_err() {
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        });
        if !batch.is_empty() {
            let _ = answer_tx.send(batch);
        }
        drop(answer_tx);
        let (summary, written) =
            writer.join().unwrap_or_else(|_| (Summary::default(), Err(std::io::Error::other("the writer failed"))));
        let read = match read_error.into_inner().unwrap_or_else(PoisonError::into_inner) {
            Some(e) => Err(e),
            None => streamed.map_err(std::io::Error::other),
        };
        (summary, read.and(written))
    })
}

/// The calls of the input, one per line: a call, or the line's number and why it is not one.
/// A read error ends them, kept in `error`.
struct Calls<'e, R> {
    lines: Lines<R>,
    line_no: u64,
    error: &'e Mutex<Option<std::io::Error>>,
}

impl<R: Read> Iterator for Calls<'_, R> {
    type Item = Result<CallContext, (u64, String)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let range = match self.lines.next_line() {
                Ok(range) => range?,
                Err(e) => {
                    *self.error.lock().unwrap_or_else(PoisonError::into_inner) = Some(e);
                    return None;
                }
            };
            self.line_no += 1;
            let line = self.line_no;
            let text = match std::str::from_utf8(&self.lines.buf[range]) {
                Err(e) => return Some(Err((line, format!("the line is not UTF-8: {e}")))),
                Ok(text) => text,
            };
            // A byte-order mark may open the first line (text written on Windows).
            let text = if line == 1 { text.strip_prefix('\u{feff}').unwrap_or(text) } else { text };
            let text = text.trim();
            if text.is_empty() {
                continue;
            }
            return Some(CallContext::from_json_str(text).map_err(|e| (line, e.to_string())));
        }
    }
}

/// The lines of a byte stream, read in large blocks and handed out where they lie (no copy,
/// and a line that is not UTF-8 is a line like any other, for the caller to refuse).
struct Lines<R> {
    input: R,
    /// Read bytes are `buf[start..end]`; it grows only to hold a line longer than itself.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    done: bool,
}

impl<R: Read> Lines<R> {
    fn new(input: R) -> Self {
        Self::with_capacity(input, 1 << 16)
    }

    fn with_capacity(input: R, capacity: usize) -> Self {
        Self { input, buf: vec![0; capacity.max(1)], start: 0, end: 0, done: false }
    }

    /// Where the next line lies in `buf`, without its newline; `None` at the end.
    fn next_line(&mut self) -> std::io::Result<Option<Range<usize>>> {
        // Where a newline may be: bytes before it were searched already.
        let mut from = self.start;
        loop {
            if let Some(i) = memchr::memchr(b'\n', &self.buf[from..self.end]) {
                let line = self.start..from + i;
                self.start = line.end + 1;
                return Ok(Some(line));
            }
            if self.done {
                // The last line, if it has no newline.
                let line = self.start..self.end;
                self.start = self.end;
                return Ok((!line.is_empty()).then_some(line));
            }
            // Keep the partial line at the front, and room after it.
            self.buf.copy_within(self.start..self.end, 0);
            (from, self.end, self.start) = (self.end - self.start, self.end - self.start, 0);
            if self.end == self.buf.len() {
                self.buf.resize(self.buf.len() * 2, 0);
            }
            match self.input.read(&mut self.buf[self.end..]) {
                Ok(0) => self.done = true,
                Ok(n) => self.end += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// Writes the answers, one line each, and counts them.
fn write(answers: &std::sync::mpsc::Receiver<Vec<Answer>>) -> (Summary, std::io::Result<()>) {
    let mut summary = Summary::default();
    let stdout = std::io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    // A batch is formatted into memory first: many small writes to a `Vec` cost far less than
    // the same writes through `io::Write` for stdout.
    let mut text = Vec::with_capacity(1 << 16);
    let (mut places, mut reasons) = (Vec::new(), Vec::new());
    let mut written = || -> std::io::Result<()> {
        for batch in answers {
            text.clear();
            for answer in batch {
                match answer {
                    Answer::Outcome(o) => write_outcome(&mut text, &o, &mut summary, &mut places, &mut reasons)?,
                    Answer::Invalid { line, error } => {
                        summary.errors += 1;
                        serde_json::to_writer(&mut text, &ErrorLine { line, error: &error })?;
                        text.push(b'\n');
                    }
                }
            }
            escape_line_breaks(&mut text);
            out.write_all(&text)?;
        }
        out.flush()
    };
    let result = written();
    (summary, result)
}

/// Where a decision of a line is written from: its guard's tally, and the decision as written
/// before when its reason is constant.
type Place = (usize, Option<usize>);

/// Writes one outcome line. The line is written by hand, field by field, because it is the
/// bulk of `eval`'s output: field names are constant text, decisions with a constant reason are
/// copied as written the first time, and strings are escaped by `serde_json` only when they
/// hold a character that needs it (the output is byte for byte what serialising the same
/// fields with `serde_json` gives).
fn write_outcome(
    out: &mut Vec<u8>,
    o: &Outcome,
    summary: &mut Summary,
    places: &mut Vec<Place>,
    reasons: &mut Vec<Option<Range<usize>>>,
) -> std::io::Result<()> {
    let decision = o.decision();
    let executed = o.is_allowed();
    places.clear();
    for (i, d) in o.decisions().iter().enumerate() {
        let tally = summary.tally(i, d.guard())?;
        places.push((tally, summary.by_guard[tally].written(d)?));
    }
    out.extend_from_slice(b"{\"call_id\":");
    json_str(out, o.call_id())?;
    out.extend_from_slice(b",\"function_name\":");
    json_str(out, o.function_name())?;
    out.extend_from_slice(b",\"decision\":\"");
    out.extend_from_slice(decision.as_str().as_bytes());
    out.extend_from_slice(if executed {
        b"\",\"executed\":true,\"risk_score\":"
    } else {
        b"\",\"executed\":false,\"risk_score\":"
    });
    json_f64(out, o.max_risk_score())?;
    out.extend_from_slice(b",\"reasons\":[");
    // Where each reason made for its call stands in the line, to copy it into `guards` below.
    reasons.clear();
    let mut first = true;
    for (d, &(tally, written)) in o.decisions().iter().zip(places.iter()) {
        if d.kind() != decision {
            reasons.push(None);
            continue;
        }
        if !std::mem::take(&mut first) {
            out.push(b',');
        }
        match written {
            Some(w) => {
                out.extend_from_slice(summary.by_guard[tally].written[w].reason());
                reasons.push(None);
            }
            None => {
                let start = out.len();
                json_str(out, d.reason())?;
                reasons.push(Some(start..out.len()));
            }
        }
    }
    out.extend_from_slice(b"],\"guards\":[");
    for (i, (d, &(tally, written))) in o.decisions().iter().zip(places.iter()).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let t = &mut summary.by_guard[tally];
        match written {
            Some(w) => out.extend_from_slice(t.written[w].entry()),
            None => {
                entry_head(out, &t.json, d.kind());
                match reasons.get(i).cloned().flatten() {
                    Some(reason) => out.extend_from_within(reason),
                    None => json_str(out, d.reason())?,
                }
                entry_tail(out, d.risk_score())?;
            }
        }
        count(&mut t.counts, d.kind());
    }
    out.push(b']');
    if let Some(args) = o.modified_arguments() {
        out.extend_from_slice(b",\"modified_arguments\":");
        serde_json::to_writer(&mut *out, args)?;
    }
    out.extend_from_slice(b"}\n");
    summary.calls += 1;
    summary.executed += u64::from(executed);
    count(&mut summary.by_decision, decision);
    Ok(())
}

/// Writes the start of an entry of `guards`, up to its reason: its guard's `name` (a JSON
/// string) and its kind.
fn entry_head(out: &mut Vec<u8>, name: &[u8], kind: DecisionKind) {
    out.extend_from_slice(b"{\"guard\":");
    out.extend_from_slice(name);
    out.extend_from_slice(b",\"decision\":\"");
    out.extend_from_slice(kind.as_str().as_bytes());
    out.extend_from_slice(b"\",\"reason\":");
}

/// Writes the rest of an entry of `guards`, after its reason.
fn entry_tail(out: &mut Vec<u8>, risk: f64) -> std::io::Result<()> {
    out.extend_from_slice(b",\"risk_score\":");
    json_f64(out, risk)?;
    out.push(b'}');
    Ok(())
}

/// Writes `s` as a JSON string.
fn json_str(out: &mut Vec<u8>, s: &str) -> std::io::Result<()> {
    if needs_escape(s.as_bytes()) {
        serde_json::to_writer(out, s)?;
    } else {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    }
    Ok(())
}

/// Whether `bytes` hold one that serde_json escapes in a string: a quote, a backslash or a
/// control character. A fold without an early exit, so that the compiler vectorises it.
fn needs_escape(bytes: &[u8]) -> bool {
    bytes.iter().fold(false, |found, &b| found | (b < 0x20) | (b == b'"') | (b == b'\\'))
}

/// Escapes the characters JSON allows raw in strings but readers of lines may take for line
/// breaks (U+2028, U+2029, U+0085), wherever they are in `text`: they can only be inside
/// strings, where `\uXXXX` means the same.
fn escape_line_breaks(text: &mut Vec<u8>) {
    const BREAKS: [(&[u8], &[u8]); 3] =
        [(b"\xe2\x80\xa8", b"\\u2028"), (b"\xe2\x80\xa9", b"\\u2029"), (b"\xc2\x85", b"\\u0085")];
    if memchr::memchr2(0xe2, 0xc2, text).is_none() {
        return;
    }
    let mut out = Vec::with_capacity(text.len() + 16);
    let mut i = 0;
    while i < text.len() {
        match BREAKS.iter().find(|(raw, _)| text[i..].starts_with(raw)) {
            Some((raw, escaped)) => {
                out.extend_from_slice(escaped);
                i += raw.len();
            }
            None => {
                out.push(text[i]);
                i += 1;
            }
        }
    }
    *text = out;
}

/// Writes `v` as serde_json does (the common scores without formatting).
fn json_f64(out: &mut Vec<u8>, v: f64) -> std::io::Result<()> {
    #[allow(clippy::float_cmp, reason = "exact values, written as serde_json writes them")]
    match v {
        0.0 if v.is_sign_positive() => out.extend_from_slice(b"0.0"),
        1.0 => out.extend_from_slice(b"1.0"),
        _ => serde_json::to_writer(out, &v)?,
    }
    Ok(())
}

#[allow(clippy::print_stderr, reason = "the summary goes to stderr, results to stdout")]
fn print_summary(s: &Summary) {
    // Kinds and guards by name, kinds only when they occurred.
    let named = |counts: &KindCounts| -> BTreeMap<&'static str, u64> {
        KINDS.iter().zip(counts).filter(|(_, n)| **n > 0).map(|(k, n)| (k.as_str(), *n)).collect()
    };
    eprintln!("calls: {}, executed: {}, invalid lines: {}", s.calls, s.executed, s.errors);
    for (decision, n) in named(&s.by_decision) {
        eprintln!("  {decision}: {n}");
    }
    let mut guards: Vec<&GuardTally> = s.by_guard.iter().collect();
    guards.sort_by(|a, b| a.name.cmp(&b.name));
    for t in guards {
        let parts: Vec<String> = named(&t.counts).iter().map(|(k, n)| format!("{k} {n}")).collect();
        eprintln!("  guard {}: {}", t.name, parts.join(", "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_written_as_serde_json_writes_them() {
        // Every character that may need escaping, at every place of strings of several
        // lengths, among characters that never need it.
        let mut specials: Vec<char> = (0u8..0x20).map(char::from).collect();
        specials.extend(['"', '\\', '\u{7f}', 'é', '\u{2028}', ' ', '!', '#', '[', ']', '~']);
        for len in [0, 1, 7, 8, 9, 15, 16, 17, 24, 31] {
            for at in 0..len.max(1) {
                for &c in &specials {
                    let s: String = (0..len).map(|i| if i == at { c } else { 'a' }).collect();
                    let mut out = Vec::new();
                    json_str(&mut out, &s).unwrap();
                    assert_eq!(out, serde_json::to_vec(&s).unwrap(), "{s:?}");
                    // And serde_json is asked only when it must be.
                    let must = s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\');
                    assert_eq!(needs_escape(s.as_bytes()), must, "{s:?}");
                }
            }
        }
    }

    /// The line `write_outcome` should write for `o`, as JSON.
    fn expected(o: &Outcome) -> serde_json::Value {
        let reasons: Vec<&str> =
            o.decisions().iter().filter(|d| d.kind() == o.decision()).map(Decision::reason).collect();
        let guards: Vec<serde_json::Value> = o
            .decisions()
            .iter()
            .map(|d| {
                serde_json::json!({"guard": d.guard(), "decision": d.kind().as_str(), "reason": d.reason(),
                    "risk_score": d.risk_score()})
            })
            .collect();
        serde_json::json!({"call_id": o.call_id(), "function_name": o.function_name(),
            "decision": o.decision().as_str(), "executed": o.is_allowed(), "risk_score": o.max_risk_score(),
            "reasons": reasons, "guards": guards})
    }

    #[test]
    fn decisions_written_once_are_copied_only_when_they_repeat_exactly() {
        const REASONS: [&str; 10] = ["r0", "r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8", "needs \"escaping\""];
        let name = halt_core::GuardName::new;
        // Constant reasons (more than a guard keeps), with several kinds and risk scores, and
        // reasons made for their call, by two guards, over and over.
        let mut lines = Vec::new();
        for round in 0..3 {
            for (i, reason) in REASONS.iter().enumerate() {
                let constant = match i % 3 {
                    0 => Decision::allow(*reason),
                    1 => Decision::deny(*reason),
                    _ => Decision::allow(*reason).with_risk(if round == 1 { 0.25 } else { 0.5 }),
                };
                let made = Decision::require_approval(format!("made {i} in round {round}"));
                let decisions = vec![constant.with_guard(name("first")), made.with_guard(name("second \u{1}"))];
                lines.push(Outcome::new(format!("c{round}-{i}"), "f".into(), decisions, &halt_core::JsonObject::new()));
            }
        }
        let (mut summary, mut places, mut reasons) = (Summary::default(), Vec::new(), Vec::new());
        for o in &lines {
            let mut out = Vec::new();
            write_outcome(&mut out, o, &mut summary, &mut places, &mut reasons).unwrap();
            assert_eq!(out.last(), Some(&b'\n'));
            let written: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(written, expected(o), "{}", String::from_utf8_lossy(&out));
        }
        let first = summary.by_guard.iter().find(|t| t.name == "first").unwrap();
        assert_eq!(first.written.len(), WRITTEN_PER_GUARD, "a guard keeps a few decisions written");
        let second = summary.by_guard.iter().find(|t| t.name != "first").unwrap();
        assert_eq!(second.written.len(), WRITTEN_PER_GUARD, "its first ones, though they never repeat");
    }

    /// Hands out its bytes a few at a time, with an interruption before each read.
    struct Trickle<'a> {
        bytes: &'a [u8],
        step: usize,
        interrupt: bool,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.interrupt = !self.interrupt;
            if self.interrupt {
                return Err(std::io::ErrorKind::Interrupted.into());
            }
            let n = self.step.min(buf.len()).min(self.bytes.len());
            buf[..n].copy_from_slice(&self.bytes[..n]);
            self.bytes = &self.bytes[n..];
            Ok(n)
        }
    }

    #[test]
    fn lines_are_found_across_reads_of_any_size() {
        let long = "x".repeat(100);
        let text = format!("a\n\nbc\r\n{long}\n\u{e9}\u{ff}\nlast");
        // A last newline ends the last line; it does not start another.
        let expected: Vec<&str> = text.split('\n').collect();
        let with_end = format!("{text}\n");
        for input in [text.as_str(), with_end.as_str()] {
            for step in [1, 2, 3, 7, 64, 1000] {
                for capacity in [1, 4, 16, 1 << 16] {
                    let trickle = Trickle { bytes: input.as_bytes(), step, interrupt: false };
                    let mut lines = Lines::with_capacity(trickle, capacity);
                    let mut found = Vec::new();
                    while let Some(range) = lines.next_line().unwrap() {
                        found.push(String::from_utf8(lines.buf[range].to_vec()).unwrap());
                    }
                    assert_eq!(found, expected, "step {step}, capacity {capacity}");
                    assert!(lines.next_line().unwrap().is_none(), "the end stays the end");
                }
            }
        }
    }

    #[test]
    fn a_failed_read_is_an_error() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("disk on fire"))
            }
        }
        let err = Lines::new(Broken).next_line().unwrap_err();
        assert_eq!(err.to_string(), "disk on fire");
    }
}
