//! The event feed of several processes on one PostgreSQL store: every node appends the events
//! its engine builds to a table in the store's schema, and every node tails that table, so a
//! stream on any node carries the events of all of them, with positions every node shares.
//!
//! ```text
//!   engine A ──events──▶ appender A ─┐                    ┌─▶ tailer A ─▶ ring A ─▶ streams on A
//!                                    ├─▶ http_feed ─NOTIFY┤
//!   engine B ──events──▶ appender B ─┘                    └─▶ tailer B ─▶ ring B ─▶ streams on B
//! ```
//!
//! - **Appending.** A node reads its engine's events ([`Engine::events`]) and, every
//!   [`append_every`](SharedFeedOptions::append_every) (20 ms by default), writes what came as
//!   one multi-row insert in a short transaction of its own, which also sends a `NOTIFY`. The
//!   engine's transactions never touch the table. The engine builds events for the feed as
//!   long as it runs, watched or not: that is the price of streams that any node can serve.
//! - **Order.** Appends take turns on a table lock (see `tables::Tables::append`), so `seq`
//!   values are in commit order and a tailer reading `seq > last` misses nothing.
//! - **Tailing.** Each node listens for the notifications and reads the rows after the last
//!   it read (and looks every [`poll_every`](SharedFeedOptions::poll_every) anyway, for a
//!   notification lost while its listening connection was down). Its own events come back
//!   this way too, so every node sends the same events under the same ids, `<epoch>-<seq>`.
//!   A node keeps the newest [`capacity`](SharedFeedOptions::capacity) events in memory,
//!   filled from the table when it starts: a client that reconnects to any node with
//!   `Last-Event-ID` resumes there. A node that has not read as far as the client's position
//!   yet skips what the client already has.
//! - **Retention.** Each node prunes, with its heartbeat, the events beyond the newest
//!   [`keep`](SharedFeedOptions::keep) and those older than
//!   [`retention`](SharedFeedOptions::retention).
//! - **Nodes.** Each node's heartbeat keeps a row (its engine's lease owner, host name,
//!   process id, when it joined, when it was last heard of); `GET /nodes` lists the nodes
//!   heard from within [`node_lapse`](SharedFeedOptions::node_lapse) and the leases each
//!   holds.

mod tables;
mod tasks;

use std::collections::VecDeque;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use durable_jobs::{Engine, Registry, Timestamp};
use sqlx::postgres::{PgPool, PgPoolOptions};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use self::tables::{NodeRow, Row, Tables};
use crate::nodes::{LeaseHolder, NodeInfo, Nodes, NodesFuture};
use crate::sse::feed::{EventFeed, FeedEvent, FeedSubscription, Position, Source, WireEvent};

/// Where the feed connects.
#[derive(Clone, Debug)]
enum Connect {
    Url(String),
    Pool(PgPool),
}

/// How a node joins the shared feed: the database, the store's schema, and the feed's pace.
#[derive(Clone, Debug)]
pub struct SharedFeedOptions {
    connect: Connect,
    schema: String,
    append_every: Duration,
    poll_every: Duration,
    heartbeat: Duration,
    node_lapse: Duration,
    capacity: usize,
    keep: u64,
    retention: Duration,
    host: Option<String>,
}

impl SharedFeedOptions {
    fn with(connect: Connect) -> Self {
        SharedFeedOptions {
            connect,
            schema: durable_jobs::postgres::DEFAULT_SCHEMA.to_owned(),
            append_every: Duration::from_millis(20),
            poll_every: Duration::from_secs(1),
            heartbeat: Duration::from_secs(5),
            node_lapse: Duration::from_secs(20),
            capacity: 10_000,
            keep: 100_000,
            retention: Duration::from_secs(3600),
            host: None,
        }
    }

    /// Connects to the database at `url` with a pool of its own (three connections, one of
    /// them listening).
    pub fn new(url: impl Into<String>) -> Self {
        Self::with(Connect::Url(url.into()))
    }

    /// Runs on the application's pool: it keeps one of its connections to listen, and borrows
    /// another for a statement or a short transaction at a time.
    pub fn from_pool(pool: PgPool) -> Self {
        Self::with(Connect::Pool(pool))
    }

