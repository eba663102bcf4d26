//! Type erasure: the engine works on JSON state and boxed events; these adapters turn a typed
//! job into handlers it can store in one table and call by name.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

pub(crate) use super::cache::DecodedState;
use crate::error::{catch_panic_sync, BoxError, Error, ValidationTarget};
use crate::id::InstanceKey;
use crate::job::continuous::{ContinuousConfig, ContinuousContext, ContinuousJob};
use crate::job::debounce::{DebounceConfig, DebounceJob, EventContext, FlushContext, FlushReason};
use crate::job::task::{ErrorSource, IdleReason, ScheduleChange, TaskContext, TaskJob};
use crate::job::RetryExhausted;
use crate::retry::{ExhaustionReason, RetryPolicy};
use crate::store::BoxFuture;
use crate::time::Timestamp;

/// A payload handed to the engine: a typed value from the typed client, or JSON from a dynamic
/// caller (which is validated by decoding it into the job's type).
pub(crate) enum Input {
    Typed(Box<dyn Any + Send>),
    Json(serde_json::Value),
}

impl Input {
    pub(crate) fn typed<T: Send + 'static>(value: T) -> Self {
        Input::Typed(Box::new(value))
    }

    fn into_value<T: DeserializeOwned + 'static>(self) -> Result<T, String> {
        match self {
            Input::Typed(b) => b
                .downcast::<T>()
                .map(|b| *b)
                .map_err(|_| "payload of the wrong type".to_owned()),
            Input::Json(v) => {
                let v = crate::json::check_depth(v)?;
                serde_json::from_value(v).map_err(|e| e.to_string())
            }
        }
    }
}

/// Encodes a value to store, refusing one that would not read back as itself.
pub(crate) fn encode<T: Serialize + DeserializeOwned>(value: &T) -> Result<String, String> {
    crate::json::encode(value)
}

/// A stored state decoded into the job's state type (migrated first if it was stored at an
/// older version).
pub(crate) struct Decoded {
    pub(crate) state: DecodedState,
    /// It was migrated from an older shape: write it back at the current version.
    pub(crate) migrated: bool,
}

/// Decodes a state stored at `version` by a job whose current version is `current`: as it is
/// when the versions match (or the stored one is newer, from a later deploy), through `migrate`
/// when it is older. The message says why it cannot be decoded.
fn decode_stored<S: DeserializeOwned>(
    json: &str,
    version: u32,
    current: u32,
    migrate: impl FnOnce(serde_json::Value, u32) -> Result<S, BoxError>,
) -> Result<(S, bool), String> {
    if version >= current {
        return serde_json::from_str(json)
            .map(|state| (state, false))
            .map_err(|e| {
                if version > current {
                    format!(
                        "stored state (version {version}, newer than this build's {current}) \
                         does not deserialise: {e}"
                    )
                } else {
                    format!("stored state no longer deserialises: {e}")
                }
            });
    }
    let raw: serde_json::Value = serde_json::from_str(json)
        .map_err(|e| format!("stored state (version {version}) is not JSON: {e}"))?;
    migrate(raw, version)
        .map(|state| (state, true))
        .map_err(|e| {
            format!("stored state of version {version} could not be migrated to {current}: {e}")
        })
}

/// An event of `job` as JSON, for an action that may have to decode it again; or as it is when
/// its JSON does not read back (a NaN becomes `null`), for an action made once.
fn event_json<E: Serialize + DeserializeOwned + Send + 'static>(
    job: &'static str,
    event: Input,
) -> Result<Result<serde_json::Value, Input>, Error> {
    let event = event
        .into_value::<E>()
        .map_err(|m| Error::validation(ValidationTarget::Event, Some(job), m))?;
    match serde_json::to_value(&event) {
        Ok(json) if serde_json::from_value::<E>(json.clone()).is_ok() => Ok(Ok(json)),
        _ => Ok(Err(Input::typed(event))),
    }
}

/// The `Validation` error of a stored state that does not decode.
pub(crate) fn undecodable(job: &str, message: String) -> Error {
    Error::validation(ValidationTarget::State, Some(job), message)
}

