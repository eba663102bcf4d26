//! The instance side of the contract ([`Backend`]): rows that round-trip, versioned batches
//! applied whole or not at all, event ids recorded once, alarms claimed under leases, scans,
//! listings and counts, the outbox, and a closed store.

use std::sync::Arc;

use super::key;
use crate::id::{InstanceKey, JobKind};
use crate::store::runs::{NewRun, RunStore};
use crate::store::{
    AlarmScan, Backend, Columns, InstanceCounts, InstanceQuery, InstanceRecord, Lease, Store,
    StoreError, Write,
};
use crate::time::Timestamp;

fn ms(millis: i64) -> Timestamp {
    Timestamp::from_millis(millis)
}

/// The job of [`key`], as scans ask for it.
const JOB: &[(JobKind, &str)] = &[(JobKind::Task, "job")];

/// A record with every field set to a value other than its default.
pub(crate) fn every_field_set(key: InstanceKey) -> InstanceRecord {
    InstanceRecord {
        key,
        state: Some(r#"{"count":3,"name":"é ☃"}"#.into()),
        created_at: ms(1_700_000_000_001),
        updated_at: ms(1_700_000_000_002),
        run_count: 3,
        event_count: 4,
        execute_count: 5,
        batch_started_at: Some(ms(6)),
        last_event_at: Some(ms(7)),
        alarm_at: Some(ms(8)),
        retry_attempt: 9,
        retry_started_at: Some(ms(10)),
        retry_last_error: Some("boom".into()),
        version: 11,
        lease: Some(Lease {
            owner: "engine-1".into(),
            until: ms(12),
        }),
        lease_generation: 13,
        state_version: 14,
        broken: Some("no longer decodes".into()),
    }
}

/// A fresh instance of [`key`]`(id)` whose alarm is at `alarm_at` ms.
fn scheduled(id: &str, alarm_at: i64) -> InstanceRecord {
    let mut record = InstanceRecord::new(key(id), ms(0));
    record.alarm_at = Some(ms(alarm_at));
    record
}

fn instance(kind: JobKind, job: &str, id: &str) -> InstanceRecord {
    InstanceRecord::new(InstanceKey::new(kind, job, id), ms(0))
}

/// An update to `record` computed from `expected_version`, writing every column.
fn update(record: InstanceRecord, expected_version: u64) -> Write {
    Write::Update {
        record,
        expected_version,
        changed: Columns::ALL,
    }
}

fn event(id: &str) -> Write {
    Write::RecordEvent {
        key: key("a"),
        event_id: id.into(),
        at: ms(1),
    }
}

async fn insert_all(store: &dyn Store, records: impl IntoIterator<Item = InstanceRecord>) {
    store
        .commit(records.into_iter().map(Write::Insert).collect())
        .await
        .unwrap();
}

async fn keys(store: &dyn Store, query: InstanceQuery) -> Vec<String> {
    store
        .list_instances(query)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.key.to_string())
        .collect()
}

/// Every field reads back as written, text and times included; an update replaces every column
/// (clearing the optional ones); the kind is part of the key.
pub(crate) async fn every_field_round_trips(store: Arc<dyn Store>) {
    let full = every_field_set(InstanceKey::new(
        JobKind::Continuous,
        "job:with:colons",
        "id:1",
    ));
    let empty = InstanceRecord::new(InstanceKey::new(JobKind::Debounce, "job", "id"), ms(-5));
    insert_all(&*store, [full.clone(), empty.clone()]).await;
    assert_eq!(store.load(&full.key).await.unwrap(), Some(full.clone()));
    assert_eq!(store.load(&empty.key).await.unwrap(), Some(empty.clone()));

    let mut cleared = InstanceRecord::new(full.key.clone(), ms(1));
    cleared.version = 12;
    store
        .commit(vec![update(cleared.clone(), 11)])
        .await
        .unwrap();
    assert_eq!(store.load(&full.key).await.unwrap(), Some(cleared));

    let other_kind = InstanceKey::new(JobKind::Task, "job", "id");
    assert_eq!(store.load(&other_kind).await.unwrap(), None);
}

