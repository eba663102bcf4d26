//! The engine's one event fan-out: job events and step-run events in one broadcast channel, read
//! by [`Engine::events`](crate::Engine::events), the step clients' run streams and the
//! forwarder of run events to the outbox.
//!
//! Each source publishes after the change an event describes committed, so a reader sees each
//! source's events in commit order (a run's `run:trigger` first, see `steps::events`). Readers
//! say which kinds they read, and a kind's events are only built and published while someone
//! reads them: the forwarder never makes the engine build job events, an idle engine builds
//! none.
//!
//! The channel holds the last [`CAPACITY`] events. A reader that falls further behind skips the
//! oldest of those it had not read and goes on with the rest; the others are not slowed down.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use serde_json::Value;
use tokio::sync::broadcast;

use super::JobEvent;
use crate::steps::RunEvent;

/// Events a reader may fall behind by before the oldest are skipped.
pub(crate) const CAPACITY: usize = 4096;

/// One committed event: a continuous, debounce or task job's, or a step-job run's.
///
/// ```
/// use durable_jobs::Event;
///
/// fn describe(event: &Event) -> String {
///     match (event.as_job(), event.as_run()) {
///         (Some(job), _) => format!("{} of {}", job.type_name(), job.instance),
///         (_, Some(run)) => format!("{} of run {}", run.type_name(), run.run_id),
///         _ => event.type_name().to_owned(),
///     }
/// }
/// # let _ = describe;
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A continuous, debounce or task job event (`job.*`, `debounce.*`, `task.*`).
    Job(Arc<JobEvent>),
    /// A step-job run event (`run:*`, `step:*`, `log:write`, `worker:error`).
    Run(Arc<RunEvent>),
}

impl Event {
    /// The job event, if it is one.
    pub fn as_job(&self) -> Option<&JobEvent> {
        match self {
            Event::Job(e) => Some(e),
            Event::Run(_) => None,
        }
    }

    /// The run event, if it is one.
    pub fn as_run(&self) -> Option<&RunEvent> {
        match self {
            Event::Run(e) => Some(e),
            Event::Job(_) => None,
        }
    }

    /// The job event, if it is one.
    pub fn into_job(self) -> Option<Arc<JobEvent>> {
        match self {
            Event::Job(e) => Some(e),
            Event::Run(_) => None,
        }
    }

    /// The run event, if it is one.
    pub fn into_run(self) -> Option<Arc<RunEvent>> {
        match self {
            Event::Run(e) => Some(e),
            Event::Job(_) => None,
        }
    }

    /// The wire name, such as `job.executed` or `run:complete`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Event::Job(e) => e.type_name(),
            Event::Run(e) => e.type_name(),
        }
    }

    /// The wire form: [`JobEvent::to_json`] or [`RunEvent::to_json`].
    pub fn to_json(&self) -> Value {
        match self {
            Event::Job(e) => e.to_json(),
            Event::Run(e) => e.to_json(),
        }
    }
}

/// The kinds of event a reader reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reads {
    /// Job events and run events.
    All,
    /// Run events only.
    Runs,
}

/// How many readers read each kind.
#[derive(Default)]
struct Readers {
    jobs: AtomicUsize,
    runs: AtomicUsize,
}

impl Readers {
    fn counts(&self, reads: Reads) -> impl Iterator<Item = &AtomicUsize> {
        let jobs = (reads == Reads::All).then_some(&self.jobs);
        jobs.into_iter().chain([&self.runs])
    }
}

/// The fan-out shared by the engine and its step runtime.
pub(crate) struct Fanout {
    tx: broadcast::Sender<Event>,
    /// Apart from the sender, so that a subscription does not keep the channel open once the
    /// engine is gone.
    readers: Arc<Readers>,
}

impl Fanout {
    pub(crate) fn new() -> Arc<Self> {
        let (tx, _) = broadcast::channel(CAPACITY);
        Arc::new(Fanout {
            tx,
            readers: Arc::default(),
        })
    }

    /// Whether anyone reads job events.
    pub(crate) fn reads_jobs(&self) -> bool {
        self.readers.jobs.load(Ordering::Acquire) > 0
    }

    /// Whether anyone reads run events.
    pub(crate) fn reads_runs(&self) -> bool {
        self.readers.runs.load(Ordering::Acquire) > 0
    }

