//! Verifying a chain across its files: every line sealed, in order, each following the one
//! before it, from the chain's first entry on, with no file missing and no gap.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::entry::{Entry, EntryKind, GENESIS, LineError, unseal};

/// A chain that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// How many entries.
    pub entries: u64,
    /// How many files.
    pub files: usize,
    /// The chain's id.
    pub chain: String,
    /// The hash of its last entry: keep it elsewhere, and a later cut of the chain's end shows.
    pub head: String,
}

/// How a chain broke.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// A file holds nothing.
    Empty,
    /// A file cannot be read.
    Unreadable(String),
    /// A line is not an audit entry.
    NotAnEntry,
    /// A line was changed after it was written.
    Edited,
    /// Entries are missing before this line: they were deleted.
    Dropped {
        /// How many.
        missing: u64,
    },
    /// This line is out of order.
    Reordered,
    /// The last line was cut short.
    Truncated,
    /// The log records that entries were lost here.
    Gap {
        /// How many.
        lost: u64,
    },
    /// The line belongs to another chain.
    OtherChain,
    /// The chain does not begin here: the files before this one were not given, or are lost.
    NotTheStart {
        /// The first entry's place in its chain.
        seq: u64,
    },
    /// A whole file is missing before this one.
    MissingFile {
        /// The entries that would be in it.
        from: u64,
        /// Up to here.
        to: u64,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("the file is empty"),
            Self::Unreadable(e) => write!(f, "cannot be read: {e}"),
            Self::NotAnEntry => f.write_str("not an audit entry"),
            Self::Edited => f.write_str("edited: the entry does not match its hash"),
            Self::Dropped { missing } => {
                write!(f, "dropped: {missing} entr{} missing before this line", plural(*missing))
            }
            Self::Reordered => f.write_str("reordered: this entry is out of order"),
            Self::Truncated => f.write_str("truncated: the last line is cut short"),
            Self::Gap { lost } => write!(f, "a gap: {lost} entr{} lost here (the audit queue was full)", plural(*lost)),
            Self::OtherChain => f.write_str("from another chain"),
            Self::NotTheStart { seq } => {
                write!(f, "the chain does not start here (this is entry {seq}): give the files before it")
            }
            Self::MissingFile { from, to } => write!(f, "a file is missing before this one (entries {from} to {to})"),
        }
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "y" } else { "ies" }
}

/// Where a chain broke, and how.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}: {problem}", file.display())]
pub struct Broken {
    /// The file.
    pub file: PathBuf,
    /// The line (from 1; 0 for the file as a whole).
    pub line: usize,
    /// How.
    pub problem: Problem,
}

struct File {
    path: PathBuf,
    text: String,
    first_seq: u64,
}

/// Verifies the files of one chain, in any order (they are put in the chain's order by their
/// first entries). A file that is empty, unreadable or does not begin with an entry is reported
/// as it is found.
///
/// # Errors
/// The first place the chain breaks, and how.
pub fn verify(paths: &[impl AsRef<Path>]) -> Result<Verified, Broken> {
    let mut files = Vec::with_capacity(paths.len());
    for path in paths {
        let path = path.as_ref().to_path_buf();
        let broken = |line, problem| Broken { file: path.clone(), line, problem };
        let text = std::fs::read_to_string(&path).map_err(|e| broken(0, Problem::Unreadable(e.to_string())))?;
        let Some(first) = text.lines().next() else { return Err(broken(0, Problem::Empty)) };
        let first_seq = match unseal(first) {
            Ok(e) => e.seq,
            Err(_) if !text.contains('\n') => return Err(broken(1, Problem::Truncated)),
            Err(LineError::Edited) => return Err(broken(1, Problem::Edited)),
            Err(LineError::NotEntry) => return Err(broken(1, Problem::NotAnEntry)),
        };
        files.push(File { path, text, first_seq });
    }
    files.sort_by_key(|f| f.first_seq);
    let mut last: Option<Entry> = None;
    let mut entries = 0u64;
    for (index, file) in files.iter().enumerate() {
        let broken = |line, problem| Broken { file: file.path.clone(), line, problem };
        let lines: Vec<&str> = file.text.split_inclusive('\n').collect();
        for (i, raw) in lines.iter().enumerate() {
            let number = i + 1;
            let Some(line) = raw.strip_suffix('\n') else {
                // Every entry ends its line: one that does not was cut short.
                return Err(broken(number, Problem::Truncated));
            };
            let entry = match unseal(line) {
                Ok(e) => e,
                Err(LineError::Edited) => return Err(broken(number, Problem::Edited)),
                Err(LineError::NotEntry) => return Err(broken(number, Problem::NotAnEntry)),
            };
            match &last {
                None => {
                    if entry.seq != 0 || entry.prev != GENESIS {
                        return Err(broken(number, Problem::NotTheStart { seq: entry.seq }));
                    }
                }
                Some(before) => {
                    if entry.chain != before.chain {
                        return Err(broken(number, Problem::OtherChain));
                    }
                    let expected = before.seq + 1;
                    if entry.seq > expected {
                        if i == 0 && index > 0 {
                            return Err(broken(0, Problem::MissingFile { from: expected, to: entry.seq - 1 }));
                        }
                        let next_is_expected = lines
                            .get(i + 1)
                            .and_then(|l| unseal(l.trim_end_matches('\n')).ok())
                            .is_some_and(|n| n.seq == expected);
                        return Err(broken(
                            number,
                            if next_is_expected {
                                Problem::Reordered
                            } else {
                                Problem::Dropped { missing: entry.seq - expected }
                            },
                        ));
                    }
                    if entry.seq < expected {
                        return Err(broken(number, Problem::Reordered));
                    }
                    if entry.prev != before.hash {
                        // In its place, but not after the entry before it: that one was replaced.
                        return Err(broken(number.saturating_sub(1).max(1), Problem::Edited));
                    }
                }
            }
            if entry.kind == Some(EntryKind::Gap) {
                return Err(broken(number, Problem::Gap { lost: entry.lost.unwrap_or(0) }));
            }
            entries += 1;
            last = Some(entry);
        }
    }
    let last = last.unwrap_or_default();
    Ok(Verified { entries, files: files.len(), chain: last.chain, head: last.hash })
}
