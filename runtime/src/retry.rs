//! Retry policies: how many attempts a failing execution gets and how long to wait between them.

use std::time::Duration;

use crate::time::Timestamp;

/// How a failing `execute` is retried.
///
/// `max_attempts` counts the first run: `max_attempts = 3` gives attempts 1, 2 and 3, then the
/// retries are exhausted. Each retry is an ordinary durable alarm, so it survives restarts.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use durable_jobs::{Backoff, RetryPolicy};
///
/// let policy = RetryPolicy::new(5)
///     .backoff(Backoff::exponential(Duration::from_secs(1)).max(Duration::from_secs(30)))
///     .max_duration(Duration::from_secs(600));
/// assert_eq!(policy.delay_before_attempt(2, 0.0), Duration::from_secs(1));
/// assert_eq!(policy.delay_before_attempt(4, 0.0), Duration::from_secs(4));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    pub(crate) max_attempts: u32,
    pub(crate) backoff: Backoff,
    pub(crate) jitter: bool,
    pub(crate) max_duration: Option<Duration>,
}

impl RetryPolicy {
    /// A policy of `max_attempts` executions in all, with the standard backoff (exponential from
    /// 1 s, doubling, at most 30 s) and jitter.
    pub fn new(max_attempts: u32) -> Self {
        RetryPolicy {
            max_attempts: max_attempts.max(1),
            backoff: Backoff::exponential(Duration::from_secs(1)).max(Duration::from_secs(30)),
            jitter: true,
            max_duration: None,
        }
    }

    /// Sets the delay strategy.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Turns the ±10 % jitter on (the default) or off.
    pub fn jitter(mut self, on: bool) -> Self {
        self.jitter = on;
        self
    }

    /// Stops retrying once this long has passed since the first failed attempt began.
    pub fn max_duration(mut self, limit: Duration) -> Self {
        self.max_duration = Some(limit);
        self
    }

    /// Executions in all, counting the first.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The delay strategy between attempts.
    pub fn strategy(&self) -> &Backoff {
        &self.backoff
    }

    /// Whether delays are spread by ±10 %.
    pub fn has_jitter(&self) -> bool {
        self.jitter
    }

    /// The time limit of a retry sequence, if any.
    pub fn duration_limit(&self) -> Option<Duration> {
        self.max_duration
    }

    /// The delay before attempt `next_attempt` (2 for the first retry). `unit` is a number in
    /// `[-1, 1]` that spreads the delay by up to ±10 % when jitter is on.
    pub fn delay_before_attempt(&self, next_attempt: u32, unit: f64) -> Duration {
        let failed = next_attempt.saturating_sub(1).max(1);
        let base = self.backoff.delay_after_failure(failed);
        if !self.jitter {
            return base;
        }
        let factor = 1.0 + 0.1 * unit.clamp(-1.0, 1.0);
        Duration::from_secs_f64((base.as_secs_f64() * factor).max(0.0))
    }

    /// Decides what follows the failure of `attempt`, started at `first_attempt_at`.
    pub(crate) fn after_failure(
        &self,
        attempt: u32,
        first_attempt_at: Timestamp,
        now: Timestamp,
        unit: f64,
    ) -> RetryDecision {
        if attempt >= self.max_attempts {
            return RetryDecision::Exhausted(ExhaustionReason::MaxAttempts);
        }
        let next = attempt + 1;
        let at = now + self.delay_before_attempt(next, unit);
        if let Some(limit) = self.max_duration {
            if at.saturating_duration_since(first_attempt_at) >= limit {
                return RetryDecision::Exhausted(ExhaustionReason::MaxDuration);
            }
        }
        RetryDecision::Retry { attempt: next, at }
    }
}

/// A random number in `[-1, 1]`, the `unit` of [`RetryPolicy::delay_before_attempt`]: the one
/// source of retry jitter, for every kind of job.
pub(crate) fn jitter_unit() -> f64 {
    fastrand::f64() * 2.0 - 1.0
}

pub(crate) enum RetryDecision {
    Retry { attempt: u32, at: Timestamp },
    Exhausted(ExhaustionReason),
}

/// Why retries stopped.
///
/// # Examples
///
/// ```
/// use durable_jobs::ExhaustionReason;
///
/// assert_eq!(ExhaustionReason::MaxDuration.to_string(), "max_duration");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ExhaustionReason {
    /// The last allowed attempt failed.
    MaxAttempts,
    /// The next attempt would start after `max_duration`.
    MaxDuration,
}

impl ExhaustionReason {
    /// `max_attempts` or `max_duration`, as in the `job.retryExhausted` event.
    pub const fn as_str(self) -> &'static str {
        match self {
            ExhaustionReason::MaxAttempts => "max_attempts",
            ExhaustionReason::MaxDuration => "max_duration",
        }
    }
}

