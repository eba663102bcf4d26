//! What a start does about the deploy that preceded it, before the scheduler runs.
//!
//! The code that starts may not be the code that wrote the store:
//!
//! - **Jobs it does not register** (removed, renamed, or not deployed on this node yet) keep
//!   their instances untouched: the scheduler only scans the alarms of registered jobs, so theirs
//!   neither fire nor spin. They are reported, once per job, as a warning and by
//!   [`Engine::unregistered_jobs`](super::Engine::unregistered_jobs), and run as before once a
//!   deploy registers the job again.
//! - **Broken instances** (a stored state that did not decode, even after migration) are tried
//!   again with this code: those it can decode, a migration having been deployed, are repaired
//!   and their alarm, left in place, fires at once.
//! - **A continuous schedule that changed** takes effect now rather than after the run already
//!   planned: no instance waits longer than its job's schedule allows from now, that is, an
//!   alarm later than the schedule's next time after the start is moved to that time. Unchanged
//!   schedules move nothing (a run's next time is the schedule's next time after the run,
//!   which is never later than the next time after the start), and alarms are only ever moved
//!   earlier. A pending retry keeps its time.

use super::{Handler, JobSet};
use crate::error::{Error, Result};
use crate::id::JobKind;
use crate::store::{Backend, Columns, StoreError, UnregisteredJob, Write};
use crate::time::Timestamp;

/// The jobs whose instances have alarms (continuous, debounce, task), by kind and persisted
/// name, sorted.
pub(crate) fn alarm_jobs<A>(jobs: &JobSet<A>) -> Vec<(JobKind, &'static str)> {
    let mut alarm_jobs: Vec<_> = jobs
        .jobs
        .iter()
        .filter(|(_, h)| !matches!(h, Handler::Step(_)))
        .map(|(name, h)| (h.kind(), *name))
        .collect();
    alarm_jobs.sort_unstable();
    alarm_jobs
}

/// Reconciles the store with the jobs of this build (see the module docs); returns the jobs
/// with instances that it does not register.
pub(crate) async fn reconcile<A: Send + Sync + 'static>(
    jobs: &JobSet<A>,
    store: &dyn Backend,
    now: Timestamp,
) -> Result<Vec<UnregisteredJob>> {
    let registered = alarm_jobs(jobs);
    let unregistered = store
        .unregistered_jobs(&registered)
        .await
        .map_err(|e| Error::storage("start", e))?;
    for job in &unregistered {
        tracing::warn!(
            job = %job.name,
            kind = job.kind.as_str(),
            instances = job.instances,
            "instances of a job this engine does not register are left as they are; they run again once it is registered"
        );
    }
    for (kind, name) in &registered {
        repair_broken(jobs, store, *kind, name, now).await?;
    }
    for (name, handler) in &jobs.jobs {
        if let Handler::Continuous(h) = handler {
            let Some(bound) = h.config().schedule.next_after(now) else {
                continue;
            };
            let moved = store
                .pull_alarms_to(JobKind::Continuous, name, bound)
                .await
                .map_err(|e| Error::storage("start", e))?;
            if moved > 0 {
                tracing::info!(
                    job = %name,
                    moved,
                    next_run_at = %bound,
                    "the schedule changed: runs planned later than it allows were moved earlier"
                );
            }
        }
    }
    Ok(unregistered)
}

/// Clears the broken mark of the instances of `name` whose state this build decodes.
async fn repair_broken<A: Send + Sync + 'static>(
    jobs: &JobSet<A>,
    store: &dyn Backend,
    kind: JobKind,
    name: &str,
    now: Timestamp,
) -> Result<()> {
    let broken = store
        .load_broken(kind, name)
        .await
        .map_err(|e| Error::storage("start", e))?;
    if broken.is_empty() {
        return Ok(());
    }
    let codec: &dyn super::erased::StateCodec<A> = match jobs.get(name) {
        Some(Handler::Continuous(h)) => h.as_ref(),
        Some(Handler::Debounce(h)) => h.as_ref(),
        Some(Handler::Task(h)) => h.as_ref(),
        _ => return Ok(()),
    };
    let mut repairs = Vec::new();
    let mut still = 0;
    for mut rec in broken {
        let decodes = rec
            .state
            .as_deref()
            .is_none_or(|json| codec.decode_state(json, rec.state_version).is_ok());
        if !decodes {
            still += 1;
            continue;
        }
        let expected_version = rec.version;
        rec.broken = None;
        rec.version += 1;
        rec.updated_at = now;
        repairs.push(Write::Update {
            record: rec,
            expected_version,
            changed: Columns::ALL,
        });
    }
    let mut repaired = 0;
    if !repairs.is_empty() {
        match store.commit(repairs.clone()).await {
            Ok(()) => repaired = repairs.len(),
            // Another engine on a shared store wrote one of them first (most likely repairing
            // it as well, starting at the same time): each is repaired on its own then, and
            // one somebody else wrote is left to them.
            Err(StoreError::Conflict(_)) => {
                for repair in repairs {
                    match store.commit(vec![repair]).await {
                        Ok(()) => repaired += 1,
                        Err(StoreError::Conflict(key)) => {
                            tracing::debug!(instance = %key, "written by another engine meanwhile; not repaired here");
                        }
                        Err(e) => return Err(Error::storage("start", e)),
                    }
                }
            }
            Err(e) => return Err(Error::storage("start", e)),
        }
    }
    if repaired > 0 {
        tracing::info!(
            job = name,
            repaired,
            "broken instances decode again: repaired"
        );
    }
    if still > 0 {
        tracing::warn!(
            job = name,
            broken = still,
            "instances stay broken: their stored state does not decode with this build"
        );
    }
    Ok(())
}
