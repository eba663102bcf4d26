//! Configuring and starting an engine.

use std::any::Any;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use super::claims;
use super::deploy;
use super::lifecycle::{Activity, EngineHandle};
use super::locks::KeyedLocks;
use super::scheduler::{self, ClockDriver, Scheduler};
use super::{Engine, Handler, Inner, JobSet, Registry};
use crate::clock::{Clock, ClockDriven};
use crate::error::{Error, Result, ValidationTarget};
use crate::steps::{StepOptions, StepRuntime};
use crate::store::changes::OtherWriters;
use crate::store::{Backend, RunStore, Store, StoreError};
use crate::telemetry::{self, Fanout, Reads, Telemetry};
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
    store: Option<StoreSource>,
    store_settings: Vec<StoreSetting>,
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
            store_settings: Vec::new(),
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
            store_settings: self.store_settings,
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
    /// Runs on `store`: any backend implementing [`Store`]. The SQLite store has the shortcuts
    /// `.sqlite(path)` and `.in_memory()`.
    pub fn store(self, store: impl Store) -> Self {
        self.store_arc(Arc::new(store))
    }

    /// Runs on a store already shared as an `Arc`.
    pub fn store_arc(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(StoreSource::Ready(store));
        self
    }

    /// Runs on a store opened by `start`, so that opening fails there, with the other
    /// configuration errors.
    pub(crate) fn open_store_at_start(mut self, options: impl OpenStore) -> Self {
        self.store = Some(StoreSource::OpenAtStart(Box::new(options)));
        self
    }

    /// Runs on a store that `start` connects to (a database server), so that connecting fails
    /// there, with the other configuration errors.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn connect_store_at_start(mut self, options: impl ConnectStore) -> Self {
        self.store = Some(StoreSource::ConnectAtStart(Box::new(options)));
        self
    }

    /// Adjusts the options of the store opened at start, if they are `T`, whenever they are
    /// chosen (before or after this call).
    pub(crate) fn adjust_store_options<T: Any>(
        mut self,
        adjust: impl FnOnce(&mut T) + Send + 'static,
    ) -> Self {
        self.store_settings
            .push(Box::new(move |options: &mut dyn Any| {
                if let Some(options) = options.downcast_mut::<T>() {
                    adjust(options);
                }
            }));
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
    /// the only writer of its data ([`Ownership::Exclusive`](crate::store::Ownership)), as the
    /// SQLite file is by default.
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
        let source = self.store.ok_or_else(|| {
            Error::validation(
                ValidationTarget::Config,
                None,
                "no store chosen: call `.sqlite(path)`, `.in_memory()` or `.store(..)` on the \
                 builder",
            )
        })?;
        let owned: Arc<dyn Store> = match source {
            StoreSource::Ready(store) => store,
            StoreSource::OpenAtStart(mut options) => {
                for setting in self.store_settings {
                    setting(options.as_any_mut());
                }
                options.open().map_err(|e| Error::storage("open", e))?
            }
            StoreSource::ConnectAtStart(mut options) => {
                for setting in self.store_settings {
                    setting(options.as_any_mut());
                }
                options
                    .connect()
                    .await
                    .map_err(|e| Error::storage("open", e))?
            }
        };
        // A server's clock, shared by every process on it, rather than each machine's own.
        let (clock, clock_keeper) = self
            .clock
            .clone()
            .in_step_with(&owned)
            .await
            .map_err(|e| Error::storage("open", e))?;
        // The one place the store's ownership is read        // The one place the store's ownership is read: everything that depends on it goes
        // through the strategy.
        let claims = claims::for_ownership(owned.ownership());
        // Whether, how often, and on what news to look for what other processes wrote.
        let others = OtherWriters::new(owned.poll_interval(), owned.changes());
        let store: Arc<dyn Backend> = owned.clone();
        let runs: Arc<dyn RunStore> = owned.clone();
        let owner = format!("engine-{}", ulid::Ulid::new());
        if claims.recovers_at_start() {
            store
                .recover(&owner, clock.now())
                .await
                .map_err(|e| Error::storage("recover", e))?;
        }
        let unregistered = deploy::reconcile(&jobs, store.as_ref(), clock.now()).await?;
        let alarm_jobs = deploy::alarm_jobs(&jobs);

        // The one fan-out of events: job events and step-run events both go through it.
        let fanout = Fanout::new();
        #[cfg(feature = "http-telemetry")]
        let (telemetry, http) = {
            let telemetry = Telemetry::new(self.telemetry.is_some(), fanout.clone());
            let http = match (&self.telemetry, &telemetry.outbox) {
                (Some(config), Some(wake)) => Some(http::spawn_sender(
                    store.clone(),
                    config.clone(),
                    wake.clone(),
                    http::SenderRole {
                        owner: owner.clone(),
                        clock: clock.clone(),
                        poll: owned.poll_interval(),
                    },
                )),
                _ => None,
            };
            (telemetry, http)
        };
        #[cfg(not(feature = "http-telemetry"))]
        let (telemetry, http) = (Telemetry::new(false, fanout.clone()), None);
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
            runs,
            owner.clone(),
            claims.recovers_at_start(),
            others.clone(),
            step_jobs,
            app.clone(),
            clock.clone(),
            self.steps.clone(),
            fanout.clone(),
        );

        let inner = Arc::new(Inner {
            app,
            jobs,
            alarm_jobs,
            unregistered,
            store,
            clock: clock.clone(),
            locks: KeyedLocks::new(),
            scheduler: Scheduler::new(self.max_concurrent_executions),
            telemetry,
            limits: self.limits,
            owner,
            lease: self.lease,
            others,
            event_id_retention: self.event_id_retention,
            activity: Activity::new(),
            steps: steps.clone(),
            cache: (claims.wants_cache() && self.cache_capacity > 0)
                .then(|| super::cache::RecordCache::new(self.cache_capacity)),
            claims,
        });
        crate::metrics::engine_started(inner.jobs.jobs.iter().map(|(n, h)| (h.kind(), *n)));
        let mut tasks = vec![tokio::spawn(scheduler::run(inner.clone()))];
        if inner.cache.is_some() {
            let inner = inner.clone();
            tasks.push(tokio::spawn(async move {
                if let Some(cache) = &inner.cache {
                    super::cache::prime(inner.store.clone(), cache).await;
                }
            }));
        }
        if let Some(wake) = &inner.telemetry.outbox {
            // Subscribed before the worker starts: no run event goes unseen.
            tasks.push(tokio::spawn(telemetry::runs::forward(
                inner.store.clone(),
                fanout.subscribe(Reads::Runs),
                wake.clone(),
            )));
        }
        if let Some(keeper) = clock_keeper {
            tasks.push(tokio::spawn(keeper));
        }
        if inner.claims.renews_leases() {
            tasks.push(tokio::spawn(scheduler::renew_leases(inner.clone())));
        }
        // Task events sent inside applications' transactions, applied after their commit.
        #[cfg(feature = "postgres")]
        if let Some(inbox) = crate::postgres::inbox::applier(&inner, &owned) {
            tasks.push(tokio::spawn(inbox));
        }
        if has_step_jobs {
            steps.start();
        }
        let driver: Option<Arc<dyn ClockDriven>> = clock.as_test().map(|test| {
            let driver: Arc<dyn ClockDriven> = Arc::new(ClockDriver {
                inner: Arc::downgrade(&inner),
            });
            test.drive(Arc::downgrade(&driver));
            driver
        });
        let handle = EngineHandle::new(inner, tasks, owned, http, self.shutdown_timeout, driver);
        tracing::info!(jobs = ?handle.inner.jobs.names(), "durable-jobs engine started");
        Ok(Engine {
            handle: Arc::new(handle),
        })
    }
}

