//! The benchmark program of durable-jobs. See `BENCHMARKS.md` at the repository root for the
//! commands, the figures and their analysis, and `--help` for the options.

mod compare;
mod durability;
mod jobs;
mod peers;
mod pg;
mod processes;
mod report;
mod stats;
mod step_jobs;
mod sys;
mod workloads;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use durable_jobs::sqlite::Synchronous;
use durable_jobs::store::Ownership;

use report::Report;

/// What a workload returns when it cannot run.
pub(crate) type BenchResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const USAGE: &str = "\
durable-jobs-bench: benchmarks of durable-jobs on a SQLite file (WAL) in a temp dir

USAGE:
    cargo run --release -p durable-jobs-bench -- <WORKLOAD>... [OPTIONS]

WORKLOADS:
    steps        20,000 step-job runs of 3 trivial steps, triggered in batches of 500, then
                 drained; synchronous=NORMAL and FULL
    debounce     1,000 instances x 100 events (64 concurrent callers), max_events = 100
    continuous   10,000 instances running every second for 10 s: executions/s and lateness
    latency      trigger_and_wait of a one-step job on an idle engine, 1,000 times in sequence
    scale        1,000,000 continuous instances scheduled an hour ahead: creation rate, peak
                 RSS, reopen-to-ready (each phase in a fresh child process)
    limit        raw rusqlite writing the rows `steps` writes per run, 1,000 rows per
                 transaction: the ceiling `steps` is compared with; and the rows `burndown`
                 writes per job, the ceiling of its drain
    burndown     50,000 no-op step jobs enqueued in batches of 1,000, drained at concurrency
                 20 and 100, synchronous=NORMAL and FULL (the effectum peer's shape)
    growth       one file grown from 10,000 finished runs and 1,000 instances to 1,000,000 and
                 100,000: at each size the drain, trigger_and_wait, each get_runs filter's
                 first page, debounce adds to new and existing instances, file size, RSS;
                 and the large/small ratios (--quick: 2,000/200 to 50,000/5,000)
    compare      limit, steps, latency and burndown, each next to its peer, and the paired
                 ratios
    all          every workload above but growth, with the peers (unless --no-peers)

OPTIONS:
    --quick              scale every workload down (10x; 50x for scale) for a smoke run
    --repeat N           run each workload N times; the table shows medians (default 1), and
                         each ratio is the median of N pairs taken back to back
    --peers / --no-peers run the peers (durably, effectum) next to steps, latency, burndown
                         (default: on for `compare` and `all`, off otherwise)
    --peer-runs N        runs of the durably `steps` peer (default 1,000, 200 with --quick:
                         its drain then takes seconds, like ours)
    --peer-jobs N        jobs of the effectum peer (default: as many as ours with NORMAL, a
                         fifth with FULL, a tenth as shipped)
    --sync normal|full|both   synchronous modes of `steps`, `limit` and `burndown` (default
                         both)
    --mode exclusive|shared|both   how `steps`, `burndown`, `debounce` and `latency` own
                         their file (default exclusive): `shared` runs the engine as one of
                         several processes on the file (durable leased claims, no cache);
                         peers are compared with exclusive mode only
    --backend sqlite|postgres   the store of `steps`, `burndown`, `limit`, `growth`, `latency`,
                         `debounce` and `continuous` (default sqlite): postgres keeps each run
                         in a fresh schema (dropped afterwards) of the server
                         DURABLE_JOBS_PG_URL names (default
                         postgres://postgres@127.0.0.1:5432/test) and reports the server's
                         synchronous_commit; its peers are durably on PostgreSQL (`steps`) and
                         graphile-worker (`burndown`); `limit` runs the PostgreSQL store's
                         own statements for the same rows, 1,000 a transaction; `latency`
                         also triggers from this process for a child process to run; --sync
                         and --mode do not apply to it
    --shared-feed        with --backend postgres, `steps` joins its engine to the HTTP API's
                         shared event feed (every event appended to a table in batches), to
                         measure what that costs the jobs
    --processes N        `steps` and `burndown` in shared mode: N engine processes drain the
                         same file or schema (this one and N-1 children; default 1)
    --runs N             steps: runs (default 20000)
    --batch N            steps: trigger batch size (default 500)
    --step-concurrency N steps: the worker's max_concurrent_runs (default: the engine's, 100)
    --instances N        debounce, continuous, scale: instances
    --events N           debounce: events per instance (default 100)
    --callers N          debounce: concurrent callers (default 64)
    --seconds N          continuous: measured seconds (default 10)
    --iterations N       latency: calls (default 1000)
    --jobs N             burndown: jobs (default 50000)
    --concurrency A,B    burndown: worker concurrencies (default 20,100)
    --dir PATH           where the temp dir is made (default: the system temp dir)
    -h, --help           this text

OUTPUT:
    one JSON line per figure on stdout ({\"workload\", \"variant\", \"metric\", \"value\", \"unit\",
    \"run\", and \"target\"/\"pass\" where a target applies; for each side, its journal mode and
    synchronous level as read from its connection), then a table of medians, then the side-by-side
    table (Markdown): each ratio the median of paired runs, with the range, both sides' journal
    mode and synchronous level and the load average. No ratio is printed for a pair whose sides
    differ in either. Progress goes to stderr. The exit status is 0 even when a target is
    missed; 1 when a workload failed.
";

/// Where `steps` and `burndown` keep their engine's data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Backend {
    /// A SQLite file in the temp dir.
    Sqlite,
    /// A fresh schema of a PostgreSQL server.
    Postgres,
}

/// Sizes and switches of a benchmark run.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) quick: bool,
    pub(crate) repeat: usize,
    pub(crate) peers: Option<bool>,
    pub(crate) peer_runs: Option<usize>,
    pub(crate) peer_jobs: Option<usize>,
    pub(crate) sync: Vec<Synchronous>,
    pub(crate) modes: Vec<Ownership>,
    pub(crate) processes: usize,
    pub(crate) backend: Backend,
    pub(crate) shared_feed: bool,
    pub(crate) steps_runs: usize,
    pub(crate) steps_batch: usize,
    pub(crate) steps_per_run: usize,
    pub(crate) step_concurrency: Option<usize>,
    pub(crate) debounce_instances: usize,
    pub(crate) debounce_events: usize,
    pub(crate) debounce_callers: usize,
    pub(crate) continuous_instances: usize,
    pub(crate) continuous_secs: u64,
    pub(crate) latency_iterations: usize,
    pub(crate) scale_instances: usize,
    pub(crate) burndown_jobs: usize,
    pub(crate) burndown_concurrency: Vec<usize>,
    pub(crate) dir: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            quick: false,
            repeat: 1,
            peers: None,
            peer_runs: None,
            peer_jobs: None,
            sync: vec![Synchronous::Normal, Synchronous::Full],
            modes: vec![Ownership::Exclusive],
            processes: 1,
            backend: Backend::Sqlite,
            shared_feed: false,
            steps_runs: 20_000,
            steps_batch: 500,
            steps_per_run: 3,
            step_concurrency: None,
            debounce_instances: 1_000,
            debounce_events: 100,
            debounce_callers: 64,
            continuous_instances: 10_000,
            continuous_secs: 10,
            latency_iterations: 1_000,
            scale_instances: 1_000_000,
            burndown_jobs: 50_000,
            burndown_concurrency: vec![20, 100],
            dir: None,
        }
    }
}

