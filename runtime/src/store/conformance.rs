//! What every [`Store`] must do, written against the traits alone, for every backend to run:
//! [`conformance_tests!`] turns each check into a test of the store its argument opens.
//!
//! These are the guarantees the engine builds on whichever process it shares the store with:
//! versioned, all-or-nothing commits; event ids recorded once; an alarm claimed by one owner
//! until its lease lapses; a run claimed by one worker at a time, whose writes are fenced by the
//! generation it claimed. A backend's own details (its SQL, its files) are tested beside it.

use std::sync::Arc;
use std::time::Duration;

use super::runs::{
    EnqueueOutcome, Enqueued, Fence, Finish, FinishOutcome, Labels, NewRun, NewStep, RunStatus,
    StepStatus,
};
use super::{Backend, Columns, InstanceRecord, Store, StoreError, Write, WriteBatch};
use crate::id::{InstanceKey, JobKind};
use crate::time::Timestamp;

const T0: Timestamp = Timestamp::from_millis(1_767_225_600_000);

fn at(seconds: u64) -> Timestamp {
    T0 + Duration::from_secs(seconds)
}

fn key(id: &str) -> InstanceKey {
    InstanceKey::new(JobKind::Task, "job", id)
}

fn scheduled(id: &str, alarm_at: Timestamp) -> InstanceRecord {
    let mut record = InstanceRecord::new(key(id), T0);
    record.alarm_at = Some(alarm_at);
    record
}

fn update(record: &InstanceRecord, expected_version: u64) -> Write {
    Write::Update {
        record: record.clone(),
        expected_version,
        changed: Columns::ALL,
    }
}

async fn commit(store: &dyn Store, batch: WriteBatch) -> Result<(), StoreError> {
    store.commit(batch).await
}

/// A batch applies whole or not at all, and a write computed from a stale version is refused.
pub(crate) async fn commits_are_versioned_and_all_or_nothing(store: Arc<dyn Store>) {
    let a = InstanceRecord::new(key("a"), T0);
    commit(&*store, vec![Write::Insert(a.clone())])
        .await
        .unwrap();

    // The second insert finds `a`: the first insert of the batch is not applied either.
    let b = InstanceRecord::new(key("b"), T0);
    let refused = commit(&*store, vec![Write::Insert(b), Write::Insert(a.clone())]).await;
    assert!(matches!(refused, Err(StoreError::Conflict(k)) if k == key("a")));
    assert_eq!(store.load(&key("b")).await.unwrap(), None);

    let mut next = a.clone();
    next.run_count = 1;
    next.version = 1;
    let stale = commit(&*store, vec![update(&next, 7)]).await;
    assert!(matches!(stale, Err(StoreError::Conflict(_))), "{stale:?}");
    commit(&*store, vec![update(&next, 0)]).await.unwrap();
    assert_eq!(store.load(&key("a")).await.unwrap(), Some(next));
}

/// An event id is recorded once per instance; a batch that repeats one changes nothing.
pub(crate) async fn event_ids_are_recorded_once(store: Arc<dyn Store>) {
    let a = InstanceRecord::new(key("a"), T0);
    let record = |event_id: &str| Write::RecordEvent {
        key: key("a"),
        event_id: event_id.into(),
        at: T0,
    };
    commit(&*store, vec![Write::Insert(a.clone()), record("e1")])
        .await
        .unwrap();
    assert!(store.has_event_id(&key("a"), "e1").await.unwrap());
    assert!(!store.has_event_id(&key("a"), "e2").await.unwrap());

    let mut next = a.clone();
    next.event_count = 1;
    next.version = 1;
    let repeated = commit(&*store, vec![update(&next, 0), record("e1")]).await;
    assert!(
        matches!(&repeated, Err(StoreError::DuplicateEvent { event_id, .. }) if event_id == "e1"),
        "{repeated:?}"
    );
    assert_eq!(store.load(&key("a")).await.unwrap(), Some(a));
}

