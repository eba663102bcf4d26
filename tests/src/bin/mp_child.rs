//! The child process of the multi-process tests: `mp_child <role> <db> <dir> [arg]`, on the
//! database `<db>` in shared mode, with the per-run files and execution markers in `<dir>`.
//!
//! - `open <exclusive|shared>`: opens the store in that mode and prints `opened`, or
//!   `refused in-use <how the other holds it>` (or `refused other <error>`); keeps it open
//!   until its standard input ends.
//! - `worker`: runs an engine and prints `ready`.
//! - `ticker`: runs an engine, starts the ticker `t` and prints `ready`.
//! - `blocked-trigger`: runs an engine that executes one step run at a time, triggers two runs
//!   that never end (one runs, the other waits claimed for the slot), prints `blocked` once both
//!   are leased here, then waits for a line on its standard input and triggers an echo run with
//!   `trigger_and_wait`: it prints `echo <output>`, the output naming the process that ran it.
//! - `holder`: runs an engine whose executions of `mp-hang` and `mp-hold` hang; starts the
//!   instance `h` of `mp-hold`, triggers an `mp-hang` run and prints `hang-run <id>`.
//! - `takeover <run id>`: runs an engine, prints `ready`, waits for the run to end and prints
//!   `run-completed <output>`.
//!
//! Jobs print what they do (see `durable_jobs_tests::multiprocess`); an answer no test expects
//! is printed as `unexpected ...`. Apart from `open`, it never exits by itself.

use std::io::BufRead;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use durable_jobs::sqlite::{SqliteOptions, SqliteStore};
use durable_jobs::steps::{RunStatus, TriggerOptions};
use durable_jobs::store::{Ownership, StoreError};
use durable_jobs::{Client, Engine};
use durable_jobs_tests::kill::{say, Reporter};
use durable_jobs_tests::multiprocess::{
    shared_engine, MpApp, MpBlock, MpEcho, MpHang, MpHold, MpJobs, MpTicker,
};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (role, db, dir, arg) = match args.as_slice() {
        [role, db, dir] => (role.as_str(), Path::new(db), Path::new(dir), None),
        [role, db, dir, arg] => (role.as_str(), Path::new(db), Path::new(dir), Some(arg)),
        _ => {
            eprintln!("usage: mp_child <role> <db> <dir> [arg]");
            std::process::exit(2);
        }
    };
    if role == "open" {
        open(db, arg.map(String::as_str));
        return;
    }
    let app = Arc::new(MpApp {
        out: Reporter::stdout_with_markers(dir),
        dir: dir.to_owned(),
        hang: role == "holder",
    });
    let runs = if role == "blocked-trigger" { 1 } else { 10 };
    let engine: Engine<MpJobs> = match shared_engine(db, runs).app(app).start().await {
        Ok(engine) => engine,
        Err(e) => {
            say(&format!("unexpected engine-start {e}"));
            std::process::exit(3);
        }
    };
    let client = engine.client();
    match (role, arg) {
        ("worker", None) => say("ready"),
        ("ticker", None) => match client.continuous::<MpTicker>().start("t", 0).await {
            Ok(_) => say("ready"),
            Err(e) => say(&format!("unexpected start {e}")),
        },
        ("blocked-trigger", None) => blocked_trigger(&client).await,
        ("holder", None) => {
            if let Err(e) = client.continuous::<MpHold>().start("h", 0).await {
                say(&format!("unexpected start {e}"));
            }
            match client
                .step_job::<MpHang>()
                .trigger("h".to_owned(), TriggerOptions::new())
                .await
            {
                Ok(t) => say(&format!("hang-run {}", t.run.id)),
                Err(e) => say(&format!("unexpected trigger {e}")),
            }
        }
        ("takeover", Some(id)) => {
            say("ready");
            match client
                .step_job::<MpHang>()
                .wait_for_run(id, Some(Duration::from_secs(60)))
                .await
            {
                Ok(run) => say(&format!("run-completed {:?}", run.output)),
                Err(e) => say(&format!("unexpected wait {e}")),
            }
        }
        _ => {
            eprintln!("mp_child: unknown role {role}");
            std::process::exit(2);
        }
    }
    std::future::pending::<()>().await;
}

/// Opens the store in the mode `mode` names, says how that went, and keeps it open until the
/// standard input ends.
fn open(db: &Path, mode: Option<&str>) {
    let options = match mode {
        Some("shared") => SqliteOptions::file(db).shared(),
        _ => SqliteOptions::file(db),
    };
    let store = match SqliteStore::open(options) {
        Ok(store) => {
            say("opened");
            Some(store)
        }
        Err(StoreError::InUse { held_by, .. }) => {
            let how = match held_by {
                Some(Ownership::Exclusive) => "exclusive",
                Some(Ownership::Shared) => "shared",
                None => "unknown",
            };
            say(&format!("refused in-use {how}"));
            None
        }
        Err(e) => {
            say(&format!("refused other {e}"));
            None
        }
    };
    for line in std::io::stdin().lock().lines() {
        if line.is_err() {
            break;
        }
    }
    drop(store);
}

/// The `blocked-trigger` role: see the module docs.
async fn blocked_trigger(client: &Client<MpJobs>) {
    let blocks = client.step_job::<MpBlock>();
    let mut ids = Vec::new();
    for n in 0..2 {
        match blocks
            .trigger(format!("block-{n}"), TriggerOptions::new())
            .await
        {
            Ok(t) => ids.push(t.run.id),
            Err(e) => return say(&format!("unexpected trigger {e}")),
        }
    }
    // Both leased by this process's worker: one runs, one waits for the slot.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut leased = 0;
        for id in &ids {
            if let Ok(Some(run)) = blocks.get_run(id).await {
                if run.status == RunStatus::Leased {
                    leased += 1;
                }
            }
        }
        if leased == ids.len() {
            break;
        }
        if Instant::now() > deadline {
            return say("unexpected blocks not leased");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    say("blocked");
    let go = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).map(|_| line)
    })
    .await;
    if !matches!(go, Ok(Ok(_))) {
        return say("unexpected stdin");
    }
    match client
        .step_job::<MpEcho>()
        .trigger_and_wait(
            "hello".to_owned(),
            TriggerOptions::new(),
            Duration::from_secs(20),
        )
        .await
    {
        Ok(done) => say(&format!("echo {}", done.output)),
        Err(e) => say(&format!("unexpected echo {e}")),
    }
}