impl Config {
    fn quick(&mut self) {
        self.quick = true;
        self.steps_runs = 2_000;
        self.debounce_instances = 100;
        self.continuous_instances = 1_000;
        self.continuous_secs = 3;
        self.latency_iterations = 100;
        self.scale_instances = 20_000;
        self.burndown_jobs = 5_000;
    }

    /// Whether the peers run next to our figures.
    pub(crate) fn with_peers(&self, default: bool) -> bool {
        self.peers.unwrap_or(default)
    }
}

/// What a variant name says of the ownership mode: nothing for exclusive (so that the figures
/// compared with the peers keep their names), `mode=shared` and the process count otherwise.
pub(crate) fn mode_suffix(cfg: &Config, ownership: Ownership) -> String {
    match ownership {
        Ownership::Exclusive => String::new(),
        _ if cfg.processes > 1 => format!(" mode=shared processes={}", cfg.processes),
        _ => " mode=shared".to_owned(),
    }
}

pub(crate) fn sync_name(mode: Synchronous) -> &'static str {
    match mode {
        Synchronous::Normal => "NORMAL",
        Synchronous::Full => "FULL",
        _ => "OTHER",
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Workload {
    Steps,
    Debounce,
    Continuous,
    Latency,
    Scale,
    Limit,
    Burndown,
    Growth,
}

const ALL: [Workload; 7] = [
    Workload::Limit,
    Workload::Steps,
    Workload::Burndown,
    Workload::Latency,
    Workload::Debounce,
    Workload::Continuous,
    Workload::Scale,
];

fn parse_args(args: Vec<String>) -> Result<(Vec<Workload>, Config, bool), String> {
    let mut cfg = Config::default();
    let mut workloads = Vec::new();
    let mut peers_default = false;
    let mut overrides: Vec<(String, String)> = Vec::new();
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .ok_or_else(|| format!("{name} needs a value (see --help)"))
        };
        match arg.as_str() {
            "-h" | "--help" | "help" => return Err(String::new()),
            "--quick" => cfg.quick = true,
            "--peers" => cfg.peers = Some(true),
            "--no-peers" => cfg.peers = Some(false),
            "--shared-feed" => cfg.shared_feed = true,
            "--repeat" | "--peer-runs" | "--peer-jobs" | "--sync" | "--runs" | "--batch"
            | "--instances" | "--events" | "--callers" | "--seconds" | "--iterations"
            | "--jobs" | "--concurrency" | "--dir" | "--step-concurrency" | "--mode"
            | "--processes" | "--backend" => {
                let v = value(&arg)?;
                overrides.push((arg, v));
            }
            "steps" => workloads.push(Workload::Steps),
            "debounce" => workloads.push(Workload::Debounce),
            "continuous" => workloads.push(Workload::Continuous),
            "latency" => workloads.push(Workload::Latency),
            "scale" => workloads.push(Workload::Scale),
            "limit" => workloads.push(Workload::Limit),
            "burndown" => workloads.push(Workload::Burndown),
            "growth" => workloads.push(Workload::Growth),
            "compare" => {
                peers_default = true;
                workloads.extend([
                    Workload::Limit,
                    Workload::Steps,
                    Workload::Latency,
                    Workload::Burndown,
                ]);
            }
            "all" => {
                peers_default = true;
                workloads.extend(ALL);
            }
            other => return Err(format!("unknown argument `{other}` (see --help)")),
        }
    }
    if cfg.quick {
        cfg.quick();
    }
    let mut mode_given = false;
    for (name, v) in overrides {
        let n = || {
            v.replace('_', "")
                .parse::<usize>()
                .map_err(|_| format!("{name} takes a number, not `{v}`"))
        };
        match name.as_str() {
            "--repeat" => cfg.repeat = n()?.max(1),
            "--peer-runs" => cfg.peer_runs = Some(n()?),
            "--peer-jobs" => cfg.peer_jobs = Some(n()?),
            "--runs" => cfg.steps_runs = n()?,
            "--batch" => cfg.steps_batch = n()?.max(1),
            "--step-concurrency" => cfg.step_concurrency = Some(n()?.clamp(1, 1000)),
            "--instances" => {
                let n = n()?;
                cfg.debounce_instances = n;
                cfg.continuous_instances = n;
                cfg.scale_instances = n;
            }
            "--events" => cfg.debounce_events = n()?.max(1),
            "--callers" => cfg.debounce_callers = n()?.max(1),
            "--seconds" => cfg.continuous_secs = n()? as u64,
            "--iterations" => cfg.latency_iterations = n()?.max(1),
            "--jobs" => cfg.burndown_jobs = n()?,
            "--dir" => cfg.dir = Some(PathBuf::from(v)),
            "--concurrency" => {
                cfg.burndown_concurrency = v
                    .split(',')
                    .map(|s| s.trim().parse::<usize>())
                    .collect::<Result<_, _>>()
                    .map_err(|_| format!("--concurrency takes numbers like 20,100, not `{v}`"))?
            }
            "--sync" => {
                cfg.sync = match v.to_ascii_lowercase().as_str() {
                    "normal" => vec![Synchronous::Normal],
                    "full" => vec![Synchronous::Full],
                    "both" => vec![Synchronous::Normal, Synchronous::Full],
                    _ => return Err(format!("--sync takes normal, full or both, not `{v}`")),
                }
            }
            "--mode" => {
                cfg.modes = match v.to_ascii_lowercase().as_str() {
                    "exclusive" => vec![Ownership::Exclusive],
                    "shared" => vec![Ownership::Shared],
                    "both" => vec![Ownership::Exclusive, Ownership::Shared],
                    _ => return Err(format!("--mode takes exclusive, shared or both, not `{v}`")),
                };
                mode_given = true;
            }
            "--processes" => cfg.processes = n()?.clamp(1, 64),
            "--backend" => {
                cfg.backend = match v.to_ascii_lowercase().as_str() {
                    "sqlite" => Backend::Sqlite,
                    "postgres" | "postgresql" => Backend::Postgres,
                    _ => return Err(format!("--backend takes sqlite or postgres, not `{v}`")),
                }
            }
            _ => unreachable!("every option is matched above"),
        }
    }
    if cfg.processes > 1 {
        if !mode_given {
            // Several processes on one file is what shared mode is for.
            cfg.modes = vec![Ownership::Shared];
        } else if cfg.modes.contains(&Ownership::Exclusive) {
            return Err(
                "--processes needs --mode shared: an exclusive store holds its file \
                        alone"
                    .into(),
            );
        }
    }
    if cfg.shared_feed && cfg.backend != Backend::Postgres {
        return Err("--shared-feed needs --backend postgres".into());
    }
    if cfg.backend == Backend::Postgres {
        if cfg.processes > 1
            && workloads
                .iter()
                .any(|w| !matches!(w, Workload::Steps | Workload::Burndown))
        {
            return Err("--processes runs `steps` and `burndown` only".into());
        }
        if let Some(w) = workloads.iter().find(|w| {
            !matches!(
                w,
                Workload::Steps
                    | Workload::Burndown
                    | Workload::Limit
                    | Workload::Growth
                    | Workload::Latency
                    | Workload::Debounce
                    | Workload::Continuous
            )
        }) {
            return Err(format!(
                "--backend postgres runs `steps`, `burndown`, `limit`, `growth`, `latency`, \
                 `debounce` and `continuous` only, not {w:?}"
            ));
        }
    }
    if workloads.is_empty() {
        return Err("name a workload, `compare` or `all` (see --help)".into());
    }
    let mut seen = Vec::new();
    workloads.retain(|w| {
        let new = !seen.contains(w);
        seen.push(*w);
        new
    });
    Ok((workloads, cfg, peers_default))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // Child processes of the `scale` workload.
    if let Some(first) = args.first() {
        if first.starts_with("__scale-") {
            return workloads::scale::child(&args);
        }
        if first == "__drain" {
            return processes::child(&args);
        }
        if first == "__pg-drain" {
            return pg::processes::child(&args);
        }
        if first == "__pg-stamp" {
            return pg::latency::child(&args);
        }
    }
    let (workloads, mut cfg, peers_default) = match parse_args(args) {
        Ok(parsed) => parsed,
        Err(message) if message.is_empty() => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };
    cfg.peers = Some(cfg.with_peers(peers_default));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let ok = runtime.block_on(run(workloads, cfg));
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn run(workloads: Vec<Workload>, cfg: Config) -> bool {
    let base = cfg.dir.clone().unwrap_or_else(std::env::temp_dir);
    let dir = match tempfile::Builder::new()
        .prefix("durable-jobs-bench-")
        .tempdir_in(&base)
    {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: cannot make a temp dir in {}: {e}", base.display());
            return false;
        }
    };
    let mut report = Report::default();
    eprintln!(
        "durable-jobs-bench: {} | {} run(s){}{}",
        sys::machine(dir.path()),
        cfg.repeat,
        if cfg.quick { " | quick sizes" } else { "" },
        if cfg.peers == Some(true) {
            " | with peers"
        } else {
            ""
        },
    );
    let mut failed = false;
    let mut peers = peers::Peers::new(cfg.peers == Some(true));
    for run in 1..=cfg.repeat {
        report.set_run(run);
        for (i, w) in workloads.iter().enumerate() {
            let sub = dir.path().join(format!("r{run}-{i}"));
            if let Err(e) = std::fs::create_dir_all(&sub) {
                eprintln!("error: {e}");
                return false;
            }
            eprintln!("== run {run}/{}: {w:?}", cfg.repeat);
            let result = run_one(*w, &cfg, &sub, &mut report, &mut peers).await;
            if let Err(e) = result {
                eprintln!("error: {w:?} failed: {e}");
                report.note(format!("{w:?} (run {run}) failed: {e}"));
                failed = true;
            }
            let _ = std::fs::remove_dir_all(&sub);
        }
    }
    compare::compare(&cfg, &mut report);
    report.finish(cfg.repeat);
    !failed
}