/// A due alarm is claimed by one owner, whose lease moves the alarm to its expiry; nobody else
/// claims it until the lease lapses, unless its owner renews it.
pub(crate) async fn an_alarm_is_claimed_by_one_owner_until_its_lease_lapses(store: Arc<dyn Store>) {
    commit(&*store, vec![Write::Insert(scheduled("a", at(100)))])
        .await
        .unwrap();
    let not_due = store.claim_alarm(&key("a"), at(50), "one", at(80)).await;
    assert_eq!(not_due.unwrap(), None);

    let claimed = store
        .claim_alarm(&key("a"), at(100), "one", at(160))
        .await
        .unwrap()
        .expect("a due alarm is claimed");
    let lease = claimed.lease.clone().expect("the claim's lease");
    assert_eq!((lease.owner.as_str(), lease.until), ("one", at(160)));
    assert_eq!(claimed.alarm_at, Some(at(160)));
    assert_eq!((claimed.lease_generation, claimed.version), (1, 1));
    assert_eq!(store.load(&key("a")).await.unwrap(), Some(claimed));

    let taken = store.claim_alarm(&key("a"), at(150), "two", at(210)).await;
    assert_eq!(taken.unwrap(), None, "a live lease keeps others out");

    assert_eq!(
        Backend::renew_leases(&*store, "one", at(220))
            .await
            .unwrap(),
        1
    );
    let taken = store.claim_alarm(&key("a"), at(200), "two", at(260)).await;
    assert_eq!(taken.unwrap(), None, "a renewed lease keeps others out");

    let reclaimed = store
        .claim_alarm(&key("a"), at(220), "two", at(280))
        .await
        .unwrap()
        .expect("a lapsed lease is taken over");
    assert_eq!(reclaimed.lease.map(|l| l.owner), Some("two".to_owned()));
    assert_eq!(reclaimed.lease_generation, 2);
}

/// A scan finds the due alarms of the jobs asked about, earliest first, and the next one.
pub(crate) async fn a_scan_finds_due_alarms_and_the_next_one(store: Arc<dyn Store>) {
    let other_job = {
        let mut record = InstanceRecord::new(InstanceKey::new(JobKind::Task, "other", "x"), T0);
        record.alarm_at = Some(at(1));
        record
    };
    commit(
        &*store,
        vec![
            Write::Insert(scheduled("late", at(20))),
            Write::Insert(scheduled("early", at(10))),
            Write::Insert(scheduled("later", at(90))),
            Write::Insert(other_job),
        ],
    )
    .await
    .unwrap();
    let scan = store
        .scan_alarms(at(30), 10, &[(JobKind::Task, "job")])
        .await
        .unwrap();
    assert_eq!(
        scan.due,
        vec![(key("early"), at(10)), (key("late"), at(20))]
    );
    assert_eq!(scan.next, Some(at(90)));
}

fn new_run(id: &str, idempotency_key: Option<&str>) -> NewRun {
    NewRun {
        id: id.into(),
        job_name: "job".into(),
        input: "{}".into(),
        idempotency_key: idempotency_key.map(str::to_owned),
        concurrency_key: None,
        labels: Labels::new(),
        coalesce: false,
    }
}

/// A second trigger with an idempotency key returns the run the first created.
pub(crate) async fn an_idempotency_key_returns_the_first_run(store: Arc<dyn Store>) {
    let first = store
        .enqueue(vec![new_run("r1", Some("k"))], T0)
        .await
        .unwrap();
    assert!(
        matches!(&first, EnqueueOutcome::Done(d) if matches!(d.as_slice(), [Enqueued::Created(r)] if r.id == "r1"))
    );
    let again = store
        .enqueue(vec![new_run("r2", Some("k"))], at(1))
        .await
        .unwrap();
    assert!(
        matches!(&again, EnqueueOutcome::Done(d) if matches!(d.as_slice(), [Enqueued::Idempotent(r)] if r.id == "r1")),
        "{again:?}"
    );
    assert_eq!(store.get_run("r2").await.unwrap(), None);
}

