//! The `durable-jobs` binary as a child process against a real server: tables and JSON,
//! actions, bulk counting before acting, following a run, and the documented exit codes.

use std::process::Command;
use std::time::Duration;

use durable_jobs::prelude::*;
use durable_jobs::steps::StepError;
use durable_jobs::Engine;
use durable_jobs_http::{Api, BearerTokens};
use serde_json::{json, Value};

/// Sums numbers in two steps; fails on a negative total.
#[durable_jobs::step_job(name = "sum")]
pub async fn sum(step: &mut StepContext, numbers: Vec<i64>) -> Result<i64, StepError> {
    let total: i64 = step
        .run("add", |_| async move { Ok(numbers.iter().sum::<i64>()) })
        .await?;
    step.progress((1, 1)).await;
    step.run("check", |_| async move {
        if total < 0 {
            Err::<(), _>("negative total".into())
        } else {
            Ok(())
        }
    })
    .await?;
    Ok(total)
}

/// Counts its runs every hour.
#[durable_jobs::continuous(every = "1h")]
pub async fn counter(ctx: &mut ContinuousContext<u64>) -> Result<(), std::io::Error> {
    ctx.update_state(|n| *n += 1);
    Ok(())
}

durable_jobs::registry! {
    /// The jobs the command line is tried on.
    pub Jobs<()> { Sum, Counter }
}

struct Service {
    url: String,
    engine: Engine<Jobs>,
    _dir: tempfile::TempDir,
}

async fn service() -> Service {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::<Jobs>::builder()
        .sqlite(dir.path().join("jobs.db"))
        .step_options(durable_jobs::steps::StepOptions::default().preserve_steps(true))
        .app(())
        .start()
        .await
        .unwrap();
    let api = Api::new(&engine).auth(BearerTokens::new().operator("op").read_only("ro"));
    let app = axum::Router::new().nest("/api", api.router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/api", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Service {
        url,
        engine,
        _dir: dir,
    }
}

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Output {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {}", self.stdout))
    }
}