/// Reads and writes the stored state of a job with state (continuous, debounce, task).
/// (`A` is the app type, only there to tie the impls to their job's.)
pub(crate) trait StateCodec<A>: Send + Sync {
    /// The version of the state's shape this code writes.
    fn state_version(&self) -> u32;
    /// Decodes (migrating if needed) a state stored at `version`.
    fn decode_state(&self, json: &str, version: u32) -> Result<Decoded, String>;
}

/// The `StateCodec` impl shared by the kinds with state.
macro_rules! state_codec {
    ($handler:ident, $job:ident) => {
        impl<A: Send + Sync + 'static, J: $job<A>> StateCodec<A> for $handler<J> {
            fn state_version(&self) -> u32 {
                J::STATE_VERSION
            }

            fn decode_state(&self, json: &str, version: u32) -> Result<Decoded, String> {
                // The state's `Deserialize` and the migration are user code: a panic in either
                // is a state that does not decode.
                let decoded = catch_panic_sync(|| {
                    decode_stored::<J::State>(json, version, J::STATE_VERSION, |raw, from| {
                        self.job.migrate_state(raw, from)
                    })
                });
                let (state, migrated) = decoded.unwrap_or_else(|panicked| {
                    Err(format!("decoding the stored state {panicked}"))
                })?;
                Ok(Decoded {
                    state: Box::new(state),
                    migrated,
                })
            }
        }
    };
}

/// Takes a decoded state back out of its box.
fn unbox<S: 'static>(state: DecodedState, job: &str) -> Result<S, Error> {
    state
        .downcast::<S>()
        .map(|s| *s)
        .map_err(|_| undecodable(job, "stored state of the wrong type".to_owned()))
}

/// The information every exhaustion hook receives, before it is typed.
pub(crate) struct ExhaustedInfo {
    pub(crate) instance: InstanceKey,
    pub(crate) attempts: u32,
    pub(crate) reason: ExhaustionReason,
    pub(crate) last_error: String,
    pub(crate) total_duration: Duration,
}

impl ExhaustedInfo {
    fn typed<S>(self, state: Option<S>) -> RetryExhausted<S> {
        RetryExhausted {
            instance: self.instance,
            state,
            attempts: self.attempts,
            reason: self.reason,
            last_error: self.last_error,
            total_duration: self.total_duration,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Continuous

pub(crate) struct RunMeta {
    pub(crate) instance: InstanceKey,
    pub(crate) run_count: u64,
    pub(crate) attempt: u32,
    pub(crate) now: Timestamp,
}

pub(crate) struct RunOutcome {
    pub(crate) result: Result<(), BoxError>,
    /// The new state, when the run changed it.
    pub(crate) state: Option<String>,
    pub(crate) terminate: Option<String>,
}

/// What a job with a retry policy offers when the policy gives up.
pub(crate) trait Exhaustible<A>: StateCodec<A> {
    fn retry_policy(&self) -> Option<&RetryPolicy>;
    /// Runs the hook with the last stored state (`None` if it does not decode).
    fn exhausted<'a>(
        &'a self,
        state: Option<(&'a str, u32)>,
        info: ExhaustedInfo,
        app: &'a A,
    ) -> BoxFuture<'a, ()>;
}

/// The `Exhaustible` impl shared by the kinds that have a retry policy (the job traits
/// differ, the hook does not).
macro_rules! exhaustible {
    ($handler:ident, $job:ident) => {
        impl<A: Send + Sync + 'static, J: $job<A>> Exhaustible<A> for $handler<J> {
            fn retry_policy(&self) -> Option<&RetryPolicy> {
                self.config.retry.as_ref()
            }

            fn exhausted<'a>(
                &'a self,
                state: Option<(&'a str, u32)>,
                info: ExhaustedInfo,
                app: &'a A,
            ) -> BoxFuture<'a, ()> {
                Box::pin(async move {
                    let state = state
                        .and_then(|(json, version)| self.decode_state(json, version).ok())
                        .and_then(|d| unbox::<J::State>(d.state, J::NAME).ok());
                    self.job.on_retry_exhausted(info.typed(state), app).await
                })
            }
        }
    };
}

pub(crate) trait ContinuousHandler<A>: Exhaustible<A> {
    fn config(&self) -> &ContinuousConfig;
    /// The start input, encoded as it is stored, and decoded for the first run.
    fn encode_input(&self, input: Input) -> Result<(String, DecodedState), String>;
    /// Runs `execute` on a decoded state; a state that was migrated is written back.
    fn run<'a>(&'a self, state: Decoded, meta: RunMeta, app: &'a A) -> BoxFuture<'a, RunOutcome>;
}

struct Continuous<J> {
    job: J,
    config: ContinuousConfig,
}

pub(crate) fn continuous<A: Send + Sync + 'static, J: ContinuousJob<A>>(
    job: J,
) -> Arc<dyn ContinuousHandler<A>> {
    let config = job.config();
    Arc::new(Continuous { job, config })
}

