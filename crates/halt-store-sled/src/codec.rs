//! The binary form of what the store keeps. Every decode checks lengths: a corrupted value is an
//! error naming its key, never a panic.

use halt_core::Timestamp;

/// A counter, window or record, with its expiry and generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) expires_at: Timestamp,
    /// Bumped each time an expired value is reset, so an old reservation never takes its amount
    /// back from a new value.
    pub(crate) generation: u64,
    pub(crate) value: Value,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    Counter(i64),
    /// A window's events, and until when it refuses every reservation (its cooldown).
    Sliding(Vec<Event>, Option<Timestamp>),
    Record(Vec<u8>),
    /// A run: its mark and total.
    Streak {
        mark: u64,
        total: i64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Event {
    pub(crate) at: Timestamp,
    pub(crate) amount: i64,
    /// The reservation that added it; 0 once merged or added unconditionally.
    pub(crate) reservation: u64,
}

/// A pending reservation: when it lapses, and what it added where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pending {
    pub(crate) hold_until: Timestamp,
    pub(crate) parts: Vec<(String, i64, u64)>,
}

impl Value {
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::Counter(_) => "counter",
            Self::Sliding(..) => "sliding window",
            Self::Record(_) => "record",
            Self::Streak { .. } => "streak",
        }
    }
}

/// Reads fixed-size fields off a byte slice.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], &'static str> {
        if self.0.len() < n {
            return Err("truncated value");
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, &'static str> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, &'static str> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().map_err(|_| "truncated value")?))
    }

    fn i64(&mut self) -> Result<i64, &'static str> {
        Ok(i64::from_be_bytes(self.take(8)?.try_into().map_err(|_| "truncated value")?))
    }

    fn u64(&mut self) -> Result<u64, &'static str> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().map_err(|_| "truncated value")?))
    }
}

const COUNTER: u8 = 1;
const SLIDING: u8 = 2;
const RECORD: u8 = 3;
const STREAK: u8 = 4;
/// A sliding window in its cooldown: the cooldown's end, then the events as for `SLIDING`.
const COOLING: u8 = 5;

impl Entry {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32);
        let kind = match self.value {
            Value::Counter(_) => COUNTER,
            Value::Sliding(_, None) => SLIDING,
            Value::Sliding(_, Some(_)) => COOLING,
            Value::Record(_) => RECORD,
            Value::Streak { .. } => STREAK,
        };
        out.push(kind);
        out.extend_from_slice(&self.expires_at.as_micros().to_be_bytes());
        out.extend_from_slice(&self.generation.to_be_bytes());
        match &self.value {
            Value::Counter(t) => out.extend_from_slice(&t.to_be_bytes()),
            Value::Sliding(events, cooling) => {
                if let Some(until) = cooling {
                    out.extend_from_slice(&until.as_micros().to_be_bytes());
                }
                out.extend_from_slice(&u32::try_from(events.len()).unwrap_or(u32::MAX).to_be_bytes());
                for e in events {
                    out.extend_from_slice(&e.at.as_micros().to_be_bytes());
                    out.extend_from_slice(&e.amount.to_be_bytes());
                    out.extend_from_slice(&e.reservation.to_be_bytes());
                }
            }
            Value::Record(bytes) => out.extend_from_slice(bytes),
            Value::Streak { mark, total } => {
                out.extend_from_slice(&mark.to_be_bytes());
                out.extend_from_slice(&total.to_be_bytes());
            }
        }
        out
    }

    pub(crate) fn decode(raw: &[u8]) -> Result<Self, &'static str> {
        let mut r = Reader(raw);
        let kind = r.u8()?;
        let expires_at = Timestamp::from_micros(r.i64()?);
        let generation = r.u64()?;
        let value = match kind {
            COUNTER => Value::Counter(r.i64()?),
            SLIDING | COOLING => {
                let cooling = if kind == COOLING { Some(Timestamp::from_micros(r.i64()?)) } else { None };
                let n = r.u32()? as usize;
                if r.0.len() != n.saturating_mul(24) {
                    return Err("sliding window length does not match its events");
                }
                let mut events = Vec::with_capacity(n);
                for _ in 0..n {
                    events.push(Event {
                        at: Timestamp::from_micros(r.i64()?),
                        amount: r.i64()?,
                        reservation: r.u64()?,
                    });
                }
                Value::Sliding(events, cooling)
            }
            RECORD => Value::Record(r.0.to_vec()),
            STREAK => Value::Streak { mark: r.u64()?, total: r.i64()? },
            _ => return Err("unknown value kind"),
        };
        if matches!(kind, COUNTER | STREAK) && !r.0.is_empty() {
            return Err("trailing bytes after a counter");
        }
        Ok(Self { expires_at, generation, value })
    }
}

