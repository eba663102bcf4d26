//! Step semantics (upstream `step.shared.ts`): memoisation, persistence, failure, cancellation.

use super::*;
use crate::error::Error;

fn preserving() -> EnvBuilder {
    Env::builder().options(StepOptions::default().preserve_steps(true))
}

#[tokio::test]
async fn a_step_output_becomes_the_run_output() {
    let env = Env::new().await;
    let done = env
        .client::<Double>()
        .trigger_and_wait(ValueIn { value: 21 }, TriggerOptions::new(), WAIT)
        .await
        .expect("done");
    assert_eq!(done.output, ResultOut { result: 42 });
}

#[tokio::test]
async fn steps_are_persisted_in_order() {
    let env = preserving().build().await;
    let t = env
        .client::<Script>()
        .trigger(script(&["step1", "step2"]), TriggerOptions::new())
        .await
        .expect("trigger");
    env.wait(&t.id).await.expect("completes");
    let steps = env.steps(&t.id).await;
    let summary: Vec<_> = steps
        .iter()
        .map(|s| (s.name.as_str(), s.index, s.status, s.output.clone()))
        .collect();
    assert_eq!(
        summary,
        [
            (
                "step1",
                0,
                StepStatus::Completed,
                Some(serde_json::json!("step1-1"))
            ),
            (
                "step2",
                1,
                StepStatus::Completed,
                Some(serde_json::json!("step2-1"))
            ),
        ]
    );
    assert!(steps.iter().all(|s| s.completed_at.is_some()));
    let run = env.run(&t.id).await;
    assert_eq!((run.completed_step_count, run.current_step_index), (2, 2));
}

#[tokio::test]
async fn steps_are_deleted_after_completion_by_default() {
    let env = Env::new().await;
    let t = env
        .client::<Script>()
        .trigger(script(&["step1", "step2"]), TriggerOptions::new())
        .await
        .expect("trigger");
    env.wait(&t.id).await.expect("completes");
    assert!(env.steps(&t.id).await.is_empty());
    assert_eq!(env.run(&t.id).await.completed_step_count, 2);
}

#[tokio::test]
async fn a_failing_step_fails_the_run_and_is_persisted() {
    let env = preserving().build().await;
    env.app.fail("boom", 1);
    let t = env
        .client::<Script>()
        .trigger(script(&["ok", "boom"]), TriggerOptions::new())
        .await
        .expect("trigger");
    assert_err!(env.wait(&t.id).await, Error::Execution { .. });
    let run = env.run(&t.id).await;
    assert_eq!(run.status, RunStatus::Failed);
    assert!(run
        .error
        .as_deref()
        .is_some_and(|e| e.contains("boom failed!")));
    let steps = env.steps(&t.id).await;
    assert_eq!(
        steps.iter().map(|s| s.status).collect::<Vec<_>>(),
        [StepStatus::Completed, StepStatus::Failed]
    );
    assert_eq!(steps[1].error.as_deref(), Some("boom failed!"));
    assert_eq!((run.completed_step_count, run.current_step_index), (1, 1));
}

