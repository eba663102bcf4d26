//! The one clock everything reads: the system clock in production, a [`TestClock`] in tests.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::store::{BoxFuture, Store, StoreError};
use crate::time::Timestamp;

/// The engine's source of time.
///
/// Persisted timestamps, schedules, debounce windows, retry delays and telemetry timestamps are
/// all read from it, so a test that moves a [`TestClock`] moves all of them.
#[derive(Clone, Default)]
pub struct Clock(Inner);

#[derive(Clone, Default)]
enum Inner {
    #[default]
    System,
    /// The system clock moved by the offset (in milliseconds) that puts it in step with the
    /// database's clock: see [`Clock::in_step_with`].
    Database(Arc<AtomicI64>),
    Test(TestClock),
}

impl Clock {
    /// The system's wall clock.
    pub fn system() -> Self {
        Clock(Inner::System)
    }

    /// The current time.
    pub fn now(&self) -> Timestamp {
        match &self.0 {
            Inner::System => Timestamp::now_system(),
            Inner::Database(offset) => Self::moved(offset.load(Ordering::Relaxed)),
            Inner::Test(t) => t.now(),
        }
    }

    /// The system clock moved by `offset` milliseconds.
    fn moved(offset: i64) -> Timestamp {
        Timestamp::from_millis(Timestamp::now_system().as_millis().saturating_add(offset))
    }

    /// This clock, or, when it is the system clock and the store can tell its database's time,
    /// the system clock kept in step with the database's: every process on a shared database
    /// then reads one time for lease expiries and due times, whatever their own clocks say.
    /// The offset is measured now and again every [`DATABASE_CLOCK_EVERY`] by the task
    /// returned, which the engine stops at shutdown. A test clock stays as it is.
    pub(crate) async fn in_step_with(
        self,
        store: &Arc<dyn Store>,
    ) -> Result<(Clock, Option<BoxFuture<'static, ()>>), StoreError> {
        if !matches!(self.0, Inner::System) || store.database_time().is_none() {
            return Ok((self, None));
        }
        let offset = Arc::new(AtomicI64::new(database_offset(store.as_ref()).await?));
        tracing::debug!(
            offset_ms = offset.load(Ordering::Relaxed),
            "the engine's clock follows the database's"
        );
        let keeper = {
            let store = Arc::downgrade(store);
            let offset = offset.clone();
            Box::pin(async move {
                loop {
                    tokio::time::sleep(DATABASE_CLOCK_EVERY).await;
                    let Some(store) = store.upgrade() else { return };
                    match database_offset(store.as_ref()).await {
                        Ok(measured) => offset.store(measured, Ordering::Relaxed),
                        Err(e) => {
                            tracing::warn!(error = %e, "could not read the database's clock; keeping the last offset");
                        }
                    }
                }
            }) as BoxFuture<'static, ()>
        };
        Ok((Clock(Inner::Database(offset)), Some(keeper)))
    }

    /// Waits until `at` on this clock. Under a test clock it never resolves on its own: the
    /// test clock wakes the engines it drives when it moves.
    pub(crate) async fn sleep_until(&self, at: Timestamp) {
        match &self.0 {
            Inner::System => {
                // Re-read the wall clock at least hourly so a clock change is noticed.
                let wait = at
                    .saturating_duration_since(Timestamp::now_system())
                    .min(Duration::from_secs(3600));
                tokio::time::sleep(wait).await
            }
            Inner::Database(offset) => {
                let wait = at
                    .saturating_duration_since(Self::moved(offset.load(Ordering::Relaxed)))
                    .min(Duration::from_secs(3600));
                tokio::time::sleep(wait).await
            }
            Inner::Test(_) => std::future::pending().await,
        }
    }

    pub(crate) fn as_test(&self) -> Option<&TestClock> {
        match &self.0 {
            Inner::Test(t) => Some(t),
            Inner::System | Inner::Database(_) => None,
        }
    }
}

impl From<TestClock> for Clock {
    fn from(t: TestClock) -> Self {
        Clock(Inner::Test(t))
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Inner::System => f.write_str("Clock::System"),
            Inner::Database(offset) => write!(
                f,
                "Clock::Database(offset {} ms)",
                offset.load(Ordering::Relaxed)
            ),
            Inner::Test(t) => write!(f, "Clock::Test({})", t.now()),
        }
    }
}

/// How often an engine on a database with a clock of its own measures again how far the
/// system clock is from it.
pub(crate) const DATABASE_CLOCK_EVERY: Duration = Duration::from_secs(60);

