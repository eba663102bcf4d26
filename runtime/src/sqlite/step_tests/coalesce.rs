//! Idempotency keys, concurrency keys and coalescing (upstream `coalesce.shared.ts`,
//! `concurrency.shared.ts`).

use super::*;
use crate::error::{Error, Operation};

fn keyed(key: &str) -> TriggerOptions {
    TriggerOptions::new().concurrency_key(key)
}

#[tokio::test]
async fn a_second_pending_run_per_key_conflicts_or_coalesces() {
    let env = Env::builder().stopped().build().await;
    let double = env.client::<Double>();
    let first = double
        .trigger(ValueIn { value: 1 }, keyed("k").label("env", "prod"))
        .await
        .expect("first");
    assert_eq!(
        (first.status, first.disposition),
        (RunStatus::Pending, Disposition::Created)
    );
    let e = assert_err!(
        double.trigger(ValueIn { value: 2 }, keyed("k")).await,
        Error::InvalidState { .. }
    );
    let Error::InvalidState {
        instance,
        operation,
        state,
    } = e
    else {
        unreachable!()
    };
    assert_eq!(
        (instance.id(), operation, state.as_str()),
        (first.id.as_str(), Operation::TriggerRun, "pending")
    );
    let mut events = env.rt.events(None);
    let c = double
        .trigger(
            ValueIn { value: 3 },
            keyed("k").coalesce(Coalesce::Skip).label("x", "y"),
        )
        .await
        .expect("coalesced");
    assert_eq!(
        (c.id.clone(), c.disposition),
        (first.id.clone(), Disposition::Coalesced)
    );
    // The original input and labels are kept.
    assert_eq!(c.input, ValueIn { value: 1 });
    assert_eq!(c.labels.get("env").map(String::as_str), Some("prod"));
    let e = events.next().await.expect("event");
    assert_eq!(e.type_name(), "run:coalesced");
    let RunEventKind::Coalesced {
        skipped_input,
        skipped_labels,
    } = &e.kind
    else {
        panic!("{e:?}")
    };
    assert_eq!(skipped_input, &serde_json::json!({ "value": 3 }));
    assert_eq!(skipped_labels.get("x").map(String::as_str), Some("y"));
    assert_eq!(e.run_id, first.id);
    // Different keys are independent, no key is unlimited, another job is independent.
    double
        .trigger(ValueIn { value: 4 }, keyed("other"))
        .await
        .expect("other key");
    for _ in 0..3 {
        double
            .trigger(ValueIn { value: 5 }, TriggerOptions::new())
            .await
            .expect("unkeyed");
    }
    env.client::<Other>()
        .trigger(ValueIn { value: 6 }, keyed("k"))
        .await
        .expect("other job");
    assert_eq!(env.count("SELECT COUNT(*) FROM durably_runs"), 6);
}

#[tokio::test]
async fn once_leased_a_new_pending_run_is_allowed_then_a_third_conflicts() {
    let env = Env::new().await;
    env.app.block("s");
    let script = env.client::<Script>();
    let a = script
        .trigger(super::script(&["s"]), keyed("k"))
        .await
        .expect("a");
    env.app.entered().await;
    let b = script
        .trigger(super::script(&["s"]), keyed("k"))
        .await
        .expect("b while a is leased");
    assert_eq!(b.disposition, Disposition::Created);
    assert_err!(
        script.trigger(super::script(&["s"]), keyed("k")).await,
        Error::InvalidState { .. }
    );
    env.app.release(2);
    env.wait(&a.id).await.expect("a completes");
    env.wait(&b.id).await.expect("b completes");
}

