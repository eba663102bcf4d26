//! The process the crash tests kill: `crash_child <db> <steps|debounce> <normal|full>`.
//!
//! - `steps`: triggers one ledger run, prints `run <id>`, and hangs inside its second step
//!   (each step entered is printed as `entered <step>`).
//! - `debounce`: callers add numbers to `Tally` without end; each `add` that returned is
//!   printed as `acked <n>`.
//!
//! It never exits by itself; the test kills it.

use durable_jobs::steps::TriggerOptions;
use durable_jobs::{Engine, Synchronous};
use durable_jobs_tests::crash::{
    say, tally_instance, CrashJobs, LedgerInput, Tally, Witness, TALLY_CALLERS,
};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [db, scenario, sync] = args.as_slice() else {
        eprintln!("usage: crash_child <db> <steps|debounce> <normal|full>");
        std::process::exit(2);
    };
    let synchronous = match sync.as_str() {
        "full" => Synchronous::Full,
        _ => Synchronous::Normal,
    };
    let hang_at = (scenario == "steps").then_some("two");
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
        other => {
            eprintln!("unknown scenario {other}");
            std::process::exit(2);
        }
    }
    std::future::pending::<()>().await;
}
