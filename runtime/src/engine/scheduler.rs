//! The alarm scheduler: one task that asks the store for due alarms and the time of the next
//! one, runs the due ones, and sleeps until the next one or until a write announces an earlier
//! one. No per-instance timer, no in-memory copy of the alarm table: memory is bounded by the
//! executions in flight. On an exclusive store there is no polling interval either; on a shared
//! one the scheduler also scans every poll interval, since another process's writes announce
//! nothing here.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::{watch, Notify};

use super::{Handler, Inner};
use crate::clock::ClockDriven;
use crate::id::{InstanceKey, JobKind};
use crate::store::changes::Change;
use crate::store::BoxFuture;
use crate::time::Timestamp;

#[derive(Clone, Copy, Debug)]
struct Status {
    /// The last settle request this status answers.
    served: u64,
    /// Nothing due was left waiting and nothing was in flight.
    idle: bool,
}

pub(crate) struct Scheduler {
    /// A write announced an earlier alarm, a test clock asks to settle, or the engine stops.
    wake: Notify,
    /// An execution ended, so another can start.
    slot_free: Notify,
    busy: Notify,
    stopped: AtomicBool,
    /// When the scheduler plans to wake up, in ms (`i64::MAX`: not planned, e.g. before its
    /// first scan ends, so that an alarm written meanwhile wakes it).
    next_wake: AtomicI64,
    requests: AtomicU64,
    status: watch::Sender<Status>,
    in_flight: Mutex<HashSet<InstanceKey>>,
    /// Executions run by client actions that hold a durable claim (shared stores): their
    /// leases are renewed like those of alarm executions.
    inline: AtomicUsize,
    max_in_flight: usize,
    /// Alarms whose execution could not commit, and until when they wait. With an exclusive
    /// store the claim is not written (see `claims.rs`), so such an alarm is still due;
    /// without this it would fire again at once and run the job in a loop while the store
    /// fails. A written claim gives the same pause through its lease.
    held: Mutex<HashMap<InstanceKey, Timestamp>>,
}

impl Scheduler {
    pub(crate) fn new(max_in_flight: usize) -> Arc<Self> {
        Arc::new(Scheduler {
            wake: Notify::new(),
            slot_free: Notify::new(),
            busy: Notify::new(),
            stopped: AtomicBool::new(false),
            next_wake: AtomicI64::new(i64::MAX),
            requests: AtomicU64::new(0),
            status: watch::channel(Status {
                served: 0,
                idle: false,
            })
            .0,
            in_flight: Mutex::new(HashSet::new()),
            inline: AtomicUsize::new(0),
            max_in_flight: max_in_flight.max(1),
            held: Mutex::new(HashMap::new()),
        })
    }

    /// Keeps `key`'s alarm from firing before `until`.
    pub(crate) fn hold(&self, key: InstanceKey, until: Timestamp) {
        self.held().insert(key, until);
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<InstanceKey, Timestamp>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `key` is held at `now`; forgets holds that ended.
    fn is_held(&self, key: &InstanceKey, now: Timestamp) -> bool {
        let mut held = self.held();
        match held.get(key) {
            Some(until) if *until > now => true,
            Some(_) => {
                held.remove(key);
                false
            }
            None => false,
        }
    }

    /// When the first hold still running at `now` ends. Holds that ended are forgotten here
    /// too: one whose alarm was since moved or deleted is never looked up again, and would
    /// otherwise ask for a wake-up in the past on every pass.
    fn first_release(&self, now: Timestamp) -> Option<Timestamp> {
        let mut held = self.held();
        held.retain(|_, until| *until > now);
        held.values().min().copied()
    }

    /// Called after a commit that set an alarm: wakes the scheduler if the alarm is earlier
    /// than its planned wake-up.
    pub(crate) fn alarm_written(&self, at: Timestamp) {
        if at.as_millis() < self.next_wake.load(Ordering::SeqCst) {
            self.wake.notify_one();
        }
    }

    pub(crate) fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.wake.notify_one();
        self.busy.notify_one();
        // Wakes every settle waiting, which returns now: the loop may be aborted before it
        // publishes its last status.
        self.status.send_modify(|_| {});
    }

    fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    fn in_flight(&self) -> std::sync::MutexGuard<'_, HashSet<InstanceKey>> {
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts an execution run by a client action under a durable claim until the guard drops,
    /// so that its lease is renewed.
    pub(crate) fn inline_claim(self: &Arc<Self>) -> InlineClaim {
        if self.inline.fetch_add(1, Ordering::SeqCst) == 0 {
            self.busy.notify_one();
        }
        InlineClaim {
            scheduler: self.clone(),
        }
    }

    /// Whether an alarm execution of `key` was started and has not ended.
    pub(crate) fn running(&self, key: &InstanceKey) -> bool {
        self.in_flight().contains(key)
    }

    /// Returns once everything due now has run and nothing is in flight.
    async fn settle(&self) {
        let requested = self.requests.fetch_add(1, Ordering::SeqCst) + 1;
        self.wake.notify_one();
        let mut rx = self.status.subscribe();
        // A stopped scheduler runs nothing more, so there is nothing to wait for.
        let _ = rx
            .wait_for(|s| (s.served >= requested && s.idle) || self.is_stopped())
            .await;
    }
}

/// Removes an execution from the in-flight set when it ends, however it ends.
///
/// User code's panics are caught where it runs; an execution that panics all the same (the
/// engine's own code) unwinds through this guard, which then holds its alarm for `hold` like
/// one whose end could not be committed, instead of letting it fire again at once.
struct InFlight {
    scheduler: Arc<Scheduler>,
    key: InstanceKey,
    /// Until when a panicking execution holds the alarm.
    hold: Timestamp,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if std::thread::panicking() {
            tracing::error!(instance = %self.key, "an alarm execution panicked; its alarm is held");
            self.scheduler.hold(self.key.clone(), self.hold);
        }
        self.scheduler.in_flight().remove(&self.key);
        self.scheduler.slot_free.notify_one();
    }
}

/// An execution run by a client action under a durable claim, counted while it runs: see
/// [`Scheduler::inline_claim`].
pub(crate) struct InlineClaim {
    scheduler: Arc<Scheduler>,
}

