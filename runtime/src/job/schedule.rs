//! When a continuous job runs: a fixed interval or a cron expression in a time zone.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use croner::Cron;

use crate::time::Timestamp;

/// The cadence of a continuous job.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use durable_jobs::{Schedule, Timestamp};
///
/// let every = Schedule::every(Duration::from_secs(60));
/// assert_eq!(every.next_after(Timestamp::from_millis(0)), Some(Timestamp::from_millis(60_000)));
///
/// let nightly = Schedule::cron("30 4 * * *", None).unwrap();
/// assert_eq!(
///     nightly.next_after(Timestamp::from_millis(0)).unwrap().to_string(),
///     "1970-01-01T04:30:00.000Z"
/// );
/// ```
#[derive(Clone)]
pub enum Schedule {
    /// Runs this long after the previous run finished.
    Every(Duration),
    /// Runs at each time matching a cron expression.
    Cron(Box<CronSchedule>),
}

impl Schedule {
    /// A fixed interval measured from the end of the previous run.
    pub fn every(interval: Duration) -> Self {
        Schedule::Every(interval)
    }

    /// A cron expression (5 fields, or 6 with leading seconds) in a time zone (UTC when `None`).
    ///
    /// # Errors
    ///
    /// The reason, when the expression or the time zone is invalid.
    pub fn cron(expression: &str, time_zone: Option<&str>) -> Result<Self, String> {
        CronSchedule::parse(expression, time_zone).map(|c| Schedule::Cron(Box::new(c)))
    }

    /// The next run strictly after `now`, or `None` when the schedule has no further run.
    pub fn next_after(&self, now: Timestamp) -> Option<Timestamp> {
        match self {
            Schedule::Every(interval) => Some(now + (*interval).max(Duration::from_millis(1))),
            Schedule::Cron(cron) => cron.next_after(now),
        }
    }
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Every(d) => write!(f, "Every({d:?})"),
            Schedule::Cron(c) => write!(f, "Cron({:?} in {})", c.expression, c.zone),
        }
    }
}

/// A parsed cron expression with its time zone.
#[derive(Clone)]
pub struct CronSchedule {
    expression: String,
    cron: Cron,
    zone: chrono_tz::Tz,
}

impl CronSchedule {
    /// Parses `expression` (5 or 6 fields) and an IANA time zone name such as `Europe/Paris`.
    ///
    /// # Errors
    ///
    /// The reason, when the expression or the time zone is invalid.
    pub fn parse(expression: &str, time_zone: Option<&str>) -> Result<Self, String> {
        let cron = Cron::new(expression)
            .with_seconds_optional()
            .parse()
            .map_err(|e| format!("invalid cron expression `{expression}`: {e}"))?;
        let zone = match time_zone {
            None => chrono_tz::UTC,
            Some(name) => {
                chrono_tz::Tz::from_str(name).map_err(|_| format!("unknown time zone `{name}`"))?
            }
        };
        Ok(CronSchedule {
            expression: expression.to_owned(),
            cron,
            zone,
        })
    }

    /// The expression as written.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The IANA name of its time zone (`UTC` when none was given).
    pub fn time_zone(&self) -> &'static str {
        self.zone.name()
    }

    /// The next matching time strictly after `now`; `None` past the last one the calendar
    /// holds.
    pub fn next_after(&self, now: Timestamp) -> Option<Timestamp> {
        let local = now.to_chrono().with_timezone(&self.zone);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|next| Timestamp::from_chrono(&next))
            // A time beyond the calendar's range reads as its start: never a next run.
            .filter(|next| *next > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        Timestamp::from_chrono(&chrono::DateTime::parse_from_rfc3339(s).unwrap())
    }

    #[test]
    fn five_and_six_field_expressions() {
        let now = at("2026-01-01T10:00:00Z");
        let five = Schedule::cron("30 4 * * *", None).unwrap();
        assert_eq!(five.next_after(now), Some(at("2026-01-02T04:30:00Z")));
        let six = Schedule::cron("15 0 4 * * *", None).unwrap();
        assert_eq!(six.next_after(now), Some(at("2026-01-02T04:00:15Z")));
    }

    #[test]
    fn time_zones_shift_the_wall_clock() {
        let now = at("2026-01-01T10:00:00Z");
        let paris = Schedule::cron("0 12 * * *", Some("Europe/Paris")).unwrap();
        assert_eq!(paris.next_after(now), Some(at("2026-01-01T11:00:00Z")));
    }

    #[test]
    fn next_is_strictly_after_now() {
        let now = at("2026-01-01T04:30:00Z");
        let s = Schedule::cron("30 4 * * *", None).unwrap();
        assert_eq!(s.next_after(now), Some(at("2026-01-02T04:30:00Z")));
    }

    #[test]
    fn a_time_beyond_the_calendar_has_no_next_run() {
        let s = Schedule::cron("*/5 * * * * *", None).unwrap();
        assert_eq!(s.next_after(Timestamp::from_millis(i64::MAX)), None);
    }

    #[test]
    fn bad_input_is_refused() {
        assert!(Schedule::cron("61 * * * *", None).is_err());
        assert!(Schedule::cron("* * * * *", Some("Mars/Olympus")).is_err());
    }
}
