//! The process the crash tests kill: `crash_child <db> <steps|debounce> <normal|full>`.
//!
//! - `steps`: triggers one ledger run, prints `run <id>`, and hangs inside its second step
//!   (each step entered is printed as `entered <step>`).
//! - `debounce`: callers add numbers to `Tally` without end; each `add` that returned is
//!   printed as `acked <n>`.
//! - `continuous`, `flush`, `task`: starts a ticker, adds three events to a batch, or sends an
//!   event that schedules `execute` (each acknowledgement printed as `acked ...`); the alarm
//!   execution that follows 50 ms later hangs (`entered tick`, `entered flush-3`,
//!   `entered task-execute`).
//! - `retry`: starts an instance whose first run fails and schedules a retry a second later;
//!   prints `acked start <status>` once `start` returned; the retry hangs if it comes.
//!
//! It never exits by itself; the test kills it.

use durable_jobs::sqlite::Synchronous;
use durable_jobs::steps::TriggerOptions;
use durable_jobs::Engine;
use durable_jobs_tests::crash::{
    say, tally_instance, CrashBatch, CrashJobs, CrashRetrier, CrashTask, CrashTicker, LedgerInput,
    Tally, Witness, TALLY_CALLERS,
};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [db, scenario, sync] = args.as_slice() else {
        eprintln!("usage: crash_child <db> <scenario> <normal|full>");
        std::process::exit(2);
    };
    let synchronous = match sync.as_str() {
        "full" => Synchronous::Full,
        _ => Synchronous::Normal,
    };
    let hang_at = match scenario.as_str() {
        "steps" => Some("two"),
        "continuous" => Some("tick"),
        "flush" => Some("flush-3"),
        "task" => Some("task-execute"),
        "retry" => Some("retry"),
        _ => None,
    };
    let engine = Engine::<CrashJobs>::builder()
        .sqlite(db)
        .synchronous(synchronous)
        .app(Witness::reporting(hang_at))
        .start()
        .await
        .expect("the engine starts");
    let client = engine.client();
    match scenario.as_str() {
        "steps" => {
            let triggered = client
                .step_job::<durable_jobs_tests::crash::Ledger>()
                .trigger(
                    LedgerInput {
                        label: "crash".into(),
                    },
                    TriggerOptions::new(),
                )
                .await
                .expect("the trigger commits");
            say(&format!("run {}", triggered.run.id));
        }
        "debounce" => {
            for caller in 0..TALLY_CALLERS {
                let tally = client.debounce::<Tally>();
                tokio::spawn(async move {
                    for n in (caller..).step_by(TALLY_CALLERS as usize) {
                        tally
                            .add(&tally_instance(n), n)
                            .await
                            .expect("the add commits");
                        say(&format!("acked {n}"));
                    }
                });
            }
        }
        "continuous" => {
            let started = client.continuous::<CrashTicker>().start("ticker", 0).await;
            say(&format!(
                "acked start {:?}",
                started.expect("the start commits").status
            ));
        }
        "flush" => {
            for n in 0..3 {
                client
                    .debounce::<CrashBatch>()
                    .add("batch", n)
                    .await
                    .expect("the add commits");
                say(&format!("acked {n}"));
            }
        }
        "task" => {
            client
                .task::<CrashTask>()
                .send("task", ())
                .await
                .expect("the send commits");
            say("acked send");
        }
        "retry" => {
            let started = client
                .continuous::<CrashRetrier>()
                .start("retrier", 0)
                .await;
            say(&format!(
                "acked start {:?}",
                started.expect("the start commits").status
            ));
        }
        other => {
            eprintln!("unknown scenario {other}");
            std::process::exit(2);
        }
    }
    std::future::pending::<()>().await;
}
