//! What the store keeps under one key: counters, sliding windows (with their recent part and
//! cooldown), records, and the reservations pending on them.

use halt_core::Timestamp;
use halt_core::store::{CounterSpec, Refusal, ReserveOutcome, StoreError, Window, sliding_retry_at};
use std::collections::VecDeque;
use std::time::Duration;

use crate::Parts;

#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) value: Value,
    pub(crate) expires_at: Timestamp,
    /// Whether the key has its item in the expiry queue.
    pub(crate) queued: bool,
    /// A fresh number each time a value is created or reset after expiring (never reused, even
    /// across removals), so an old reservation never takes its amount back from a new value.
    pub(crate) generation: u64,
}

#[derive(Debug)]
pub(crate) enum Value {
    Counter(i64),
    Sliding(Sliding),
    Record(Vec<u8>),
    Streak { mark: u64, total: i64 },
}

#[derive(Debug, Default)]
pub(crate) struct Sliding {
    pub(crate) events: VecDeque<Event>,
    pub(crate) sum: i64,
    /// What a window with a recent limit keeps besides (boxed: most windows have none, and a
    /// store holds up to a million of them).
    pub(crate) recent: Option<Box<Recent>>,
}

/// The state of a window's [`RecentLimit`](super::RecentLimit).
#[derive(Debug, Default)]
pub(crate) struct Recent {
    /// The recent part last asked for, kept up to date as events come and go, so that asking
    /// again costs only the events that left it since.
    pub(crate) part: Option<RecentPart>,
    /// Until when the window refuses every reservation (a cooldown its recent limit started).
    pub(crate) cooling_until: Option<Timestamp>,
}

/// The events of a window within `width` of `at`: from index `start` on, summing to `sum`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecentPart {
    pub(crate) width: Duration,
    pub(crate) at: Timestamp,
    pub(crate) start: usize,
    pub(crate) sum: i64,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Event {
    pub(crate) at: Timestamp,
    pub(crate) amount: i64,
    /// The reservation that added it; 0 once merged or added unconditionally.
    pub(crate) reservation: u64,
}

#[derive(Debug)]
pub(crate) struct Pending {
    /// What it added.
    pub(crate) parts: Parts,
    /// When it lapses, releasing its amounts.
    pub(crate) hold_until: Timestamp,
}

impl Value {
    /// A counter's or window's total as read through `window` (a record counts nothing; a run
    /// read with another mark is empty).
    pub(crate) fn total(&self, window: Window) -> i64 {
        match self {
            Self::Counter(t) => (*t).max(0),
            Self::Sliding(s) => s.total(),
            Self::Streak { mark, total } => match window {
                Window::Streak { mark: m, .. } if m == *mark => (*total).max(0),
                _ => 0,
            },
            Self::Record(_) => 0,
        }
    }

    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::Counter(_) => "counter",
            Self::Sliding(_) => "sliding window",
            Self::Record(_) => "record",
            Self::Streak { .. } => "streak",
        }
    }

    /// An empty value for counters of `window`.
    pub(crate) fn empty(window: Window) -> Self {
        match window {
            Window::Sliding { .. } => Self::Sliding(Sliding::default()),
            Window::Streak { mark, .. } => Self::Streak { mark, total: 0 },
            Window::Bucket { .. } | Window::Idle { .. } => Self::Counter(0),
        }
    }
}

/// Makes an existing entry live for a counter of `window`: an expired one starts over as an
/// empty value of the right kind (a new generation); a live one of another kind is an error; a
/// window drops the events that aged out.
pub(crate) fn refresh(
    e: &mut Entry,
    key: &str,
    window: Window,
    now: Timestamp,
    last_generation: &mut u64,
) -> Result<(), StoreError> {
    if e.expires_at <= now {
        e.value = Value::empty(window);
        *last_generation += 1;
        e.generation = *last_generation;
        return Ok(());
    }
    let fits = match window {
        Window::Sliding { .. } => matches!(e.value, Value::Sliding(_)),
        Window::Streak { .. } => matches!(e.value, Value::Streak { .. }),
        Window::Bucket { .. } | Window::Idle { .. } => matches!(e.value, Value::Counter(_)),
    };
    if !fits {
        let expected = Value::empty(window).kind();
        return Err(StoreError::WrongKind { key: key.to_owned(), expected, found: e.value.kind() });
    }
    if let (Window::Sliding { width }, Value::Sliding(s)) = (window, &mut e.value) {
        s.prune(now, width);
    }
    Ok(())
}

