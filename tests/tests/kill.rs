//! The kill harness: a child process (`kill_child`) runs a mixed load of all four job kinds on
//! one database file and is killed with `SIGKILL` at random moments, again and again, each time
//! started again on the same file; then this process drains the file and checks the ledger of
//! everything the children were told (`durable_jobs_tests::kill::ledger`), in both synchronous
//! modes.
//!
//! `DURABLE_JOBS_KILLS=N` sets the kills per mode (40 by default: 80 per run);
//! `DURABLE_JOBS_KILL_SEED=S` replays a run (the seed is printed). The long mode is
//! `DURABLE_JOBS_KILLS=2000 cargo test -p durable-jobs-tests --release --test kill -- --nocapture`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use durable_jobs::steps::RunFilter;
use durable_jobs::testing::TestClock;
use durable_jobs::{Engine, Synchronous};
use durable_jobs_tests::kill::ledger::{Final, Ledger, Tally};
use durable_jobs_tests::kill::{
    fresh_seed, resend, KillBatch, KillJobs, KillLedger, KillTask, KillTicker, Reporter, Rng,
    BATCHES, TASKS, TICKERS,
};

/// How long a child may stay silent (it prints within milliseconds; this bounds a hung one).
const PATIENCE: Duration = Duration::from_secs(60);
/// How long the drain may take to settle everything the children left.
const DRAIN: Duration = Duration::from_secs(120);

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, not {v:?}"))
    })
}

/// Runs one child until `rng` says to kill it, kills it, and returns every line it printed.
fn one_life(
    db: &Path,
    sync: &str,
    incarnation: u64,
    resend_file: &Path,
    rng: &mut Rng,
) -> Vec<String> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kill_child"))
        .arg(db)
        .arg(sync)
        .arg(incarnation.to_string())
        .arg(rng.next_u64().to_string())
        .arg(resend_file)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the child starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    // A quarter of the kills come at a random time from the spawn, some during the start and
    // its recovery; the rest after a random number of lines, in the middle of the load.
    if rng.below(4) == 0 {
        std::thread::sleep(Duration::from_millis(rng.below(60)));
    } else {
        let target = 1 + rng.below(800) as usize;
        while lines.len() < target {
            match rx.recv_timeout(PATIENCE) {
                Ok(line) => lines.push(line),
                Err(e) => {
                    let _ = child.kill();
                    panic!(
                        "child {incarnation} printed nothing for {PATIENCE:?} ({e}); exit {:?}; last lines {:?}",
                        child.wait(),
                        &lines[lines.len().saturating_sub(10)..]
                    );
                }
            }
        }
    }
    child.kill().expect("SIGKILL");
    let status = child.wait().expect("the child is reaped");
    assert!(
        !status.success(),
        "child {incarnation} was killed, not finished: {status}"
    );
    reader.join().expect("the reader ends with the pipe");
    lines.extend(rx.try_iter());
    lines
}

/// Starts this process's engine on the file, answers what was left unanswered, waits until
/// every run has ended, every batch is flushed and every task schedule has fired, and shuts
/// down. Returns what the jobs printed meanwhile.
async fn drain(db: &Path, synchronous: Synchronous, resends: &str) -> Vec<String> {
    let out = Reporter::memory();
    let engine = Engine::<KillJobs>::builder()
        .sqlite(db)
        .synchronous(synchronous)
        .app(out.clone())
        .start()
        .await
        .expect("the file reopens after the last kill");
    let client = engine.client();
    resend(&client, &out, resends).await;
    let runs = client.step_job::<KillLedger>();
    let deadline = Instant::now() + DRAIN;
    for run in all_runs(&client).await {
        if run.is_active() {
            let left = deadline.saturating_duration_since(Instant::now());
            // A failed run ends too (its waiters get `Execution`); its status is checked later.
            match runs.wait_for_run(&run.id, Some(left)).await {
                Ok(_) | Err(durable_jobs::Error::Execution { .. }) => {}
                Err(e) => panic!("run {} did not end: {e}", run.id),
            }
        }
    }
    let mut events = engine.events();
    loop {
        let mut busy = Vec::new();
        for b in 0..BATCHES {
            let id = format!("b{b}");
            if !client
                .debounce::<KillBatch>()
                .status(&id)
                .await
                .unwrap()
                .is_not_found()
            {
                busy.push(id);
            }
        }
        for t in 0..TASKS {
            let id = format!("t{t}");
            if client
                .task::<KillTask>()
                .status(&id)
                .await
                .unwrap()
                .scheduled_at
                .is_some()
            {
                busy.push(id);
            }
        }
        if busy.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "stuck after the drain: {busy:?}");
        // Each committed event is a reason to look again; the timeout only bounds the wait.
        let _ = tokio::time::timeout(Duration::from_millis(250), events.next()).await;
    }
    drop(client);
    engine.shutdown().await.expect("a clean shutdown");
    out.take()
}

async fn all_runs(
    client: &durable_jobs::Client<KillJobs>,
) -> Vec<durable_jobs::steps::Run<durable_jobs_tests::kill::RunInput, Vec<String>>> {
    let mut all = Vec::new();
    loop {
        let page = client
            .step_job::<KillLedger>()
            .get_runs(RunFilter::new().limit(1000).offset(all.len() as u32))
            .await
            .expect("runs are readable");
        let done = page.len() < 1000;
        all.extend(page);
        if done {
            return all;
        }
    }
}

/// What the file holds, read by an engine on a test clock far in the past of every alarm, so
/// nothing runs while it is read.
async fn read_final(db: &Path) -> Final {
    let engine = Engine::<KillJobs>::builder()
        .sqlite(db)
        .clock(TestClock::new())
        .app(Reporter::memory())
        .start()
        .await
        .expect("the drained file opens");
    let client = engine.client();
    let mut db_state = Final::default();
    for run in all_runs(&client).await {
        db_state
            .runs
            .push((run.id, run.input.op, run.status, run.output));
    }
    for b in 0..BATCHES {
        let id = format!("b{b}");
        if !client
            .debounce::<KillBatch>()
            .status(&id)
            .await
            .unwrap()
            .is_not_found()
        {
            db_state.batches_left.push(id);
        }
    }
    for t in 0..TASKS {
        let id = format!("t{t}");
        let tasks = client.task::<KillTask>();
        let status = tasks.status(&id).await.unwrap();
        let state = tasks.get_state(&id).await.unwrap();
        db_state.tasks.insert(
            id,
            (state, status.execute_count, status.scheduled_at.is_some()),
        );
    }
    for c in 0..TICKERS {
        let id = format!("c{c}");
        let tickers = client.continuous::<KillTicker>();
        let status = tickers.status(&id).await.unwrap();
        let state = tickers.get_state(&id).await.unwrap();
        db_state
            .tickers
            .insert(id, (state, status.next_run_at.is_some()));
    }
    drop(client);
    engine.shutdown().await.unwrap();
    db_state
}

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
        let lines = one_life(&db, sync, incarnation, &resend_file, &mut rng);
        ledger.record(lines, true);
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