/// A run is claimed by one worker at a time; once its lease lapses another worker takes it over
/// with a new generation, and the first worker's writes are refused from then on.
pub(crate) async fn a_claimed_run_is_fenced_by_its_generation(store: Arc<dyn Store>) {
    store.enqueue(vec![new_run("r", None)], T0).await.unwrap();
    let lease = Duration::from_secs(30);
    let first = store.claim("one", T0, T0 + lease, 10).await.unwrap();
    let [run] = first.runs.as_slice() else {
        panic!("one run claimed: {first:?}")
    };
    assert_eq!(run.generation, 1);
    let busy = store
        .claim("two", at(10), at(10) + lease, 10)
        .await
        .unwrap();
    assert!(busy.runs.is_empty(), "a live lease keeps others out");

    let taken = store
        .claim("two", at(30), at(30) + lease, 10)
        .await
        .unwrap();
    let [second] = taken.runs.as_slice() else {
        panic!("the lapsed run is taken over: {taken:?}")
    };
    assert_eq!(second.generation, 2);

    let fence = |claimed: &super::runs::ClaimedRun| Fence {
        run_id: claimed.id.clone(),
        generation: claimed.generation,
        hint: claimed.hint,
    };
    let step = NewStep {
        id: "s1".into(),
        name: "s".into(),
        index: 0,
        status: StepStatus::Completed,
        output: Some("1".into()),
        error: None,
        started_at: at(31),
        completed_at: at(31),
    };
    assert!(!store
        .persist_step(fence(run), step.clone(), Vec::new())
        .await
        .unwrap());
    assert!(store
        .persist_step(fence(second), step, Vec::new())
        .await
        .unwrap());
    let done = Finish::Completed {
        output: Some("2".into()),
        completed_step_count: 1,
        current_step_index: 1,
    };
    let stale = store
        .finish_run(fence(run), done.clone(), Vec::new(), false, at(32))
        .await;
    assert_eq!(stale.unwrap(), FinishOutcome::Refused);
    let finished = store
        .finish_run(fence(second), done, Vec::new(), false, at(32))
        .await;
    assert_eq!(finished.unwrap(), FinishOutcome::Completed);
    let stored = store.get_run("r").await.unwrap().expect("the run");
    assert_eq!(
        (stored.status, stored.output.as_deref()),
        (RunStatus::Completed, Some("2"))
    );
    assert_eq!(store.completed_steps("r").await.unwrap().len(), 1);
}

/// A closed store refuses reads, writes and `verify` with [`StoreError::Closed`], which the
/// engine reports as shut down.
pub(crate) async fn a_closed_store_refuses_everything(store: Arc<dyn Store>) {
    commit(&*store, vec![Write::Insert(scheduled("a", at(1)))])
        .await
        .unwrap();
    store.verify().unwrap();
    store.close().await.unwrap();
    assert!(matches!(store.verify(), Err(StoreError::Closed)));
    assert!(matches!(
        store.load(&key("a")).await,
        Err(StoreError::Closed)
    ));
    let insert = commit(&*store, vec![Write::Insert(scheduled("b", at(1)))]).await;
    assert!(matches!(insert, Err(StoreError::Closed)), "{insert:?}");
    assert!(matches!(store.get_run("r").await, Err(StoreError::Closed)));
    let enqueue = store.enqueue(vec![new_run("r", None)], T0).await;
    assert!(matches!(enqueue, Err(StoreError::Closed)), "{enqueue:?}");
}

/// Every instance key is listed once, in key order, a page at a time: the engine reads them at
/// start to know which instances do not exist.
pub(crate) async fn instance_keys_are_listed_in_pages(store: Arc<dyn Store>) {
    let batch = (0..25)
        .map(|i| Write::Insert(InstanceRecord::new(key(&format!("k{i:02}")), T0)))
        .collect();
    commit(&*store, batch).await.unwrap();
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store.instance_keys(after.take(), 10).await.unwrap();
        assert!(page.len() <= 10);
        let full = page.len() == 10;
        after = page.last().cloned();
        seen.extend(page);
        if !full {
            break;
        }
    }
    let expected: Vec<InstanceKey> = (0..25).map(|i| key(&format!("k{i:02}"))).collect();
    assert_eq!(seen, expected);
}