/// How far, in milliseconds, the database's clock is ahead of the system clock: its time
/// against the middle of the round trip that read it.
async fn database_offset(store: &dyn Store) -> Result<i64, StoreError> {
    let Some(read) = store.database_time() else {
        return Ok(0);
    };
    let sent = Timestamp::now_system().as_millis();
    let database = read.await?.as_millis();
    let received = Timestamp::now_system().as_millis();
    Ok(database - (sent + (received - sent) / 2))
}

/// Something a [`TestClock`] drives: an engine's scheduler.
pub(crate) trait ClockDriven: Send + Sync {
    /// The earliest pending alarm.
    fn next_alarm(&self) -> BoxFuture<'_, Option<Timestamp>>;
    /// Returns once every alarm due at the clock's current time has run and nothing is in
    /// flight.
    fn settle(&self) -> BoxFuture<'_, ()>;
}

/// A clock that only moves when told to, for tests (the engine's and yours).
///
/// Hand a clone to the engine builder with `.clock(clock.clone())`. [`advance`](Self::advance)
/// moves time forward step by step through every alarm that falls due on the way, running each
/// one and waiting for it to finish, so a test never sleeps to wait for a debounce window, a
/// schedule or a retry.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use durable_jobs::testing::TestClock;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let clock = TestClock::new();
/// let t0 = clock.now();
/// clock.advance(Duration::from_secs(90)).await;
/// assert_eq!(clock.now(), t0 + Duration::from_secs(90));
/// # }
/// ```
#[derive(Clone)]
pub struct TestClock {
    inner: Arc<TestClockInner>,
}

struct TestClockInner {
    now: AtomicI64,
    driven: Mutex<Vec<Weak<dyn ClockDriven>>>,
    // Serialises advances so two concurrent `advance` calls cannot interleave their steps.
    advancing: tokio::sync::Mutex<()>,
}

impl TestClock {
    /// 2026-01-01T00:00:00Z, a fixed start so test output is reproducible.
    pub const DEFAULT_START: Timestamp = Timestamp::from_millis(1_767_225_600_000);

    /// A clock at [`DEFAULT_START`](Self::DEFAULT_START).
    pub fn new() -> Self {
        Self::starting_at(Self::DEFAULT_START)
    }

    /// A clock at `start`.
    pub fn starting_at(start: Timestamp) -> Self {
        TestClock {
            inner: Arc::new(TestClockInner {
                now: AtomicI64::new(start.as_millis()),
                driven: Mutex::new(Vec::new()),
                advancing: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// The current time.
    pub fn now(&self) -> Timestamp {
        Timestamp::from_millis(self.inner.now.load(Ordering::SeqCst))
    }

    /// Moves time forward by `by`, stopping at each alarm that falls due on the way: the clock
    /// is set to the alarm's time, the alarm runs, and its effects (a rescheduled run, a retry)
    /// are honoured before the clock moves on. Returns when everything due at the final time
    /// has run.
    pub async fn advance(&self, by: Duration) {
        let _turn = self.inner.advancing.lock().await;
        let target = self.now() + by;
        self.settle_all().await;
        loop {
            let mut next: Option<Timestamp> = None;
            for driven in self.driven() {
                if let Some(at) = driven.next_alarm().await {
                    next = Some(next.map_or(at, |n: Timestamp| n.min(at)));
                }
            }
            match next {
                Some(at) if at > self.now() && at <= target => {
                    self.set_at_least(at);
                    self.settle_all().await;
                }
                _ => break,
            }
        }
        self.set_at_least(target);
        self.settle_all().await;
    }

    /// Moves time forward by `by` in one jump, as a wall clock does after a suspend or an NTP
    /// correction: alarms that fell due on the way fire once, late, at the new time.
    pub async fn jump(&self, by: Duration) {
        let _turn = self.inner.advancing.lock().await;
        self.set_at_least(self.now() + by);
        self.settle_all().await;
    }

    /// Runs everything due at the current time and waits for it to finish.
    pub async fn settle(&self) {
        let _turn = self.inner.advancing.lock().await;
        self.settle_all().await;
    }

    fn set_at_least(&self, at: Timestamp) {
        self.inner.now.fetch_max(at.as_millis(), Ordering::SeqCst);
    }

    async fn settle_all(&self) {
        for driven in self.driven() {
            driven.settle().await;
        }
    }

    fn driven(&self) -> Vec<Arc<dyn ClockDriven>> {
        let mut list = self.inner.driven.lock().unwrap_or_else(|e| e.into_inner());
        list.retain(|w| w.strong_count() > 0);
        list.iter().filter_map(Weak::upgrade).collect()
    }

    pub(crate) fn drive(&self, driven: Weak<dyn ClockDriven>) {
        self.inner
            .driven
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(driven);
    }
}

impl Default for TestClock {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for TestClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TestClock({})", self.now())
    }
}
