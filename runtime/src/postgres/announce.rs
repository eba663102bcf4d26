//! Telling the other processes on the database what this one wrote: a `NOTIFY` on the schema's
//! channel, sent after the commit by a task of the store's own, at most one per kind of change
//! every [`ANNOUNCE_EVERY`].
//!
//! Why after the commit, from a task, and not in the writing transaction: a transaction that
//! sent `NOTIFY` takes a database-wide lock when it commits, so that notifications are queued in
//! commit order. One `NOTIFY` per write would make every commit of every process wait in turn
//! for that lock. Here the writes' own transactions never notify: a write only marks its kind of
//! change as pending (an atomic `or`), and the task sends what is pending in a transaction of its
//! own, then waits [`ANNOUNCE_EVERY`] before sending again. A burst of writes costs one
//! notification per kind per period, and every write is followed by a notification sent after
//! it committed, so a listener that reads on the notification sees it. A notification that is
//! lost (the process dies between its commit and the send) is made up for by the poll.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgPool;
use tokio::sync::{watch, Notify};

use crate::store::{Change, Write, WriteBatch};

/// The shortest time between two notifications of the store: what a burst of writes is
/// gathered over. Short enough that it adds nothing a user would notice to a wake-up.
pub(crate) const ANNOUNCE_EVERY: Duration = Duration::from_millis(10);

/// The kinds of change, as the payloads of the schema's channel.
const KINDS: [(Change, &str); 3] = [
    (Change::Alarms, "alarms"),
    (Change::Runs, "runs"),
    (Change::RunEnded, "ended"),
];

/// The payload that announces `change` on the schema's channel.
pub(crate) fn payload(change: Change) -> &'static str {
    KINDS
        .iter()
        .find(|(kind, _)| *kind == change)
        .map_or("alarms", |(_, word)| *word)
}

/// The change a payload announces; `None` for another payload (a probe's).
pub(crate) fn parse(payload: &str) -> Option<Change> {
    KINDS
        .iter()
        .find(|(_, word)| *word == payload)
        .map(|(change, _)| *change)
}

fn bit(change: Change) -> u8 {
    match change {
        Change::Alarms => 1,
        Change::Runs => 2,
        Change::RunEnded => 4,
    }
}

/// The changes written but not announced yet, and the task's wake-up.
#[derive(Debug, Default)]
pub(crate) struct Announcer {
    pending: AtomicU8,
    wake: Notify,
}

impl Announcer {
    /// Marks `change` for the next notification. Never waits.
    pub(crate) fn announce(&self, change: Change) {
        let before = self.pending.fetch_or(bit(change), Ordering::AcqRel);
        if before == 0 {
            // The first change since the task last took them: it may be waiting. A permit
            // left over when it was not is taken on its next wait, which then finds the
            // changes marked meanwhile, or nothing.
            self.wake.notify_one();
        }
    }

    /// The payloads of the changes marked since the last call.
    fn take(&self) -> Vec<&'static str> {
        let pending = self.pending.swap(0, Ordering::AcqRel);
        KINDS
            .iter()
            .filter(|(change, _)| pending & bit(*change) != 0)
            .map(|(_, word)| *word)
            .collect()
    }
}

/// The announcing task of a store: sends what `announcer` has pending on `channel`, through a
/// connection of `pool` taken for one statement, until `stop` says so or is dropped; then it
/// sends what is still pending, once.
pub(crate) async fn run(
    announcer: Arc<Announcer>,
    pool: PgPool,
    channel: String,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let stopping = tokio::select! {
            () = announcer.wake.notified() => false,
            () = stop_said(&mut stop) => true,
        };
        send(&pool, &channel, &announcer.take()).await;
        if stopping {
            return;
        }
        let stopping = tokio::select! {
            () = tokio::time::sleep(ANNOUNCE_EVERY) => false,
            () = stop_said(&mut stop) => true,
        };
        if stopping {
            send(&pool, &channel, &announcer.take()).await;
            return;
        }
    }
}