/// Event ids are pruned oldest first, at most a batch at a time.
pub(crate) async fn event_ids_are_pruned_in_batches(store: Arc<dyn Store>) {
    let batch = (0..5)
        .map(|i| Write::RecordEvent {
            key: key("a"),
            event_id: format!("e{i}"),
            at: at(i),
        })
        .collect();
    commit(&*store, batch).await.unwrap();
    assert_eq!(store.prune_event_ids(at(4), 3).await.unwrap(), 3);
    assert!(!store.has_event_id(&key("a"), "e2").await.unwrap());
    assert!(store.has_event_id(&key("a"), "e3").await.unwrap());
    assert_eq!(store.prune_event_ids(at(4), 3).await.unwrap(), 1);
    assert!(store.has_event_id(&key("a"), "e4").await.unwrap());
}

/// Listings are newest first, whatever mix of statuses and jobs they name, and a cursor
/// continues exactly after the run it names.
pub(crate) async fn runs_are_listed_newest_first_with_cursors(store: Arc<dyn Store>) {
    use super::runs::{RunCursor, RunFilter};
    for i in 0..6u64 {
        let run = NewRun {
            id: format!("r{i}"),
            job_name: if i % 2 == 0 { "even" } else { "odd" }.into(),
            input: "{}".into(),
            idempotency_key: None,
            concurrency_key: None,
            labels: Labels::new(),
            coalesce: false,
        };
        store.enqueue(vec![run], at(i)).await.unwrap();
    }
    store.cancel_run("r2", at(10), true).await.unwrap();
    let ids = |runs: Vec<super::runs::RunRecord>| -> Vec<String> {
        runs.into_iter().map(|r| r.id).collect()
    };
    let all = ids(store.get_runs(RunFilter::new()).await.unwrap());
    assert_eq!(all, ["r5", "r4", "r3", "r2", "r1", "r0"]);
    let even = RunFilter::new()
        .job_name("even")
        .status(RunStatus::Pending)
        .status(RunStatus::Cancelled);
    assert_eq!(
        ids(store.get_runs(even.clone()).await.unwrap()),
        ["r4", "r2", "r0"]
    );
    let after_r4 = even.limit(1).before(RunCursor::new(at(4), "r4"));
    assert_eq!(ids(store.get_runs(after_r4).await.unwrap()), ["r2"]);
    let window = RunFilter::new().created_since(at(1)).created_until(at(3));
    assert_eq!(ids(store.get_runs(window).await.unwrap()), ["r2", "r1"]);
}

/// One test per check above, each on a store that `$open` opens: an expression giving a pair of
/// a guard (kept alive for the test, such as a temporary folder) and an `Arc<dyn Store>`.
macro_rules! conformance_tests {
    ($open:expr) => {
        $crate::store::conformance::conformance_tests!(
            @each $open;
            commits_are_versioned_and_all_or_nothing,
            event_ids_are_recorded_once,
            an_alarm_is_claimed_by_one_owner_until_its_lease_lapses,
            a_scan_finds_due_alarms_and_the_next_one,
            an_idempotency_key_returns_the_first_run,
            a_claimed_run_is_fenced_by_its_generation,
            a_closed_store_refuses_everything,
            instance_keys_are_listed_in_pages,
            event_ids_are_pruned_in_batches,
            runs_are_listed_newest_first_with_cursors,
        );
    };
    (@each $open:expr; $($check:ident,)*) => {
        $(
            #[tokio::test]
            async fn $check() {
                let (_guard, store) = $open;
                $crate::store::conformance::$check(store).await;
            }
        )*
    };
}
pub(crate) use conformance_tests;