/// The Rust name, `max_attempts` or `max_duration` (the wire name too).
impl std::fmt::Display for ExhaustionReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The delay strategy between attempts.
#[derive(Clone, Debug, PartialEq)]
pub enum Backoff {
    /// The same delay every time.
    Constant(Duration),
    /// `initial + increment × (n − 1)` after the n-th failure, capped by `max`.
    Linear {
        /// Delay after the first failure.
        initial: Duration,
        /// Added per further failure.
        increment: Duration,
        /// Upper bound.
        max: Option<Duration>,
    },
    /// `initial × factor^(n − 1)` after the n-th failure, capped by `max`.
    Exponential {
        /// Delay after the first failure.
        initial: Duration,
        /// Growth per failure (2 by default).
        factor: f64,
        /// Upper bound.
        max: Option<Duration>,
    },
}

impl Backoff {
    /// The same delay every time.
    pub fn constant(delay: Duration) -> Self {
        Backoff::Constant(delay)
    }

    /// Delays growing by `increment` per failure.
    pub fn linear(initial: Duration, increment: Duration) -> Self {
        Backoff::Linear {
            initial,
            increment,
            max: None,
        }
    }

    /// Delays doubling per failure.
    pub fn exponential(initial: Duration) -> Self {
        Backoff::Exponential {
            initial,
            factor: 2.0,
            max: None,
        }
    }

    /// Sets the growth factor of an exponential backoff; ignored by the others.
    pub fn factor(mut self, f: f64) -> Self {
        if let Backoff::Exponential { factor, .. } = &mut self {
            *factor = if f.is_finite() && f >= 1.0 { f } else { 1.0 };
        }
        self
    }

    /// Caps a linear or exponential backoff; ignored by a constant one.
    pub fn max(mut self, cap: Duration) -> Self {
        match &mut self {
            Backoff::Linear { max, .. } | Backoff::Exponential { max, .. } => *max = Some(cap),
            Backoff::Constant(_) => {}
        }
        self
    }

    /// The delay after failure number `failed` (1-based).
    pub fn delay_after_failure(&self, failed: u32) -> Duration {
        let n = failed.max(1) - 1;
        match self {
            Backoff::Constant(d) => *d,
            Backoff::Linear {
                initial,
                increment,
                max,
            } => {
                let d = initial.saturating_add(increment.saturating_mul(n));
                max.map_or(d, |m| d.min(m))
            }
            Backoff::Exponential {
                initial,
                factor,
                max,
            } => {
                let secs = initial.as_secs_f64() * factor.powi(n.min(1_000) as i32);
                let cap = max.map_or(f64::MAX, |m| m.as_secs_f64());
                let secs = secs.min(cap).min(u32::MAX as f64);
                Duration::from_secs_f64(secs)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_follow_the_strategy() {
        let s = Duration::from_secs;
        assert_eq!(Backoff::constant(s(3)).delay_after_failure(7), s(3));
        let lin = Backoff::linear(s(1), s(2)).max(s(4));
        assert_eq!(
            [1, 2, 3].map(|n| lin.delay_after_failure(n)),
            [s(1), s(3), s(4)]
        );
        let exp = Backoff::exponential(s(1)).max(s(30));
        assert_eq!(
            [1, 2, 3, 6, 60].map(|n| exp.delay_after_failure(n)),
            [s(1), s(2), s(4), s(30), s(30)]
        );
    }

    #[test]
    fn jitter_units_spread_over_the_whole_range() {
        let units: Vec<f64> = (0..1_000).map(|_| jitter_unit()).collect();
        assert!(units.iter().all(|u| (-1.0..=1.0).contains(u)));
        assert!(units.iter().any(|&u| u < -0.9) && units.iter().any(|&u| u > 0.9));
    }

    #[test]
    fn jitter_spreads_by_ten_percent() {
        let p = RetryPolicy::new(3).backoff(Backoff::constant(Duration::from_secs(1)));
        assert_eq!(p.delay_before_attempt(2, -1.0), Duration::from_millis(900));
        assert_eq!(p.delay_before_attempt(2, 1.0), Duration::from_millis(1100));
        let p = p.jitter(false);
        assert_eq!(p.delay_before_attempt(2, 1.0), Duration::from_secs(1));
    }

    #[test]
    fn max_attempts_counts_the_first_run() {
        let p = RetryPolicy::new(3).jitter(false);
        let t0 = Timestamp::from_millis(0);
        assert!(matches!(
            p.after_failure(1, t0, t0, 0.0),
            RetryDecision::Retry { attempt: 2, .. }
        ));
        assert!(matches!(
            p.after_failure(2, t0, t0, 0.0),
            RetryDecision::Retry { attempt: 3, .. }
        ));
        assert!(matches!(
            p.after_failure(3, t0, t0, 0.0),
            RetryDecision::Exhausted(ExhaustionReason::MaxAttempts)
        ));
    }

    #[test]
    fn max_duration_exhausts_with_its_own_reason() {
        let p = RetryPolicy::new(10)
            .backoff(Backoff::constant(Duration::from_secs(5)))
            .jitter(false)
            .max_duration(Duration::from_secs(8));
        let t0 = Timestamp::from_millis(0);
        assert!(matches!(
            p.after_failure(1, t0, t0, 0.0),
            RetryDecision::Retry { .. }
        ));
        let later = t0 + Duration::from_secs(5);
        assert!(matches!(
            p.after_failure(2, t0, later, 0.0),
            RetryDecision::Exhausted(ExhaustionReason::MaxDuration)
        ));
    }
}