/// Where the engine's store comes from.
enum StoreSource {
    /// A store handed to the builder.
    Ready(Arc<dyn Store>),
    /// Options of a store that `start` opens.
    OpenAtStart(Box<dyn OpenStore>),
    /// Options of a store that `start` connects to.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    ConnectAtStart(Box<dyn ConnectStore>),
}

/// A change to the options of the store opened at start.
type StoreSetting = Box<dyn FnOnce(&mut dyn Any) + Send>;

/// Options from which `start` opens a store (a driver's builder shortcuts hand them in).
pub(crate) trait OpenStore: Any + Send {
    /// Opens the store.
    fn open(self: Box<Self>) -> std::result::Result<Arc<dyn Store>, StoreError>;

    /// The options, for [`EngineBuilder::adjust_store_options`].
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

/// Options from which `start` connects to a store on a server (a driver's builder shortcuts
/// hand them in): as [`OpenStore`], asynchronously.
pub(crate) trait ConnectStore: Any + Send {
    /// Connects to the store.
    fn connect(
        self: Box<Self>,
    ) -> crate::store::BoxFuture<'static, std::result::Result<Arc<dyn Store>, StoreError>>;

    /// The options, for [`EngineBuilder::adjust_store_options`].
    fn as_any_mut(&mut self) -> &mut dyn Any;
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
