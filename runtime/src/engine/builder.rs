//! Configuring and starting an engine.

use std::marker::PhantomData;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::deploy;
use super::lifecycle::{Activity, EngineHandle};
use super::locks::KeyedLocks;
use super::scheduler::{self, ClockDriver, Scheduler};
use super::{Engine, Handler, Inner, JobSet, Registry};
use crate::clock::{Clock, ClockDriven};
use crate::error::{Error, Result, ValidationTarget};
use crate::steps::{StepOptions, StepRuntime};
use crate::store::sqlite::{SqliteOptions, SqliteStore, Synchronous};
use crate::store::Backend;
use crate::telemetry::Telemetry;
#[cfg(feature = "http-telemetry")]
use crate::telemetry::{http, HttpTelemetry};

/// Size limits on what is stored.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Limits {
    /// Largest stored payload of a continuous, debounce or task job (a continuous job's input,
    /// any such job's state), in bytes of JSON. Default 1 MiB. Step-job inputs and outputs are
    /// not limited yet.
    pub max_payload_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_payload_bytes: 1024 * 1024,
        }
    }
}

impl Limits {
    /// Sets the largest stored payload, in bytes of JSON.
    pub fn max_payload_bytes(mut self, n: usize) -> Self {
        self.max_payload_bytes = n;
        self
    }
}

/// The builder state before `.app(...)` was called.
#[derive(Debug, Default)]
pub struct NoApp;

/// The builder state after `.app(...)`.
#[derive(Debug)]
pub struct WithApp<A>(A);

/// Configures an engine; get one from [`Engine::builder`] or the registry's `builder()`.
///
/// # Examples
///
/// ```no_run
/// # use durable_jobs::{Engine, JobSet, Registry};
/// # struct Jobs;
/// # impl Registry for Jobs { type App = (); fn register(_: &mut JobSet<()>) {} }
/// # async fn run() -> durable_jobs::Result<()> {
/// let engine = Engine::<Jobs>::builder().sqlite("jobs.db").start().await?;
/// engine.shutdown().await
/// # }
/// ```
#[must_use = "call `.start().await` to run the engine"]
pub struct EngineBuilder<R: Registry, S = NoApp> {
    app: S,
    store: Option<SqliteOptions>,
    synchronous: Option<Synchronous>,
    clock: Clock,
    #[cfg(feature = "http-telemetry")]
    telemetry: Option<HttpTelemetry>,
    limits: Limits,
    max_concurrent_executions: usize,
    shutdown_timeout: Duration,
    lease: Duration,
    event_id_retention: Duration,
    cache_capacity: usize,
    steps: StepOptions,
    _registry: PhantomData<fn() -> R>,
}

impl<R: Registry> EngineBuilder<R, NoApp> {
    pub(crate) fn new() -> Self {
        EngineBuilder {
            app: NoApp,
            store: None,
            synchronous: None,
            clock: Clock::system(),
            #[cfg(feature = "http-telemetry")]
            telemetry: None,
            limits: Limits::default(),
            max_concurrent_executions: 256,
            shutdown_timeout: Duration::from_secs(30),
            lease: Duration::from_secs(60),
            event_id_retention: Duration::from_secs(7 * 24 * 3600),
            cache_capacity: 100_000,
            steps: StepOptions::default(),
            _registry: PhantomData,
        }
    }

    /// The application state every handler receives as `&App`.
    pub fn app(self, app: R::App) -> EngineBuilder<R, WithApp<R::App>> {
        EngineBuilder {
            app: WithApp(app),
            store: self.store,
            synchronous: self.synchronous,
            clock: self.clock,
            #[cfg(feature = "http-telemetry")]
            telemetry: self.telemetry,
            limits: self.limits,
            max_concurrent_executions: self.max_concurrent_executions,
            shutdown_timeout: self.shutdown_timeout,
            lease: self.lease,
            event_id_retention: self.event_id_retention,
            cache_capacity: self.cache_capacity,
            steps: self.steps,
            _registry: PhantomData,
        }
    }

