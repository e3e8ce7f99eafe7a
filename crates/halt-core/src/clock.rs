//! Time: the [`Timestamp`] type, the [`Clock`] trait and its three clocks, and UTC calendar windows.
//!
//! Guards read time from the engine's clock, never from the caller's `timestamp`, so a model cannot
//! move a window by lying about the time. Tests use [`ManualClock`]; `agenthalt eval --clock replay`
//! uses [`ReplayClock`], which follows recorded timestamps and never moves backwards.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Microseconds in one second.
const MICROS_PER_SEC: i64 = 1_000_000;
/// Seconds in one day.
const SECS_PER_DAY: i64 = 86_400;

/// A point in time: whole microseconds since the Unix epoch, UTC.
///
/// Integer microseconds keep window arithmetic exact: a call exactly 60 s old is exactly 60 s old.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The Unix epoch.
    pub const EPOCH: Self = Self(0);
    /// The latest representable time.
    pub const MAX: Self = Self(i64::MAX);

    /// A timestamp from microseconds since the epoch.
    #[must_use]
    pub const fn from_micros(micros: i64) -> Self {
        Self(micros)
    }

    /// A timestamp from whole seconds since the epoch.
    #[must_use]
    pub const fn from_secs(secs: i64) -> Self {
        Self(secs.saturating_mul(MICROS_PER_SEC))
    }

    /// A timestamp from fractional seconds since the epoch, as found in a call's `timestamp`.
    ///
    /// Returns `None` for NaN, infinities, negative values and values beyond the year 294,000.
    #[must_use]
    pub fn from_secs_f64(secs: f64) -> Option<Self> {
        if !secs.is_finite() || secs < 0.0 {
            return None;
        }
        let micros = (secs * 1e6).round();
        if micros >= i64::MAX as f64 {
            return None;
        }
        #[allow(clippy::cast_possible_truncation, reason = "range checked above")]
        Some(Self(micros as i64))
    }

    /// Microseconds since the epoch.
    #[must_use]
    pub const fn as_micros(self) -> i64 {
        self.0
    }

    /// Fractional seconds since the epoch.
    #[must_use]
    #[allow(clippy::cast_precision_loss, reason = "f64 seconds is the wire format")]
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1e6
    }

    /// This time plus a duration, saturating at [`Timestamp::MAX`].
    #[must_use]
    pub fn saturating_add(self, d: Duration) -> Self {
        let micros = i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
        Self(self.0.saturating_add(micros))
    }

    /// This time minus a duration, saturating at the epoch.
    #[must_use]
    pub fn saturating_sub(self, d: Duration) -> Self {
        let micros = i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
        Self(self.0.saturating_sub(micros).max(0))
    }

    /// The time from `earlier` to `self`, zero if `earlier` is later.
    #[must_use]
    pub fn since(self, earlier: Self) -> Duration {
        let micros = self.0.saturating_sub(earlier.0).max(0);
        Duration::from_micros(micros.unsigned_abs())
    }

    /// The UTC calendar day holding this time.
    #[must_use]
    pub fn utc_day(self) -> CalendarWindow {
        calendar(self.0.div_euclid(MICROS_PER_SEC * SECS_PER_DAY)).day
    }

    /// The UTC calendar month holding this time.
    #[must_use]
    pub fn utc_month(self) -> CalendarWindow {
        calendar(self.0.div_euclid(MICROS_PER_SEC * SECS_PER_DAY)).month
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.div_euclid(MICROS_PER_SEC);
        let micros = self.0.rem_euclid(MICROS_PER_SEC);
        let day = secs.div_euclid(SECS_PER_DAY);
        let sod = secs.rem_euclid(SECS_PER_DAY);
        let (y, m, d) = civil_from_days(day);
        write!(f, "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z", sod / 3600, sod % 3600 / 60, sod % 60)
    }
}

/// A UTC calendar window (a day or a month): its label and its half-open span `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CalendarWindow {
    /// `YYYY-MM-DD` for a day, `YYYY-MM` for a month; part of the store keys of the window.
    pub label: DateLabel,
    /// The first instant of the window.
    pub start: Timestamp,
    /// The first instant after the window; its counters expire then.
    pub end: Timestamp,
}

