//! Input that must be refused before anything is written: state that would not read back from
//! its JSON (a NaN is written as `null`), and JSON nested deeper than the engine walks.

use std::sync::Arc;
use std::time::Duration;

use durable_jobs::client::DynamicJob;
use durable_jobs::prelude::*;
use durable_jobs::steps::{StepError, TriggerOptions};
use durable_jobs::{Engine, Error, ValidationTarget, MAX_NESTING_DEPTH};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// A measurement; `f` may be NaN.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Reading {
    f: f64,
}

/// Hourly; each run sets the reading to the value the app holds.
#[durable_jobs::continuous(every = "1h", start_immediately = false)]
async fn meter(
    ctx: &mut ContinuousContext<Reading>,
    app: &Arc<Next>,
) -> Result<(), std::io::Error> {
    ctx.state_mut().f = *app.0.lock().unwrap();
    Ok(())
}

/// The value the next run of [`meter`] stores.
#[derive(Default)]
pub(crate) struct Next(std::sync::Mutex<f64>);

/// Folds readings into a list.
pub(crate) struct Readings;

#[durable_jobs::debounce(flush_after = "1m")]
impl DebounceJob<Arc<Next>> for Readings {
    type Event = f64;
    type State = Vec<f64>;
    type Error = std::io::Error;

    fn on_event(&self, state: Option<Vec<f64>>, event: f64, _: &EventContext) -> Vec<f64> {
        let mut all = state.unwrap_or_default();
        all.push(event);
        all
    }

    async fn execute(
        &self,
        _: &mut FlushContext<Vec<f64>>,
        _: &Arc<Next>,
    ) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// Keeps the last reading sent.
pub(crate) struct LastReading;

#[durable_jobs::task]
impl TaskJob<Arc<Next>> for LastReading {
    type State = Reading;
    type Event = f64;
    type Error = std::io::Error;

    async fn on_event(
        &self,
        ctx: &mut TaskContext<Reading>,
        f: f64,
        _: &Arc<Next>,
    ) -> Result<(), Self::Error> {
        ctx.set_state(Reading { f });
        Ok(())
    }

    async fn execute(
        &self,
        _: &mut TaskContext<Reading>,
        _: &Arc<Next>,
    ) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// Doubles a reading in one step.
#[durable_jobs::step_job]
async fn double(step: &mut StepContext, input: f64, _: &Arc<Next>) -> Result<f64, StepError> {
    step.run("double", |_| async move { Ok(input * 2.0) }).await
}

/// Any JSON: counts events.
pub(crate) struct AnyEvents;

#[durable_jobs::debounce(flush_after = "1m")]
impl DebounceJob<Arc<Next>> for AnyEvents {
    type Event = Value;
    type State = u32;
    type Error = std::io::Error;

    fn on_event(&self, state: Option<u32>, _: Value, _: &EventContext) -> u32 {
        state.unwrap_or(0) + 1
    }

    async fn execute(&self, _: &mut FlushContext<u32>, _: &Arc<Next>) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// Any JSON as a task event.
pub(crate) struct AnyTask;

#[durable_jobs::task]
impl TaskJob<Arc<Next>> for AnyTask {
    type State = u32;
    type Event = Value;
    type Error = std::io::Error;

    async fn on_event(
        &self,
        ctx: &mut TaskContext<u32>,
        _: Value,
        _: &Arc<Next>,
    ) -> Result<(), Self::Error> {
        ctx.set_state(1);
        Ok(())
    }

