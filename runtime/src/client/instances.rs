//! Listing and inspecting the instances of continuous, debounce and task jobs whatever their
//! job, for dashboards and operators: the typed clients only answer per id.

use serde_json::Value;

use super::Client;
use crate::engine::Registry;
use crate::error::{Error, Operation, Result, ValidationTarget};
use crate::id::{InstanceKey, JobKind};
use crate::store::{InstanceCounts, InstanceQuery, InstanceRecord, Lease};
use crate::time::Timestamp;

/// One instance as an operator sees it: its counters, its alarm, its retry bookkeeping and its
/// state as JSON.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct InstanceInfo {
    /// Kind, job and id.
    pub key: InstanceKey,
    /// The committed state, when there is one (`Value::Null` if it no longer parses).
    pub state: Option<Value>,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it was last written.
    pub updated_at: Timestamp,
    /// Continuous: runs so far.
    pub run_count: u64,
    /// Debounce: events in the batch. Task: events received.
    pub event_count: u64,
    /// Task: executions so far.
    pub execute_count: u64,
    /// Debounce: when the batch's first event arrived.
    pub batch_started_at: Option<Timestamp>,
    /// Debounce: when its last event arrived.
    pub last_event_at: Option<Timestamp>,
    /// When its alarm fires next: the next run, flush, retry or scheduled `execute`. `None`
    /// when nothing is scheduled or while an execution holds the alarm.
    pub next_alarm: Option<Timestamp>,
    /// Whether an execution holds the alarm now.
    pub running: bool,
    /// The attempt the next alarm makes while a retry is pending (0 otherwise).
    pub retry_attempt: u32,
    /// When the first failed attempt of the pending retry sequence started.
    pub retry_started_at: Option<Timestamp>,
    /// The error of the last failed attempt, while a retry is pending.
    pub last_error: Option<String>,
    /// The lease of the execution holding the alarm, on a store that writes claims.
    pub lease: Option<Lease>,
    /// Why its stored state no longer decodes, when it is broken: its alarm does not fire and
    /// its actions are refused until a migration is deployed or it is terminated (see
    /// `docs/jobs.md`, "Deploys").
    pub broken: Option<String>,
}

/// A page of [`Client::list_instances`].
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct InstancePage {
    /// The instances, in key order.
    pub instances: Vec<InstanceInfo>,
    /// Where the next page starts (pass it to [`InstanceQuery::after`]); `None` on the last.
    pub next: Option<InstanceKey>,
}

impl<R: Registry> Client<R> {
    /// Instances of continuous, debounce and task jobs matching `query`, in key order (kind,
    /// job, id), a page at a time.
    ///
    /// # Errors
    ///
    /// `Validation` when `query.limit` is 0 or over 1,000, or `query.kind` is
    /// [`JobKind::Step`] (step jobs have runs: see [`Client::runs`]); `Storage`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn f<R: durable_jobs::Registry>(client: durable_jobs::Client<R>) -> durable_jobs::Result<()> {
    /// use durable_jobs::store::InstanceQuery;
    ///
    /// let mut query = InstanceQuery::new().retrying(true).limit(100);
    /// loop {
    ///     let page = client.list_instances(query.clone()).await?;
    ///     for i in &page.instances {
    ///         println!("{} attempt {} after {:?}", i.key, i.retry_attempt, i.last_error);
    ///     }
    ///     match page.next {
    ///         Some(next) => query = query.after(next),
    ///         None => break,
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn list_instances(&self, query: InstanceQuery) -> Result<InstancePage> {
        if !(1..=1000).contains(&query.limit) {
            return Err(Error::validation(
                ValidationTarget::Config,
                None,
                "the page limit must be between 1 and 1000",
            ));
        }
        if query.kind == Some(JobKind::Step) {
            return Err(Error::validation(
                ValidationTarget::Config,
                None,
                "step jobs have runs, not instances",
            ));
        }
        let limit = query.limit as usize;
        let records = self
            .inner()
            .store
            .list_instances(query)
            .await
            .map_err(|e| crate::engine::store_error(e, Operation::Status))?;
        let next = (records.len() == limit)
            .then(|| records.last().map(|r| r.key.clone()))
            .flatten();
        Ok(InstancePage {
            instances: records.into_iter().map(|r| self.info(r)).collect(),
            next,
        })
    }

    /// One instance; `None` when it does not exist.
    ///
    /// # Errors
    ///
    /// `JobNotFound` when its job is not registered or not of its kind; `Validation` for a bad
    /// id; `Storage`.
    pub async fn instance(&self, key: &InstanceKey) -> Result<Option<InstanceInfo>> {
        let inner = self.inner();
        match inner.jobs.get(key.job()) {
            Some(handler) if handler.kind() == key.kind() && key.kind() != JobKind::Step => {}
            _ => {
                return Err(Error::JobNotFound {
                    name: key.job().to_owned(),
                })
            }
        }
        let key = inner.key(key.kind(), key.job(), key.id())?;
        Ok(inner
            .load(&key, Operation::Status)
            .await?
            .map(|r| self.info(r)))
    }

    /// Per job: instances in all, scheduled, retrying, due now, the most overdue alarm (how
    /// far the scheduler is behind) and the next alarm. Reads every instance.
    ///
    /// # Errors
    ///
    /// `Storage`.
    pub async fn count_instances(&self) -> Result<Vec<InstanceCounts>> {
        let inner = self.inner();
        inner
            .store
            .count_instances(inner.clock.now())
            .await
            .map_err(|e| crate::engine::store_error(e, Operation::Status))
    }

    fn info(&self, r: InstanceRecord) -> InstanceInfo {
        let inner = self.inner();
        let next_alarm = inner.pending_alarm(&r);
        let running = r.lease.is_some() || inner.scheduler.running(&r.key);
        InstanceInfo {
            state: r
                .state
                .as_deref()
                .map(|s| serde_json::from_str(s).unwrap_or(Value::Null)),
            created_at: r.created_at,
            updated_at: r.updated_at,
            run_count: r.run_count,
            event_count: r.event_count,
            execute_count: r.execute_count,
            batch_started_at: r.batch_started_at,
            last_event_at: r.last_event_at,
            next_alarm,
            running,
            retry_attempt: r.retry_attempt,
            retry_started_at: r.retry_started_at,
            last_error: r.retry_last_error,
            lease: r.lease,
            broken: r.broken,
            key: r.key,
        }
    }
}