    /// Sends `event` to every reader (those that do not read its kind skip it).
    pub(crate) fn publish(&self, event: Event) {
        // An error only says nobody reads right now.
        let _ = self.tx.send(event);
    }

    /// A reader of `reads`: counted before it receives, so that nothing published after this
    /// returns goes unbuilt.
    pub(crate) fn subscribe(&self, reads: Reads) -> Subscription {
        for count in self.readers.counts(reads) {
            count.fetch_add(1, Ordering::AcqRel);
        }
        Subscription {
            rx: self.tx.subscribe(),
            _reader: Reader {
                readers: self.readers.clone(),
                reads,
            },
        }
    }
}

/// Uncounts a reader when its subscription ends.
struct Reader {
    readers: Arc<Readers>,
    reads: Reads,
}

impl Drop for Reader {
    fn drop(&mut self) {
        for count in self.readers.counts(self.reads) {
            count.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// One reader's place in the fan-out.
pub(crate) struct Subscription {
    rx: broadcast::Receiver<Event>,
    _reader: Reader,
}

impl Subscription {
    /// The next event; `Lagged(n)` when the `n` oldest unread ones were skipped, `Closed` once
    /// the engine and its step runtime are gone.
    pub(crate) async fn recv(&mut self) -> Result<Event, broadcast::error::RecvError> {
        self.rx.recv().await
    }

    /// The next event if one is waiting, as [`recv`](Self::recv).
    pub(crate) fn try_recv(&mut self) -> Result<Event, broadcast::error::TryRecvError> {
        self.rx.try_recv()
    }
}

type Next = Pin<Box<dyn Future<Output = (Option<Event>, Subscription, u64)> + Send + Sync>>;

/// A stream of committed events, job events and step-run events alike, from
/// [`Engine::events`](crate::Engine::events).
///
/// Each job instance's and each run's events arrive in the order their changes committed, a
/// run's `run:trigger` first. A subscriber that falls more than 4,096 events behind skips the
/// oldest of those it had not read and goes on with the newest ([`skipped`](Self::skipped)
/// counts them, a `tracing` warning says so); other subscribers, the step clients' waits and
/// the HTTP outbox are not held up by it, and the outbox never skips job events. Events are
/// only built while someone subscribes or an HTTP endpoint is configured.
///
/// Use [`next`](Self::next), or it as a [`futures_core::Stream`].
///
/// ```
/// # use durable_jobs::Engine;
/// # async fn watch<R: durable_jobs::Registry>(engine: Engine<R>) {
/// let mut events = engine.events();
/// while let Some(event) = events.next().await {
///     if let Some(job) = event.as_job() {
///         println!("{} {}", job.type_name(), job.instance);
///     } else if let Some(run) = event.as_run() {
///         println!("{} {}", run.type_name(), run.run_id);
///     }
/// }
/// # }
/// ```
pub struct EventStream {
    subscription: Option<Subscription>,
    skipped: u64,
    /// A receive in progress, when the stream was polled and the event was not there yet.
    pending: Option<Next>,
}

impl EventStream {
    pub(crate) fn new(subscription: Subscription) -> Self {
        EventStream {
            subscription: Some(subscription),
            skipped: 0,
            pending: None,
        }
    }

    /// The next event; `None` once the engine is gone.
    pub async fn next(&mut self) -> Option<Event> {
        std::future::poll_fn(|cx| self.poll_event(cx)).await
    }

    /// The next event if one is waiting.
    pub fn try_next(&mut self) -> Option<Event> {
        if self.pending.is_some() {
            // A receive already started: it has the subscription. Look at it without waiting.
            let mut cx = Context::from_waker(Waker::noop());
            return match self.poll_event(&mut cx) {
                Poll::Ready(event) => event,
                Poll::Pending => None,
            };
        }
        let subscription = self.subscription.as_mut()?;
        loop {
            match subscription.try_recv() {
                Ok(event) => return Some(event),
                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                    self.skipped += n;
                    warn_skipped(n);
                }
                Err(_) => return None,
            }
        }
    }

    /// Every event waiting now.
    pub fn drain(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.try_next()).collect()
    }

    /// How many events this stream skipped because it fell more than 4,096 events behind.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        if self.pending.is_none() {
            let Some(subscription) = self.subscription.take() else {
                return Poll::Ready(None);
            };
            self.pending = Some(Box::pin(receive(subscription)));
        }
        let Some(next) = self.pending.as_mut() else {
            return Poll::Ready(None);
        };
        match next.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready((event, subscription, skipped)) => {
                self.pending = None;
                self.skipped += skipped;
                if event.is_some() {
                    self.subscription = Some(subscription);
                }
                Poll::Ready(event)
            }
        }
    }
}

