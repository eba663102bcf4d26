//! What operators read and do without knowing the jobs' types: the registry as data, instances
//! listed across jobs a page at a time, per-job counts, and the untyped run API of every step
//! job with its all-runs event stream.

use std::time::Duration;

use durable_jobs::prelude::*;
use durable_jobs::steps::{RunFilter, RunStatus, StepError, StepOptions, TriggerOptions};
use durable_jobs::store::InstanceQuery;
use durable_jobs::testing::TestClock;
use durable_jobs::{Engine, Error, InstanceKey, Schedule};
use durable_jobs_tests::*;
use serde_json::json;

#[tokio::test]
async fn the_registry_lists_every_job_with_its_kind_and_settings() {
    let h = Harness::start().await;
    let jobs = h.client.jobs();
    let names: Vec<_> = jobs.iter().map(|j| j.name).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted);
    assert_eq!(names.len(), 9);
    let job = |name: &str| jobs.iter().find(|j| j.name == name).unwrap();

    let nightly = job("nightly_report");
    assert_eq!(nightly.kind, JobKind::Continuous);
    assert_eq!(nightly.start_immediately, Some(false));
    match &nightly.schedule {
        Some(Schedule::Cron(c)) => {
            assert_eq!((c.expression(), c.time_zone()), ("30 4 * * *", "UTC"))
        }
        other => panic!("{other:?}"),
    }
    let retrying = job(RetryingRefresher::NAME);
    assert_eq!(retrying.retry.as_ref().map(|r| r.max_attempts()), Some(3));
    assert!(
        matches!(retrying.schedule, Some(Schedule::Every(d)) if d == Duration::from_secs(3600))
    );
    let batcher = job(Batcher::NAME);
    assert_eq!(
        (batcher.kind, batcher.flush_after, batcher.max_events),
        (JobKind::Debounce, Some(Duration::from_secs(5)), Some(3))
    );
    assert_eq!(job(QuietBatcher::NAME).quiet, Some(Duration::from_secs(5)));
    assert_eq!(job(Orders::NAME).kind, JobKind::Task);
}