/// A batch applies whole or not at all: an insert of an existing instance, or an update or
/// delete computed from a stale version (or of a missing row), is refused with
/// [`StoreError::Conflict`] and leaves none of the batch's other writes (rows, event ids,
/// outbox events) behind. With the right version, both go through.
pub(crate) async fn a_conflict_leaves_nothing_of_the_batch_applied(store: Arc<dyn Store>) {
    insert_all(&*store, [InstanceRecord::new(key("a"), ms(0))]).await;

    let batch = vec![
        event("e1"),
        Write::Insert(InstanceRecord::new(key("b"), ms(0))),
        Write::Outbox(vec!["{}".into()]),
        Write::Insert(InstanceRecord::new(key("a"), ms(0))),
    ];
    let refused = store.commit(batch).await;
    assert!(
        matches!(&refused, Err(StoreError::Conflict(k)) if *k == key("a")),
        "{refused:?}"
    );

    let mut stale = InstanceRecord::new(key("a"), ms(0));
    stale.version = 2;
    let refused = store.commit(vec![event("e2"), update(stale, 1)]).await;
    assert!(
        matches!(refused, Err(StoreError::Conflict(_))),
        "{refused:?}"
    );
    let delete = |id: &str, expected_version| Write::Delete {
        key: key(id),
        expected_version,
    };
    let refused = store.commit(vec![event("e3"), delete("a", 1)]).await;
    assert!(
        matches!(refused, Err(StoreError::Conflict(_))),
        "{refused:?}"
    );
    let refused = store.commit(vec![event("e4"), delete("missing", 0)]).await;
    assert!(
        matches!(refused, Err(StoreError::Conflict(_))),
        "{refused:?}"
    );

    assert_eq!(store.load(&key("b")).await.unwrap(), None);
    assert!(store.outbox_peek(10).await.unwrap().is_empty());
    for id in ["e1", "e2", "e3", "e4"] {
        assert!(!store.has_event_id(&key("a"), id).await.unwrap(), "{id}");
    }
    assert_eq!(
        store.load(&key("a")).await.unwrap(),
        Some(InstanceRecord::new(key("a"), ms(0)))
    );

    let mut next = InstanceRecord::new(key("a"), ms(0));
    next.run_count = 1;
    next.version = 1;
    store.commit(vec![update(next.clone(), 0)]).await.unwrap();
    assert_eq!(store.load(&key("a")).await.unwrap(), Some(next));
    store.commit(vec![delete("a", 1)]).await.unwrap();
    assert_eq!(store.load(&key("a")).await.unwrap(), None);
}

/// An event id is recorded once per instance: a batch that repeats one (against the store or
/// within itself) is refused with [`StoreError::DuplicateEvent`] and changes nothing.
pub(crate) async fn a_duplicate_event_id_is_refused_and_rolls_back_its_batch(
    store: Arc<dyn Store>,
) {
    store.commit(vec![event("e1")]).await.unwrap();
    assert!(store.has_event_id(&key("a"), "e1").await.unwrap());
    assert!(!store.has_event_id(&key("b"), "e1").await.unwrap());

    let a = InstanceRecord::new(key("a"), ms(0));
    let batch = vec![Write::Insert(a.clone()), event("e2"), event("e1")];
    match store.commit(batch).await {
        Err(StoreError::DuplicateEvent { key: k, event_id }) => {
            assert_eq!((k, event_id.as_str()), (key("a"), "e1"))
        }
        other => panic!("expected a duplicate event, got {other:?}"),
    }
    assert_eq!(store.load(&key("a")).await.unwrap(), None);
    assert!(!store.has_event_id(&key("a"), "e2").await.unwrap());

    let twice = store.commit(vec![event("e3"), event("e3")]).await;
    assert!(
        matches!(twice, Err(StoreError::DuplicateEvent { .. })),
        "{twice:?}"
    );
    assert!(!store.has_event_id(&key("a"), "e3").await.unwrap());

    // An update in a batch with a repeated id is not applied either.
    insert_all(&*store, [a.clone()]).await;
    let mut next = a.clone();
    next.event_count = 1;
    next.version = 1;
    let repeated = store.commit(vec![update(next, 0), event("e1")]).await;
    assert!(
        matches!(&repeated, Err(StoreError::DuplicateEvent { event_id, .. }) if event_id == "e1"),
        "{repeated:?}"
    );
    assert_eq!(store.load(&key("a")).await.unwrap(), Some(a));
}