    /// Starts the engine with the application state's default value.
    ///
    /// # Errors
    ///
    /// As [`EngineBuilder::start`] with an app.
    pub async fn start(self) -> Result<Engine<R>>
    where
        R::App: Default,
    {
        self.app(R::App::default()).start().await
    }
}

impl<R: Registry, S> EngineBuilder<R, S> {
    /// Keeps everything in the SQLite database file at `path` (created if missing; WAL mode).
    pub fn sqlite(mut self, path: impl Into<PathBuf>) -> Self {
        self.store = Some(SqliteOptions::file(path.into()));
        self
    }

    /// Keeps everything in memory: nothing survives the process. For tests.
    pub fn in_memory(mut self) -> Self {
        self.store = Some(SqliteOptions::in_memory());
        self
    }

    /// SQLite's durability mode: `Normal` (default in WAL: a crash of the process loses
    /// nothing, a power loss may lose the last commits) or `Full` (a write is acknowledged only
    /// once the log holding it is synced; see [`Synchronous`]).
    pub fn synchronous(mut self, mode: Synchronous) -> Self {
        self.synchronous = Some(mode);
        self
    }

    /// The clock: the system clock by default, a [`TestClock`](crate::testing::TestClock) in tests.
    pub fn clock(mut self, clock: impl Into<Clock>) -> Self {
        self.clock = clock.into();
        self
    }

    /// Sends telemetry to an HTTP endpoint through a durable outbox (feature `http-telemetry`).
    #[cfg(feature = "http-telemetry")]
    pub fn telemetry(mut self, http: HttpTelemetry) -> Self {
        self.telemetry = Some(http);
        self
    }

    /// Size limits.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Alarm executions running at once (default 256).
    pub fn max_concurrent_executions(mut self, n: usize) -> Self {
        self.max_concurrent_executions = n.max(1);
        self
    }

    /// How long `shutdown` waits for running executions (default 30 s).
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// How long a claimed alarm stays claimed without renewal (default 60 s). If the process
    /// dies, another engine (or this one after a restart) runs it after this long.
    pub fn lease_duration(mut self, lease: Duration) -> Self {
        self.lease = lease.max(Duration::from_secs(1));
        self
    }

    /// How long an event id given to `add_with_id` or `send_with_id` is remembered for
    /// de-duplication, even after its instance is gone (default 7 days). Older ids are pruned
    /// about once an hour.
    pub fn event_id_retention(mut self, retention: Duration) -> Self {
        self.event_id_retention = retention;
        self
    }

    /// How many committed instance rows the engine keeps in memory so that actions need not
    /// read them back (default 100,000; 0 turns the cache off). Only used with a store that is
    /// the only writer of its data, as the SQLite file is.
    pub fn cache_capacity(mut self, rows: usize) -> Self {
        self.cache_capacity = rows;
        self
    }

    /// Worker settings of step jobs.
    pub fn step_options(mut self, options: StepOptions) -> Self {
        self.steps = options;
        self
    }
}

