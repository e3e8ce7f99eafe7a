//! `agenthalt audit verify` and `agenthalt audit query`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use halt_audit::{Entry, Query, verify};
use halt_core::names::NamePatterns;

use crate::report;

/// `agenthalt audit ...`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum AuditCommand {
    /// Check the hash chain of audit files: OK with the entry count, or the first broken line and
    /// how it broke (edited, dropped, reordered, truncated, a gap, another chain, a missing file).
    #[command(after_help = "Examples:
  agenthalt audit verify /var/log/agenthalt/audit.jsonl*

The files may be given in any order (rotated ones included).
Exit status: 0 when the chain is whole, 1 when it is broken (the place on stderr).")]
    Verify {
        /// The audit files of one chain.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print the audit entries that match, as JSONL (or a table).
    #[command(after_help = "Examples:
  agenthalt audit query audit.jsonl* --decision deny --function 'delete_*' --since 1h
  agenthalt audit query audit.jsonl --agent bot-7 --limit 20 --table")]
    Query(QueryArgs),
}

/// Filters of `agenthalt audit query`.
#[derive(Debug, clap::Args)]
pub(crate) struct QueryArgs {
    /// The audit files.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Only this final decision: allow, modify, require_approval or deny.
    #[arg(long)]
    decision: Option<String>,
    /// Only functions matching this glob (compared normalised).
    #[arg(long)]
    function: Option<String>,
    /// Only entries in which this guard decided.
    #[arg(long)]
    guard: Option<String>,
    /// Only this agent.
    #[arg(long)]
    agent: Option<String>,
    /// Only this session.
    #[arg(long)]
    session: Option<String>,
    /// From this time on: a duration back from now (`90s`, `15m`, `1h`, `2d`) or seconds since
    /// the Unix epoch.
    #[arg(long)]
    since: Option<String>,
    /// Before this time (same forms).
    #[arg(long)]
    until: Option<String>,
    /// At most this many (the latest).
    #[arg(long)]
    limit: Option<usize>,
    /// A table instead of JSONL.
    #[arg(long)]
    table: bool,
}

pub(crate) fn run(command: &AuditCommand) -> ExitCode {
    match command {
        AuditCommand::Verify { files } => match verify(files) {
            Ok(v) => {
                let line =
                    format!("OK: {} entries in {} file(s), chain {}, head {}\n", v.entries, v.files, v.chain, v.head);
                let _ = std::io::stdout().lock().write_all(line.as_bytes());
                ExitCode::SUCCESS
            }
            Err(broken) => {
                report(&broken);
                ExitCode::FAILURE
            }
        },
        AuditCommand::Query(args) => query(args),
    }
}

fn query(args: &QueryArgs) -> ExitCode {
    let query = match build(args) {
        Ok(q) => q,
        Err(e) => {
            report(&e);
            return ExitCode::from(2);
        }
    };
    let (entries, skipped) = match query.over_files(&args.files) {
        Ok(found) => found,
        Err(e) => {
            report(&format!("cannot read the audit files: {e}"));
            return ExitCode::FAILURE;
        }
    };
    if skipped > 0 {
        report(&format!(
            "warning: {skipped} line(s) are not sealed entries and were left out (run `agenthalt audit verify`)"
        ));
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let written = if args.table { table(&mut out, &entries) } else { jsonl(&mut out, &entries) };
    match written.and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report(&format!("I/O failure: {e}"));
            ExitCode::FAILURE
        }
    }
}

fn build(args: &QueryArgs) -> Result<Query, String> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs_f64();
    let function = match &args.function {
        Some(p) => Some(NamePatterns::new([p]).map_err(|e| format!("--function: {e}"))?),
        None => None,
    };
    if let Some(d) = &args.decision
        && !["allow", "modify", "require_approval", "deny"].contains(&d.as_str())
    {
        return Err(format!("--decision: `{d}` is not allow, modify, require_approval or deny"));
    }
    Ok(Query {
        function,
        decision: args.decision.clone(),
        guard: args.guard.clone(),
        agent_id: args.agent.clone(),
        session_id: args.session.clone(),
        since: args.since.as_deref().map(|s| time(s, now)).transpose().map_err(|e| format!("--since: {e}"))?,
        until: args.until.as_deref().map(|s| time(s, now)).transpose().map_err(|e| format!("--until: {e}"))?,
        limit: args.limit,
    })
}