/// Batches committed at once (which a backend may group into one transaction) each get their
/// own outcome: the conflicting ones fail alone, the others are applied whole.
pub(crate) async fn concurrent_batches_each_get_their_own_outcome(store: Arc<dyn Store>) {
    insert_all(&*store, [InstanceRecord::new(key("taken"), ms(0))]).await;
    let commits: Vec<_> = (0..200)
        .map(|i| {
            let id = if i % 4 == 0 {
                "taken".to_owned()
            } else {
                format!("i{i}")
            };
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                store
                    .commit(vec![
                        Write::Outbox(vec![format!("{{\"i\":{i}}}")]),
                        Write::Insert(InstanceRecord::new(key(&id), ms(0))),
                    ])
                    .await
            })
        })
        .collect();
    for (i, commit) in commits.into_iter().enumerate() {
        let result = commit.await.unwrap();
        if i % 4 == 0 {
            assert!(
                matches!(result, Err(StoreError::Conflict(_))),
                "{i}: {result:?}"
            );
        } else {
            result.unwrap();
            assert!(store.load(&key(&format!("i{i}"))).await.unwrap().is_some());
        }
    }
    assert_eq!(store.outbox_peek(1000).await.unwrap().len(), 150);
}

/// Event-id records stay when their instance is deleted, so a repeated event is still
/// recognised.
pub(crate) async fn event_ids_outlive_their_instance(store: Arc<dyn Store>) {
    store
        .commit(vec![
            Write::Insert(InstanceRecord::new(key("a"), ms(0))),
            Write::RecordEvent {
                key: key("a"),
                event_id: "e".into(),
                at: ms(0),
            },
        ])
        .await
        .unwrap();
    store
        .commit(vec![Write::Delete {
            key: key("a"),
            expected_version: 0,
        }])
        .await
        .unwrap();
    assert_eq!(store.load(&key("a")).await.unwrap(), None);
    assert!(store.has_event_id(&key("a"), "e").await.unwrap());
}

/// Pruning deletes the event-id records older than the cutoff, and only those, oldest first and
/// at most a batch at a time.
pub(crate) async fn pruning_deletes_old_event_ids_only(store: Arc<dyn Store>) {
    let batch = (0..10)
        .map(|i| Write::RecordEvent {
            key: key("a"),
            event_id: format!("e{i}"),
            at: ms(i * 10),
        })
        .collect();
    store.commit(batch).await.unwrap();
    assert_eq!(store.prune_event_ids(ms(50), 3).await.unwrap(), 3);
    assert!(!store.has_event_id(&key("a"), "e2").await.unwrap());
    assert!(store.has_event_id(&key("a"), "e3").await.unwrap());
    assert_eq!(store.prune_event_ids(ms(50), 3).await.unwrap(), 2);
    assert!(!store.has_event_id(&key("a"), "e4").await.unwrap());
    assert!(store.has_event_id(&key("a"), "e5").await.unwrap());
    assert_eq!(store.prune_event_ids(ms(50), 3).await.unwrap(), 0);
}