async fn cli(url: &str, token: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_durable-jobs"));
    cmd.args(["--url", url, "--token", token]).args(args);
    cmd.env_remove("DURABLE_JOBS_URL")
        .env_remove("DURABLE_JOBS_TOKEN");
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn finished(s: &Service, input: Value) -> String {
    let runs = s.engine.client().runs();
    let (run, _) = runs
        .trigger("sum", input, Default::default())
        .await
        .unwrap();
    let _ = runs
        .wait_for_run(&run.id, Some(Duration::from_secs(10)))
        .await;
    run.id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_are_listed_shown_and_acted_on() {
    let s = service().await;
    let ok = finished(&s, json!([1, 2, 3])).await;
    let bad = finished(&s, json!([-5])).await;

    let out = cli(&s.url, "ro", &["runs", "list"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("STATUS"),
        "{}",
        out.stdout
    );
    assert!(
        lines[1].starts_with(&bad)
            && lines[1].contains("failed")
            && lines[1].contains("negative total")
    );
    assert!(
        lines[2].starts_with(&ok) && lines[2].contains("completed") && lines[2].contains("1/1")
    );

    let out = cli(
        &s.url,
        "ro",
        &["--json", "runs", "list", "--status", "completed"],
    )
    .await;
    let listed = out.json();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["output"], 6);

    let out = cli(&s.url, "ro", &["runs", "get", &ok, "--steps"]).await;
    assert_eq!(out.code, 0);
    assert!(
        out.stdout.contains("status          completed"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("add") && out.stdout.contains("check"));

    // Read-only token: refused with exit code 5.
    let out = cli(&s.url, "ro", &["runs", "retrigger", &bad]).await;
    assert_eq!(out.code, 5, "{}", out.stderr);
    assert!(out.stderr.contains("operator role"));
    let out = cli(&s.url, "op", &["--json", "runs", "retrigger", &bad]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let fresh = out.json()["runId"].as_str().unwrap().to_owned();
    assert_ne!(fresh, bad);
    // Conflict: 6. Not found: 4.
    let out = cli(&s.url, "op", &["runs", "cancel", &ok]).await;
    assert_eq!(out.code, 6, "{}", out.stderr);
    assert!(out
        .stderr
        .contains(&format!("Cannot cancel completed run: {ok}")));
    let out = cli(&s.url, "op", &["runs", "delete", &ok]).await;
    assert_eq!(
        (out.code, out.stdout.trim()),
        (0, format!("deleted {ok}").as_str())
    );
    let out = cli(&s.url, "op", &["runs", "get", &ok]).await;
    assert_eq!(out.code, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_jobs_stats_and_bulk() {
    let s = service().await;
    let counter = s.engine.client().continuous::<Counter>();
    counter.start("a", 0).await.unwrap();
    counter.start("b", 0).await.unwrap();

    let out = cli(&s.url, "ro", &["jobs"]).await;
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("counter") && l.contains("every 3600s")),
        "{}",
        out.stdout
    );
    let out = cli(
        &s.url,
        "ro",
        &[
            "instances",
            "list",
            "--job",
            "counter",
            "--limit",
            "1",
            "--all",
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout.lines().count(), 3, "{}", out.stdout);
    let out = cli(
        &s.url,
        "ro",
        &["--json", "instances", "get", "counter", "a"],
    )
    .await;
    assert_eq!(
        (
            out.json()["state"].as_u64(),
            out.json()["runCount"].as_u64()
        ),
        (Some(1), Some(1))
    );
    let out = cli(&s.url, "op", &["instances", "trigger", "counter", "a"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(counter.get_state("a").await.unwrap(), Some(2));
    let out = cli(
        &s.url,
        "op",
        &[
            "instances",
            "terminate",
            "counter",
            "b",
            "--reason",
            "moved",
        ],
    )
    .await;
    assert_eq!(out.code, 0);
    assert!(counter.status("b").await.unwrap().is_not_found());
    let out = cli(&s.url, "op", &["instances", "flush", "counter", "a"]).await;
    assert_eq!(out.code, 1, "a continuous job has no batch: {}", out.stderr);

    let out = cli(&s.url, "ro", &["stats"]).await;
    assert!(out.stdout.contains("counter"), "{}", out.stdout);
    let out = cli(&s.url, "ro", &["nodes"]).await;
    assert_eq!(
        (out.code, out.stdout.trim()),
        (0, "single process: this engine runs alone on its store")
    );
    let out = cli(&s.url, "ro", &["--json", "nodes"]).await;
    assert_eq!(out.json()["shared"], false);

    finished(&s, json!([-1])).await;
    finished(&s, json!([-2])).await;
    finished(&s, json!([3])).await;
    let out = cli(&s.url, "op", &["bulk", "delete", "--status", "failed"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.stdout.trim(),
        "delete would apply to 2 of 2 matching runs (dry run; add --yes to act)"
    );
    assert_eq!(
        s.engine
            .client()
            .runs()
            .get_runs(Default::default())
            .await
            .unwrap()
            .len(),
        3
    );
    let out = cli(
        &s.url,
        "op",
        &["--json", "bulk", "delete", "--status", "failed", "--yes"],
    )
    .await;
    assert_eq!(out.json()["done"], 2);
    assert_eq!(
        s.engine
            .client()
            .runs()
            .get_runs(Default::default())
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_follows_a_run_to_its_end_as_json_lines() {
    let s = service().await;
    let id = finished(&s, json!([4])).await;
    let out = cli(&s.url, "ro", &["tail", "--run", &id]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let events: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0]["type"].as_str(), events[0]["output"].as_i64()),
        (Some("run:complete"), Some(4))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_have_their_exit_codes() {
    let s = service().await;
    assert_eq!(cli(&s.url, "wrong", &["runs", "list"]).await.code, 5);
    assert_eq!(cli(&s.url, "ro", &["runs", "explode"]).await.code, 2);
    assert_eq!(
        cli(&s.url, "ro", &["runs", "list", "--status", "done"])
            .await
            .code,
        1
    );
    // Nothing listens on port 9 of loopback.
    let out = cli("http://127.0.0.1:9/api", "ro", &["runs", "list"]).await;
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(out.stderr.contains("cannot reach the server"));
}
