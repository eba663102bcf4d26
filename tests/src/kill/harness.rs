//! The parent's side of a kill run: a child's life (spawned, left to run until a random moment,
//! killed with `SIGKILL`), the drain of the file after the last kill, and the read-back of what
//! the file then holds. Shared by the kill harness (`tests/kill.rs`) and the power-cut tests
//! (`tests/powercut.rs`), which differ in what happens around the kill.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use durable_jobs::sqlite::Synchronous;
use durable_jobs::steps::{Run, RunFilter};
use durable_jobs::store::BoxFuture;
use durable_jobs::testing::TestClock;
use durable_jobs::{Client, ContinuousState, Engine, EngineBuilder, Registry};

use super::fresh_seed;
use super::ledger::{Final, Ledger, Tally};
use super::{
    resend, KillBatch, KillJobs, KillLedger, KillTask, KillTicker, Reporter, Rng, RunInput,
};
use super::{BATCHES, TASKS, TICKERS};

/// How long a child may stay silent (it prints within milliseconds; this bounds a hung one).
const PATIENCE: Duration = Duration::from_secs(60);
/// How long the drain may take to settle everything the children left.
const DRAIN: Duration = Duration::from_secs(120);

/// A number from the environment variable `name`, if set.
///
/// # Panics
///
/// When it is set but not a number.
pub fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, not {v:?}"))
    })
}

/// Where the engines of a kill run keep their data: a SQLite file, or a schema of a PostgreSQL
/// database. A child is handed it as one argument: the file's path, or `<url>#<schema>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Db {
    /// A SQLite file.
    File(PathBuf),
    /// The schema `schema` of the PostgreSQL database at `url`.
    Postgres {
        /// The database's URL.
        url: String,
        /// The schema.
        schema: String,
    },
}

impl Db {
    /// What a child's argument names.
    pub fn from_arg(arg: &str) -> Db {
        match arg.split_once('#') {
            Some((url, schema)) if url.starts_with("postgres://") => Db::Postgres {
                url: url.to_owned(),
                schema: schema.to_owned(),
            },
            _ => Db::File(PathBuf::from(arg)),
        }
    }

    /// The argument that names it to a child.
    pub fn arg(&self) -> OsString {
        match self {
            Db::File(path) => path.clone().into_os_string(),
            Db::Postgres { url, schema } => format!("{url}#{schema}").into(),
        }
    }

    /// `builder` on this data: the file with `synchronous`, or the schema (where the server's
    /// `synchronous_commit` decides durability; `synchronous` does not apply).
    pub fn open<R: Registry, S>(
        &self,
        builder: EngineBuilder<R, S>,
        synchronous: Synchronous,
    ) -> EngineBuilder<R, S> {
        match self {
            Db::File(path) => builder.sqlite(path).synchronous(synchronous),
            Db::Postgres { url, schema } => builder.postgres_options(
                durable_jobs::postgres::PostgresOptions::new(url.clone()).schema(schema.clone()),
            ),
        }
    }
}

impl From<&Path> for Db {
    fn from(path: &Path) -> Db {
        Db::File(path.to_owned())
    }
}

impl From<&PathBuf> for Db {
    fn from(path: &PathBuf) -> Db {
        Db::File(path.clone())
    }
}

impl From<&Db> for Db {
    fn from(db: &Db) -> Db {
        db.clone()
    }
}

/// The argument the child takes for `synchronous`.
fn sync_arg(synchronous: Synchronous) -> &'static str {
    match synchronous {
        Synchronous::Full => "full",
        _ => "normal",
    }
}

/// One running child (`kill_child`) and the lines it printed so far.
pub struct Life {
    child: Child,
    incarnation: u64,
    lines: Vec<String>,
    rx: mpsc::Receiver<String>,
    reader: JoinHandle<()>,
}

impl Life {
    /// Starts the child `bin` (the `kill_child` binary) on `db`; it first re-issues what
    /// `resend_file` lists. Its own random choices come from `seed`.
    pub fn spawn(
        bin: &Path,
        db: impl Into<Db>,
        synchronous: Synchronous,
        incarnation: u64,
        seed: u64,
        resend_file: &Path,
    ) -> Life {
        Life::spawn_with(bin, db, synchronous, incarnation, seed, resend_file, &[])
    }