/// Every instance key is listed once, in key order, a page at a time: the engine reads them at
/// start to know which instances do not exist.
pub(crate) async fn instance_keys_are_listed_in_pages(store: Arc<dyn Store>) {
    insert_all(
        &*store,
        (0..25).map(|i| InstanceRecord::new(key(&format!("k{i:02}")), ms(0))),
    )
    .await;
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

/// A due alarm is claimed by one owner, whose lease moves the alarm to its expiry; nobody else
/// claims it until the lease lapses, then anyone does with the next generation. An alarm not
/// due, absent, or cleared by the execution's last write is not claimed.
pub(crate) async fn claiming_an_alarm(store: Arc<dyn Store>) {
    insert_all(
        &*store,
        [scheduled("a", 100), InstanceRecord::new(key("idle"), ms(0))],
    )
    .await;
    for id in ["a", "idle", "missing"] {
        let claim = store.claim_alarm(&key(id), ms(99), "one", ms(1_099)).await;
        assert_eq!(claim.unwrap(), None, "{id}");
    }

    let claimed = store
        .claim_alarm(&key("a"), ms(100), "one", ms(1_100))
        .await
        .unwrap()
        .expect("a due alarm is claimed");
    assert_eq!(
        claimed.lease,
        Some(Lease {
            owner: "one".into(),
            until: ms(1_100)
        })
    );
    assert_eq!(claimed.alarm_at, Some(ms(1_100)));
    assert_eq!((claimed.lease_generation, claimed.version), (1, 1));
    assert_eq!(store.load(&key("a")).await.unwrap(), Some(claimed.clone()));

    for now in [500, 1_099] {
        let taken = store
            .claim_alarm(&key("a"), ms(now), "two", ms(now + 1_000))
            .await;
        assert_eq!(
            taken.unwrap(),
            None,
            "a live lease keeps others out at {now}"
        );
    }

    let again = store
        .claim_alarm(&key("a"), ms(1_100), "two", ms(2_100))
        .await
        .unwrap()
        .expect("a lapsed lease is taken over");
    assert_eq!(
        again.lease,
        Some(Lease {
            owner: "two".into(),
            until: ms(2_100)
        })
    );
    assert_eq!(
        (again.lease_generation, again.version, again.alarm_at),
        (2, 2, Some(ms(2_100)))
    );

    let mut done = again.clone();
    done.alarm_at = None;
    done.lease = None;
    done.version = 3;
    store.commit(vec![update(done, 2)]).await.unwrap();
    let ended = store
        .claim_alarm(&key("a"), ms(10_000), "one", ms(11_000))
        .await;
    assert_eq!(ended.unwrap(), None);
}

/// A client action's claim holds only the version it read, leaves the alarm where it was, and
/// keeps alarm claims out until it lapses; renewing it does not move the alarm either.
pub(crate) async fn an_instance_is_claimed_at_the_version_read(store: Arc<dyn Store>) {
    insert_all(&*store, [scheduled("a", 100_000)]).await;
    let stale = store.claim_instance(&key("a"), 7, "one", ms(60_000)).await;
    assert_eq!(stale.unwrap(), None, "a claim at a version that moved");
    let claimed = store
        .claim_instance(&key("a"), 0, "one", ms(160_000))
        .await
        .unwrap()
        .expect("a claim at the stored version");
    assert_eq!(
        claimed.lease,
        Some(Lease {
            owner: "one".into(),
            until: ms(160_000)
        })
    );
    assert_eq!((claimed.alarm_at, claimed.version), (Some(ms(100_000)), 1));
    assert_eq!(claimed.lease_generation, 1);

    let taken = store
        .claim_alarm(&key("a"), ms(120_000), "two", ms(180_000))
        .await;
    assert_eq!(
        taken.unwrap(),
        None,
        "a claimed instance's alarm is not claimed"
    );
    Backend::renew_leases(&*store, "one", ms(230_000))
        .await
        .unwrap();
    let renewed = store.load(&key("a")).await.unwrap().unwrap();
    assert_eq!(renewed.alarm_at, Some(ms(100_000)), "the alarm stays");
    assert_eq!(renewed.lease.map(|l| l.until), Some(ms(230_000)));
    let taken = store
        .claim_alarm(&key("a"), ms(230_000), "two", ms(290_000))
        .await
        .unwrap()
        .expect("a lapsed claim gives the alarm up");
    assert_eq!(taken.lease_generation, 2);
}

/// Renewal extends the leases of one owner (and their alarms) without bumping the version, so
/// the execution's own writes still apply; a renewed lease keeps others out past its first
/// expiry.
pub(crate) async fn renewing_leases_moves_their_alarms_but_not_the_version(store: Arc<dyn Store>) {
    insert_all(
        &*store,
        [scheduled("a", 0), scheduled("b", 0), scheduled("c", 0)],
    )
    .await;
    for (id, owner) in [("a", "one"), ("b", "one"), ("c", "two")] {
        store
            .claim_alarm(&key(id), ms(0), owner, ms(10))
            .await
            .unwrap()
            .expect("claimed");
    }

    assert_eq!(
        Backend::renew_leases(&*store, "one", ms(50)).await.unwrap(),
        2
    );
    let a = store.load(&key("a")).await.unwrap().unwrap();
    assert_eq!(
        (a.lease.map(|l| l.until), a.alarm_at, a.version),
        (Some(ms(50)), Some(ms(50)), 1)
    );
    let c = store.load(&key("c")).await.unwrap().unwrap();
    assert_eq!(c.alarm_at, Some(ms(10)));
    let taken = store.claim_alarm(&key("a"), ms(20), "two", ms(70)).await;
    assert_eq!(taken.unwrap(), None);
}

/// A scan returns the due alarms (at or before `now`), earliest first and at most `limit`, and
/// the earliest alarm after `now`.
pub(crate) async fn scanning_returns_due_alarms_earliest_first_and_the_next_one(
    store: Arc<dyn Store>,
) {
    assert_eq!(
        store.scan_alarms(ms(100), 10, JOB).await.unwrap(),
        AlarmScan::default()
    );
    insert_all(
        &*store,
        [
            scheduled("c", 30),
            scheduled("a", 10),
            scheduled("b", 20),
            scheduled("later", 500),
            scheduled("last", 900),
        ],
    )
    .await;
    insert_all(&*store, [InstanceRecord::new(key("none"), ms(0))]).await;

    let scan = store.scan_alarms(ms(100), 10, JOB).await.unwrap();
    let due: Vec<_> = scan
        .due
        .iter()
        .map(|(k, at)| (k.id(), at.as_millis()))
        .collect();
    assert_eq!(due, [("a", 10), ("b", 20), ("c", 30)]);
    assert_eq!(scan.next, Some(ms(500)));

    let scan = store.scan_alarms(ms(100), 2, JOB).await.unwrap();
    assert_eq!(scan.due.len(), 2);
    assert_eq!(scan.next, Some(ms(500)));
    let scan = store.scan_alarms(ms(500), 0, JOB).await.unwrap();
    assert!(scan.due.is_empty());
    assert_eq!(scan.next, Some(ms(900)));
    assert_eq!(
        store.scan_alarms(ms(900), 10, JOB).await.unwrap().next,
        None
    );
}

/// A scan merges the jobs asked for (by kind and name) and leaves out the alarms of other jobs
/// and of broken instances; those are found as unregistered jobs and broken instances.
pub(crate) async fn scans_merge_the_jobs_asked_for_and_leave_out_other_jobs_and_broken_instances(
    store: Arc<dyn Store>,
) {
    let at = |kind: JobKind, job: &str, id: &str, alarm: i64| {
        let mut record = instance(kind, job, id);
        record.alarm_at = Some(ms(alarm));
        record
    };
    let mut broken = at(JobKind::Task, "job", "broken", 5);
    broken.broken = Some("no longer decodes".into());
    insert_all(
        &*store,
        [
            at(JobKind::Task, "job", "t", 30),
            at(JobKind::Continuous, "other", "c", 10),
            at(JobKind::Continuous, "other", "c2", 600),
            // Not asked for: a removed job, and a job of the same name but another kind.
            at(JobKind::Debounce, "removed", "d", 1),
            at(JobKind::Debounce, "job", "d", 2),
            at(JobKind::Debounce, "removed", "later", 300),
            broken,
        ],
    )
    .await;
    let jobs = &[(JobKind::Continuous, "other"), (JobKind::Task, "job")];
    let scan = store.scan_alarms(ms(100), 10, jobs).await.unwrap();
    let due: Vec<_> = scan.due.iter().map(|(k, _)| k.id()).collect();
    assert_eq!(due, ["c", "t"]);
    assert_eq!(scan.next, Some(ms(600)));
    assert_eq!(
        store.scan_alarms(ms(100), 1, jobs).await.unwrap().due.len(),
        1
    );
    assert_eq!(
        store.scan_alarms(ms(100), 10, &[]).await.unwrap(),
        AlarmScan::default()
    );

    let unregistered: Vec<_> = store
        .unregistered_jobs(jobs)
        .await
        .unwrap()
        .into_iter()
        .map(|u| (u.kind, u.name, u.instances))
        .collect();
    assert_eq!(
        unregistered,
        [
            (JobKind::Debounce, "job".to_owned(), 1),
            (JobKind::Debounce, "removed".to_owned(), 2)
        ]
    );
    let broken = store.load_broken(JobKind::Task, "job").await.unwrap();
    assert_eq!(broken.len(), 1);
    assert_eq!(broken[0].key.id(), "broken");
}

/// Pulling a job's alarms to a time moves only the later ones, and leaves retries, broken
/// instances and leased ones alone.
pub(crate) async fn pulling_alarms_moves_only_later_unleased_first_attempts(store: Arc<dyn Store>) {
    let mut retrying = scheduled("retrying", 900);
    retrying.retry_attempt = 2;
    let mut broken = scheduled("broken", 900);
    broken.broken = Some("no longer decodes".into());
    insert_all(
        &*store,
        [
            scheduled("early", 100),
            scheduled("late", 900),
            retrying,
            broken,
            scheduled("leased", 900),
        ],
    )
    .await;
    store
        .claim_alarm(&key("leased"), ms(900), "someone", ms(2_000))
        .await
        .unwrap()
        .expect("claimed");
    let moved = store
        .pull_alarms_to(JobKind::Task, "job", ms(500))
        .await
        .unwrap();
    assert_eq!(moved, 1);
    for (id, alarm) in [
        ("late", 500),
        ("early", 100),
        ("retrying", 900),
        ("broken", 900),
        ("leased", 2_000),
    ] {
        let record = store.load(&key(id)).await.unwrap().expect("the instance");
        assert_eq!(record.alarm_at, Some(ms(alarm)), "{id}");
    }
}

/// Recovery releases every lease and makes the leased alarms due at once (a write: the version
/// moves, the generation stays), leaving unleased alarms where they were.
pub(crate) async fn recover_fires_leased_rows_at_once(store: Arc<dyn Store>) {
    insert_all(
        &*store,
        [scheduled("leased", 0), scheduled("waiting", 5_000)],
    )
    .await;
    store
        .claim_alarm(&key("leased"), ms(0), "crashed", ms(60_000))
        .await
        .unwrap()
        .expect("claimed");

    Backend::recover(&*store, "me", ms(1_000)).await.unwrap();
    let leased = store.load(&key("leased")).await.unwrap().unwrap();
    assert_eq!((leased.lease, leased.alarm_at), (None, Some(ms(1_000))));
    assert_eq!((leased.version, leased.lease_generation), (2, 1));
    assert_eq!(
        store.load(&key("waiting")).await.unwrap().unwrap().alarm_at,
        Some(ms(5_000))
    );
    assert_eq!(
        store.scan_alarms(ms(1_000), 10, JOB).await.unwrap().due,
        vec![(key("leased"), ms(1_000))]
    );
    assert!(store
        .claim_alarm(&key("leased"), ms(1_000), "me", ms(2_000))
        .await
        .unwrap()
        .is_some());
}

/// Listings filter by kind, job, alarm, retry and due time, follow the key order, and page
/// after a key without gaps or repeats, across jobs.
pub(crate) async fn listing_filters_and_pages_in_key_order_without_gaps_or_repeats(
    store: Arc<dyn Store>,
) {
    let mut writes = Vec::new();
    for i in 0..7 {
        let mut r = instance(JobKind::Task, "orders", &format!("o{i}"));
        if i % 2 == 0 {
            r.alarm_at = Some(ms(100 + i));
        }
        if i == 4 {
            r.retry_attempt = 2;
        }
        writes.push(Write::Insert(r));
    }
    writes.push(Write::Insert(instance(
        JobKind::Continuous,
        "refresh",
        "u1",
    )));
    writes.push(Write::Insert(instance(JobKind::Task, "other", "x")));
    store.commit(writes).await.unwrap();

    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let mut q = InstanceQuery::new()
            .kind(JobKind::Task)
            .job("orders")
            .limit(3);
        if let Some(a) = after.take() {
            q = q.after(a);
        }
        let page = store.list_instances(q).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 3);
        after = page.last().map(|r| r.key.clone());
        seen.extend(page.into_iter().map(|r| r.key.id().to_owned()));
    }
    assert_eq!(seen, ["o0", "o1", "o2", "o3", "o4", "o5", "o6"]);

    assert_eq!(
        keys(&*store, InstanceQuery::new().job("orders").has_alarm(false)).await,
        ["task:orders:o1", "task:orders:o3", "task:orders:o5"]
    );
    assert_eq!(
        keys(&*store, InstanceQuery::new().retrying(true)).await,
        ["task:orders:o4"]
    );
    assert_eq!(
        keys(&*store, InstanceQuery::new().due_before(ms(102))).await,
        ["task:orders:o0", "task:orders:o2"]
    );
    assert_eq!(
        keys(&*store, InstanceQuery::new().kind(JobKind::Continuous)).await,
        ["continuous:refresh:u1"]
    );
    assert_eq!(
        keys(
            &*store,
            InstanceQuery::new()
                .after(InstanceKey::new(JobKind::Task, "orders", "o6"))
                .limit(10)
        )
        .await,
        ["task:other:x"]
    );
}

