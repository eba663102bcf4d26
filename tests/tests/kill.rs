//! The kill harness: a child process (`kill_child`) runs a mixed load of all four job kinds on
//! one database file and is killed with `SIGKILL` at random moments, again and again, each time
//! started again on the same file; then this process drains the file and checks the ledger of
//! everything the children were told (`durable_jobs_tests::kill::ledger`), in both synchronous
//! modes.
//!
//! `DURABLE_JOBS_KILLS=N` sets the kills per mode (40 by default: 80 per run);
//! `DURABLE_JOBS_KILL_SEED=S` replays a run (the seed is printed). The long mode is
//! `DURABLE_JOBS_KILLS=2000 cargo test -p durable-jobs-tests --release --test kill -- --nocapture`.

use std::time::Instant;

use durable_jobs::sqlite::Synchronous;
use durable_jobs_tests::kill::harness::{drain, env_number, read_final, Life};
use durable_jobs_tests::kill::ledger::{Ledger, Tally};
use durable_jobs_tests::kill::{fresh_seed, Rng};

async fn survives_random_kills(synchronous: Synchronous) -> Tally {
    let kills = env_number("DURABLE_JOBS_KILLS").unwrap_or(40);
    let seed = env_number("DURABLE_JOBS_KILL_SEED").unwrap_or_else(fresh_seed);
    let sync = match synchronous {
        Synchronous::Full => "full",
        _ => "normal",
    };
    println!("kill harness ({sync}): {kills} kills, DURABLE_JOBS_KILL_SEED={seed}");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("jobs.db");
    let resend_file = dir.path().join("resend");
    let mut rng = Rng::new(seed);
    let mut ledger = Ledger::default();
    let started = Instant::now();
    for incarnation in 0..kills {
        std::fs::write(&resend_file, ledger.resends()).unwrap();
        let mut life = Life::spawn(
            env!("CARGO_BIN_EXE_kill_child").as_ref(),
            &db,
            synchronous,
            incarnation,
            rng.next_u64(),
            &resend_file,
        );
        life.run_until_random_moment(&mut rng);
        ledger.record(life.kill(|| {}), true);
    }
    let lines = drain(&db, synchronous, &ledger.resends()).await;
    ledger.record(lines, false);
    let tally = match ledger.check(&read_final(&db).await) {
        Ok(tally) => tally,
        Err(violations) => panic!("seed {seed} ({sync}):\n{violations}"),
    };
    println!(
        "kill harness ({sync}): {tally:?} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(tally.kills, kills as usize);
    // A harness whose children did nothing would pass every check: demand real load.
    assert!(
        tally.acknowledged >= 20 * kills as usize,
        "only {} acknowledged operations in {kills} lives",
        tally.acknowledged
    );
    tally
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_operation_survives_random_kills() {
    survives_random_kills(Synchronous::Normal).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_synchronous_full_every_acknowledged_operation_survives_random_kills() {
    survives_random_kills(Synchronous::Full).await;
}