    /// The store's schema, as its `PostgresOptions::schema` (default `durable_jobs`).
    pub fn schema(mut self, name: impl Into<String>) -> Self {
        self.schema = name.into();
        self
    }

    /// How long events are gathered into one append (default 20 ms): what a stream on another
    /// node waits at most, beside the append itself.
    pub fn append_every(mut self, every: Duration) -> Self {
        self.append_every = every;
        self
    }

    /// How often the tail is read without a notification (default 1 s).
    pub fn poll_every(mut self, every: Duration) -> Self {
        self.poll_every = every;
        self
    }

    /// How often a node records that it is alive and prunes the feed (default 5 s).
    pub fn heartbeat(mut self, every: Duration) -> Self {
        self.heartbeat = every;
        self
    }

    /// How long after its last heartbeat a node is no longer listed (default 20 s). Give every
    /// node the same heartbeat and a lapse of several heartbeats.
    pub fn node_lapse(mut self, lapse: Duration) -> Self {
        self.node_lapse = lapse;
        self
    }

    /// Events a node keeps in memory to resume streams from (default 10,000).
    pub fn capacity(mut self, events: usize) -> Self {
        self.capacity = events.max(1);
        self
    }

    /// Events the table keeps at most (default 100,000).
    pub fn keep(mut self, events: u64) -> Self {
        self.keep = events.max(1);
        self
    }

    /// How long the table keeps an event at most (default one hour).
    pub fn retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// The host name the node is listed under (default: the machine's).
    pub fn host(mut self, name: impl Into<String>) -> Self {
        self.host = Some(name.into());
        self
    }
}

/// The feed could not start: the database failed, or the store's schema is missing.
#[derive(Debug)]
pub struct FeedError {
    context: String,
    source: Option<sqlx::Error>,
}

impl FeedError {
    fn new(context: impl Into<String>) -> Self {
        FeedError {
            context: context.into(),
            source: None,
        }
    }
}

impl std::fmt::Display for FeedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.source {
            Some(e) => write!(f, "shared feed: {}: {e}", self.context),
            None => write!(f, "shared feed: {}", self.context),
        }
    }
}

impl std::error::Error for FeedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|e| e as _)
    }
}

/// Names what a database call was doing when it failed.
trait ResultExt<T> {
    fn context(self, context: &str) -> Result<T, FeedError>;
}

impl<T> ResultExt<T> for Result<T, sqlx::Error> {
    fn context(self, context: &str) -> Result<T, FeedError> {
        self.map_err(|e| FeedError {
            context: context.to_owned(),
            source: Some(e),
        })
    }
}

/// What a node holds in memory: the newest events, in `seq` order.
struct Ring {
    events: VecDeque<FeedEvent>,
    /// Every event with a greater `seq` is in `events` (or was read since).
    covered: u64,
    /// The greatest `seq` read.
    last: u64,
}

pub(crate) struct Inner {
    pool: PgPool,
    tables: Tables,
    epoch: String,
    node: NodeRow,
    ring: Mutex<Ring>,
    tx: broadcast::Sender<FeedEvent>,
    options: SharedFeedOptions,
    /// Set when the engine's event stream ended: the heartbeat stops and the node leaves.
    engine_gone: AtomicBool,
}

impl Inner {
    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds rows read from the table, in `seq` order, and sends them to the streams.
    fn push(&self, rows: Vec<Row>) {
        let mut ring = self.ring();
        for (seq, source, body) in rows {
            let seq = u64::try_from(seq).unwrap_or_default();
            if seq <= ring.last {
                continue;
            }
            ring.last = seq;
            let Some(item) = decode(&source, &body) else {
                tracing::warn!(seq, "an event of the shared feed does not decode; skipped");
                continue;
            };
            let event = FeedEvent { seq, item };
            if ring.events.len() == self.options.capacity {
                if let Some(oldest) = ring.events.pop_front() {
                    ring.covered = oldest.seq;
                }
            }
            ring.events.push_back(event.clone());
            // Sent under the lock, so a subscriber sees each event either in its replay or live.
            let _ = self.tx.send(event);
        }
    }

