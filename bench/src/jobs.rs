//! The jobs the workloads run, written by hand against the job traits (as the attribute macros
//! would generate them), one registry per workload so each engine runs only its own jobs.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use durable_jobs::prelude::*;
use durable_jobs::{JobSet, Registered, Registry};

/// Wall-clock microseconds since the Unix epoch (the engine's system clock reads the same clock,
/// in milliseconds).
pub(crate) fn wall_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The number at the end of an instance id such as `c123`.
fn index_of(id: &str) -> Option<usize> {
    id.trim_start_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .ok()
}

// ---------------------------------------------------------------------------------------------
// continuous: every second, measuring lateness

/// What the `continuous` workload's job records.
pub(crate) struct TickApp {
    /// Per instance: when its last execution ended (wall clock, µs; 0 before the first).
    pub(crate) last_end_us: Vec<AtomicU64>,
    /// Whether executions are counted and measured (the measured window).
    pub(crate) measuring: AtomicBool,
    /// Executions in the measured window.
    pub(crate) executions: AtomicU64,
    /// Lateness of each execution in the window, µs (may be slightly negative, see `Tick`).
    pub(crate) lateness_us: Mutex<Vec<i64>>,
}

impl TickApp {
    pub(crate) fn new(instances: usize) -> Self {
        TickApp {
            last_end_us: (0..instances).map(|_| AtomicU64::new(0)).collect(),
            measuring: AtomicBool::new(false),
            executions: AtomicU64::new(0),
            lateness_us: Mutex::new(Vec::with_capacity(instances * 12)),
        }
    }
}

/// Runs every second. `Schedule::every` plans the next run one interval after the end of the
/// previous one, on the engine clock in whole milliseconds; the job notes when it ends, so the
/// planned start of its next run is that time, truncated to the millisecond, plus one second.
/// Lateness is the start of `execute` minus that planned start; it includes the scheduler's
/// wake-up, the claim and the instance load, and not the run itself.
pub(crate) struct Tick;

impl Job for Tick {
    const NAME: &'static str = "bench_tick";
    const KIND: JobKind = JobKind::Continuous;
}

impl ContinuousJob<Arc<TickApp>> for Tick {
    type State = ();
    type Error = Infallible;

    fn config(&self) -> ContinuousConfig {
        ContinuousConfig::new(Schedule::every(Duration::from_secs(1)))
    }

    async fn execute(
        &self,
        ctx: &mut ContinuousContext<()>,
        app: &Arc<TickApp>,
    ) -> Result<(), Infallible> {
        let start = wall_us();
        if let Some(slot) = index_of(ctx.id()).and_then(|i| app.last_end_us.get(i)) {
            let prev = slot.load(Ordering::Relaxed);
            if prev != 0 && app.measuring.load(Ordering::Relaxed) {
                let planned = prev / 1000 * 1000 + 1_000_000;
                app.executions.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut l) = app.lateness_us.lock() {
                    l.push(start as i64 - planned as i64);
                }
            }
            slot.store(wall_us(), Ordering::Relaxed);
        }
        Ok(())
    }
}

impl Registered<TickJobs> for Tick {}

/// The registry of the `continuous` workload.
pub(crate) struct TickJobs;

impl Registry for TickJobs {
    type App = Arc<TickApp>;
    fn register(jobs: &mut JobSet<Arc<TickApp>>) {
        jobs.continuous(Tick);
    }
}

// ---------------------------------------------------------------------------------------------
// debounce: every event must be flushed exactly once

/// What the `debounce` workload's job records.
pub(crate) struct BatchApp {
    /// Per event id: how many flushes contained it.
    pub(crate) seen: Vec<AtomicU8>,
    /// Successful flushes.
    pub(crate) flushes: AtomicU64,
}

impl BatchApp {
    pub(crate) fn new(events: usize) -> Self {
        BatchApp {
            seen: (0..events).map(|_| AtomicU8::new(0)).collect(),
            flushes: AtomicU64::new(0),
        }
    }

    /// Events never flushed, and events flushed more than once.
    pub(crate) fn check(&self) -> (usize, usize) {
        let mut missing = 0;
        let mut repeated = 0;
        for s in &self.seen {
            match s.load(Ordering::Relaxed) {
                0 => missing += 1,
                1 => {}
                _ => repeated += 1,
            }
        }
        (missing, repeated)
    }
}

/// Collects event ids and marks them when flushed. `flush_after` is long, so only `max_events`
/// flushes (inside the `add` that brings a batch to `max_events`).
pub(crate) struct Collect {
    pub(crate) max_events: u64,
}

impl Job for Collect {
    const NAME: &'static str = "bench_collect";
    const KIND: JobKind = JobKind::Debounce;
}

impl DebounceJob<Arc<BatchApp>> for Collect {
    type Event = u32;
    type State = Vec<u32>;
    type Error = Infallible;

    fn config(&self) -> DebounceConfig {
        DebounceConfig::new(Duration::from_secs(600)).max_events(self.max_events)
    }

    fn on_event(&self, state: Option<Vec<u32>>, event: u32, _ctx: &EventContext) -> Vec<u32> {
        let mut s = state.unwrap_or_default();
        s.push(event);
        s
    }

    async fn execute(
        &self,
        ctx: &mut FlushContext<Vec<u32>>,
        app: &Arc<BatchApp>,
    ) -> Result<(), Infallible> {
        for e in ctx.state() {
            if let Some(s) = app.seen.get(*e as usize) {
                s.fetch_add(1, Ordering::Relaxed);
            }
        }
        app.flushes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

impl Registered<BatchJobs> for Collect {}

/// The registry of the `debounce` workload; `max_events` comes from the app.
pub(crate) struct BatchJobs;

/// `max_events` of the `debounce` workload (the figure).
pub(crate) const MAX_EVENTS: u64 = 100;

impl Registry for BatchJobs {
    type App = Arc<BatchApp>;
    fn register(jobs: &mut JobSet<Arc<BatchApp>>) {
        jobs.debounce(Collect {
            max_events: MAX_EVENTS,
        });
    }
}

// ---------------------------------------------------------------------------------------------
// scale: a million instances scheduled an hour ahead

/// Does nothing, hourly; never runs during the benchmark.
pub(crate) struct Hourly;

impl Job for Hourly {
    const NAME: &'static str = "bench_hourly";
    const KIND: JobKind = JobKind::Continuous;
}

impl ContinuousJob<()> for Hourly {
    type State = ();
    type Error = Infallible;

    fn config(&self) -> ContinuousConfig {
        ContinuousConfig::new(Schedule::every(Duration::from_secs(3600))).start_immediately(false)
    }

    async fn execute(&self, _ctx: &mut ContinuousContext<()>, _app: &()) -> Result<(), Infallible> {
        Ok(())
    }
}

impl Registered<HourlyJobs> for Hourly {}

/// The registry of the `scale` workload.
pub(crate) struct HourlyJobs;

impl Registry for HourlyJobs {
    type App = ();
    fn register(jobs: &mut JobSet<()>) {
        jobs.continuous(Hourly);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_indexes() {
        assert_eq!(index_of("c42"), Some(42));
        assert_eq!(index_of("d0"), Some(0));
        assert_eq!(index_of("x"), None);
    }
}