async fn run_one(
    w: Workload,
    cfg: &Config,
    dir: &Path,
    report: &mut Report,
    peers: &mut peers::Peers,
) -> BenchResult {
    match w {
        Workload::Steps => workloads::steps::run(cfg, dir, report, peers).await,
        Workload::Debounce if cfg.backend == Backend::Postgres => {
            pg::debounce::run(cfg, report).await
        }
        Workload::Debounce => workloads::debounce::run(cfg, dir, report).await,
        Workload::Continuous if cfg.backend == Backend::Postgres => {
            pg::continuous::run(cfg, report).await
        }
        Workload::Continuous => workloads::continuous::run(cfg, dir, report).await,
        Workload::Latency if cfg.backend == Backend::Postgres => {
            pg::latency::run(cfg, report).await
        }
        Workload::Latency => workloads::latency::run(cfg, dir, report, peers).await,
        Workload::Scale => workloads::scale::run(cfg, dir, report).await,
        Workload::Limit if cfg.backend == Backend::Postgres => pg::limit::run(cfg, report).await,
        Workload::Limit => workloads::limit::run(cfg, dir, report).await,
        Workload::Burndown => workloads::burndown::run(cfg, dir, report, peers).await,
        Workload::Growth => workloads::growth::run(cfg, dir, report).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn quick_scales_down_and_options_override_it() {
        let (w, cfg, peers) = parse_args(args("steps --quick --runs 300")).unwrap();
        assert_eq!(w, vec![Workload::Steps]);
        assert!(!peers);
        assert_eq!(cfg.steps_runs, 300);
        assert_eq!(cfg.burndown_jobs, 5_000);
    }

    #[test]
    fn all_runs_every_workload_once_with_peers() {
        let (w, cfg, peers) = parse_args(args("all steps --sync full")).unwrap();
        assert_eq!(w.len(), ALL.len());
        assert!(peers);
        assert_eq!(cfg.sync, vec![Synchronous::Full]);
    }

    #[test]
    fn several_processes_mean_shared_mode() {
        let (_, cfg, _) = parse_args(args("steps")).unwrap();
        assert_eq!(cfg.modes, vec![Ownership::Exclusive]);
        let (_, cfg, _) = parse_args(args("burndown --processes 3")).unwrap();
        assert_eq!((cfg.modes, cfg.processes), (vec![Ownership::Shared], 3));
        let (_, cfg, _) = parse_args(args("steps --mode both")).unwrap();
        assert_eq!(cfg.modes, vec![Ownership::Exclusive, Ownership::Shared]);
        assert!(parse_args(args("steps --mode exclusive --processes 2"))
            .unwrap_err()
            .contains("--mode shared"));
        assert!(parse_args(args("steps --mode sometimes"))
            .unwrap_err()
            .contains("--mode"));
        assert_eq!(mode_suffix(&cfg, Ownership::Exclusive), "");
    }

    #[test]
    fn the_backend_is_sqlite_unless_postgres_is_asked_for() {
        let (_, cfg, _) = parse_args(args("steps")).unwrap();
        assert_eq!(cfg.backend, Backend::Sqlite);
        let (w, cfg, _) = parse_args(args("steps burndown --backend postgres")).unwrap();
        assert_eq!(w, vec![Workload::Steps, Workload::Burndown]);
        assert_eq!(cfg.backend, Backend::Postgres);
        let (_, cfg, _) = parse_args(args("burndown --backend PostgreSQL")).unwrap();
        assert_eq!(cfg.backend, Backend::Postgres);
        let (w, cfg, _) = parse_args(args("limit --backend postgres")).unwrap();
        assert_eq!((w, cfg.backend), (vec![Workload::Limit], Backend::Postgres));
        let (w, cfg, _) = parse_args(args("growth --backend postgres")).unwrap();
        assert_eq!(
            (w, cfg.backend),
            (vec![Workload::Growth], Backend::Postgres)
        );
        assert!(parse_args(args("steps --backend mysql"))
            .unwrap_err()
            .contains("--backend"));
        assert!(parse_args(args("scale --backend postgres"))
            .unwrap_err()
            .contains("Scale"));
        let (_, cfg, _) =
            parse_args(args("steps burndown --backend postgres --processes 3")).unwrap();
        assert_eq!(cfg.processes, 3);
        assert!(parse_args(args("latency --backend postgres --processes 3"))
            .unwrap_err()
            .contains("--processes"));
    }

    #[test]
    fn latency_debounce_and_continuous_run_on_postgres() {
        let (w, cfg, _) =
            parse_args(args("latency debounce continuous --backend postgres")).unwrap();
        assert_eq!(
            w,
            vec![Workload::Latency, Workload::Debounce, Workload::Continuous]
        );
        assert_eq!(cfg.backend, Backend::Postgres);
        let (_, cfg, _) = parse_args(args("latency --backend postgres --iterations 50")).unwrap();
        assert_eq!(cfg.latency_iterations, 50);
        assert!(parse_args(args("latency all --backend postgres"))
            .unwrap_err()
            .contains("--backend postgres runs"));
    }

    #[test]
    fn bad_arguments_are_explained() {
        assert!(parse_args(args("nope")).unwrap_err().contains("nope"));
        assert!(parse_args(args("steps --runs x"))
            .unwrap_err()
            .contains("--runs"));
        assert!(parse_args(vec![]).is_err());
        assert_eq!(parse_args(args("--help")).unwrap_err(), "");
    }
}
