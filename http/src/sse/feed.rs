//! The event feed behind every stream: the engine's events (run events and job events, from
//! [`Engine::events`](durable_jobs::Engine::events)), numbered in one sequence and kept in a
//! ring, so that a client reconnecting with `Last-Event-ID` gets what it missed.
//!
//! This is the one seam between the streams and where events come from. [`LocalFeed`] reads the
//! engine in this process; on PostgreSQL, `postgres::SharedFeed` (feature `postgres`)
//! implements [`EventFeed`] over a table of the store's schema (every node appends, every node
//! tails), and the routes stay as they are.
//!
//! The engine only builds events while someone listens, so [`LocalFeed`] listens only while a
//! stream is open, and for a while after the last one closed (`linger`, one minute by
//! default): long enough for a browser to reconnect and resume, short enough that a service
//! nobody watches pays nothing. Positions are `<epoch>-<seq>`: the epoch changes with each
//! process and each time the feed starts listening again, so a position from before cannot be
//! mistaken for one now.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use durable_jobs::{Event, EventStream, JobKind};
use serde_json::{Map, Value};
use tokio::sync::broadcast;
use tokio::time::Instant;

/// Where an event comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// A step-job run: `run:*`, `step:*`, `log:write`, `worker:error`.
    Run,
    /// A continuous, debounce or task job: `job.*`, `debounce.*`, `task.*`.
    Job,
}

impl Source {
    /// `run` or `job`.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Run => "run",
            Source::Job => "job",
        }
    }

    /// The source named `run` or `job`.
    pub fn parse(s: &str) -> Option<Source> {
        match s {
            "run" => Some(Source::Run),
            "job" => Some(Source::Job),
            _ => None,
        }
    }
}

/// An event in the form the streams send it: the wire form of a run event
/// ([`RunEvent::to_json`](durable_jobs::steps::RunEvent::to_json)) or a job event
/// ([`JobEvent::to_json`](durable_jobs::JobEvent::to_json)). A feed shared by several
/// processes stores this JSON as text and reads it back unchanged, so a stream sends the same
/// bytes whichever node produced the event and whichever node serves the stream.
#[derive(Clone, Debug, PartialEq)]
pub struct WireEvent {
    source: Source,
    json: Arc<Value>,
}

impl WireEvent {
    /// An event in its wire form; `json` is an object with at least `type`.
    pub fn new(source: Source, json: Value) -> WireEvent {
        WireEvent {
            source,
            json: Arc::new(json),
        }
    }

    /// The wire form of one of the engine's events.
    pub fn from_event(event: &Event) -> Option<WireEvent> {
        if let Some(run) = event.as_run() {
            Some(WireEvent::new(Source::Run, run.to_json()))
        } else {
            event
                .as_job()
                .map(|job| WireEvent::new(Source::Job, job.to_json()))
        }
    }

    /// A run event or a job event.
    pub fn source(&self) -> Source {
        self.source
    }

    /// The whole wire form, as sent.
    pub fn json(&self) -> &Value {
        &self.json
    }

    fn text(&self, key: &str) -> Option<&str> {
        self.json.get(key).and_then(Value::as_str)
    }

    /// The wire name, such as `run:complete` or `job.executed`.
    pub fn type_name(&self) -> &str {
        self.text("type").unwrap_or_default()
    }

    /// The run a run event concerns (none for a job event, or a `worker:error` not tied to a
    /// run).
    pub fn run_id(&self) -> Option<&str> {
        match self.source {
            Source::Run => self.text("runId"),
            Source::Job => None,
        }
    }

    /// The job's name.
    pub fn job_name(&self) -> &str {
        self.text("jobName").unwrap_or_default()
    }

    /// A run event's labels.
    pub fn labels(&self) -> Option<&Map<String, Value>> {
        match self.source {
            Source::Run => self.json.get("labels").and_then(Value::as_object),
            Source::Job => None,
        }
    }

    /// A job event's kind of job.
    pub fn job_kind(&self) -> Option<JobKind> {
        match self.source {
            Source::Job => self.text("jobType").and_then(JobKind::parse),
            Source::Run => None,
        }
    }
}

/// An event and its position in the feed.
#[derive(Clone, Debug)]
pub struct FeedEvent {
    /// Increasing within an epoch.
    pub seq: u64,
    /// What happened: a run event (`run:*`, `step:*`, `log:write`) or a job event (`job.*`,
    /// `debounce.*`, `task.*`).
    pub item: WireEvent,
}

/// A position a client reached: the `id:` of the last event it received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Position {
    /// The feed's epoch when the event was sent.
    pub epoch: String,
    /// Its sequence number.
    pub seq: u64,
}

impl Position {
    /// Parses `<epoch>-<seq>`; `None` for anything else.
    pub fn parse(s: &str) -> Option<Position> {
        let (epoch, seq) = s.trim().rsplit_once('-')?;
        Some(Position {
            epoch: epoch.to_owned(),
            seq: seq.parse().ok()?,
        })
    }
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.epoch, self.seq)
    }
}

/// A subscription to the feed: what was missed since a position, then live events.
pub struct FeedSubscription {
    /// Events after the position asked for, oldest first, when they could all be found
    /// (`resumed`); empty otherwise.
    pub replay: Vec<FeedEvent>,
    /// Whether every event after the position asked for is in `replay` (or follows in
    /// `live`). `false` without a position, or when the position is from another epoch or
    /// older than what the feed still holds: the stream starts afresh.
    pub resumed: bool,
    /// The position the stream is at once `replay` is sent: `live` events at or before it are
    /// skipped (a feed that has not yet read as far as the position a client resumes from
    /// sends those events again, and the stream drops them).
    pub head: Position,
    /// Events from now on. A receiver that lags has lost events: end the stream, and the
    /// client resumes from its last position.
    pub live: broadcast::Receiver<FeedEvent>,
    /// Keeps the feed listening while the subscription lives.
    pub watch: Box<dyn Send + Sync>,
}

