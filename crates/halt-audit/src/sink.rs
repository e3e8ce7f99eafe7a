//! Where sealed entries go: a JSONL file (rotated, the chain carrying on across files),
//! `tracing` events, a callback, and a bounded in-memory ring that can be queried.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use crate::entry::{Entry, unseal};
use crate::query::Query;

/// Receives each sealed entry, on the audit log's writer thread.
pub trait Sink: Send + 'static {
    /// Writes one entry; `line` is its sealed JSON line, without the newline.
    ///
    /// # Errors
    /// The entry could not be written.
    fn write(&mut self, entry: &Entry, line: &str) -> io::Result<()>;

    /// Pushes out what is buffered (called when the queue runs empty).
    ///
    /// # Errors
    /// It could not.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }

    /// Where the chain stands in what this sink keeps from earlier runs, if it keeps anything:
    /// the last entry written, and whether a partly written line was cut off behind it.
    ///
    /// # Errors
    /// What it keeps cannot be read.
    fn resume(&mut self) -> io::Result<Option<(Entry, bool)>> {
        Ok(None)
    }
}

/// When a [`FileSink`] starts a new file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rotation {
    /// Once the file would pass this many bytes.
    pub max_bytes: Option<u64>,
    /// At the first entry of each new day (UTC).
    pub daily: bool,
}

/// Appends entries to a JSONL file. A rotated file is renamed `<path>.<first entry's seq>`
/// (12 digits) and a new one begun at `path`; the chain carries on, so `verify` takes the files
/// in any order. On opening, it carries on the chain from the file's last entry.
#[derive(Debug)]
pub struct FileSink {
    path: PathBuf,
    rotation: Rotation,
    file: BufWriter<File>,
    size: u64,
    first_seq: Option<u64>,
    day: Option<i64>,
}

impl FileSink {
    /// Opens (or creates) the file at `path` for appending.
    ///
    /// # Errors
    /// It cannot be opened.
    pub fn open(path: impl AsRef<Path>, rotation: Rotation) -> io::Result<Self> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).read(true).append(true).open(&path)?;
        let size = file.metadata()?.len();
        Ok(Self { path, rotation, file: BufWriter::with_capacity(1 << 16, file), size, first_seq: None, day: None })
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file.flush()?;
        let seq = self.first_seq.unwrap_or(0);
        let mut rotated = self.path.clone().into_os_string();
        rotated.push(format!(".{seq:012}"));
        std::fs::rename(&self.path, rotated)?;
        let file = OpenOptions::new().create(true).read(true).append(true).open(&self.path)?;
        self.file = BufWriter::with_capacity(1 << 16, file);
        self.size = 0;
        self.first_seq = None;
        Ok(())
    }
}

/// The day (UTC) of a time in seconds since the Unix epoch.
#[allow(clippy::cast_possible_truncation, reason = "whole days since the epoch fit")]
fn day_of(at: f64) -> i64 {
    (at / 86_400.0).floor() as i64
}

impl Sink for FileSink {
    fn write(&mut self, entry: &Entry, line: &str) -> io::Result<()> {
        let day = day_of(entry.at);
        let len = line.len() as u64 + 1;
        let too_big = self.rotation.max_bytes.is_some_and(|max| self.size + len > max);
        let new_day = self.rotation.daily && self.day.is_some_and(|d| d != day);
        if self.size > 0 && (too_big || new_day) {
            self.rotate()?;
        }
        self.file.write_all(line.as_bytes())?;
        self.file.write_all(b"\n")?;
        self.size += len;
        self.first_seq.get_or_insert(entry.seq);
        self.day = Some(day);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }

    fn resume(&mut self) -> io::Result<Option<(Entry, bool)>> {
        let file = self.file.get_mut();
        let len = file.metadata()?.len();
        if len == 0 {
            return Ok(None);
        }
        // The last line is within the file's tail (an entry is far smaller than this).
        let tail_len = len.min(1 << 20);
        file.seek(SeekFrom::Start(len - tail_len))?;
        let mut tail = Vec::with_capacity(usize::try_from(tail_len).unwrap_or(0));
        file.read_to_end(&mut tail)?;
        // A line cut short by a crash is dropped: the file is cut back to the last whole line.
        let cut = tail.last() != Some(&b'\n');
        let whole = match tail.iter().rposition(|b| *b == b'\n') {
            Some(end) => end + 1,
            None => 0,
        };
        if cut {
            file.set_len(len - tail_len + whole as u64)?;
            self.size = len - tail_len + whole as u64;
        }
        let text = String::from_utf8_lossy(&tail[..whole]);
        let last = text.lines().last().map(unseal);
        let first_seq = {
            file.seek(SeekFrom::Start(0))?;
            let mut head = String::new();
            io::BufReader::new(&mut *file).take(1 << 20).read_to_string(&mut head).ok();
            head.lines().next().and_then(|l| unseal(l).ok()).map(|e| e.seq)
        };
        self.first_seq = first_seq;
        match last {
            Some(Ok(entry)) => {
                self.day = Some(day_of(entry.at));
                Ok(Some((entry, cut)))
            }
            Some(Err(_)) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: the last line is not an audit entry; not appending to it", self.path.display()),
            )),
            None => Ok(None),
        }
    }
}

/// Emits each entry as a `tracing` event (target `agenthalt::audit`, level INFO).
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingSink;

impl Sink for TracingSink {
    fn write(&mut self, entry: &Entry, line: &str) -> io::Result<()> {
        tracing::info!(target: "agenthalt::audit", seq = entry.seq, entry = line);
        Ok(())
    }
}

/// What a [`CallbackSink`] calls.
type Callback = dyn FnMut(&Entry) -> io::Result<()> + Send;

/// Hands each entry to a function of yours (a queue, a SIEM).
pub struct CallbackSink(Box<Callback>);

impl CallbackSink {
    /// A sink calling `f` with each entry; an error counts as a failed write.
    pub fn new(f: impl FnMut(&Entry) -> io::Result<()> + Send + 'static) -> Self {
        Self(Box::new(f))
    }
}

impl std::fmt::Debug for CallbackSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CallbackSink")
    }
}

impl Sink for CallbackSink {
    fn write(&mut self, entry: &Entry, _: &str) -> io::Result<()> {
        (self.0)(entry)
    }
}

/// The last entries, kept in memory to be queried (the dashboard's audit view).
#[derive(Debug, Clone)]
pub struct Ring {
    entries: Arc<Mutex<VecDeque<Entry>>>,
    capacity: usize,
}

impl Ring {
    /// A ring keeping the last `capacity` entries.
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: Arc::new(Mutex::new(VecDeque::with_capacity(capacity.min(1 << 16)))),
            capacity: capacity.max(1),
        }
    }

    /// The entries kept that `query` selects, oldest first.
    #[must_use]
    pub fn query(&self, query: &Query) -> Vec<Entry> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        query.select(entries.iter().cloned())
    }

    /// How many entries are kept now.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Whether it keeps none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Sink for Ring {
    fn write(&mut self, entry: &Entry, _: &str) -> io::Result<()> {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() == self.capacity {
            entries.pop_front();
        }
        entries.push_back(entry.clone());
        Ok(())
    }
}
