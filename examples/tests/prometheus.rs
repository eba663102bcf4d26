//! Runs the `prometheus` example as a child process on a SQLite file, scrapes its
//! `/metrics` endpoint over HTTP until the jobs it runs at start are all counted (bounded by a
//! deadline), and checks every documented metric with the values those jobs make.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use durable_jobs::metrics::{
    ALARMS_DUE, EXECUTIONS_TOTAL, EXECUTION_DURATION_SECONDS, FAILURES_TOTAL, LATENESS_SECONDS,
    RETRIES_EXHAUSTED_TOTAL, RETRIES_TOTAL, SQLITE_COMMIT_DURATION_SECONDS,
    SQLITE_SYNC_DURATION_SECONDS, SQLITE_WRITE_GROUP_SIZE, STEP_RUNS, STEP_RUNS_FINISHED_TOTAL,
};

/// How long the example may take to start, run its jobs (one retry waits a second) and
/// refresh its gauges, on a busy machine.
const DEADLINE: Duration = Duration::from_secs(120);

/// The example, in `target/<profile>/examples/` next to this test's `deps/` folder. Cargo is
/// asked to build it, so that it is never stale, with the workspace's feature set: that of
/// `cargo test --workspace`, which has built it already, so this costs nothing there.
fn example_binary() -> PathBuf {
    let test = std::env::current_exe().unwrap();
    let profile_dir = test.parent().unwrap().parent().unwrap();
    let binary = profile_dir
        .join("examples")
        .join(format!("prometheus{}", std::env::consts::EXE_SUFFIX));
    // `target/debug` holds the `dev` profile's builds; other profiles have folders of their name.
    let profile = match profile_dir.file_name().unwrap().to_str().unwrap() {
        "debug" => "dev",
        other => other,
    };
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--workspace", "--example", "prometheus"])
        .args(["--profile", profile])
        .env("CARGO_TARGET_DIR", profile_dir.parent().unwrap())
        .status()
        .unwrap();
    assert!(status.success(), "building the example failed");
    assert!(binary.exists(), "{} was not built", binary.display());
    binary
}

/// The child process, killed when the test ends however it ends.
struct Example(Child);

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port nothing listens on now, for the example to listen on.
fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// `GET /metrics` over HTTP/1.1; the body, or `None` while nothing answers.
fn scrape(addr: SocketAddr) -> Option<String> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    Some(body.to_owned())
}

/// The samples of a Prometheus text exposition, by name and sorted labels.
struct Samples(HashMap<(String, Vec<(String, String)>), f64>);

impl Samples {
    fn parse(body: &str) -> Samples {
        let mut samples = HashMap::new();
        for line in body
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let mut labels: Vec<(String, String)> = labels
                .split(',')
                .filter(|l| !l.is_empty())
                .map(|l| {
                    let (k, v) = l.split_once('=').unwrap();
                    (k.to_owned(), v.trim_matches('"').to_owned())
                })
                .collect();
            labels.sort();
            samples.insert((name.to_owned(), labels), value.parse().unwrap());
        }
        Samples(samples)
    }

    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut labels: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        labels.sort();
        self.0.get(&(name.to_owned(), labels)).copied()
    }

    /// Whether every value the example's start-up makes is there.
    fn settled(&self) -> bool {
        let step_runs = |status| {
            self.get(
                STEP_RUNS,
                &[("job", "import"), ("kind", "step"), ("status", status)],
            )
        };
        self.get(RETRIES_EXHAUSTED_TOTAL, &job("calendar_sync", "continuous")) == Some(1.0)
            && self.get(EXECUTIONS_TOTAL, &job("import", "step")) == Some(3.0)
            && step_runs("completed") == Some(2.0)
            && step_runs("failed") == Some(1.0)
    }
}

fn job<'a>(job: &'a str, kind: &'a str) -> [(&'a str, &'a str); 2] {
    [("job", job), ("kind", kind)]
}