/// `90s`, `15m`, `1h`, `2d` back from `now`, or seconds since the Unix epoch.
fn time(text: &str, now: f64) -> Result<f64, String> {
    let bad = || format!("`{text}` is neither a duration (90s, 15m, 1h, 2d) nor seconds since the epoch");
    let t = text.trim();
    let unit = match t.chars().last() {
        Some('s') => 1.0,
        Some('m') => 60.0,
        Some('h') => 3600.0,
        Some('d') => 86_400.0,
        _ => {
            let at: f64 = t.parse().map_err(|_| bad())?;
            return if at.is_finite() && at >= 0.0 { Ok(at) } else { Err(bad()) };
        }
    };
    let n: f64 = t[..t.len() - 1].parse().map_err(|_| bad())?;
    if !n.is_finite() || n < 0.0 || !t[..t.len() - 1].bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(bad());
    }
    Ok(now - n * unit)
}

fn jsonl(out: &mut impl Write, entries: &[Entry]) -> std::io::Result<()> {
    for e in entries {
        serde_json::to_writer(&mut *out, e)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

fn table(out: &mut impl Write, entries: &[Entry]) -> std::io::Result<()> {
    writeln!(
        out,
        "{:>8}  {:<19}  {:<17}  {:<24}  {:<16}  {:<12}  reason",
        "seq", "time (UTC)", "kind", "function", "decision", "agent"
    )?;
    for e in entries {
        let kind = e.kind.map_or("-", halt_audit::EntryKind::as_str);
        let reason = e
            .guards
            .iter()
            .find(|g| Some(&g.decision) == e.decision.as_ref())
            .map(|g| g.reason.as_str())
            .or(e.approver_reason.as_deref())
            .unwrap_or("");
        writeln!(
            out,
            "{:>8}  {:<19}  {:<17}  {:<24}  {:<16}  {:<12}  {}",
            e.seq,
            utc(e.at),
            kind,
            clip(e.function.as_deref().unwrap_or("-"), 24),
            e.decision.as_deref().or(e.approved.map(|a| if a { "approved" } else { "refused" })).unwrap_or("-"),
            clip(e.agent_id.as_deref().unwrap_or("-"), 12),
            clip(reason, 80),
        )?;
    }
    Ok(())
}

/// `at` as `YYYY-MM-DD HH:MM:SS` (UTC), from the timestamp's own formatting.
fn utc(at: f64) -> String {
    halt_core::Timestamp::from_secs_f64(at)
        .map_or_else(|| "-".to_owned(), |t| t.to_string()[..19].replacen('T', " ", 1))
}

/// `s` cut to `n` characters, control characters escaped.
fn clip(s: &str, n: usize) -> String {
    let clean: String =
        s.chars().flat_map(|c| if c.is_control() { c.escape_default().collect::<Vec<_>>() } else { vec![c] }).collect();
    if clean.chars().count() <= n { clean } else { clean.chars().take(n - 1).chain(['…']).collect() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_durations_back_or_epoch_seconds() {
        assert_eq!(time("90s", 1000.0), Ok(910.0));
        assert_eq!(time("15m", 1000.0), Ok(100.0));
        assert_eq!(time("1h", 7200.0), Ok(3600.0));
        assert_eq!(time("2d", 200_000.0), Ok(27_200.0));
        assert_eq!(time("1800000000", 0.0), Ok(1_800_000_000.0));
        for bad in ["", "h", "-1h", "1x", "NaNh", "nan", "1e400", "1 h", "inf"] {
            assert!(time(bad, 0.0).is_err(), "{bad:?}");
        }
        assert_eq!(utc(0.0), "1970-01-01 00:00:00");
        assert_eq!(utc(1_800_000_000.0), "2027-01-15 08:00:00");
        assert_eq!(clip("a\u{1b}[2Jb", 40), "a\\u{1b}[2Jb");
    }
}