exhaustible!(Continuous, ContinuousJob);
state_codec!(Continuous, ContinuousJob);

impl<A: Send + Sync + 'static, J: ContinuousJob<A>> ContinuousHandler<A> for Continuous<J> {
    fn config(&self) -> &ContinuousConfig {
        &self.config
    }

    fn encode_input(&self, input: Input) -> Result<(String, DecodedState), String> {
        let state = input.into_value::<J::State>()?;
        Ok((encode(&state)?, Box::new(state)))
    }

    fn run<'a>(&'a self, state: Decoded, meta: RunMeta, app: &'a A) -> BoxFuture<'a, RunOutcome> {
        Box::pin(async move {
            let migrated = state.migrated;
            let state: J::State = match unbox(state.state, J::NAME) {
                Ok(s) => s,
                Err(e) => {
                    return RunOutcome {
                        result: Err(e.into()),
                        state: None,
                        terminate: None,
                    }
                }
            };
            let mut ctx = ContinuousContext {
                state,
                dirty: migrated,
                terminate: None,
                instance: meta.instance,
                run_count: meta.run_count,
                attempt: meta.attempt,
                started_at: meta.now,
            };
            let result = self.job.execute(&mut ctx, app).await.map_err(Into::into);
            let state = match (ctx.dirty, &result) {
                (true, Ok(())) => match encode(&ctx.state) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        let err = Error::validation(ValidationTarget::State, Some(J::NAME), e);
                        return RunOutcome {
                            result: Err(err.into()),
                            state: None,
                            terminate: ctx.terminate,
                        };
                    }
                },
                _ => None,
            };
            RunOutcome {
                result,
                state,
                terminate: ctx.terminate,
            }
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Debounce

pub(crate) struct FlushMeta {
    pub(crate) instance: InstanceKey,
    pub(crate) event_count: u64,
    pub(crate) started_at: Timestamp,
    pub(crate) reason: FlushReason,
    pub(crate) attempt: u32,
    pub(crate) now: Timestamp,
}

pub(crate) trait DebounceHandler<A>: Exhaustible<A> {
    fn config(&self) -> &DebounceConfig;
    /// Decodes an event before anything is touched.
    fn decode_event(&self, event: Input) -> Result<Box<dyn Any + Send>, Error>;
    /// Decodes an event (as [`decode_event`](Self::decode_event)) and gives it back as JSON,
    /// for an action that may have to decode it again; or as it is when its JSON does not read
    /// back (a NaN becomes `null`), for an action made once.
    fn event_json(&self, event: Input) -> Result<Result<serde_json::Value, Input>, Error>;
    /// Folds a decoded event into the batch's decoded state (`None` for a new batch) and
    /// returns the new state as JSON, and decoded.
    fn fold(
        &self,
        state: Option<DecodedState>,
        event: Box<dyn Any + Send>,
        ctx: &EventContext,
    ) -> Result<(String, DecodedState), Error>;
    fn flush<'a>(
        &'a self,
        state: DecodedState,
        meta: FlushMeta,
        app: &'a A,
    ) -> BoxFuture<'a, Result<(), BoxError>>;
}

struct Debounce<J> {
    job: J,
    config: DebounceConfig,
}

pub(crate) fn debounce<A: Send + Sync + 'static, J: DebounceJob<A>>(
    job: J,
) -> Arc<dyn DebounceHandler<A>> {
    let config = job.config();
    Arc::new(Debounce { job, config })
}

exhaustible!(Debounce, DebounceJob);
state_codec!(Debounce, DebounceJob);