#[test]
fn a_prometheus_scrape_of_the_example_shows_the_documented_metrics() {
    let binary = example_binary();
    let dir = tempfile::tempdir().unwrap();
    let addr = free_port();
    let _example = Example(
        Command::new(binary)
            .env("METRICS_ADDR", addr.to_string())
            .env("DATABASE_PATH", dir.path().join("jobs.db"))
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );

    // A child process runs on real time: poll its endpoint until its start-up work shows.
    let started = Instant::now();
    let (body, samples) = loop {
        if let Some(body) = scrape(addr) {
            let samples = Samples::parse(&body);
            if samples.settled() {
                break (body, samples);
            }
        }
        assert!(
            started.elapsed() < DEADLINE,
            "the example's metrics did not settle within {DEADLINE:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };

    // Each documented metric is described.
    for name in [
        EXECUTIONS_TOTAL,
        FAILURES_TOTAL,
        RETRIES_TOTAL,
        RETRIES_EXHAUSTED_TOTAL,
        EXECUTION_DURATION_SECONDS,
        LATENESS_SECONDS,
        ALARMS_DUE,
        STEP_RUNS,
        STEP_RUNS_FINISHED_TOTAL,
        SQLITE_WRITE_GROUP_SIZE,
        SQLITE_COMMIT_DURATION_SECONDS,
        SQLITE_SYNC_DURATION_SECONDS,
    ] {
        assert!(
            body.contains(&format!("# HELP {name} ")),
            "{name} missing:\n{body}"
        );
    }

    let get = |name: &str, labels: &[(&str, &str)]| {
        samples
            .get(name, labels)
            .unwrap_or_else(|| panic!("no {name} {labels:?} in\n{body}"))
    };
    // Executions per job and kind; a job that never failed shows zero failures.
    let heartbeat = job("heartbeat", "continuous");
    assert_eq!(get(EXECUTIONS_TOTAL, &heartbeat), 2.0);
    assert_eq!(get(FAILURES_TOTAL, &heartbeat), 0.0);
    assert_eq!(get(RETRIES_TOTAL, &heartbeat), 0.0);
    let batcher = job("webhook_batcher", "debounce");
    assert_eq!(get(EXECUTIONS_TOTAL, &batcher), 1.0);
    let orders = job("order_totals", "task");
    assert_eq!(get(EXECUTIONS_TOTAL, &orders), 2.0);
    // The calendar sync failed twice: one retry, then the policy gave up.
    let calendar = job("calendar_sync", "continuous");
    assert_eq!(get(EXECUTIONS_TOTAL, &calendar), 2.0);
    assert_eq!(get(FAILURES_TOTAL, &calendar), 2.0);
    assert_eq!(get(RETRIES_TOTAL, &calendar), 1.0);
    // Three imports, one of which failed.
    let import = job("import", "step");
    assert_eq!(get(FAILURES_TOTAL, &import), 1.0);
    let finished = |status| {
        get(
            STEP_RUNS_FINISHED_TOTAL,
            &[("job", "import"), ("kind", "step"), ("status", status)],
        )
    };
    assert_eq!(
        [
            finished("completed"),
            finished("failed"),
            finished("cancelled")
        ],
        [2.0, 1.0, 0.0]
    );

    // Durations: one sample per execution, none longer than the test.
    let count = |name: &str, labels: &[(&str, &str)]| get(&format!("{name}_count"), labels);
    assert_eq!(count(EXECUTION_DURATION_SECONDS, &heartbeat), 2.0);
    assert_eq!(count(EXECUTION_DURATION_SECONDS, &import), 3.0);
    let spent = get(&format!("{EXECUTION_DURATION_SECONDS}_sum"), &import);
    assert!((0.0..DEADLINE.as_secs_f64()).contains(&spent), "{spent}");
    // Rendered as a histogram: the buckets the example set.
    let all = [("job", "import"), ("kind", "step"), ("le", "+Inf")];
    assert_eq!(
        get(&format!("{EXECUTION_DURATION_SECONDS}_bucket"), &all),
        3.0
    );

    // Lateness: the retry's alarm, and each import's claim.
    assert_eq!(count(LATENESS_SECONDS, &calendar), 1.0);
    assert_eq!(count(LATENESS_SECONDS, &import), 3.0);
    // Nothing is due now: the heartbeats' next alarms are an hour away.
    assert_eq!(get(ALARMS_DUE, &heartbeat), 0.0);
    assert_eq!(
        get(
            STEP_RUNS,
            &[("job", "import"), ("kind", "step"), ("status", "pending")]
        ),
        0.0
    );

    // The SQLite writer committed groups, and with `Synchronous::Full` synced the log.
    let groups = get(&format!("{SQLITE_WRITE_GROUP_SIZE}_count"), &[]);
    let writes = get(&format!("{SQLITE_WRITE_GROUP_SIZE}_sum"), &[]);
    assert!(
        groups >= 1.0 && writes >= groups,
        "{groups} groups, {writes} writes"
    );
    assert_eq!(count(SQLITE_COMMIT_DURATION_SECONDS, &[]), groups);
    let syncs = count(SQLITE_SYNC_DURATION_SECONDS, &[]);
    assert!(
        syncs >= 1.0 && syncs <= groups,
        "{syncs} syncs, {groups} groups"
    );
}