    /// The table was pruned through `pruned` before this node read it all: positions before it
    /// can no longer be resumed from here. Streams open now missed those events.
    fn pruned_past(&self, pruned: i64) {
        let pruned = u64::try_from(pruned).unwrap_or_default();
        let mut ring = self.ring();
        tracing::warn!(
            last_read = ring.last,
            pruned,
            "the shared event feed was pruned past what this node had read; its open streams missed events"
        );
        ring.covered = ring.covered.max(pruned);
        ring.events.retain(|e| e.seq > pruned);
    }

    async fn nodes(&self) -> Result<Nodes, FeedError> {
        let mut conn = self.pool.acquire().await.context("reading the nodes")?;
        let (rows, now) = self
            .tables
            .live_nodes(&mut conn, self.options.node_lapse)
            .await?;
        let mut leases = self.tables.leases(&mut conn).await?;
        let count = |n: i64| u64::try_from(n).unwrap_or_default();
        let nodes = rows
            .into_iter()
            .map(|row| {
                let held = leases
                    .iter()
                    .position(|(owner, _, _)| *owner == row.id)
                    .map(|i| leases.remove(i));
                let (runs, instances) = held.map_or((0, 0), |(_, r, i)| (r, i));
                NodeInfo {
                    this_node: row.id == self.node.id,
                    id: row.id,
                    host: row.host,
                    pid: row.pid,
                    started_at: Timestamp::from_millis(row.started_ms),
                    last_seen: Timestamp::from_millis(row.last_seen_ms),
                    leased_runs: count(runs),
                    leased_instances: count(instances),
                }
            })
            .collect();
        Ok(Nodes {
            now: Timestamp::from_millis(now),
            nodes,
            other_holders: leases
                .into_iter()
                .map(|(owner, runs, instances)| LeaseHolder {
                    owner,
                    leased_runs: count(runs),
                    leased_instances: count(instances),
                })
                .collect(),
        })
    }
}

fn decode(source: &str, body: &str) -> Option<WireEvent> {
    let source = Source::parse(source)?;
    let json = serde_json::from_str(body).ok()?;
    Some(WireEvent::new(source, json))
}

/// The node's tasks: stopped when the last handle on the feed goes, as when the process dies
/// (the node's row stays until its heartbeat lapses), or by [`SharedFeed::stop`].
struct Tasks {
    stop: watch::Sender<bool>,
    appender: Mutex<Option<JoinHandle<()>>>,
    others: Vec<JoinHandle<()>>,
}

impl Drop for Tasks {
    fn drop(&mut self) {
        if let Some(appender) = self
            .appender
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            appender.abort();
        }
        for task in &self.others {
            task.abort();
        }
    }
}

/// This node's part in the feed shared by every process on a PostgreSQL store: an
/// [`EventFeed`] to hand to [`Api::feed`](crate::Api::feed), which also lists the nodes
/// (`GET /nodes`). Cheap to clone.
///
/// ```no_run
/// # use durable_jobs::Engine;
/// # async fn serve<R: durable_jobs::Registry>(engine: Engine<R>) -> Result<(), Box<dyn std::error::Error>> {
/// use durable_jobs_http::postgres::{SharedFeed, SharedFeedOptions};
/// use durable_jobs_http::Api;
///
/// let feed = SharedFeed::start(&engine, SharedFeedOptions::new("postgres://jobs@db.internal/app")).await?;
/// let api = Api::new(&engine).feed(feed.clone());
/// # let _ = api;
/// // ... and when the service stops:
/// feed.stop().await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct SharedFeed {
    inner: Arc<Inner>,
    tasks: Arc<Tasks>,
}

impl std::fmt::Debug for SharedFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedFeed")
            .field("node", &self.inner.node.id)
            .field("epoch", &self.inner.epoch)
            .field("tables", &self.inner.tables)
            .finish_non_exhaustive()
    }
}

fn host_name() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|path| std::fs::read_to_string(path).ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .unwrap_or_else(|| "unknown".to_owned())
}