#[tokio::test]
async fn dispositions_and_trigger_events() {
    let env = Env::builder().stopped().build().await;
    let double = env.client::<Double>();
    let mut events = env.rt.events(None);
    let a = double
        .trigger(
            ValueIn { value: 1 },
            TriggerOptions::new().idempotency_key("i"),
        )
        .await
        .expect("a");
    let again = double
        .trigger(
            ValueIn { value: 2 },
            TriggerOptions::new().idempotency_key("i"),
        )
        .await
        .expect("again");
    assert_eq!(
        (again.id.clone(), again.disposition, again.input.value),
        (a.id.clone(), Disposition::Idempotent, 1)
    );
    // Idempotency beats coalescing, and the same idempotency and concurrency keys give the
    // same run.
    let both = TriggerOptions::new()
        .idempotency_key("j")
        .concurrency_key("k");
    let b = double
        .trigger(ValueIn { value: 3 }, both.clone())
        .await
        .expect("b");
    let b2 = double
        .trigger(ValueIn { value: 4 }, both.coalesce(Coalesce::Skip))
        .await
        .expect("b2");
    assert_eq!(
        (b2.id.clone(), b2.disposition),
        (b.id.clone(), Disposition::Idempotent)
    );
    // The same idempotency key on another job is another run.
    let o = env
        .client::<Other>()
        .trigger(
            ValueIn { value: 5 },
            TriggerOptions::new().idempotency_key("i"),
        )
        .await
        .expect("o");
    assert_eq!(o.disposition, Disposition::Created);
    let mut kinds = Vec::new();
    for _ in 0..3 {
        kinds.push(events.next().await.expect("event").type_name());
    }
    assert_eq!(
        kinds,
        ["run:trigger", "run:trigger", "run:trigger"],
        "idempotent hits emit nothing"
    );
}

#[tokio::test]
async fn batches_coalesce_within_themselves_and_are_atomic() {
    let env = Env::builder().stopped().build().await;
    let double = env.client::<Double>();
    let items = [
        BatchItem::new(ValueIn { value: 1 }).options(keyed("k").coalesce(Coalesce::Skip)),
        BatchItem::new(ValueIn { value: 2 }).options(keyed("k").coalesce(Coalesce::Skip)),
    ];
    let out = double.batch_trigger(items).await.expect("batch");
    assert_eq!(
        out.iter().map(|t| t.disposition).collect::<Vec<_>>(),
        [Disposition::Created, Disposition::Coalesced]
    );
    assert_eq!(out[0].id, out[1].id);
    let items = [
        BatchItem::new(ValueIn { value: 1 }).options(keyed("x")),
        BatchItem::new(ValueIn { value: 2 }).options(keyed("x")),
    ];
    assert_err!(
        double.batch_trigger(items).await,
        Error::InvalidState { .. }
    );
    assert_eq!(
        env.count("SELECT COUNT(*) FROM durably_runs WHERE concurrency_key = 'x'"),
        0
    );
    let items = [
        BatchItem::new(ValueIn { value: 1 }).options(keyed("m1")),
        BatchItem::new(ValueIn { value: 2 }).options(keyed("m2")),
        BatchItem::new(ValueIn { value: 3 }).options(keyed("m1").coalesce(Coalesce::Skip)),
    ];
    let out = double.batch_trigger(items).await.expect("mixed");
    assert_eq!(
        out.iter().map(|t| t.disposition).collect::<Vec<_>>(),
        [
            Disposition::Created,
            Disposition::Created,
            Disposition::Coalesced
        ]
    );
    assert_eq!(out[2].id, out[0].id);
}

#[tokio::test]
async fn trigger_and_wait_onto_a_pending_run_returns_its_output() {
    let env = Env::new().await;
    env.app.block("hold");
    let script = env.client::<Script>();
    // Occupy the key with a leased run so the next one stays pending.
    let holder = script
        .trigger(super::script(&["hold"]), keyed("k"))
        .await
        .expect("holder");
    env.app.entered().await;
    let original = ScriptIn {
        tag: "original".into(),
        ..super::script(&["a"])
    };
    let pending = script.trigger(original, keyed("k")).await.expect("pending");
    let skipped = ScriptIn {
        tag: "skipped".into(),
        ..super::script(&["b"])
    };
    let waiting = tokio::spawn({
        let script = script.clone();
        async move {
            script
                .trigger_and_wait(skipped, keyed("k").coalesce(Coalesce::Skip), WAIT)
                .await
        }
    });
    env.app.release(1);
    let done = waiting.await.expect("joined").expect("done");
    assert_eq!(
        (done.id.clone(), done.disposition),
        (pending.id.clone(), Disposition::Coalesced)
    );
    assert_eq!(done.output, ["a-1"]);
    env.wait(&holder.id).await.expect("holder completes");
}