impl<A: Send + Sync + 'static, J: DebounceJob<A>> DebounceHandler<A> for Debounce<J> {
    fn config(&self) -> &DebounceConfig {
        &self.config
    }

    fn decode_event(&self, event: Input) -> Result<Box<dyn Any + Send>, Error> {
        match event {
            Input::Typed(b) if b.is::<J::Event>() => Ok(b),
            other => other
                .into_value::<J::Event>()
                .map(|e| Box::new(e) as Box<dyn Any + Send>)
                .map_err(|m| Error::validation(ValidationTarget::Event, Some(J::NAME), m)),
        }
    }

    fn event_json(&self, event: Input) -> Result<Result<serde_json::Value, Input>, Error> {
        event_json::<J::Event>(J::NAME, event)
    }

    fn fold(
        &self,
        state: Option<DecodedState>,
        event: Box<dyn Any + Send>,
        ctx: &EventContext,
    ) -> Result<(String, DecodedState), Error> {
        let event = *event.downcast::<J::Event>().map_err(|_| {
            Error::validation(
                ValidationTarget::Event,
                Some(J::NAME),
                "payload of the wrong type",
            )
        })?;
        let state = state.map(|s| unbox::<J::State>(s, J::NAME)).transpose()?;
        // `on_event` and the state's `Serialize` and `Deserialize` are user code.
        let folded = catch_panic_sync(|| {
            let next = self.job.on_event(state, event, ctx);
            encode(&next).map(|json| (json, next))
        });
        let (json, next) = folded
            .map_err(|panicked| {
                tracing::error!(instance = %ctx.instance, error = %panicked, "on_event panicked");
                Error::Execution {
                    instance: ctx.instance.clone(),
                    operation: crate::error::Operation::Add,
                    source: panicked.into(),
                }
            })?
            .map_err(|m| Error::validation(ValidationTarget::State, Some(J::NAME), m))?;
        Ok((json, Box::new(next)))
    }

    fn flush<'a>(
        &'a self,
        state: DecodedState,
        meta: FlushMeta,
        app: &'a A,
    ) -> BoxFuture<'a, Result<(), BoxError>> {
        Box::pin(async move {
            let state: J::State = unbox(state, J::NAME)?;
            let mut ctx = FlushContext {
                state,
                instance: meta.instance,
                event_count: meta.event_count,
                started_at: meta.started_at,
                reason: meta.reason,
                attempt: meta.attempt,
                now: meta.now,
            };
            self.job.execute(&mut ctx, app).await.map_err(Into::into)
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Task

pub(crate) enum Invocation {
    Event(Box<dyn Any + Send>),
    Execute,
}

pub(crate) struct TaskMeta {
    pub(crate) instance: InstanceKey,
    pub(crate) event_count: u64,
    pub(crate) execute_count: u64,
    pub(crate) created_at: Timestamp,
    pub(crate) now: Timestamp,
    /// The schedule in effect when the invocation starts (`None` for an alarm, which consumed it).
    pub(crate) stored_schedule: Option<Timestamp>,
}

pub(crate) enum TaskOutcome {
    /// A handler called `terminate`.
    Terminated,
    /// A handler failed and `on_error` did not rescue it: nothing is kept.
    Failed(BoxError),
    /// The handlers succeeded but left a state that cannot be stored: nothing is kept.
    Invalid(Error),
    /// Success (possibly rescued by `on_error`).
    Done {
        /// The new state, when it changed.
        state: Option<String>,
        /// The schedule in effect afterwards.
        schedule: Option<Timestamp>,
        /// Each applied `schedule_*` call with its trigger, for `task.scheduled`.
        scheduled: Vec<(Timestamp, &'static str)>,
    },
}

pub(crate) trait TaskHandler<A>: StateCodec<A> {
    fn decode_event(&self, event: Input) -> Result<Box<dyn Any + Send>, Error>;
    /// Decodes an event (as [`decode_event`](Self::decode_event)) and gives it back as JSON,
    /// for an action that may have to decode it again; or as it is when its JSON does not read
    /// back (a NaN becomes `null`), for an action made once.
    fn event_json(&self, event: Input) -> Result<Result<serde_json::Value, Input>, Error>;
    /// Runs one invocation on the decoded state (`None` before a handler set one); a state
    /// that was migrated is written back.
    fn invoke<'a>(
        &'a self,
        invocation: Invocation,
        state: Option<Decoded>,
        meta: TaskMeta,
        app: &'a A,
    ) -> BoxFuture<'a, TaskOutcome>;
}

struct Task<J> {
    job: J,
}

pub(crate) fn task<A: Send + Sync + 'static, J: TaskJob<A>>(job: J) -> Arc<dyn TaskHandler<A>> {
    Arc::new(Task { job })
}

state_codec!(Task, TaskJob);

impl<A: Send + Sync + 'static, J: TaskJob<A>> TaskHandler<A> for Task<J> {
    fn decode_event(&self, event: Input) -> Result<Box<dyn Any + Send>, Error> {
        match event {
            Input::Typed(b) if b.is::<J::Event>() => Ok(b),
            other => other
                .into_value::<J::Event>()
                .map(|e| Box::new(e) as Box<dyn Any + Send>)
                .map_err(|m| Error::validation(ValidationTarget::Event, Some(J::NAME), m)),
        }
    }

    fn event_json(&self, event: Input) -> Result<Result<serde_json::Value, Input>, Error> {
        event_json::<J::Event>(J::NAME, event)
    }

    fn invoke<'a>(
        &'a self,
        invocation: Invocation,
        state: Option<Decoded>,
        meta: TaskMeta,
        app: &'a A,
    ) -> BoxFuture<'a, TaskOutcome> {
        Box::pin(async move {
            let migrated = state.as_ref().is_some_and(|d| d.migrated);
            let state = match state
                .map(|d| unbox::<J::State>(d.state, J::NAME))
                .transpose()
            {
                Ok(s) => s,
                Err(e) => return TaskOutcome::Failed(e.into()),
            };
            let mut ctx = TaskContext {
                is_first_event: state.is_none(),
                state,
                dirty: migrated,
                schedule: ScheduleChange::Unchanged,
                stored_schedule: meta.stored_schedule,
                terminate: false,
                instance: meta.instance,
                event_count: meta.event_count,
                execute_count: meta.execute_count,
                created_at: meta.created_at,
                now: meta.now,
            };
            let (result, source, trigger, idle) = match invocation {
                Invocation::Event(event) => match event.downcast::<J::Event>() {
                    Ok(event) => {
                        let r = self.job.on_event(&mut ctx, *event, app).await;
                        (r, ErrorSource::Event, "event", IdleReason::Event)
                    }
                    Err(_) => {
                        let e = Error::validation(
                            ValidationTarget::Event,
                            Some(J::NAME),
                            "payload of the wrong type",
                        );
                        return TaskOutcome::Failed(e.into());
                    }
                },
                Invocation::Execute => {
                    let r = self.job.execute(&mut ctx, app).await;
                    (r, ErrorSource::Execute, "execute", IdleReason::Execute)
                }
            };
            if ctx.terminate {
                return TaskOutcome::Terminated;
            }
            let result = match result {
                Ok(()) => Ok(()),
                Err(e) => self.job.on_error(&mut ctx, e, source, app).await,
            };
            if ctx.terminate {
                return TaskOutcome::Terminated;
            }
            if let Err(e) = result {
                return TaskOutcome::Failed(e.into());
            }
            let mut scheduled = Vec::new();
            let mut effective = ctx.scheduled_at();
            if let ScheduleChange::At(t) = ctx.schedule {
                scheduled.push((t, trigger));
            }
            if effective.is_none() {
                ctx.schedule = ScheduleChange::Unchanged;
                ctx.stored_schedule = None;
                self.job.on_idle(&mut ctx, idle, app).await;
                if ctx.terminate {
                    return TaskOutcome::Terminated;
                }
                if let ScheduleChange::At(t) = ctx.schedule {
                    scheduled.push((t, "idle"));
                }
                effective = ctx.scheduled_at();
            }
            let state = match (ctx.dirty, &ctx.state) {
                (true, Some(s)) => match encode(s) {
                    Ok(json) => Some(json),
                    Err(m) => {
                        let e = Error::validation(ValidationTarget::State, Some(J::NAME), m);
                        return TaskOutcome::Invalid(e);
                    }
                },
                _ => None,
            };
            TaskOutcome::Done {
                state,
                schedule: effective,
                scheduled,
            }
        })
    }
}