    /// As [`spawn`](Self::spawn), with `extra` arguments after the others (`shared <dir>`).
    pub fn spawn_with(
        bin: &Path,
        db: impl Into<Db>,
        synchronous: Synchronous,
        incarnation: u64,
        seed: u64,
        resend_file: &Path,
        extra: &[&std::ffi::OsStr],
    ) -> Life {
        let mut child = Command::new(bin)
            .arg(db.into().arg())
            .arg(sync_arg(synchronous))
            .arg(incarnation.to_string())
            .arg(seed.to_string())
            .arg(resend_file)
            .args(extra)
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
        Life {
            child,
            incarnation,
            lines: Vec::new(),
            rx,
            reader,
        }
    }

    /// Lets the child run until a random moment: a quarter of the time a random delay from the
    /// spawn (some during the start and its recovery), otherwise a random number of lines, in
    /// the middle of the load.
    pub fn run_until_random_moment(&mut self, rng: &mut Rng) {
        if rng.below(4) == 0 {
            std::thread::sleep(Duration::from_millis(rng.below(60)));
            return;
        }
        let target = 1 + rng.below(800) as usize;
        while self.lines.len() < target {
            match self.rx.recv_timeout(PATIENCE) {
                Ok(line) => self.lines.push(line),
                Err(e) => {
                    let _ = self.child.kill();
                    panic!(
                        "child {} printed nothing for {PATIENCE:?} ({e}); exit {:?}; last lines {:?}",
                        self.incarnation,
                        self.child.wait(),
                        &self.lines[self.lines.len().saturating_sub(10)..]
                    );
                }
            }
        }
    }

    /// Kills the child with `SIGKILL`, runs `after_kill` (the child may not be able to exit
    /// before it), reaps the child and returns every line it printed.
    pub fn kill(mut self, after_kill: impl FnOnce()) -> Vec<String> {
        self.child.kill().expect("SIGKILL");
        after_kill();
        let status = self.child.wait().expect("the child is reaped");
        assert!(
            !status.success(),
            "child {} was killed, not finished: {status}",
            self.incarnation
        );
        self.reader.join().expect("the reader ends with the pipe");
        self.lines.extend(self.rx.try_iter());
        self.lines
    }
}