#[tokio::test]
async fn retrigger_conflicts_with_a_pending_run_of_the_same_key() {
    let env = Env::new().await;
    let double = env.client::<Double>();
    let a = double
        .trigger_and_wait(ValueIn { value: 1 }, keyed("k"), WAIT)
        .await
        .expect("a");
    env.rt.shutdown(WAIT).await;
    double
        .trigger(ValueIn { value: 2 }, keyed("k"))
        .await
        .expect("b pending");
    let e = assert_err!(double.retrigger(&a.id).await, Error::InvalidState { .. });
    assert!(matches!(
        e,
        Error::InvalidState {
            operation: Operation::Retrigger,
            ..
        }
    ));
}

#[tokio::test]
async fn runs_of_one_key_run_strictly_in_sequence() {
    let env = Env::builder()
        .options(StepOptions::default().max_concurrent_runs(3))
        .build()
        .await;
    let script = env.client::<Script>();
    env.app.block("s");
    let one = ScriptIn {
        tag: "1".into(),
        ..super::script(&["s"])
    };
    let two = ScriptIn {
        tag: "2".into(),
        ..super::script(&["s"])
    };
    let a = script.trigger(one, keyed("k")).await.expect("a");
    env.app.entered().await;
    let b = script.trigger(two, keyed("k")).await.expect("b");
    // b stays pending while a holds the key, even with free slots.
    assert_eq!(env.run(&b.id).await.status, RunStatus::Pending);
    env.app.release(1);
    env.wait(&a.id).await.expect("a");
    env.app.entered().await;
    env.app.release(1);
    env.wait(&b.id).await.expect("b");
    assert_eq!(env.app.order(), ["start-1", "end-1", "start-2", "end-2"]);
}

#[tokio::test]
async fn different_keys_and_no_keys_run_concurrently() {
    let env = Env::builder()
        .options(StepOptions::default().max_concurrent_runs(3))
        .build()
        .await;
    let script = env.client::<Script>();
    env.app.block("s");
    let a = script
        .trigger(super::script(&["s"]), keyed("k1"))
        .await
        .expect("a");
    let b = script
        .trigger(super::script(&["s"]), keyed("k2"))
        .await
        .expect("b");
    let c = script
        .trigger(super::script(&["s"]), TriggerOptions::new())
        .await
        .expect("c");
    for _ in 0..3 {
        env.app.entered().await;
    }
    assert_eq!(env.app.peak(), 3);
    env.app.release(3);
    for id in [&a.id, &b.id, &c.id] {
        let id: &str = id;
        env.wait(id).await.expect("completes");
    }
}

#[tokio::test]
async fn one_leased_run_per_key_across_jobs() {
    let env = Env::builder()
        .options(StepOptions::default().max_concurrent_runs(4))
        .build()
        .await;
    env.app.block("s");
    let script = env.client::<Script>();
    let holder = script
        .trigger(super::script(&["s"]), keyed("group-1"))
        .await
        .expect("holder");
    env.app.entered().await;
    let other = env
        .client::<Other>()
        .trigger(ValueIn { value: 1 }, keyed("group-1"))
        .await
        .expect("other job");
    let free = env
        .client::<Other>()
        .trigger(ValueIn { value: 2 }, TriggerOptions::new())
        .await
        .expect("free");
    env.wait(&free.id).await.expect("a keyless run goes ahead");
    assert_eq!(
        env.run(&other.id).await.status,
        RunStatus::Pending,
        "blocked by another job's lease on the key"
    );
    env.app.release(1);
    env.wait(&holder.id).await.expect("holder");
    env.wait(&other.id).await.expect("then the other job's run");
}