/// An amount being added to a live entry.
pub(crate) struct Added {
    /// Through which window.
    pub(crate) window: Window,
    /// When the key may expire after this addition.
    pub(crate) expiry: Timestamp,
    pub(crate) amount: i64,
    /// The reservation adding it (0: none).
    pub(crate) reservation: u64,
    pub(crate) now: Timestamp,
    /// The most events a window keeps.
    pub(crate) cap: usize,
}

impl Added {
    pub(crate) fn new(window: Window, amount: i64, reservation: u64, now: Timestamp, cap: usize) -> Self {
        Self { window, expiry: window.key_expiry(now), amount, reservation, now, cap }
    }

    /// Adds to `e`; returns its new total, its generation, and when to queue it for expiry if
    /// it was not queued.
    pub(crate) fn to(&self, e: &mut Entry, last_generation: &mut u64) -> (i64, u64, Option<Timestamp>) {
        e.expires_at = e.expires_at.max(self.expiry);
        let schedule = (!e.queued).then_some(e.expires_at);
        e.queued = true;
        match &mut e.value {
            Value::Counter(t) => *t = t.saturating_add(self.amount).max(0),
            Value::Sliding(s) => {
                s.push(Event { at: self.now, amount: self.amount, reservation: self.reservation }, self.cap);
            }
            Value::Streak { mark, total } => match self.window {
                Window::Streak { mark: m, .. } if m != *mark => {
                    // Another mark starts a new run: a new value, which no older reservation
                    // takes anything back from.
                    (*mark, *total) = (m, self.amount.max(0));
                    *last_generation += 1;
                    e.generation = *last_generation;
                }
                _ => *total = total.saturating_add(self.amount).max(0),
            },
            Value::Record(_) => {}
        }
        (e.value.total(self.window), e.generation, schedule)
    }
}

impl Entry {
    /// Makes this entry the record `bytes`, in place (the old buffer when it fits), expiring at
    /// `expires_at`; says whether to queue it for expiry.
    pub(crate) fn rewrite(&mut self, bytes: &[u8], expires_at: Timestamp) -> bool {
        match &mut self.value {
            Value::Record(v) => {
                v.clear();
                v.extend_from_slice(bytes);
            }
            other => *other = Value::Record(bytes.to_vec()),
        }
        self.expires_at = expires_at;
        let schedule = !self.queued && expires_at < Timestamp::MAX;
        self.queued |= schedule;
        schedule
    }

    /// The live record here, if any (expired: none); another kind of value is an error.
    pub(crate) fn record(&self, key: &str, now: Timestamp) -> Result<Option<&[u8]>, StoreError> {
        match &self.value {
            _ if self.expires_at <= now => Ok(None),
            Value::Record(v) => Ok(Some(v)),
            value => Err(StoreError::WrongKind { key: key.to_owned(), expected: "record", found: value.kind() }),
        }
    }

    /// When `c`'s amount could fit under `limit`: for a window, when enough of it ages out; for
    /// a bucket, when it ends.
    pub(crate) fn retry_at(&self, c: &CounterSpec, limit: i64) -> Option<Timestamp> {
        match (c.window, &self.value) {
            (Window::Sliding { width }, Value::Sliding(s)) => s.retry_at(width, c.amount, limit),
            (Window::Bucket { .. }, _) => Some(self.expires_at),
            _ => None,
        }
    }
}

pub(crate) fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

impl Sliding {
    /// Drops events older than `width` before `now` (an event exactly `width` old stays).
    pub(crate) fn prune(&mut self, now: Timestamp, width: Duration) {
        let cutoff = now.as_micros().saturating_sub(micros(width));
        while self.events.front().is_some_and(|e| e.at.as_micros() < cutoff) {
            self.pop_front();
        }
    }

    pub(crate) fn pop_front(&mut self) -> Option<Event> {
        let e = self.events.pop_front()?;
        self.sum -= e.amount;
        if let Some(r) = self.part_mut() {
            if r.start > 0 {
                r.start -= 1;
            } else {
                r.sum -= e.amount;
            }
        }
        Some(e)
    }

    pub(crate) fn total(&self) -> i64 {
        self.sum.max(0)
    }

    pub(crate) fn push(&mut self, event: Event, cap: usize) {
        self.sum = self.sum.saturating_add(event.amount);
        if let Some(recent) = &mut self.recent {
            match &mut recent.part {
                // A new event falls in the recent part unless time went back.
                Some(r) if event.at >= r.at => r.sum = r.sum.saturating_add(event.amount),
                part => *part = None,
            }
        }
        self.events.push_back(event);
        while self.events.len() > cap.max(2) {
            // Merge the two oldest: the sum is unchanged and the merged event ages out later
            // (into the recent part, when the second one is in it).
            if let Some(a) = self.pop_front()
                && let Some(b) = self.events.front_mut()
            {
                b.amount = b.amount.saturating_add(a.amount);
                b.reservation = 0;
                self.sum = self.sum.saturating_add(a.amount);
                if let Some(r) = self.part_mut()
                    && r.start == 0
                {
                    r.sum = r.sum.saturating_add(a.amount);
                }
            }
        }
    }