impl std::fmt::Debug for FeedSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedSubscription")
            .field("replay", &self.replay.len())
            .field("resumed", &self.resumed)
            .field("head", &self.head)
            .finish_non_exhaustive()
    }
}

/// Where streams get their events.
pub trait EventFeed: Send + Sync + 'static {
    /// Subscribes, resuming after `after` when possible.
    fn subscribe(&self, after: Option<&Position>) -> FeedSubscription;

    /// The processes sharing this feed and what each holds, for `GET /nodes`; `None` (the
    /// default) for a feed of one process.
    fn nodes(&self) -> Option<crate::nodes::NodesFuture<'_>> {
        None
    }
}

/// Opens the engine's event stream.
type Open = Box<dyn Fn() -> EventStream + Send + Sync>;

struct State {
    ring: VecDeque<FeedEvent>,
    epoch: String,
    next_seq: u64,
    listening: bool,
    watchers: usize,
    idle_since: Instant,
}

struct Inner {
    state: Mutex<State>,
    tx: broadcast::Sender<FeedEvent>,
    open: Open,
    capacity: usize,
    linger: Duration,
}

/// The feed of one engine in this process: a ring of the last `capacity` events (10,000 by
/// default).
pub struct LocalFeed {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for LocalFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalFeed")
            .field("capacity", &self.inner.capacity)
            .field("linger", &self.inner.linger)
            .finish_non_exhaustive()
    }
}

fn new_epoch() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{:x}", nanos & 0xffff_ffff_ffff)
}

impl LocalFeed {
    /// A feed over the stream `open` returns (the engine's events, from
    /// [`Engine::events`](durable_jobs::Engine::events)), holding `capacity` events and
    /// listening `linger` after the last stream closed.
    pub fn new(
        open: impl Fn() -> EventStream + Send + Sync + 'static,
        capacity: usize,
        linger: Duration,
    ) -> Self {
        let (tx, _) = broadcast::channel(1024);
        LocalFeed {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    ring: VecDeque::new(),
                    epoch: new_epoch(),
                    next_seq: 1,
                    listening: false,
                    watchers: 0,
                    idle_since: Instant::now(),
                }),
                tx,
                open: Box::new(open),
                capacity: capacity.max(1),
                linger,
            }),
        }
    }
}

/// Decrements the watcher count when a subscription ends.
struct Watch(Arc<Inner>);

impl Drop for Watch {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        st.watchers = st.watchers.saturating_sub(1);
        if st.watchers == 0 {
            st.idle_since = Instant::now();
        }
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, event: Event) {
        let Some(item) = WireEvent::from_event(&event) else {
            return;
        };
        let mut st = self.lock();
        let event = FeedEvent {
            seq: st.next_seq,
            item,
        };
        st.next_seq += 1;
        if st.ring.len() == self.capacity {
            st.ring.pop_front();
        }
        st.ring.push_back(event.clone());
        // Sent under the lock, so a subscriber sees each event either in its replay or live.
        let _ = self.tx.send(event);
    }

    /// Stops listening if nobody watched for `linger`; says whether it stopped.
    fn stop_if_idle(&self) -> bool {
        let mut st = self.lock();
        if st.watchers == 0 && st.idle_since.elapsed() >= self.linger {
            st.listening = false;
            return true;
        }
        false
    }

    fn stopped(&self) {
        self.lock().listening = false;
    }
}

/// What the pump woke up for.
enum Wake {
    Event(Event),
    /// The engine is gone.
    Closed,
    Tick,
}

async fn pump(inner: Weak<Inner>, mut events: EventStream, tick: Duration) {
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // `EventStream::next` keeps a receive in progress when the tick wins: nothing is lost.
        let wake = tokio::select! {
            e = events.next() => e.map_or(Wake::Closed, Wake::Event),
            _ = ticker.tick() => Wake::Tick,
        };
        let Some(inner) = inner.upgrade() else { return };
        match wake {
            Wake::Event(event) => inner.push(event),
            Wake::Closed => {
                inner.stopped();
                return;
            }
            Wake::Tick => {
                if inner.stop_if_idle() {
                    return;
                }
            }
        }
    }
}

impl EventFeed for LocalFeed {
    fn subscribe(&self, after: Option<&Position>) -> FeedSubscription {
        let inner = &self.inner;
        let mut st = inner.lock();
        if !st.listening {
            // A new epoch: what was held belongs to a time the feed was not listening.
            st.listening = true;
            st.epoch = new_epoch();
            st.ring.clear();
            let events = (inner.open)();
            let tick = (inner.linger / 4).max(Duration::from_millis(50));
            tokio::spawn(pump(Arc::downgrade(inner), events, tick));
        }
        st.watchers += 1;
        let live = inner.tx.subscribe();
        let last = st.next_seq - 1;
        let oldest_held = st.ring.front().map_or(st.next_seq, |e| e.seq);
        let resumable =
            after.filter(|p| p.epoch == st.epoch && p.seq <= last && p.seq + 1 >= oldest_held);
        let replay = match resumable {
            Some(p) => st.ring.iter().filter(|e| e.seq > p.seq).cloned().collect(),
            None => Vec::new(),
        };
        FeedSubscription {
            replay,
            resumed: resumable.is_some(),
            head: Position {
                epoch: st.epoch.clone(),
                seq: last,
            },
            live,
            watch: Box::new(Watch(inner.clone())),
        }
    }
}