impl Drop for InlineClaim {
    fn drop(&mut self) {
        self.scheduler.inline.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How often old event ids are pruned, at most, while a batch finds fewer than
/// [`PRUNE_BATCH`]; a full batch is followed by another at the next scan.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Event ids deleted per write: a short transaction, whatever the backlog.
pub(crate) const PRUNE_BATCH: u32 = 1_000;

/// Due alarms read per scan. Alarms beyond it wait in the store for the next scan.
const SCAN_WINDOW: usize = 1024;

/// The scheduler's loop.
///
/// A scan reads up to [`SCAN_WINDOW`] due alarms into a local queue and the time of the next
/// alarm. Executions are started from the queue as slots free up; the store is scanned again
/// only when the queue runs dry while more was due, when the next alarm's time comes, or when
/// a write announces an earlier alarm.
pub(crate) async fn run<A: Send + Sync + 'static>(inner: Arc<Inner<A>>) {
    let scheduler = inner.scheduler.clone();
    let mut backoff = Duration::from_millis(10);
    let mut queue: VecDeque<(InstanceKey, Timestamp)> = VecDeque::new();
    let mut next: Option<Timestamp> = None;
    let mut truncated = false;
    let mut rescan = true;
    // Made before the first scan: an alarm another process writes after it wakes this loop.
    let mut others = inner.others.watch(Change::Alarms);
    let mut served = 0;
    let mut pruned_at: Option<Timestamp> = None;
    while !scheduler.is_stopped() {
        if rescan || (queue.is_empty() && truncated) {
            let requested = scheduler.requests.load(Ordering::SeqCst);
            let now = inner.clock.now();
            match inner
                .store
                .scan_alarms(now, SCAN_WINDOW, &inner.alarm_jobs)
                .await
            {
                Ok(scan) => {
                    backoff = Duration::from_millis(10);
                    truncated = scan.due.len() >= SCAN_WINDOW;
                    queue = scan.due.into();
                    crate::metrics::alarms_due(&inner.alarm_jobs, queue.iter().map(|(key, _)| key));
                    next = scan.next;
                    rescan = false;
                    served = requested;
                    // Event ids are kept for a retention period; forget older ones now and then,
                    // riding on the scans the scheduler does anyway.
                    if pruned_at.is_none_or(|at| now.saturating_duration_since(at) >= PRUNE_EVERY) {
                        pruned_at = Some(now);
                        match inner
                            .store
                            .prune_event_ids(now - inner.event_id_retention, PRUNE_BATCH)
                            .await
                        {
                            // More are left: the next scan prunes again.
                            Ok(n) if n >= u64::from(PRUNE_BATCH) => pruned_at = None,
                            Ok(_) => {}
                            Err(e) => tracing::warn!(error = %e, "pruning old event ids failed"),
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, ?backoff, "scanning alarms failed; backing off");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            }
        }
        {
            let now = inner.clock.now();
            let mut started = false;
            let mut in_flight = scheduler.in_flight();
            while in_flight.len() < scheduler.max_in_flight {
                let Some((key, due)) = queue.pop_front() else {
                    break;
                };
                crate::metrics::alarm_dequeued(&key);
                if in_flight.contains(&key) {
                    // Still running; its commit announces the alarm again if it is due.
                    continue;
                }
                if scheduler.is_held(&key, now) {
                    continue;
                }
                started = true;
                if in_flight.is_empty() {
                    scheduler.busy.notify_one();
                }
                in_flight.insert(key.clone());
                let guard = InFlight {
                    scheduler: scheduler.clone(),
                    key: key.clone(),
                    hold: now + inner.lease,
                };
                tokio::spawn(fire(inner.clone(), key, due, guard));
            }
            if queue.is_empty() && truncated && !started {
                // A full window of held alarms: scanning again at once would find the same.
                // The rest waits for a hold to end, a slot, or a write.
                truncated = false;
            }
        }
        let idle = queue.is_empty() && !truncated && scheduler.in_flight().is_empty();
        let wake_at = if queue.is_empty() {
            match (next, scheduler.first_release(inner.clock.now())) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        } else {
            None
        };
        scheduler.next_wake.store(
            wake_at.map_or(i64::MAX, Timestamp::as_millis),
            Ordering::SeqCst,
        );
        scheduler.status.send_replace(Status { served, idle });
        if queue.is_empty() && truncated {
            continue;
        }
        tokio::select! {
            _ = scheduler.wake.notified() => rescan = true,
            _ = scheduler.slot_free.notified() => {}
            _ = sleep_until(&inner, wake_at) => rescan = true,
            // Another process's write: when the store hears of it, and now and then.
            () = others.next() => rescan = true,
        }
    }
    scheduler.status.send_replace(Status {
        served: u64::MAX,
        idle: true,
    });
}

async fn sleep_until<A>(inner: &Inner<A>, at: Option<Timestamp>) {
    match at {
        Some(at) => inner.clock.sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Claims and runs one alarm, due at `due`, under the instance's lock.
async fn fire<A: Send + Sync + 'static>(
    inner: Arc<Inner<A>>,
    key: InstanceKey,
    due: Timestamp,
    _in_flight: InFlight,
) {
    let Some(_activity) = inner.activity.enter() else {
        return;
    };
    let _lock = inner.locks.lock(&key).await;
    let now = inner.clock.now();
    let claimed = match inner.claim(&key, now).await {
        Ok(Some(rec)) => rec,
        Ok(None) => return,
        Err(e) => {
            tracing::error!(instance = %key, error = %e, "claiming an alarm failed");
            return;
        }
    };
    crate::metrics::started(key.kind(), key.job(), due, now);
    let result = match (inner.jobs.get(key.job()), key.kind()) {
        (Some(Handler::Continuous(h)), JobKind::Continuous) => {
            inner.continuous_alarm(h.clone(), claimed).await
        }
        (Some(Handler::Debounce(h)), JobKind::Debounce) => {
            inner.debounce_alarm(h.clone(), claimed).await
        }
        (Some(Handler::Task(h)), JobKind::Task) => inner.task_alarm(h.clone(), claimed).await,
        // Scans ask for the alarms of registered jobs only.
        _ => Ok(()),
    };
    if let Err(e) = result {
        tracing::error!(instance = %key, error = %e, "alarm execution failed");
        let until = inner.clock.now() + inner.lease;
        inner.claims.failed_end(&inner.scheduler, key, until);
    }
}

/// Renews the leases of executions in flight (alarm executions, and executions that client
/// actions run under a durable claim), so a long execution keeps its claim. Sleeps while
/// nothing is in flight. Runs only when the claim strategy writes its claims
/// ([`Claims::renews_leases`](super::claims::Claims::renews_leases)).
pub(crate) async fn renew_leases<A: Send + Sync + 'static>(inner: Arc<Inner<A>>) {
    let scheduler = inner.scheduler.clone();
    let period = inner.lease / 3;
    while !scheduler.is_stopped() {
        if scheduler.in_flight().is_empty() && scheduler.inline.load(Ordering::SeqCst) == 0 {
            scheduler.busy.notified().await;
            continue;
        }
        tokio::time::sleep(period).await;
        let until = inner.clock.now() + inner.lease;
        if let Err(e) = inner.store.renew_leases(&inner.owner, until).await {
            tracing::warn!(error = %e, "renewing leases failed");
        }
    }
}

/// Lets a [`TestClock`](crate::testing::TestClock) step through this engine's alarms.
pub(crate) struct ClockDriver<A> {
    pub(crate) inner: Weak<Inner<A>>,
}

impl<A: Send + Sync + 'static> ClockDriven for ClockDriver<A> {
    fn next_alarm(&self) -> BoxFuture<'_, Option<Timestamp>> {
        Box::pin(async move {
            let inner = self.inner.upgrade()?;
            let scan = inner
                .store
                .scan_alarms(inner.clock.now(), 1, &inner.alarm_jobs)
                .await
                .ok()?;
            scan.due.first().map(|(_, at)| *at).or(scan.next)
        })
    }

    fn settle(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Some(inner) = self.inner.upgrade() {
                let scheduler = inner.scheduler.clone();
                drop(inner);
                scheduler.settle().await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Waker};

    use super::*;

    #[test]
    fn an_alarm_written_before_the_first_scan_ends_wakes_the_scheduler() {
        let scheduler = Scheduler::new(4);
        // The scheduler has planned nothing yet: any alarm may be earlier than what its scan
        // will find.
        scheduler.alarm_written(Timestamp::from_millis(1_000));
        let woken = pin!(scheduler.wake.notified());
        let mut cx = Context::from_waker(Waker::noop());
        assert!(woken.poll(&mut cx).is_ready());
    }

    #[test]
    fn a_hold_that_ended_no_longer_asks_for_a_wake_up() {
        let scheduler = Scheduler::new(4);
        let key = |id: &str| InstanceKey::new(crate::id::JobKind::Continuous, "j", id);
        scheduler.hold(key("a"), Timestamp::from_millis(1_000));
        scheduler.hold(key("b"), Timestamp::from_millis(3_000));
        assert_eq!(
            scheduler.first_release(Timestamp::from_millis(500)),
            Some(Timestamp::from_millis(1_000))
        );
        // `a` was never looked up again (its alarm moved): its hold is gone all the same.
        assert_eq!(
            scheduler.first_release(Timestamp::from_millis(2_000)),
            Some(Timestamp::from_millis(3_000))
        );
        assert_eq!(scheduler.first_release(Timestamp::from_millis(3_000)), None);
        assert!(scheduler.held().is_empty());
    }

    #[test]
    fn an_alarm_after_the_planned_wake_up_does_not_wake_the_scheduler() {
        let scheduler = Scheduler::new(4);
        scheduler.next_wake.store(1_000, Ordering::SeqCst);
        scheduler.alarm_written(Timestamp::from_millis(2_000));
        let mut woken = pin!(scheduler.wake.notified());
        let mut cx = Context::from_waker(Waker::noop());
        assert!(woken.as_mut().poll(&mut cx).is_pending());
        scheduler.alarm_written(Timestamp::from_millis(500));
        assert!(woken.as_mut().poll(&mut cx).is_ready());
    }

    #[test]
    fn a_settle_returns_once_the_scheduler_is_stopped() {
        // No loop runs: as after a shutdown that aborted it before its last status.
        let scheduler = Scheduler::new(4);
        let mut settle = pin!(scheduler.settle());
        let mut cx = Context::from_waker(Waker::noop());
        assert!(settle.as_mut().poll(&mut cx).is_pending());
        scheduler.stop();
        assert!(settle.as_mut().poll(&mut cx).is_ready());
    }
}