#[tokio::test]
async fn instances_are_listed_across_jobs_in_pages_and_read_one_by_one() {
    let h = Harness::start().await;
    let refresher = h.client.continuous::<Refresher>();
    for i in 0..5 {
        refresher
            .start(&format!("u{i}"), Count::default())
            .await
            .unwrap();
    }
    h.client
        .debounce::<QuietBatcher>()
        .add("c1", Hook { n: 7 })
        .await
        .unwrap();
    h.probe.fail_next(1, "token endpoint down");
    h.client
        .continuous::<RetryingRefresher>()
        .start("r1", Count::default())
        .await
        .unwrap();

    // Every instance once, in key order, across pages of two.
    let mut seen = Vec::new();
    let mut query = InstanceQuery::new().limit(2);
    loop {
        let page = h.client.list_instances(query.clone()).await.unwrap();
        assert!(page.instances.len() <= 2);
        seen.extend(page.instances.iter().map(|i| i.key.to_string()));
        match page.next {
            Some(next) => query = query.after(next),
            None => break,
        }
    }
    assert_eq!(
        seen,
        [
            "continuous:refresher:u0",
            "continuous:refresher:u1",
            "continuous:refresher:u2",
            "continuous:refresher:u3",
            "continuous:refresher:u4",
            "continuous:retrying_refresher:r1",
            "debounce:quiet_batcher:c1",
        ]
        .map(|k| k
            .replace("quiet_batcher", QuietBatcher::NAME)
            .replace("retrying_refresher", RetryingRefresher::NAME))
    );

    let retrying = h
        .client
        .list_instances(InstanceQuery::new().retrying(true))
        .await
        .unwrap();
    assert_eq!(retrying.instances.len(), 1);
    let r1 = &retrying.instances[0];
    assert_eq!(r1.retry_attempt, 2);
    assert_eq!(r1.last_error.as_deref(), Some("token endpoint down"));
    assert_eq!(
        r1.next_alarm,
        Some(TestClock::DEFAULT_START + Duration::from_secs(1))
    );
    assert!(!r1.running);

    let batch = h
        .client
        .instance(&InstanceKey::new(
            JobKind::Debounce,
            QuietBatcher::NAME,
            "c1",
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(batch.event_count, 1);
    assert_eq!(batch.state, Some(json!({"events": [7]})));
    assert_eq!(
        batch.next_alarm,
        Some(TestClock::DEFAULT_START + Duration::from_secs(5))
    );
    let u0 = InstanceKey::new(JobKind::Continuous, Refresher::NAME, "u0");
    assert_eq!(h.client.instance(&u0).await.unwrap().unwrap().run_count, 1);
    let missing = InstanceKey::new(JobKind::Continuous, Refresher::NAME, "nobody");
    assert_eq!(h.client.instance(&missing).await.unwrap(), None);
    let wrong_kind = InstanceKey::new(JobKind::Task, Refresher::NAME, "u0");
    assert!(matches!(
        h.client.instance(&wrong_kind).await,
        Err(Error::JobNotFound { .. })
    ));
    assert!(matches!(
        h.client.list_instances(InstanceQuery::new().limit(0)).await,
        Err(Error::Validation { .. })
    ));

    let counts = h.client.count_instances().await.unwrap();
    let refreshers = counts.iter().find(|c| c.job == Refresher::NAME).unwrap();
    assert_eq!(
        (refreshers.total, refreshers.scheduled, refreshers.due),
        (5, 5, 0)
    );
    assert_eq!(
        refreshers.next_alarm,
        Some(TestClock::DEFAULT_START + Duration::from_secs(1800))
    );
    // An hour later, with the engine's scheduler stopped by the clock, nothing is due: every
    // alarm on the way ran.
    h.clock.advance(Duration::from_secs(3600)).await;
    let counts = h.client.count_instances().await.unwrap();
    assert!(counts.iter().all(|c| c.due == 0), "{counts:?}");
}

// ---------------------------------------------------------------------------------------------
// Step runs of every job, untyped

/// What the step job below is asked to import.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ImportInput {
    /// Rows to import.
    pub rows: u64,
    /// Fail in the last step.
    pub fail: bool,
}

/// Imports rows in two steps, with progress and a log line.
#[durable_jobs::step_job(name = "import")]
pub async fn import(step: &mut StepContext, input: ImportInput) -> Result<u64, StepError> {
    let rows = input.rows;
    step.progress((1, 2)).await;
    step.info("reading");
    let read: u64 = step.run("read", |_| async move { Ok(rows) }).await?;
    step.run("write", |_| async move {
        if input.fail {
            Err("disk full".into())
        } else {
            Ok(())
        }
    })
    .await?;
    step.progress((2, 2)).await;
    Ok(read)
}

durable_jobs::registry! {
    /// One step job.
    pub Imports<()> { Import }
}

#[tokio::test]
async fn runs_of_every_job_are_managed_by_id_and_streamed() {
    let clock = TestClock::new();
    let db = durable_jobs_tests::TestDb::new().await;
    let engine = Engine::<Imports>::builder()
        .store_arc(db.open().await)
        .clock(clock.clone())
        .step_options(StepOptions::default().preserve_steps(true))
        .app(())
        .start()
        .await
        .unwrap();
    let runs = engine.client().runs();
    let mut events = runs.events();

    let (ok, disposition) = runs
        .trigger(
            "import",
            json!({"rows": 3, "fail": false}),
            TriggerOptions::new().label("env", "test"),
        )
        .await
        .unwrap();
    assert_eq!(disposition, durable_jobs::steps::Disposition::Created);
    let done = runs
        .wait_for_run(&ok.id, Some(Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(done.output, Some(json!(3)));
    let (bad, _) = runs
        .trigger(
            "import",
            json!({"rows": 1, "fail": true}),
            TriggerOptions::new(),
        )
        .await
        .unwrap();
    assert!(runs
        .wait_for_run(&bad.id, Some(Duration::from_secs(10)))
        .await
        .is_err());

    // The all-runs stream saw both runs from trigger to end, in order for each.
    let mut seen: Vec<(String, &str)> = Vec::new();
    while !seen.iter().any(|(id, t)| id == &bad.id && *t == "run:fail") {
        let e = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("an event")
            .expect("open stream");
        seen.push((e.run_id.clone(), e.type_name()));
    }
    let of = |id: &str| -> Vec<&str> {
        seen.iter()
            .filter(|(r, _)| r == id)
            .map(|(_, t)| *t)
            .collect()
    };
    assert_eq!(
        of(&ok.id),
        [
            "run:trigger",
            "run:leased",
            "run:progress",
            "log:write",
            "step:start",
            "step:complete",
            "step:start",
            "step:complete",
            "run:progress",
            "run:complete"
        ]
    );
    assert_eq!(of(&bad.id).last(), Some(&"run:fail"));

    let failed = runs
        .get_runs(RunFilter::new().status(RunStatus::Failed))
        .await
        .unwrap();
    assert_eq!(failed.iter().map(|r| &r.id).collect::<Vec<_>>(), [&bad.id]);
    assert_eq!(failed[0].error.as_deref(), Some("disk full"));
    assert_eq!(
        runs.get_runs(RunFilter::new().label("env", "test"))
            .await
            .unwrap()
            .len(),
        1
    );
    let steps = runs.steps(&ok.id).await.unwrap();
    assert_eq!(
        steps.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["read", "write"]
    );
    let logs = runs.logs(&ok.id).await.unwrap();
    assert_eq!(
        logs.iter().map(|l| l.message.as_str()).collect::<Vec<_>>(),
        ["reading"]
    );

    let again = runs.retrigger(&bad.id).await.unwrap();
    assert_ne!(again.id, bad.id);
    assert_eq!(again.input, json!({"rows": 1, "fail": true}));
    runs.cancel(&again.id).await.unwrap_or_else(|e| {
        // It may have ended already: then it failed again, as its input says.
        assert!(matches!(e, Error::InvalidState { .. }), "{e:?}");
    });
    assert!(matches!(
        runs.cancel(&ok.id).await,
        Err(Error::InvalidState { .. })
    ));
    runs.delete_run(&ok.id).await.unwrap();
    assert_eq!(runs.get_run(&ok.id).await.unwrap(), None);
    assert!(matches!(
        runs.delete_run(&ok.id).await,
        Err(Error::InstanceNotFound { .. })
    ));
    assert!(matches!(
        runs.trigger("nope", json!({}), TriggerOptions::new()).await,
        Err(Error::JobNotFound { .. })
    ));

    let counts = runs
        .count_runs(durable_jobs::Timestamp::EPOCH)
        .await
        .unwrap();
    assert_eq!(counts.len(), 1);
    assert_eq!(counts[0].job_name, "import");
    assert_eq!(counts[0].completed, 0);
    assert_eq!(counts[0].failed + counts[0].cancelled, 2);
    drop(events);
    engine.shutdown().await.unwrap();
}

#[test]
fn an_every_schedule_has_no_time_zone_but_a_cron_one_names_it() {
    let Schedule::Cron(c) = Schedule::cron("0 12 * * *", Some("Europe/Paris")).unwrap() else {
        panic!("cron")
    };
    assert_eq!(c.time_zone(), "Europe/Paris");
}