impl SharedFeed {
    /// Joins `engine`'s node to the feed of its store: creates the feed's tables in the
    /// store's schema if they are missing, fills the node's memory with the newest events, and
    /// starts appending the engine's events, tailing the table and beating the node's heart.
    /// Must be called within a Tokio runtime, once the engine runs on the store.
    ///
    /// # Errors
    ///
    /// [`FeedError`] when the database cannot be reached or the schema has no store.
    pub async fn start<R: Registry>(
        engine: &Engine<R>,
        options: SharedFeedOptions,
    ) -> Result<SharedFeed, FeedError> {
        let tables = Tables::new(&options.schema)?;
        let pool = match &options.connect {
            Connect::Pool(pool) => pool.clone(),
            Connect::Url(url) => PgPoolOptions::new()
                .max_connections(3)
                .connect(url)
                .await
                .context("connecting to the database")?,
        };
        tables.create(&pool).await?;
        let epoch = tables.epoch(&pool).await?;
        // Listening first, then reading: nothing appended after the read goes unannounced.
        let listener = tasks::listen(&pool, &tables.channel).await?;
        // Subscribed before the node is announced: every event from here on is appended.
        let events = engine.events();
        let (rows, covered) = tables.newest(&pool, options.capacity).await?;
        let covered = u64::try_from(covered).unwrap_or_default();
        let node = NodeRow {
            id: engine.lease_owner().to_owned(),
            host: options.host.clone().unwrap_or_else(host_name),
            pid: std::process::id(),
            started_ms: Timestamp::now_system().as_millis(),
            last_seen_ms: 0,
        };
        tables.heartbeat(&pool, &node, FORGET).await?;
        let inner = Arc::new(Inner {
            pool,
            tables,
            epoch,
            node,
            ring: Mutex::new(Ring {
                events: VecDeque::new(),
                covered,
                last: covered,
            }),
            tx: broadcast::channel(1024).0,
            options,
            engine_gone: AtomicBool::new(false),
        });
        inner.push(rows);
        let (stop, stopped) = watch::channel(false);
        let appender = tokio::spawn(tasks::append(inner.clone(), events, stopped));
        let others = vec![
            tokio::spawn(tasks::tail(inner.clone(), listener)),
            tokio::spawn(tasks::heartbeat(inner.clone())),
        ];
        tracing::info!(node = %inner.node.id, schema = inner.options.schema, "joined the shared event feed");
        Ok(SharedFeed {
            inner,
            tasks: Arc::new(Tasks {
                stop,
                appender: Mutex::new(Some(appender)),
                others,
            }),
        })
    }

    /// This node's id: its engine's lease owner.
    pub fn node_id(&self) -> &str {
        &self.inner.node.id
    }

    /// Leaves the feed: appends the events still gathered, stops the node's tasks and removes
    /// its row, so the other nodes stop listing it at once. Streams served from this node end
    /// when it stops; their clients resume on another node.
    pub async fn stop(&self) {
        self.tasks.stop.send_replace(true);
        let appender = self
            .tasks
            .appender
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(appender) = appender {
            let _ = appender.await;
        }
        for task in &self.tasks.others {
            task.abort();
        }
        if let Err(e) = self
            .inner
            .tables
            .leave(&self.inner.pool, &self.inner.node.id)
            .await
        {
            tracing::warn!(error = %e, "could not remove the node's row; it lapses");
        }
    }
}

/// How long a node's row stays after its last heartbeat before a heartbeat of another node
/// removes it.
const FORGET: Duration = Duration::from_secs(24 * 3600);

impl EventFeed for SharedFeed {
    fn subscribe(&self, after: Option<&Position>) -> FeedSubscription {
        let inner = &self.inner;
        let ring = inner.ring();
        let live = inner.tx.subscribe();
        let resumable = after.filter(|p| p.epoch == inner.epoch && p.seq >= ring.covered);
        let (replay, head) = match resumable {
            Some(p) => (
                ring.events
                    .iter()
                    .filter(|e| e.seq > p.seq)
                    .cloned()
                    .collect(),
                // A position this node has not read as far as: the events up to it are
                // skipped when they come.
                p.seq.max(ring.last),
            ),
            None => (Vec::new(), ring.last),
        };
        FeedSubscription {
            replay,
            resumed: resumable.is_some(),
            head: Position {
                epoch: inner.epoch.clone(),
                seq: head,
            },
            live,
            watch: Box::new(()),
        }
    }

    fn nodes(&self) -> Option<NodesFuture<'_>> {
        Some(Box::pin(async move {
            self.inner
                .nodes()
                .await
                .map_err(|e| Box::new(e) as crate::nodes::NodesError)
        }))
    }
}

#[cfg(test)]
mod tests;