impl<R: Registry> EngineBuilder<R, WithApp<R::App>> {
    /// Opens the store, recovers interrupted work, and starts the scheduler and workers.
    /// Alarms that fell due while the engine was down fire at once.
    ///
    /// # Errors
    ///
    /// `Validation` for an invalid registry or configuration (duplicate names, no store
    /// chosen); `Storage` when the database cannot be opened, is in use by another engine, or
    /// cannot be migrated.
    pub async fn start(self) -> Result<Engine<R>> {
        let mut jobs = JobSet::new();
        R::register(&mut jobs);
        jobs.check()?;
        check_configs(&jobs)?;
        let mut options = self.store.ok_or_else(|| {
            Error::validation(
                ValidationTarget::Config,
                None,
                "no store chosen: call `.sqlite(path)` or `.in_memory()` on the builder",
            )
        })?;
        if let Some(mode) = self.synchronous {
            options = options.synchronous(mode);
        }
        let sqlite = SqliteStore::open(options).map_err(|e| Error::storage("open", e))?;
        let store: Arc<dyn Backend> = sqlite.clone();
        let exclusive = store.exclusive() && self.cache_capacity > 0;
        let owner = format!("engine-{}", uuid::Uuid::now_v7());
        store
            .recover(&owner, self.clock.now())
            .await
            .map_err(|e| Error::storage("recover", e))?;
        let unregistered = deploy::reconcile(&jobs, store.as_ref(), self.clock.now()).await?;
        let alarm_jobs = deploy::alarm_jobs(&jobs);

        #[cfg(feature = "http-telemetry")]
        let (telemetry, http) = {
            let telemetry = Telemetry::new(self.telemetry.is_some());
            let http = match (&self.telemetry, &telemetry.outbox) {
                (Some(config), Some(wake)) => Some(http::spawn_sender(
                    store.clone(),
                    config.clone(),
                    wake.clone(),
                )),
                _ => None,
            };
            (telemetry, http)
        };
        #[cfg(not(feature = "http-telemetry"))]
        let (telemetry, http) = (Telemetry::new(false), None);
        let app = Arc::new(self.app.0);
        let step_jobs = jobs
            .jobs
            .iter()
            .filter_map(|(name, h)| match h {
                Handler::Step(s) => Some((*name, s.clone())),
                _ => None,
            })
            .collect::<std::collections::HashMap<_, _>>();
        let has_step_jobs = !step_jobs.is_empty();
        let steps = StepRuntime::new(
            sqlite.clone(),
            step_jobs,
            app.clone(),
            self.clock.clone(),
            self.steps.clone(),
        );

        let inner = Arc::new(Inner {
            app,
            jobs,
            alarm_jobs,
            unregistered,
            store,
            clock: self.clock.clone(),
            locks: KeyedLocks::new(),
            scheduler: Scheduler::new(self.max_concurrent_executions),
            telemetry,
            limits: self.limits,
            owner,
            lease: self.lease,
            event_id_retention: self.event_id_retention,
            activity: Activity::new(),
            steps: steps.clone(),
            cache: exclusive.then(|| super::cache::RecordCache::new(self.cache_capacity)),
        });
        crate::metrics::engine_started(inner.jobs.jobs.iter().map(|(n, h)| (h.kind(), *n)));
        let tasks = vec![
            tokio::spawn(scheduler::run(inner.clone())),
            tokio::spawn(scheduler::renew_leases(inner.clone())),
        ];
        if has_step_jobs {
            steps.start();
        }
        let driver: Option<Arc<dyn ClockDriven>> = self.clock.as_test().map(|test| {
            let driver: Arc<dyn ClockDriven> = Arc::new(ClockDriver {
                inner: Arc::downgrade(&inner),
            });
            test.drive(Arc::downgrade(&driver));
            driver
        });
        let handle = EngineHandle::new(
            inner,
            tasks,
            Some(sqlite),
            http,
            self.shutdown_timeout,
            driver,
        );
        tracing::info!(jobs = ?handle.inner.jobs.names(), "durable-jobs engine started");
        Ok(Engine {
            handle: Arc::new(handle),
        })
    }
}

fn check_configs<A: Send + Sync + 'static>(jobs: &JobSet<A>) -> Result<()> {
    for (name, handler) in &jobs.jobs {
        let problem = match handler {
            Handler::Debounce(h) if h.config().flush_after.is_zero() => {
                Some("`flush_after` must be longer than zero")
            }
            Handler::Continuous(h) => match &h.config().schedule {
                crate::Schedule::Every(d) if d.is_zero() => {
                    Some("`every` must be longer than zero")
                }
                _ => None,
            },
            _ => None,
        };
        if let Some(problem) = problem {
            return Err(Error::validation(
                ValidationTarget::Config,
                Some(name),
                problem,
            ));
        }
    }
    Ok(())
}