/// Counts per job: total, scheduled, retrying, due at the time asked about, the most overdue
/// alarm and the next one; jobs in key order.
pub(crate) async fn counts_per_job_with_due_and_next_alarms(store: Arc<dyn Store>) {
    let mut a = instance(JobKind::Task, "orders", "a");
    a.alarm_at = Some(ms(50));
    let mut b = instance(JobKind::Task, "orders", "b");
    b.alarm_at = Some(ms(500));
    b.retry_attempt = 1;
    let c = instance(JobKind::Task, "orders", "c");
    let mut d = instance(JobKind::Debounce, "batch", "d");
    d.alarm_at = Some(ms(90));
    insert_all(&*store, [a, b, c, d]).await;
    let counts = store.count_instances(ms(100)).await.unwrap();
    assert_eq!(
        counts,
        vec![
            InstanceCounts {
                kind: JobKind::Debounce,
                job: "batch".into(),
                total: 1,
                scheduled: 1,
                retrying: 0,
                due: 1,
                oldest_due: Some(ms(90)),
                next_alarm: None,
            },
            InstanceCounts {
                kind: JobKind::Task,
                job: "orders".into(),
                total: 3,
                scheduled: 2,
                retrying: 1,
                due: 1,
                oldest_due: Some(ms(50)),
                next_alarm: Some(ms(500)),
            },
        ]
    );
}