#[tokio::test]
async fn a_resumed_run_replays_completed_steps() {
    let env = preserving().build().await;
    env.app.fail("step2", 1);
    let t = env
        .client::<Script>()
        .trigger(script(&["step1", "step2"]), TriggerOptions::new())
        .await
        .expect("trigger");
    env.wait(&t.id).await.expect_err("first attempt fails");
    // Back to pending by hand, as upstream's resume test does.
    env.exec(&format!(
        "UPDATE durably_runs SET status = 'pending', completed_at = NULL WHERE id = '{}'",
        t.id
    ));
    env.rt.shared.wake.notify_one();
    let run = env.wait(&t.id).await.expect("second attempt completes");
    assert_eq!(run.output.as_deref(), Some(r#"["step1-1","step2-2"]"#));
    assert_eq!((env.app.calls("step1"), env.app.calls("step2")), (1, 2));
}

#[tokio::test]
async fn the_step_index_does_not_drift_on_resume() {
    let env = preserving().build().await;
    env.app.fail("c", 1);
    let t = env
        .client::<Script>()
        .trigger(script(&["a", "b", "c"]), TriggerOptions::new())
        .await
        .expect("trigger");
    env.wait(&t.id).await.expect_err("fails at c");
    env.exec(&format!(
        "UPDATE durably_runs SET status = 'pending', completed_at = NULL WHERE id = '{}'",
        t.id
    ));
    env.rt.shared.wake.notify_one();
    env.wait(&t.id).await.expect("completes");
    let steps = env.steps(&t.id).await;
    let summary: Vec<_> = steps
        .iter()
        .map(|s| (s.name.as_str(), s.index, s.status))
        .collect();
    assert_eq!(
        summary,
        [
            ("a", 0, StepStatus::Completed),
            ("b", 1, StepStatus::Completed),
            ("c", 2, StepStatus::Failed),
            ("c", 2, StepStatus::Completed)
        ]
    );
    let run = env.run(&t.id).await;
    assert_eq!((run.current_step_index, run.completed_step_count), (3, 3));
}

/// Two steps with the same name: the second returns the first's output without running.
struct Duplicate;

impl Job for Duplicate {
    const NAME: &'static str = "duplicate";
    const KIND: JobKind = JobKind::Step;
}

impl StepJob<App> for Duplicate {
    type Input = ();
    type Output = (String, String, u32);
    type Error = BoxError;

    async fn run(
        &self,
        step: &mut StepContext,
        _: (),
        _app: &App,
    ) -> Result<(String, String, u32), BoxError> {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let a: String = step
            .run("x", |_| async move {
                c.fetch_add(1, Ordering::SeqCst);
                Ok("first".to_owned())
            })
            .await?;
        let c = calls.clone();
        let b: String = step
            .run("x", |_| async move {
                c.fetch_add(1, Ordering::SeqCst);
                Ok("second".to_owned())
            })
            .await?;
        // A unit step replays as `()`.
        step.run("unit", |_| async { Ok(()) }).await?;
        Ok((a, b, calls.load(Ordering::SeqCst) as u32))
    }
}

#[tokio::test]
async fn duplicate_step_names_return_the_first_output() {
    let env = Env::new().await;
    let mut jobs = jobs();
    jobs.insert(Duplicate::NAME, erase(Duplicate));
    let rt = StepRuntime::new(
        env.store.clone(),
        test_owner(),
        true,
        crate::store::changes::OtherWriters::default(),
        jobs,
        env.app.clone(),
        Clock::system(),
        StepOptions::default(),
        crate::telemetry::Fanout::new(),
    );
    env.rt.abort();
    rt.start();
    let client: StepJobClient<App, Duplicate> = StepJobClient::new(rt.clone());
    let done = client
        .trigger_and_wait((), TriggerOptions::new(), WAIT)
        .await
        .expect("done");
    assert_eq!(done.output, ("first".to_owned(), "first".to_owned(), 1));
    rt.shutdown(WAIT).await;
}

#[tokio::test]
async fn cancelling_during_a_step_signals_its_token_and_stops_the_run() {
    let env = Env::new().await;
    env.app.block("step1");
    let script = env.client::<Script>();
    let mut events = script.events();
    let t = script
        .trigger(super::script(&["step1", "step2"]), TriggerOptions::new())
        .await
        .expect("trigger");
    env.app.entered().await;
    script.cancel(&t.id).await.expect("cancel");
    // The run is cancelled at once; the step sees it, step2 never runs.
    assert_eq!(env.run(&t.id).await.status, RunStatus::Cancelled);
    let mut kinds = Vec::new();
    loop {
        let e = tokio::time::timeout(WAIT, events.next())
            .await
            .expect("in time")
            .expect("event");
        kinds.push(e.type_name());
        if e.type_name() == "step:cancel" {
            break;
        }
    }
    assert!(kinds.contains(&"run:cancel"));
    assert!(!kinds.contains(&"step:fail"));
    assert_eq!(env.app.saw_cancel(), ["step1"]);
    assert_eq!(env.app.calls("step2"), 0);
    assert_eq!(env.run(&t.id).await.status, RunStatus::Cancelled);
}

#[tokio::test]
async fn a_step_rejecting_on_cancel_emits_step_cancel_not_step_fail() {
    let env = preserving().build().await;
    env.app.block("step1");
    let script = env.client::<Script>();
    let mut events = script.events();
    let input = ScriptIn {
        reject_on_cancel: true,
        ..super::script(&["step1", "step2"])
    };
    let t = script
        .trigger(input, TriggerOptions::new())
        .await
        .expect("trigger");
    env.app.entered().await;
    script.cancel(&t.id).await.expect("cancel");
    loop {
        let e = tokio::time::timeout(WAIT, events.next())
            .await
            .expect("in time")
            .expect("event");
        assert_ne!(e.type_name(), "step:fail");
        if e.type_name() == "step:cancel" {
            break;
        }
    }
    assert_eq!(env.app.calls("step2"), 0);
    assert!(env
        .steps(&t.id)
        .await
        .iter()
        .all(|s| s.status != StepStatus::Completed));
}

#[tokio::test]
async fn a_cancel_written_to_the_database_while_a_step_runs_wins() {
    let env = preserving().build().await;
    env.app.block("step1");
    let script = env.client::<Script>();
    let t = script
        .trigger(super::script(&["step1", "step2"]), TriggerOptions::new())
        .await
        .expect("trigger");
    env.app.entered().await;
    // Another process cancels: nothing in this process is told.
    env.exec(&format!(
        "UPDATE durably_runs SET status = 'cancelled', completed_at = updated_at WHERE id = '{}'",
        t.id
    ));
    env.app.release(1);
    // The step's persist is refused, the run stays cancelled and step2 never runs.
    let e = assert_err!(env.wait(&t.id).await, Error::InvalidState { .. });
    assert!(matches!(e, Error::InvalidState { ref state, .. } if state == "cancelled"));
    tokio::time::timeout(WAIT, async {
        while env
            .rt
            .shared
            .active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&t.id)
        {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the execution ends");
    assert!(env
        .steps(&t.id)
        .await
        .iter()
        .all(|s| s.status != StepStatus::Completed));
    assert_eq!(env.app.calls("step2"), 0);
    assert_eq!(env.run(&t.id).await.status, RunStatus::Cancelled);
}

#[tokio::test]
async fn a_cancelled_status_is_never_overwritten_by_completion() {
    let env = Env::new().await;
    env.app.block("step1");
    let script = env.client::<Script>();
    // The job swallows the cancellation error and returns normally.
    let input = ScriptIn {
        swallow_errors: true,
        ..super::script(&["step1", "step2", "step3"])
    };
    let t = script
        .trigger(input, TriggerOptions::new())
        .await
        .expect("trigger");
    env.app.entered().await;
    script.cancel(&t.id).await.expect("cancel");
    tokio::time::timeout(WAIT, async {
        while env
            .rt
            .shared
            .active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&t.id)
        {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the execution ends");
    let run = env.run(&t.id).await;
    assert_eq!((run.status, run.output), (RunStatus::Cancelled, None));
    assert_eq!((env.app.calls("step2"), env.app.calls("step3")), (0, 0));
    // Its steps were cleaned up like a pending cancelled run's.
    assert!(env.steps(&t.id).await.is_empty());
}

#[tokio::test]
async fn the_token_starts_uncancelled() {
    struct Probe;
    impl Job for Probe {
        const NAME: &'static str = "probe";
        const KIND: JobKind = JobKind::Step;
    }
    impl StepJob<App> for Probe {
        type Input = ();
        type Output = (bool, bool, u32, String);
        type Error = BoxError;
        async fn run(
            &self,
            step: &mut StepContext,
            _: (),
            _: &App,
        ) -> Result<(bool, bool, u32, String), BoxError> {
            let inside = step
                .run("peek", |s| async move { Ok(s.is_cancelled()) })
                .await?;
            step.check_cancelled()?;
            Ok((
                step.is_cancelled(),
                inside,
                step.attempt(),
                step.run_id().to_owned(),
            ))
        }
    }
    let env = Env::new().await;
    env.rt.abort();
    let mut jobs = jobs();
    jobs.insert(Probe::NAME, erase(Probe));
    let rt = StepRuntime::new(
        env.store.clone(),
        test_owner(),
        true,
        crate::store::changes::OtherWriters::default(),
        jobs,
        env.app.clone(),
        Clock::system(),
        StepOptions::default(),
        crate::telemetry::Fanout::new(),
    );
    rt.start();
    let client: StepJobClient<App, Probe> = StepJobClient::new(rt.clone());
    let done = client
        .trigger_and_wait((), TriggerOptions::new(), WAIT)
        .await
        .expect("done");
    assert_eq!(done.output, (false, false, 1, done.id.clone()));
    rt.shutdown(WAIT).await;
}