/// Returns once `stop` says stop, or is dropped.
async fn stop_said(stop: &mut watch::Receiver<bool>) {
    // The value's guard stays here: it must not be held across the caller's awaits.
    let _ = stop.wait_for(|stop| *stop).await.map(drop);
}

/// One notification per payload, in one statement and so one transaction: one wait for the
/// notification lock. A failure is logged and forgotten: the poll finds what it announced.
async fn send(pool: &PgPool, channel: &str, payloads: &[&str]) {
    if payloads.is_empty() || pool.is_closed() {
        return;
    }
    let sent = sqlx::query("SELECT pg_notify($1, kind) FROM unnest($2::text[]) AS kind")
        .bind(channel)
        .bind(payloads)
        .execute(pool)
        .await;
    if let Err(e) = sent {
        tracing::debug!(error = %e, channel, "could not announce a change; other processes find it at their next poll");
    }
}

/// Whether committing `batch` sets an alarm that other processes should hear of: one due within
/// `horizon` of the write (as of the engine's clock, the row's `updated_at`). An alarm further
/// ahead is found by their polls, which come at least that often, before it falls due; so
/// the end of a run that sets the next one half an hour ahead wakes nobody.
pub(crate) fn sets_an_alarm_soon(batch: &WriteBatch, horizon: Duration) -> bool {
    batch.iter().any(|write| {
        let record = match write {
            Write::Insert(record) => record,
            Write::Update {
                record, changed, ..
            } if changed.contains(crate::store::Columns::ALARM_AT) => record,
            _ => return false,
        };
        record
            .alarm_at
            .is_some_and(|at| at <= record.updated_at + horizon)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{InstanceKey, JobKind};
    use crate::store::{Columns, InstanceRecord};
    use crate::time::Timestamp;

    #[test]
    fn payloads_read_back_as_their_change_and_others_as_nothing() {
        for (change, word) in KINDS {
            assert_eq!(parse(word), Some(change));
        }
        assert_eq!(parse("probe 01ABC"), None);
        assert_eq!(parse(""), None);
    }

    #[test]
    fn changes_marked_together_are_taken_once() {
        let announcer = Announcer::default();
        assert!(announcer.take().is_empty());
        announcer.announce(Change::RunEnded);
        announcer.announce(Change::Alarms);
        announcer.announce(Change::RunEnded);
        assert_eq!(announcer.take(), ["alarms", "ended"]);
        assert!(announcer.take().is_empty());
    }

    #[test]
    fn only_alarms_written_and_due_within_the_horizon_are_announced() {
        let now = Timestamp::from_millis(1_000_000);
        let horizon = Duration::from_secs(1);
        let row = |alarm: Option<Timestamp>| {
            let mut row =
                InstanceRecord::new(InstanceKey::new(JobKind::Continuous, "job", "a"), now);
            row.alarm_at = alarm;
            row
        };
        let update = |alarm, changed| Write::Update {
            record: row(alarm),
            expected_version: 0,
            changed,
        };
        let soon = Some(now + Duration::from_millis(900));
        let later = Some(now + Duration::from_secs(2));
        assert!(sets_an_alarm_soon(
            &vec![Write::Insert(row(Some(now)))],
            horizon
        ));
        assert!(sets_an_alarm_soon(
            &vec![update(soon, Columns::ALL)],
            horizon
        ));
        assert!(!sets_an_alarm_soon(
            &vec![Write::Insert(row(later))],
            horizon
        ));
        assert!(!sets_an_alarm_soon(
            &vec![Write::Insert(row(None))],
            horizon
        ));
        // The alarm is the stored one, which other processes have seen already.
        assert!(!sets_an_alarm_soon(
            &vec![update(soon, Columns::STATE)],
            horizon
        ));
        assert!(sets_an_alarm_soon(
            &vec![Write::Outbox(vec![]), update(soon, Columns::ALARM_AT)],
            horizon
        ));
    }
}