/// A calendar label, `YYYY-MM-DD` or `YYYY-MM`, kept inline (labels are made on every call, so
/// they do not allocate). Years outside 0..=9999 are clamped into it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct DateLabel(arrayvec::ArrayString<10>);

impl DateLabel {
    /// The label as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for DateLabel {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Debug for DateLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for DateLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for DateLabel {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// `YYYY-MM-DD` or `YYYY-MM`, written digit by digit.
fn date_label(y: i64, m: u32, d: Option<u32>) -> DateLabel {
    let digit = |n: u32| char::from(b'0' + u8::try_from(n % 10).unwrap_or(0));
    let y = u32::try_from(y.clamp(0, 9999)).unwrap_or(0);
    let mut label = arrayvec::ArrayString::new();
    // At most ten characters: these cannot fail.
    for c in [digit(y / 1000), digit(y / 100), digit(y / 10), digit(y), '-', digit(m / 10), digit(m)] {
        let _ = label.try_push(c);
    }
    if let Some(d) = d {
        for c in ['-', digit(d / 10), digit(d)] {
            let _ = label.try_push(c);
        }
    }
    DateLabel(label)
}

/// The calendar windows of one day.
#[derive(Clone, Copy)]
struct Calendar {
    day_number: i64,
    day: CalendarWindow,
    month: CalendarWindow,
}

impl Calendar {
    fn of(day_number: i64) -> Self {
        let (y, m, d) = civil_from_days(day_number);
        let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
        let day = CalendarWindow {
            label: date_label(y, m, Some(d)),
            start: Timestamp::from_secs(day_number * SECS_PER_DAY),
            end: Timestamp::from_secs((day_number + 1) * SECS_PER_DAY),
        };
        let month = CalendarWindow {
            label: date_label(y, m, None),
            start: Timestamp::from_secs(days_from_civil(y, m, 1) * SECS_PER_DAY),
            end: Timestamp::from_secs(days_from_civil(ny, nm, 1) * SECS_PER_DAY),
        };
        Self { day_number, day, month }
    }
}

/// The calendar windows of a day (days since 1970-01-01), remembered per thread: calls come in
/// runs on the same day, and budgets ask on every call.
fn calendar(day_number: i64) -> Calendar {
    thread_local! {
        static LAST: std::cell::Cell<Calendar> = std::cell::Cell::new(Calendar::of(0));
    }
    LAST.with(|last| {
        let cached = last.get();
        if cached.day_number == day_number {
            return cached;
        }
        let fresh = Calendar::of(day_number);
        last.set(fresh);
        fresh
    })
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    // Howard Hinnant's algorithm.
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "1..=12 and 1..=31")]
    (y, m as u32, d as u32)
}

/// A proleptic Gregorian date to days since 1970-01-01.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A source of time for the engine and its guards.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;

    /// Tells the clock the timestamp a call carries, before the engine reads [`Clock::now`].
    ///
    /// Only [`ReplayClock`] uses it; other clocks ignore the caller's time.
    fn observe(&self, call_time: Option<Timestamp>) {
        let _ = call_time;
    }
}

/// The operating system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        Timestamp(i64::try_from(since.as_micros()).unwrap_or(i64::MAX))
    }
}

/// A clock that moves only when told to; clones share the same time.
///
/// ```
/// use halt_core::{Clock, ManualClock, Timestamp};
/// use std::time::Duration;
///
/// let clock = ManualClock::new(Timestamp::from_secs(1_000));
/// let shared = clock.clone();
/// clock.advance(Duration::from_secs(60));
/// assert_eq!(shared.now(), Timestamp::from_secs(1_060));
/// ```
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    micros: Arc<AtomicI64>,
}

impl ManualClock {
    /// A manual clock showing `start`.
    #[must_use]
    pub fn new(start: Timestamp) -> Self {
        Self { micros: Arc::new(AtomicI64::new(start.as_micros())) }
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        let micros = i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
        let _ = self.micros.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |m| Some(m.saturating_add(micros)));
    }

    /// Sets the clock to `t` (which may be earlier: a manual clock obeys).
    pub fn set(&self, t: Timestamp) {
        self.micros.store(t.as_micros(), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.micros.load(Ordering::SeqCst))
    }
}