    async fn execute(&self, _: &mut TaskContext<u32>, _: &Arc<Next>) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// Any JSON as state.
#[durable_jobs::continuous(every = "1h")]
async fn any_state(_: &mut ContinuousContext<Value>) -> Result<(), std::io::Error> {
    Ok(())
}

/// Any JSON as a step input.
#[durable_jobs::step_job]
async fn any_input(_: &mut StepContext, input: Value) -> Result<Value, StepError> {
    Ok(input)
}

durable_jobs::registry! {
    /// Jobs that take floats or any JSON.
    pub(crate) Inputs<Arc<Next>> {
        Meter, Readings, LastReading, Double, AnyEvents, AnyTask, AnyState, AnyInput
    }
}

async fn engine(dir: &durable_jobs_tests::TestDb) -> Engine<Inputs> {
    engine_with(dir, Arc::default()).await
}

async fn engine_with(dir: &durable_jobs_tests::TestDb, app: Arc<Next>) -> Engine<Inputs> {
    Inputs::builder()
        .store_arc(dir.open().await)
        .app(app)
        .start()
        .await
        .unwrap()
}

fn assert_invalid(result: Result<impl std::fmt::Debug, Error>, target: ValidationTarget) -> String {
    match result {
        Err(Error::Validation {
            target: t, message, ..
        }) if t == target => message,
        other => panic!("expected Validation of the {target}, got {other:?}"),
    }
}

#[tokio::test]
async fn a_nan_in_state_is_refused_before_anything_is_written() {
    let dir = durable_jobs_tests::TestDb::new().await;
    let next = Arc::new(Next::default());
    let engine = engine_with(&dir, next.clone()).await;
    let client = engine.client();
    let nan = Reading { f: f64::NAN };

    // A start input that would be stored as `{"f":null}`: refused, nothing created.
    let message = assert_invalid(
        client.continuous::<Meter>().start("nan", nan.clone()).await,
        ValidationTarget::Input,
    );
    assert!(message.contains("null"), "{message}");
    assert!(client
        .continuous::<Meter>()
        .status("nan")
        .await
        .unwrap()
        .is_not_found());

    // A run that leaves NaN in its state fails; the stored state stays readable.
    client
        .continuous::<Meter>()
        .start("m", Reading { f: 1.0 })
        .await
        .unwrap();
    *next.0.lock().unwrap() = f64::INFINITY;
    let err = client.continuous::<Meter>().trigger("m").await.unwrap_err();
    assert!(matches!(err, Error::Execution { .. }), "{err:?}");
    assert_eq!(
        client.continuous::<Meter>().get_state("m").await.unwrap(),
        Some(Reading { f: 1.0 })
    );

    // A fold to NaN: the add is refused, the batch unchanged.
    let readings = client.debounce::<Readings>();
    readings.add("r", 2.0).await.unwrap();
    assert_invalid(readings.add("r", f64::NAN).await, ValidationTarget::State);
    assert_eq!(readings.get_state("r").await.unwrap(), Some(vec![2.0]));
    assert_eq!(readings.status("r").await.unwrap().event_count, 1);

    // A task handler that sets NaN: the send is refused, nothing is created.
    let tasks = client.task::<LastReading>();
    assert_invalid(tasks.send("t", f64::NAN).await, ValidationTarget::State);
    assert!(tasks.status("t").await.unwrap().is_not_found());
    tasks.send("t", 3.0).await.unwrap();
    assert_invalid(
        tasks.send("t", f64::NEG_INFINITY).await,
        ValidationTarget::State,
    );
    assert_eq!(
        tasks.get_state("t").await.unwrap(),
        Some(Reading { f: 3.0 })
    );

    // A step-job input: refused at trigger, no run is created.
    let runs = client.step_job::<Double>();
    assert_invalid(
        runs.trigger(f64::NAN, TriggerOptions::new()).await,
        ValidationTarget::Input,
    );
    assert!(runs.get_runs(Default::default()).await.unwrap().is_empty());
    drop(client);
    engine.shutdown().await.unwrap();
}

/// `levels` arrays nested in one another, built without recursion.
fn nested(levels: usize) -> Value {
    let mut v = json!("bottom");
    for _ in 0..levels {
        v = Value::Array(vec![v]);
    }
    v
}

#[tokio::test]
async fn deeply_nested_json_on_the_by_name_path_is_refused_not_a_stack_overflow() {
    let dir = durable_jobs_tests::TestDb::new().await;
    let engine = engine(&dir).await;
    let client = engine.client();
    // Far deeper than any stack: a recursive walk (decoding, cloning or dropping it) of a
    // hundred thousand levels aborts the process.
    const DEEP: usize = 100_000;
    let DynamicJob::Debounce(events) = client.by_name("any_events").unwrap() else {
        panic!("any_events is a debounce job")
    };
    let message = assert_invalid(
        events.add("a", nested(DEEP), None).await,
        ValidationTarget::Event,
    );
    assert!(
        message.contains(&MAX_NESTING_DEPTH.to_string()),
        "{message}"
    );
    assert!(events.status("a").await.unwrap().is_not_found());

    let DynamicJob::Task(task) = client.by_name("any_task").unwrap() else {
        panic!("any_task is a task job")
    };
    assert_invalid(
        task.send("a", nested(DEEP), None).await,
        ValidationTarget::Event,
    );
    assert!(task.status("a").await.unwrap().is_not_found());

    let DynamicJob::Continuous(state) = client.by_name("any_state").unwrap() else {
        panic!("any_state is a continuous job")
    };
    assert_invalid(
        state.start("a", nested(DEEP)).await,
        ValidationTarget::Input,
    );
    assert!(state.status("a").await.unwrap().is_not_found());

    let DynamicJob::Step(step) = client.by_name("any_input").unwrap() else {
        panic!("any_input is a step job")
    };
    assert_invalid(
        step.trigger(nested(DEEP), TriggerOptions::new()).await,
        ValidationTarget::Input,
    );

    // At the limit the same payloads are taken.
    events
        .add("a", nested(MAX_NESTING_DEPTH - 1), None)
        .await
        .unwrap();
    let (run, _) = step
        .trigger(nested(MAX_NESTING_DEPTH - 1), TriggerOptions::new())
        .await
        .unwrap();
    let done = client
        .step_job::<AnyInput>()
        .wait_for_run(&run, Some(Duration::from_secs(30)))
        .await
        .unwrap();
    assert_eq!(done.output, Some(nested(MAX_NESTING_DEPTH - 1)));
    drop(client);
    engine.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_deeply_nested_stored_state_is_refused_with_validation() {
    let dir = durable_jobs_tests::TestDb::new().await;
    let first = engine(&dir).await;
    let client = first.client();
    let DynamicJob::Continuous(state) = client.by_name("any_state").unwrap() else {
        panic!("any_state is a continuous job")
    };
    state.start("s", json!([1])).await.unwrap();
    drop((state, client));
    first.shutdown().await.unwrap();

    // The stored state is replaced, outside the engine, by one nested 200 levels deep.
    let deep = "[".repeat(200) + &"]".repeat(200);
    dir.execute(&format!(
        "UPDATE instances SET state = '{deep}' WHERE id = 's'"
    ))
    .await;
    let reopened = engine(&dir).await;
    let client = reopened.client();
    let by_name = client.by_name("any_state").unwrap();
    assert_invalid(by_name.get_state("s").await, ValidationTarget::State);
    assert_invalid(
        client.continuous::<AnyState>().get_state("s").await,
        ValidationTarget::State,
    );
    drop((by_name, client));
    reopened.shutdown().await.unwrap();
}
