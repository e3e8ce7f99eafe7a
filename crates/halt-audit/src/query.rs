//! Selecting entries: by function (glob), decision, guard, agent, session and time, up to a
//! limit; over the in-memory ring or over files.

use std::path::Path;

use halt_core::names::{self, NamePatterns};

use crate::entry::{Entry, unseal};

/// Which entries to select. Empty fields select everything.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// Functions matching these patterns (normalised, as guards match them).
    pub function: Option<NamePatterns>,
    /// Only this final decision (`allow`, `modify`, `require_approval`, `deny`).
    pub decision: Option<String>,
    /// Only entries in which this guard decided.
    pub guard: Option<String>,
    /// Only this agent.
    pub agent_id: Option<String>,
    /// Only this session.
    pub session_id: Option<String>,
    /// From this time on (seconds since the Unix epoch).
    pub since: Option<f64>,
    /// Before this time.
    pub until: Option<f64>,
    /// At most this many: the latest ones.
    pub limit: Option<usize>,
}

impl Query {
    /// Whether `entry` is selected (the limit aside).
    #[must_use]
    pub fn matches(&self, entry: &Entry) -> bool {
        let function_ok = self
            .function
            .as_ref()
            .is_none_or(|p| entry.function.as_deref().is_some_and(|f| p.is_match(&names::normalize(f))));
        function_ok
            && self.decision.as_ref().is_none_or(|d| entry.decision.as_ref() == Some(d))
            && self.guard.as_ref().is_none_or(|g| entry.guards.iter().any(|e| &e.guard == g))
            && self.agent_id.as_ref().is_none_or(|a| entry.agent_id.as_ref() == Some(a))
            && self.session_id.as_ref().is_none_or(|s| entry.session_id.as_ref() == Some(s))
            && self.since.is_none_or(|t| entry.at >= t)
            && self.until.is_none_or(|t| entry.at < t)
    }

    /// The entries of `entries` it selects, in their order; with a limit, the last ones.
    pub fn select(&self, entries: impl Iterator<Item = Entry>) -> Vec<Entry> {
        let mut out: Vec<Entry> = entries.filter(|e| self.matches(e)).collect();
        if let Some(limit) = self.limit
            && out.len() > limit
        {
            out.drain(..out.len() - limit);
        }
        out
    }

    /// The entries of the files at `paths` it selects, in chain order. Lines that are not sealed
    /// entries (edited, cut short) are left out and counted.
    ///
    /// # Errors
    /// A file cannot be read.
    pub fn over_files(&self, paths: &[impl AsRef<Path>]) -> std::io::Result<(Vec<Entry>, usize)> {
        let mut all = Vec::new();
        let mut skipped = 0;
        for path in paths {
            let text = std::fs::read_to_string(path)?;
            for line in text.lines() {
                match unseal(line) {
                    Ok(e) => all.push(e),
                    Err(_) => skipped += 1,
                }
            }
        }
        all.sort_by_key(|e| e.seq);
        Ok((self.select(all.into_iter()), skipped))
    }
}