/// Starts this process's engine on the file, answers what was left unanswered, waits until
/// every run has ended, every batch is flushed, every task schedule has fired and every
/// ticker is scheduled again, and shuts down. Returns what the jobs printed meanwhile.
pub async fn drain(db: impl Into<Db>, synchronous: Synchronous, resends: &str) -> Vec<String> {
    let out = Reporter::memory();
    let engine = db
        .into()
        .open(Engine::<KillJobs>::builder(), synchronous)
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
        let mut busy = batches_left(&client).await;
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
        // A ticker whose execution a killed process held shows no next run until that claim
        // lapses and a live engine runs it again: wait for that, then its schedule is read.
        for c in 0..TICKERS {
            let id = format!("c{c}");
            let status = client.continuous::<KillTicker>().status(&id).await.unwrap();
            let live = matches!(
                status.status,
                ContinuousState::Running | ContinuousState::Retrying
            );
            if live && status.next_run_at.is_none() {
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

async fn all_runs(client: &Client<KillJobs>) -> Vec<Run<RunInput, Vec<String>>> {
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

/// The batches still stored.
async fn batches_left(client: &Client<KillJobs>) -> Vec<String> {
    let mut left = Vec::new();
    for b in 0..BATCHES {
        let id = format!("b{b}");
        if !client
            .debounce::<KillBatch>()
            .status(&id)
            .await
            .unwrap()
            .is_not_found()
        {
            left.push(id);
        }
    }
    left
}

/// What the file holds, read by an engine on a test clock far in the past of every alarm, so
/// no alarm fires while it is read. Step runs do not wait for the clock: read a drained file,
/// where none is left pending.
pub async fn read_final(db: impl Into<Db>) -> Final {
    let engine = db
        .into()
        .open(Engine::<KillJobs>::builder(), Synchronous::Normal)
        .clock(TestClock::new())
        .app(Reporter::memory())
        .start()
        .await
        .expect("the file opens");
    let client = engine.client();
    let mut db_state = Final::default();
    for run in all_runs(&client).await {
        db_state
            .runs
            .push((run.id, run.input.op, run.status, run.output));
    }
    db_state.batches_left = batches_left(&client).await;
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

/// The most processes sharing the data at once in [`processes_survive_random_kills`].
pub const PROCESSES: usize = 3;

/// [`PROCESSES`] children (`bin`, the `kill_child` binary) on `db` in shared mode under the
/// kill harness's mixed load, `kills` of them killed at random and started again, then the
/// drain and the ledger's checks: nothing acknowledged lost, no completed step run again, no
/// instance or run executed by two processes at once (the jobs' markers, kept in `dir`). The
/// seed comes from `DURABLE_JOBS_KILL_SEED` when set. Returns the tally.
///
/// With `outage`, the children expect storage errors (a call that gets one stays unanswered
/// and a later life issues it again), and `outage` is awaited after each kill, while the other
/// children run: it breaks their database connections, or restarts the server.
///
/// # Panics
///
/// When a check fails, naming the seed.
pub async fn processes_survive_random_kills(
    bin: &Path,
    db: &Db,
    dir: &Path,
    kills: u64,
    mut outage: Option<&mut (dyn FnMut() -> BoxFuture<'static, ()> + Send)>,
) -> Tally {
    let with_outages = outage.is_some();
    let seed = env_number("DURABLE_JOBS_KILL_SEED").unwrap_or_else(fresh_seed);
    println!("shared kill harness: {kills} kills of {PROCESSES} processes on {db:?}, DURABLE_JOBS_KILL_SEED={seed}");
    let markers = dir.join("markers");
    std::fs::create_dir(&markers).unwrap();
    let mut rng = Rng::new(seed);
    let mut ledger = Ledger::default();
    let started = Instant::now();
    // Each life with the operations it was given to issue again.
    let mut lives: Vec<(Life, HashSet<String>)> = Vec::new();
    let mut incarnation = 0;
    let mut spawn = |ledger: &Ledger, lives: &[(Life, HashSet<String>)], rng: &mut Rng| {
        // What a killed life left unanswered, unless a live one was given it already: two
        // lives issuing it again at once would each answer it, in an order the ledger
        // cannot see.
        let given: HashSet<&String> = lives.iter().flat_map(|(_, g)| g).collect();
        let resends: HashSet<String> = ledger
            .resends()
            .lines()
            .map(str::to_owned)
            .filter(|l| !given.contains(l))
            .collect();
        let file = dir.join(format!("resend-{incarnation}"));
        let text: String = resends.iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(&file, text).unwrap();
        let life = Life::spawn_with(
            bin,
            db,
            Synchronous::Normal,
            incarnation,
            rng.next_u64(),
            &file,
            &[
                OsStr::new("shared"),
                markers.as_os_str(),
                OsStr::new(if with_outages { "outages" } else { "" }),
            ][..if with_outages { 3 } else { 2 }],
        );
        incarnation += 1;
        (life, resends)
    };
    for _ in 0..PROCESSES {
        let life = spawn(&ledger, &lives, &mut rng);
        lives.push(life);
    }
    for _ in 0..kills {
        let victim = rng.below(PROCESSES as u64) as usize;
        lives[victim].0.run_until_random_moment(&mut rng);
        let (life, _) = lives.remove(victim);
        ledger.record_life(life.kill(|| {}), true, with_outages);
        if let Some(outage) = outage.as_mut() {
            outage().await;
        }
        let life = spawn(&ledger, &lives, &mut rng);
        lives.push(life);
    }
    for (mut life, _) in lives.drain(..) {
        life.run_until_random_moment(&mut rng);
        ledger.record_life(life.kill(|| {}), true, with_outages);
    }
    let lines = drain(db, Synchronous::Normal, &ledger.resends()).await;
    ledger.record(lines, false);
    let tally = match ledger.check(&read_final(db).await) {
        Ok(tally) => tally,
        Err(violations) => panic!("seed {seed}:\n{violations}"),
    };
    println!(
        "shared kill harness: {tally:?} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let lives = kills as usize + PROCESSES;
    assert_eq!(tally.kills, lives);
    // A harness whose children did nothing would pass every check: demand real load.
    assert!(
        tally.acknowledged >= 10 * lives,
        "only {} acknowledged operations in {lives} lives",
        tally.acknowledged
    );
    tally
}