/// Receives the next event, skipping past a lag; hands the subscription back with it.
async fn receive(mut subscription: Subscription) -> (Option<Event>, Subscription, u64) {
    let mut skipped = 0;
    loop {
        match subscription.recv().await {
            Ok(event) => return (Some(event), subscription, skipped),
            Err(broadcast::error::RecvError::Lagged(n)) => {
                skipped += n;
                warn_skipped(n);
            }
            Err(broadcast::error::RecvError::Closed) => return (None, subscription, skipped),
        }
    }
}

fn warn_skipped(n: u64) {
    tracing::warn!(
        skipped = n,
        "an event subscriber fell {CAPACITY} events behind; the oldest were skipped"
    );
}

impl futures_core::Stream for EventStream {
    type Item = Event;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_event(cx)
    }
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream")
            .field("skipped", &self.skipped)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{InstanceKey, JobKind};
    use crate::telemetry::EventKind;
    use crate::time::Timestamp;

    /// A job event told apart by its id.
    fn job_event(n: usize) -> Event {
        Event::Job(Arc::new(JobEvent {
            event_id: n.to_string(),
            timestamp: Timestamp::from_millis(0),
            instance: InstanceKey::new(JobKind::Task, "t", "i"),
            kind: EventKind::Started { input: Value::Null },
        }))
    }

    fn id(event: &Event) -> &str {
        &event.as_job().expect("a job event").event_id
    }

    #[test]
    fn readers_count_for_the_kinds_they_read_while_they_live() {
        let fanout = Fanout::new();
        assert!(!fanout.reads_jobs() && !fanout.reads_runs());
        let runs = fanout.subscribe(Reads::Runs);
        assert!(!fanout.reads_jobs() && fanout.reads_runs());
        let all = fanout.subscribe(Reads::All);
        assert!(fanout.reads_jobs() && fanout.reads_runs());
        drop(all);
        assert!(!fanout.reads_jobs() && fanout.reads_runs());
        drop(runs);
        assert!(!fanout.reads_jobs() && !fanout.reads_runs());
    }

    #[tokio::test]
    async fn a_stream_that_falls_behind_skips_the_oldest_and_goes_on() {
        let fanout = Fanout::new();
        let mut stream = EventStream::new(fanout.subscribe(Reads::All));
        for n in 0..CAPACITY + 10 {
            fanout.publish(job_event(n));
        }
        let first = stream.next().await.expect("an event");
        assert_eq!((id(&first), stream.skipped()), ("10", 10));
        let rest = stream.drain();
        assert_eq!(rest.len(), CAPACITY - 1);
        assert_eq!(
            rest.last().map(id),
            Some((CAPACITY + 9).to_string().as_str())
        );
        fanout.publish(job_event(0));
        assert_eq!(stream.try_next().as_ref().map(id), Some("0"));
    }

    #[tokio::test]
    async fn a_receive_cut_short_loses_nothing() {
        let fanout = Fanout::new();
        let mut stream = EventStream::new(fanout.subscribe(Reads::All));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(stream.poll_event(&mut cx).is_pending());
        fanout.publish(job_event(1));
        fanout.publish(job_event(2));
        assert_eq!(
            stream.drain().iter().map(id).collect::<Vec<_>>(),
            ["1", "2"]
        );
    }

    #[tokio::test]
    async fn a_stream_ends_once_the_engine_is_gone() {
        let fanout = Fanout::new();
        let mut stream = EventStream::new(fanout.subscribe(Reads::All));
        fanout.publish(job_event(1));
        drop(fanout);
        assert_eq!(stream.next().await.as_ref().map(id), Some("1"));
        assert_eq!(stream.next().await, None);
        assert_eq!(stream.next().await, None);
    }
}
