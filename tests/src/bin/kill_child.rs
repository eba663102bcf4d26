//! The process the kill harness kills:
//! `kill_child <db> <normal|full> <incarnation> <seed> <resend-file> [shared <marker-dir>]`.
//!
//! `<db>` is a SQLite file, or `<url>#<schema>` for a schema of a PostgreSQL database
//! (`durable_jobs_tests::kill::harness::Db`), where `<normal|full>` does not apply.
//!
//! With `shared`, it opens the file in shared mode beside other children (the three-process
//! kill tests in `tests/multiprocess.rs` and, on PostgreSQL, `tests/postgres_kill.rs`; a
//! PostgreSQL store is always shared), with short leases so that the work of a killed child
//! is taken over within seconds, and its jobs keep execution markers in `<marker-dir>` (see
//! `durable_jobs_tests::kill::Reporter`).
//!
//! It starts an engine on `<db>`, first re-issues the operations listed in `<resend-file>` (the
//! ones the parent saw issued but not acknowledged before the last kill, with the same event ids
//! and idempotency keys), then runs a mixed load of all four job kinds without end. Every call
//! is printed as `issue ...` before it is made and as `ack ...` (or `dup`, `refused`,
//! `notfound`) once the engine answered; the jobs print what their code does (see
//! `durable_jobs_tests::kill`). An answer the harness does not expect is printed as
//! `unexpected ...`, which fails the test. It never exits by itself.

use std::time::Duration;

use durable_jobs::sqlite::{SqliteOptions, Synchronous};
use durable_jobs::steps::StepOptions;
use durable_jobs::Engine;
use durable_jobs_tests::kill::harness::Db;
use durable_jobs_tests::kill::{
    add, expect_outages, failed, outages_expected, poke, resend, say, send, trigger, KillJobs,
    KillTicker, Reporter, Rng, TaskOp, Ticks, TASKS, TICKERS,
};

/// The leases of a shared child: what a killed child holds is free again this long after.
const SHARED_LEASE: Duration = Duration::from_secs(3);

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (db, sync, incarnation, seed, resend_file, markers) = match args.as_slice() {
        [db, sync, incarnation, seed, resend_file] => {
            (db, sync, incarnation, seed, resend_file, None)
        }
        [db, sync, incarnation, seed, resend_file, mode, markers] if mode == "shared" => {
            (db, sync, incarnation, seed, resend_file, Some(markers))
        }
        [db, sync, incarnation, seed, resend_file, mode, markers, outages]
            if mode == "shared" && outages == "outages" =>
        {
            expect_outages();
            (db, sync, incarnation, seed, resend_file, Some(markers))
        }
        _ => {
            eprintln!(
                "usage: kill_child <db> <normal|full> <incarnation> <seed> <resend-file> \
                 [shared <marker-dir> [outages]]"
            );
            std::process::exit(2);
        }
    };
    let synchronous = match sync.as_str() {
        "full" => Synchronous::Full,
        _ => Synchronous::Normal,
    };
    let incarnation: u64 = incarnation.parse().expect("incarnation is a number");
    let seed: u64 = seed.parse().expect("seed is a number");
    let resends = std::fs::read_to_string(resend_file).unwrap_or_default();

    let out = match markers {
        Some(dir) => Reporter::stdout_with_markers(dir),
        None => Reporter::stdout(),
    };
    let db = Db::from_arg(db);
    let builder = || {
        match (markers, &db) {
            (None, db) => db.open(Engine::<KillJobs>::builder(), synchronous),
            (Some(_), db) => match db {
                Db::File(path) => Engine::<KillJobs>::builder()
                    .sqlite_options(SqliteOptions::file(path).synchronous(synchronous).shared()),
                Db::Postgres { .. } => db.open(Engine::<KillJobs>::builder(), synchronous),
            }
            .lease_duration(SHARED_LEASE)
            .step_options(
                StepOptions::default()
                    .lease_duration(SHARED_LEASE)
                    .lease_renew_interval(SHARED_LEASE / 4),
            ),
        }
        .app(out.clone())
    };
    // While its connections are being broken, a start may meet a broken one: start again.
    let mut attempts = 0;
    let engine = loop {
        attempts += 1;
        match builder().start().await {
            Ok(engine) => break engine,
            Err(e @ durable_jobs::Error::Storage { .. }) if outages_expected() && attempts < 20 => {
                say(&format!("outage engine-start {e}"));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => {
                say(&format!("unexpected engine-start {e}"));
                std::process::exit(3);
            }
        }
    };
    say(&format!("ready {incarnation}"));
    let client = engine.client();
    resend(&client, &out, &resends).await;

    for t in 0..TICKERS {
        let inst = format!("c{t}");
        match client
            .continuous::<KillTicker>()
            .start(&inst, Ticks::default())
            .await
        {
            Ok(r) => out.say(&format!("ack start {inst} {}", r.created)),
            Err(e) => failed(&out, &format!("start {inst}"), &e),
        }
    }

    let mut workers = Vec::new();
    for worker in 0..6u64 {
        let client = client.clone();
        let out = out.clone();
        let mut rng = Rng::new(seed ^ (worker + 1).wrapping_mul(0x9E37_79B9));
        workers.push(tokio::spawn(async move {
            for seq in 0u64.. {
                let op = format!("{incarnation}.{worker}.{seq}");
                match worker {
                    0 => {
                        let fail = match rng.below(10) {
                            0 => 2,
                            1 | 2 => 1,
                            _ => 0,
                        };
                        trigger(&client, &out, &op, fail).await;
                    }
                    1 | 2 => {
                        let n = incarnation * 10_000_000 + worker * 1_000_000 + seq;
                        add(&client, &out, n).await;
                    }
                    3 | 4 => {
                        let inst = format!("t{}", rng.below(TASKS));
                        let event = TaskOp {
                            op,
                            schedule_ms: if rng.below(3) == 0 { 30 } else { 0 },
                            fail: rng.below(8) == 0,
                        };
                        send(&client, &out, &inst, event).await;
                    }
                    _ => {
                        poke(&client, &out, &mut rng).await;
                    }
                }
                tokio::task::yield_now().await;
            }
        }));
    }
    for w in workers {
        let _ = w.await;
    }
}