/// Outbox events are peeked oldest first with increasing sequence numbers, acknowledged up to a
/// sequence number, and numbers are not reused once the outbox is empty.
pub(crate) async fn outbox_rows_are_peeked_oldest_first_and_acknowledged_up_to_a_sequence_number(
    store: Arc<dyn Store>,
) {
    store
        .commit(vec![Write::Outbox(vec![
            "{\"n\":0}".into(),
            "{\"n\":1}".into(),
        ])])
        .await
        .unwrap();
    store
        .commit(vec![
            Write::Outbox(vec!["{\"n\":2}".into()]),
            Write::Outbox(vec!["{\"n\":3}".into()]),
        ])
        .await
        .unwrap();

    let all = store.outbox_peek(10).await.unwrap();
    let json: Vec<_> = all.iter().map(|e| e.json.as_str()).collect();
    assert_eq!(json, ["{\"n\":0}", "{\"n\":1}", "{\"n\":2}", "{\"n\":3}"]);
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(store.outbox_peek(2).await.unwrap(), all[..2]);

    store.outbox_ack(all[1].seq).await.unwrap();
    assert_eq!(store.outbox_peek(10).await.unwrap(), all[2..]);
    store.outbox_ack(all[3].seq).await.unwrap();
    assert!(store.outbox_peek(10).await.unwrap().is_empty());

    store
        .commit(vec![Write::Outbox(vec!["{}".into()])])
        .await
        .unwrap();
    assert!(store.outbox_peek(1).await.unwrap()[0].seq > all[3].seq);
}