impl Pending {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.parts.len() * 48);
        out.extend_from_slice(&self.hold_until.as_micros().to_be_bytes());
        out.extend_from_slice(&u32::try_from(self.parts.len()).unwrap_or(u32::MAX).to_be_bytes());
        for (key, amount, generation) in &self.parts {
            out.extend_from_slice(&u32::try_from(key.len()).unwrap_or(u32::MAX).to_be_bytes());
            out.extend_from_slice(key.as_bytes());
            out.extend_from_slice(&amount.to_be_bytes());
            out.extend_from_slice(&generation.to_be_bytes());
        }
        out
    }

    pub(crate) fn decode(raw: &[u8]) -> Result<Self, &'static str> {
        let mut r = Reader(raw);
        let hold_until = Timestamp::from_micros(r.i64()?);
        let n = r.u32()?;
        let mut parts = Vec::new();
        for _ in 0..n {
            let len = r.u32()? as usize;
            let key = std::str::from_utf8(r.take(len)?).map_err(|_| "key is not UTF-8")?.to_owned();
            parts.push((key, r.i64()?, r.u64()?));
        }
        if !r.0.is_empty() {
            return Err("trailing bytes after a pending reservation");
        }
        Ok(Self { hold_until, parts })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for value in [
            Value::Counter(-3),
            Value::Sliding(vec![Event { at: Timestamp::from_secs(5), amount: 2, reservation: 9 }], None),
            Value::Sliding(
                vec![Event { at: Timestamp::from_secs(5), amount: 2, reservation: 9 }],
                Some(Timestamp::from_secs(9)),
            ),
            Value::Record(b"abc".to_vec()),
            Value::Streak { mark: u64::MAX, total: 4 },
        ] {
            let e = Entry { expires_at: Timestamp::from_secs(7), generation: 3, value };
            assert_eq!(Entry::decode(&e.encode()), Ok(e));
        }
        let p = Pending { hold_until: Timestamp::from_secs(1), parts: vec![("k".into(), 5, 0), ("é/x".into(), 1, 2)] };
        assert_eq!(Pending::decode(&p.encode()), Ok(p));
    }

    #[test]
    fn corruption_is_an_error() {
        let e = Entry { expires_at: Timestamp::from_secs(7), generation: 3, value: Value::Counter(1) }.encode();
        for bad in [&e[..5], &[9u8; 30][..], &[], &[2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9]] {
            assert!(Entry::decode(bad).is_err());
        }
        // A window in its cooldown, cut short anywhere: an error.
        let cooling = Entry {
            expires_at: Timestamp::from_secs(7),
            generation: 3,
            value: Value::Sliding(
                vec![Event { at: Timestamp::from_secs(5), amount: 2, reservation: 9 }],
                Some(Timestamp::from_secs(9)),
            ),
        }
        .encode();
        for cut in 0..cooling.len() {
            assert!(Entry::decode(&cooling[..cut]).is_err(), "cut at {cut}");
        }
        assert!(Pending::decode(&[0, 0, 0]).is_err());
        assert!(Pending::decode(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 200]).is_err());
    }
}