/// A clock driven by recorded calls: it shows the latest timestamp it has observed and never
/// moves backwards, so replaying a trace reproduces its windows.
///
/// One absurd timestamp must not pin it (every later call would then look older, and all of
/// them would count in one day): it does not follow a time more than a year after the system
/// clock's (a recorded call cannot come from the future), nor, once it has followed a call, one
/// more than a year after the time it shows. Such a call is evaluated at the time the clock
/// shows.
///
/// ```
/// use halt_core::{Clock, ReplayClock, Timestamp};
///
/// let clock = ReplayClock::default();
/// clock.observe(Some(Timestamp::from_secs(1_795_003_200)));
/// clock.observe(Some(Timestamp::from_secs(1_000_000_000_000)));
/// assert_eq!(clock.now(), Timestamp::from_secs(1_795_003_200));
/// ```
#[derive(Debug, Clone, Default)]
pub struct ReplayClock {
    inner: ManualClock,
    /// Whether it has followed a call yet (shared by clones).
    started: Arc<std::sync::atomic::AtomicBool>,
}

/// How far ahead a replay clock follows a call: see [`ReplayClock`].
const REPLAY_MAX_AHEAD: Duration = Duration::from_secs(366 * 86_400);

impl ReplayClock {
    /// A replay clock starting at `start` (usually the epoch; the first call moves it).
    #[must_use]
    pub fn new(start: Timestamp) -> Self {
        Self { inner: ManualClock::new(start), started: Arc::default() }
    }
}

impl Clock for ReplayClock {
    fn now(&self) -> Timestamp {
        self.inner.now()
    }

    fn observe(&self, call_time: Option<Timestamp>) {
        let Some(t) = call_time else { return };
        if t > SystemClock.now().saturating_add(REPLAY_MAX_AHEAD) {
            return;
        }
        if self.started.load(Ordering::Relaxed) && t > self.now().saturating_add(REPLAY_MAX_AHEAD) {
            return;
        }
        self.started.store(true, Ordering::Relaxed);
        self.inner.micros.fetch_max(t.as_micros(), Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_windows_roll_at_utc_midnight() {
        // 2026-11-24T23:59:59Z and one second later.
        let before = Timestamp::from_secs(1_795_564_799);
        let after = Timestamp::from_secs(1_795_564_800);
        assert_eq!(before.utc_day().label, "2026-11-24");
        assert_eq!(after.utc_day().label, "2026-11-25");
        assert_eq!(before.utc_day().end, after);
        assert_eq!(after.utc_day().start, after);
    }

    #[test]
    fn months_roll_over_years_and_leap_days() {
        let dec31 = Timestamp::from_secs(days_from_civil(2026, 12, 31) * SECS_PER_DAY + 86_399);
        let w = dec31.utc_month();
        assert_eq!(w.label, "2026-12");
        assert_eq!(w.end, Timestamp::from_secs(days_from_civil(2027, 1, 1) * SECS_PER_DAY));
        let feb29 = Timestamp::from_secs(days_from_civil(2028, 2, 29) * SECS_PER_DAY);
        assert_eq!(feb29.utc_day().label, "2028-02-29");
        assert_eq!(feb29.utc_month().end.utc_day().label, "2028-03-01");
    }

    #[test]
    fn civil_round_trip() {
        for day in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m, d), day);
        }
    }

    #[test]
    fn display_is_rfc3339() {
        let t = Timestamp::from_micros(1_795_564_800_000_001);
        assert_eq!(t.to_string(), "2026-11-25T00:00:00.000001Z");
    }

    #[test]
    fn secs_f64_rejects_bad_values() {
        assert_eq!(Timestamp::from_secs_f64(f64::NAN), None);
        assert_eq!(Timestamp::from_secs_f64(f64::INFINITY), None);
        assert_eq!(Timestamp::from_secs_f64(-1.0), None);
        assert_eq!(Timestamp::from_secs_f64(1e300), None);
        assert_eq!(Timestamp::from_secs_f64(1.5), Some(Timestamp::from_micros(1_500_000)));
    }

    #[test]
    fn replay_clock_never_moves_backwards() {
        let c = ReplayClock::default();
        c.observe(Some(Timestamp::from_secs(100)));
        c.observe(Some(Timestamp::from_secs(50)));
        c.observe(None);
        assert_eq!(c.now(), Timestamp::from_secs(100));
        c.observe(Some(Timestamp::from_secs(160)));
        assert_eq!(c.now(), Timestamp::from_secs(160));
    }
}