/// A closed store refuses every read and write, and `verify`, with [`StoreError::Closed`],
/// which the engine reports as shut down; closing it again succeeds.
pub(crate) async fn a_closed_store_refuses_everything(store: Arc<dyn Store>) {
    insert_all(&*store, [scheduled("a", 1)]).await;
    store.verify().unwrap();
    store.close().await.unwrap();
    assert!(matches!(store.verify(), Err(StoreError::Closed)));

    let k = key("a");
    let now = ms(1);
    let closed = |what: &str, refused: bool| assert!(refused, "{what} on a closed store");
    closed(
        "load",
        matches!(store.load(&k).await, Err(StoreError::Closed)),
    );
    closed(
        "has_event_id",
        matches!(store.has_event_id(&k, "e").await, Err(StoreError::Closed)),
    );
    let insert = vec![Write::Insert(scheduled("b", 1))];
    closed(
        "commit",
        matches!(store.commit(insert).await, Err(StoreError::Closed)),
    );
    closed(
        "an empty commit",
        matches!(store.commit(Vec::new()).await, Err(StoreError::Closed)),
    );
    closed(
        "claim_alarm",
        matches!(
            store.claim_alarm(&k, now, "me", now).await,
            Err(StoreError::Closed)
        ),
    );
    closed(
        "renew_leases",
        matches!(
            Backend::renew_leases(&*store, "me", now).await,
            Err(StoreError::Closed)
        ),
    );
    closed(
        "scan_alarms",
        matches!(
            store.scan_alarms(now, 10, &[]).await,
            Err(StoreError::Closed)
        ),
    );
    closed(
        "recover",
        matches!(
            Backend::recover(&*store, "me", now).await,
            Err(StoreError::Closed)
        ),
    );
    closed(
        "outbox_peek",
        matches!(store.outbox_peek(1).await, Err(StoreError::Closed)),
    );
    closed(
        "outbox_ack",
        matches!(store.outbox_ack(1).await, Err(StoreError::Closed)),
    );
    closed(
        "prune_event_ids",
        matches!(
            store.prune_event_ids(now, 10).await,
            Err(StoreError::Closed)
        ),
    );
    closed(
        "get_run",
        matches!(store.get_run("r").await, Err(StoreError::Closed)),
    );
    let run = NewRun {
        id: "r".into(),
        job_name: "job".into(),
        input: "{}".into(),
        idempotency_key: None,
        concurrency_key: None,
        labels: Default::default(),
        coalesce: false,
    };
    closed(
        "enqueue",
        matches!(
            RunStore::enqueue(&*store, vec![run], now).await,
            Err(StoreError::Closed)
        ),
    );
    store.close().await.unwrap();
}
