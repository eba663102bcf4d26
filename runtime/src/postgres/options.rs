//! Where the PostgreSQL store connects and how.

use std::fmt;
use std::time::Duration;

use sqlx::postgres::PgPool;

/// The schema the store keeps its tables in unless told otherwise.
pub const DEFAULT_SCHEMA: &str = "durable_jobs";

/// How often engines on a listening store poll anyway, unless told otherwise
/// ([`PostgresOptions::fallback_poll_interval`]).
pub const DEFAULT_FALLBACK_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Where the PostgreSQL store keeps its data and how it connects.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use durable_jobs::postgres::PostgresOptions;
///
/// let options = PostgresOptions::new("postgres://jobs@db.internal/app")
///     .schema("billing_jobs")
///     .max_connections(8)
///     .fallback_poll_interval(Duration::from_secs(5));
/// assert_eq!(options.schema_name(), "billing_jobs");
///
/// // Behind a transaction-mode pooler, where `LISTEN` hears nothing: poll instead.
/// let pooled = PostgresOptions::new("postgres://jobs@pgbouncer.internal:6432/app")
///     .listen(false)
///     .poll_interval(Duration::from_millis(250));
/// ```
#[derive(Clone)]
pub struct PostgresOptions {
    pub(crate) source: Source,
    pub(crate) schema: String,
    pub(crate) max_connections: u32,
    pub(crate) acquire_timeout: Duration,
    pub(crate) poll_interval: Duration,
    pub(crate) listen: bool,
    pub(crate) fallback_poll_interval: Duration,
}

/// What the store connects through.
#[derive(Clone)]
pub(crate) enum Source {
    /// A connection URL: the store opens (and closes) its own pool.
    Url(String),
    /// The caller's pool: the store uses it and leaves it open when it closes.
    Pool(PgPool),
}

impl fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = match &self.source {
            // The URL may hold a password.
            Source::Url(_) => "url",
            Source::Pool(_) => "pool",
        };
        f.debug_struct("PostgresOptions")
            .field("source", &source)
            .field("schema", &self.schema)
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("poll_interval", &self.poll_interval)
            .field("listen", &self.listen)
            .field("fallback_poll_interval", &self.fallback_poll_interval)
            .finish()
    }
}

impl PostgresOptions {
    /// The database at `url` (`postgres://user:password@host:port/database?sslmode=...`), through
    /// a pool of the store's own.
    pub fn new(url: impl Into<String>) -> Self {
        Self::with_source(Source::Url(url.into()))
    }

    /// The database of `pool`, a pool the application already has: the store borrows its
    /// connections (a few at a time, never across user code) and leaves it open when it
    /// closes. [`max_connections`](Self::max_connections) and
    /// [`acquire_timeout`](Self::acquire_timeout) are the pool's own then.
    pub fn from_pool(pool: PgPool) -> Self {
        Self::with_source(Source::Pool(pool))
    }

    fn with_source(source: Source) -> Self {
        PostgresOptions {
            source,
            schema: DEFAULT_SCHEMA.to_owned(),
            max_connections: 10,
            acquire_timeout: Duration::from_secs(30),
            poll_interval: crate::store::DEFAULT_POLL_INTERVAL,
            listen: true,
            fallback_poll_interval: DEFAULT_FALLBACK_POLL_INTERVAL,
        }
    }

    /// The schema holding the store's tables (default `durable_jobs`), created if missing: a
    /// plain identifier (letters, digits, `_`; at most 63 bytes; case kept). Several
    /// applications can share a database, each in its own schema.
    pub fn schema(mut self, name: impl Into<String>) -> Self {
        self.schema = name.into();
        self
    }

    /// The schema's name.
    pub fn schema_name(&self) -> &str {
        &self.schema
    }

    /// The most connections the store's own pool opens (default 10, at least 1). The store holds
    /// a connection only for the length of a statement or a short transaction, never while a
    /// job's code runs.
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// How long a call waits for a free connection of the store's own pool before failing with a
    /// storage error (default 30 s).
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// How often an engine looks for alarms and step runs that other processes made due, and
    /// for the ends of runs it waits for, when the store does not hear of other processes'
    /// writes through `LISTEN` ([`listen(false)`](Self::listen), or `LISTEN` found not to
    /// work): default 100 ms. Each look is one indexed query per kind of work. Its own writes
    /// wake the engine at once.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// Whether the store listens for other processes' writes (default `true`): `LISTEN` on a
    /// connection of its own (besides the pool's), so that engines wake as soon as another
    /// process enqueues a run, sets an alarm due or ends a run, and poll only every
    /// [`fallback_poll_interval`](Self::fallback_poll_interval). The store checks at start that
    /// a notification sent through its pool arrives, and polls every
    /// [`poll_interval`](Self::poll_interval) when none does. Turn it off behind a
    /// transaction-mode pooler (PgBouncer's `pool_mode = transaction`), where `LISTEN` hears
    /// nothing, to save that check (up to a second at start). The store announces its own
    /// writes either way, for the processes that listen.
    pub fn listen(mut self, listen: bool) -> Self {
        self.listen = listen;
        self
    }

    /// How often an engine looks anyway while the store listens (default 1 s): for what no
    /// notification announces (a lease that lapses with its process, an alarm set further
    /// ahead than this), and for notifications lost while the listening connection was down.
    /// Give every process on a schema the same value: a write announces only the alarms due
    /// within its own process's value, counting on the others to poll at least that often.
    pub fn fallback_poll_interval(mut self, interval: Duration) -> Self {
        self.fallback_poll_interval = interval.max(Duration::from_millis(1));
        self
    }
}