    /// Takes back the event a reservation added, if still here.
    pub(crate) fn remove_reservation(&mut self, id: u64) {
        let Some(pos) = self.events.iter().position(|ev| ev.reservation == id) else { return };
        let Some(ev) = self.events.remove(pos) else { return };
        self.sum -= ev.amount;
        if let Some(r) = self.part_mut() {
            if pos < r.start {
                r.start -= 1;
            } else {
                r.sum -= ev.amount;
            }
        }
    }

    /// When enough events age out for `amount` more to fit under `limit`.
    pub(crate) fn retry_at(&self, width: Duration, amount: i64, limit: i64) -> Option<Timestamp> {
        sliding_retry_at(self.events.iter().map(|e| (e.at, e.amount)), self.total(), width, amount, limit)
    }

    /// The part within `width` of `now`: brought up to date from the last one asked for when it
    /// has the same width and is not later, counted again otherwise.
    pub(crate) fn recent(&mut self, now: Timestamp, width: Duration) -> RecentPart {
        let cutoff = now.as_micros().saturating_sub(micros(width));
        let r = match self.recent.as_ref().and_then(|x| x.part) {
            Some(mut r) if r.width == width && r.at <= now => {
                while let Some(e) = self.events.get(r.start).filter(|e| e.at.as_micros() < cutoff) {
                    r.sum -= e.amount;
                    r.start += 1;
                }
                r.at = now;
                r
            }
            _ => {
                let inside = self.events.iter().rev().take_while(|e| e.at.as_micros() >= cutoff);
                let (n, sum) = inside.fold((0, 0_i64), |(n, t), e| (n + 1, t.saturating_add(e.amount)));
                RecentPart { width, at: now, start: self.events.len() - n, sum }
            }
        };
        self.recent.get_or_insert_default().part = Some(r);
        r
    }

    pub(crate) fn part_mut(&mut self) -> Option<&mut RecentPart> {
        self.recent.as_mut().and_then(|x| x.part.as_mut())
    }
}

/// How `c`'s recent limit refuses it, over the live entry `e` (`None`: an empty window): the
/// refusal to answer at `index`, or `None` when it fits. A refusal starts the limit's cooldown on
/// `e` (the caller makes a missing entry first when a cooldown is to start).
pub(crate) fn refused_recently(
    c: &CounterSpec,
    e: Option<&mut Entry>,
    index: usize,
    now: Timestamp,
) -> Option<ReserveOutcome> {
    let recent = c.recent?;
    let (current, retry_at) = match e {
        Some(Entry { value: Value::Sliding(s), expires_at, .. }) => {
            let part = s.recent(now, recent.width);
            let current = part.sum.max(0);
            if current.saturating_add(c.amount) <= recent.limit {
                return None;
            }
            let events = s.events.range(part.start..).map(|e| (e.at, e.amount));
            let retry_at = sliding_retry_at(events, current, recent.width, c.amount, recent.limit);
            if !recent.cooldown.is_zero() {
                let until = now.saturating_add(recent.cooldown);
                s.recent.get_or_insert_default().cooling_until = Some(until);
                // The window lives at least as long as its cooldown (its expiry item is re-queued
                // when due).
                *expires_at = (*expires_at).max(until);
            }
            (current, retry_at)
        }
        _ => (c.amount > recent.limit).then_some((0, None))?,
    };
    Some(ReserveOutcome::Rejected { index, current, limit: recent.limit, retry_at, by: Refusal::Recent })
}

/// The refusal of a reservation on a window in its cooldown (`e` live), if it is.
pub(crate) fn cooling(e: &Entry, index: usize, now: Timestamp) -> Option<ReserveOutcome> {
    let Value::Sliding(s) = &e.value else { return None };
    let until = s.recent.as_ref()?.cooling_until?;
    (now < until).then_some(ReserveOutcome::Rejected {
        index,
        current: 0,
        limit: 0,
        retry_at: Some(until),
        by: Refusal::Cooldown,
    })
}

/// Whether `c`'s recent limit refuses it on an empty window, and would start a cooldown there.
pub(crate) fn cools_when_absent(c: &CounterSpec) -> bool {
    c.recent.is_some_and(|r| !r.cooldown.is_zero() && c.amount > r.limit)
}
