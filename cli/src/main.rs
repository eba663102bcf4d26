//! `durable-jobs`: the command line of a durable-jobs service, over its HTTP API
//! (`durable-jobs-http`). Lists and acts on runs and instances, shows the job registry and
//! statistics, follows live events as JSON lines, and runs bulk actions after counting them.
//!
//! Output is a table for people, or JSON with `--json` for scripts.
//!
//! Exit codes: 0 done; 1 the server answered an error (or another failure); 2 a usage error;
//! 3 the server could not be reached; 4 not found (404); 5 not allowed (401, 403); 6 refused
//! in the current state (409).

mod client;
mod table;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use reqwest::Method;
use serde_json::{json, Value};

use crate::client::{Api, Failure};
use crate::table::{cell, render};

/// Operate a durable-jobs service through its HTTP API.
#[derive(Parser, Debug)]
#[command(name = "durable-jobs", version, after_help = EXIT_CODES)]
struct Cli {
    /// Where the API is mounted, e.g. http://127.0.0.1:8080/api.
    #[arg(
        long,
        env = "DURABLE_JOBS_URL",
        default_value = "http://127.0.0.1:8080/api",
        global = true
    )]
    url: String,
    /// Bearer token.
    #[arg(
        long,
        env = "DURABLE_JOBS_TOKEN",
        global = true,
        hide_env_values = true
    )]
    token: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

const EXIT_CODES: &str = "Exit codes: 0 done, 1 the server answered an error, 2 usage error, \
3 server unreachable, 4 not found, 5 not allowed (401/403), 6 refused in the current state (409).";

#[derive(Subcommand, Debug)]
enum Command {
    /// Runs of step jobs.
    #[command(subcommand)]
    Runs(Runs),
    /// Instances of continuous, debounce and task jobs.
    #[command(subcommand)]
    Instances(Instances),
    /// The registered jobs and their settings.
    Jobs,
    /// Per-job counts, throughput, failures and lag.
    Stats {
        /// The window, in seconds.
        #[arg(long, default_value_t = 3600)]
        window: u64,
    },
    /// The processes sharing a PostgreSQL store and what each holds ("single process" otherwise).
    Nodes,
    /// Follow events as JSON lines (every run's, one run's, or the job events); resumes after a
    /// dropped connection.
    Tail(Tail),
    /// Cancel, retrigger or delete every run a filter matches. Counts first; acts only with --yes.
    Bulk(Bulk),
}

#[derive(Subcommand, Debug)]
enum Runs {
    /// List runs, newest first.
    List(RunFilter),
    /// Show one run.
    Get {
        /// The run's id.
        id: String,
        /// With its steps.
        #[arg(long)]
        steps: bool,
        /// With its logs.
        #[arg(long)]
        logs: bool,
    },
    /// Cancel a pending or leased run.
    Cancel {
        /// The run's id.
        id: String,
    },
    /// Trigger a new run with a finished run's input.
    Retrigger {
        /// The run's id.
        id: String,
    },
    /// Delete a finished run.
    Delete {
        /// The run's id.
        id: String,
    },
}

#[derive(Args, Debug, Default)]
struct RunFilter {
    /// Only runs of this job (repeatable).
    #[arg(long = "job")]
    jobs: Vec<String>,
    /// Only runs in this status (repeatable): pending, leased, completed, failed, cancelled.
    #[arg(long = "status")]
    statuses: Vec<String>,
    /// Only runs with this label, as key=value (repeatable).
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// At most this many.
    #[arg(long, default_value_t = 20)]
    limit: u32,
    /// Skip this many.
    #[arg(long, default_value_t = 0)]
    offset: u32,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected key=value, got {s:?}"))
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum InstanceStatus {
    Idle,
    Scheduled,
    Retrying,
}

#[derive(Subcommand, Debug)]
enum Instances {
    /// List instances in key order.
    List {
        /// Only this kind: continuous, debounce or task.
        #[arg(long)]
        kind: Option<String>,
        /// Only this job.
        #[arg(long)]
        job: Option<String>,
        /// Only instances in this state.
        #[arg(long, value_enum)]
        status: Option<InstanceStatus>,
        /// Only instances whose alarm is due now.
        #[arg(long)]
        due: bool,
        /// Page size.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Every page, not just the first.
        #[arg(long)]
        all: bool,
    },
    /// Show one instance with its state.
    Get(InstanceRef),
    /// Run a continuous or task instance now.
    Trigger(InstanceRef),
    /// Flush a debounce batch now.
    Flush(InstanceRef),
    /// Drop a debounce batch without flushing it.
    Clear(InstanceRef),
    /// Terminate a continuous or task instance.
    Terminate {
        #[command(flatten)]
        instance: InstanceRef,
        /// Why (kept by continuous jobs).
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Args, Debug)]
struct InstanceRef {
    /// The job.
    job: String,
    /// The instance's id.
    id: String,
}

#[derive(Args, Debug)]
struct Tail {
    /// Only runs of this job (repeatable).
    #[arg(long = "job")]
    jobs: Vec<String>,
    /// One run: its events until it ends.
    #[arg(long, conflicts_with = "events")]
    run: Option<String>,
    /// The job events of continuous, debounce and task jobs instead of run events.
    #[arg(long)]
    events: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum BulkAction {
    Cancel,
    Retrigger,
    Delete,
}

#[derive(Args, Debug)]
struct Bulk {
    /// What to do.
    #[arg(value_enum)]
    action: BulkAction,
    /// Only runs of this job (repeatable).
    #[arg(long = "job")]
    jobs: Vec<String>,
    /// Only runs in this status (repeatable).
    #[arg(long = "status")]
    statuses: Vec<String>,
    /// Only runs with this label, as key=value (repeatable).
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// Only count what would be done.
    #[arg(long, conflicts_with = "yes")]
    dry_run: bool,
    /// Act (without it, only count).
    #[arg(long)]
    yes: bool,
}

fn print(json_mode: bool, value: &Value, human: impl FnOnce(&Value) -> String) {
    if json_mode {
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        );
    } else {
        println!("{}", human(value));
    }
}

fn rows(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or_default()
}

fn runs_table(v: &Value) -> String {
    let rows: Vec<Vec<String>> = rows(v)
        .iter()
        .map(|r| {
            let progress = match (&r["progress"]["current"], &r["progress"]["total"]) {
                (Value::Null, _) => "-".to_owned(),
                (c, Value::Null) => c.to_string(),
                (c, t) => format!("{c}/{t}"),
            };
            vec![
                cell(&r["id"]),
                cell(&r["jobName"]),
                cell(&r["status"]),
                progress,
                cell(&r["createdAt"]),
                cell(&r["error"]),
            ]
        })
        .collect();
    render(
        &["id", "job", "status", "progress", "created", "error"],
        &rows,
    )
}

fn details(v: &Value, keys: &[&str]) -> String {
    keys.iter()
        .map(|k| format!("{k:<16}{}", cell(&v[*k])))
        .collect::<Vec<_>>()
        .join("\n")
}

fn label_query(labels: &[(String, String)]) -> Vec<(String, String)> {
    labels
        .iter()
        .map(|(k, v)| (format!("label.{k}"), v.clone()))
        .collect()
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let api = Api::new(&cli.url, cli.token.clone());
    let j = cli.json;
    match cli.command {
        Command::Runs(Runs::List(f)) => {
            let mut q: Vec<(String, String)> = Vec::new();
            q.extend(f.jobs.iter().map(|x| ("jobName".to_owned(), x.clone())));
            q.extend(f.statuses.iter().map(|x| ("status".to_owned(), x.clone())));
            q.extend(label_query(&f.labels));
            q.push(("limit".into(), f.limit.to_string()));
            q.push(("offset".into(), f.offset.to_string()));
            let q: Vec<(&str, String)> = q.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
            let v = api.get("/runs", &q).await?;
            print(j, &v, runs_table);
        }
        Command::Runs(Runs::Get { id, steps, logs }) => {
            let q = [("runId", id.clone())];
            let mut v = api.get("/run", &q).await?;
            if steps {
                v["steps"] = api.get("/steps", &q).await?;
            }
            if logs {
                v["logs"] = api.get("/logs", &q).await?;
            }
            print(j, &v, |v| {
                let mut out = details(
                    v,
                    &[
                        "id",
                        "jobName",
                        "status",
                        "attempt",
                        "createdAt",
                        "startedAt",
                        "completedAt",
                        "progress",
                        "labels",
                        "input",
                        "output",
                        "error",
                    ],
                );
                if steps {
                    let rows: Vec<Vec<String>> = rows(&v["steps"])
                        .iter()
                        .map(|s| {
                            vec![
                                cell(&s["index"]),
                                cell(&s["name"]),
                                cell(&s["status"]),
                                cell(&s["output"]),
                                cell(&s["error"]),
                            ]
                        })
                        .collect();
                    out.push_str("\n\n");
                    out.push_str(&render(&["#", "step", "status", "output", "error"], &rows));
                }
                if logs {
                    let rows: Vec<Vec<String>> = rows(&v["logs"])
                        .iter()
                        .map(|l| {
                            vec![
                                cell(&l["createdAt"]),
                                cell(&l["level"]),
                                cell(&l["stepName"]),
                                cell(&l["message"]),
                            ]
                        })
                        .collect();
                    out.push_str("\n\n");
                    out.push_str(&render(&["time", "level", "step", "message"], &rows));
                }
                out
            });
        }
        Command::Runs(Runs::Cancel { id }) => {
            let v = api.post("/cancel", &[("runId", id.clone())], None).await?;
            print(j, &v, |_| format!("cancelled {id}"));
        }
        Command::Runs(Runs::Retrigger { id }) => {
            let v = api
                .post("/retrigger", &[("runId", id.clone())], None)
                .await?;
            print(j, &v, |v| {
                format!("retriggered {id} as {}", cell(&v["runId"]))
            });
        }
        Command::Runs(Runs::Delete { id }) => {
            let v = api.delete("/run", &[("runId", id.clone())]).await?;
            print(j, &v, |_| format!("deleted {id}"));
        }
        Command::Instances(Instances::List {
            kind,
            job,
            status,
            due,
            limit,
            all,
        }) => {
            let mut q: Vec<(&str, String)> = vec![("limit", limit.to_string())];
            if let Some(k) = kind {
                q.push(("kind", k));
            }
            if let Some(jb) = job {
                q.push(("job", jb));
            }
            if let Some(s) = status {
                let s = match s {
                    InstanceStatus::Idle => "idle",
                    InstanceStatus::Scheduled => "scheduled",
                    InstanceStatus::Retrying => "retrying",
                };
                q.push(("status", s.into()));
            }
            if due {
                q.push(("dueBefore", "now".into()));
            }
            let mut items = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let mut page_q = q.clone();
                if let Some(c) = &cursor {
                    page_q.push(("cursor", c.clone()));
                }
                let page = api.get("/instances", &page_q).await?;
                items.extend(rows(&page["items"]).iter().cloned());
                cursor = page["nextCursor"].as_str().map(str::to_owned);
                if !all || cursor.is_none() {
                    break;
                }
            }
            let v = json!({ "items": items, "nextCursor": cursor });
            print(j, &v, |v| {
                let rows: Vec<Vec<String>> = rows(&v["items"])
                    .iter()
                    .map(|i| {
                        vec![
                            cell(&i["kind"]),
                            cell(&i["job"]),
                            cell(&i["id"]),
                            cell(&i["status"]),
                            cell(&i["nextAlarm"]),
                            cell(&i["retryAttempt"]),
                            cell(&i["lastError"]),
                        ]
                    })
                    .collect();
                let mut out = render(
                    &[
                        "kind",
                        "job",
                        "id",
                        "status",
                        "next alarm",
                        "retry",
                        "last error",
                    ],
                    &rows,
                );
                if let Some(c) = v["nextCursor"].as_str() {
                    out.push_str(&format!("\n(more: --all, or the API's cursor {c})"));
                }
                out
            });
        }
        Command::Instances(Instances::Get(r)) => {
            let v = api
                .get("/instance", &[("job", r.job), ("id", r.id)])
                .await?;
            print(j, &v, |v| {
                details(
                    v,
                    &[
                        "kind",
                        "job",
                        "id",
                        "status",
                        "createdAt",
                        "updatedAt",
                        "runCount",
                        "eventCount",
                        "executeCount",
                        "nextAlarm",
                        "retryAttempt",
                        "lastError",
                        "state",
                    ],
                )
            });
        }
        Command::Instances(Instances::Trigger(r)) => {
            instance_action(&api, j, "trigger", r, None).await?
        }
        Command::Instances(Instances::Flush(r)) => {
            instance_action(&api, j, "flush", r, None).await?
        }
        Command::Instances(Instances::Clear(r)) => {
            instance_action(&api, j, "clear", r, None).await?
        }
        Command::Instances(Instances::Terminate { instance, reason }) => {
            instance_action(&api, j, "terminate", instance, reason).await?
        }
        Command::Jobs => {
            let v = api.get("/jobs", &[]).await?;
            print(j, &v, |v| {
                let rows: Vec<Vec<String>> = rows(v)
                    .iter()
                    .map(|job| {
                        let schedule = match (&job["schedule"]["every"], &job["schedule"]["cron"]) {
                            (Value::Number(ms), _) => {
                                format!("every {}s", ms.as_u64().unwrap_or(0) / 1000)
                            }
                            (_, Value::String(c)) => {
                                format!("cron {c} ({})", cell(&job["schedule"]["timeZone"]))
                            }
                            _ => "-".into(),
                        };
                        let batching = match &job["flushAfter"] {
                            Value::Null => "-".into(),
                            f => format!(
                                "flush after {}s, quiet {}, max {}",
                                f.as_u64().unwrap_or(0) / 1000,
                                cell(&job["quiet"]),
                                cell(&job["maxEvents"])
                            ),
                        };
                        vec![
                            cell(&job["name"]),
                            cell(&job["kind"]),
                            schedule,
                            batching,
                            cell(&job["retry"]["maxAttempts"]),
                        ]
                    })
                    .collect();
                render(
                    &["name", "kind", "schedule", "batching", "max attempts"],
                    &rows,
                )
            });
        }
        Command::Nodes => {
            let v = api.get("/nodes", &[]).await?;
            print(j, &v, |v| {
                if v["shared"] != Value::Bool(true) {
                    return "single process: this engine runs alone on its store".to_owned();
                }
                let nodes: Vec<Vec<String>> = rows(&v["nodes"])
                    .iter()
                    .map(|n| {
                        let id = cell(&n["id"]);
                        vec![
                            if n["self"] == Value::Bool(true) {
                                format!("{id} (answering)")
                            } else {
                                id
                            },
                            cell(&n["host"]),
                            cell(&n["pid"]),
                            cell(&n["startedAt"]),
                            cell(&n["lastSeen"]),
                            cell(&n["leasedRuns"]),
                            cell(&n["leasedInstances"]),
                        ]
                    })
                    .collect();
                let mut out = render(
                    &[
                        "node",
                        "host",
                        "pid",
                        "joined",
                        "last seen",
                        "leased runs",
                        "leased instances",
                    ],
                    &nodes,
                );
                let others: Vec<Vec<String>> = rows(&v["otherHolders"])
                    .iter()
                    .map(|o| {
                        vec![
                            cell(&o["owner"]),
                            cell(&o["leasedRuns"]),
                            cell(&o["leasedInstances"]),
                        ]
                    })
                    .collect();
                if !others.is_empty() {
                    out.push_str("\n\nleases held outside the live nodes:\n");
                    out.push_str(&render(
                        &["lease owner", "leased runs", "leased instances"],
                        &others,
                    ));
                }
                out
            });
        }
        Command::Stats { window } => {
            let v = api.get("/stats", &[("window", window.to_string())]).await?;
            print(j, &v, |v| {
                let runs: Vec<Vec<String>> = rows(&v["runs"])
                    .iter()
                    .map(|r| {
                        vec![
                            cell(&r["jobName"]),
                            cell(&r["pending"]),
                            cell(&r["leased"]),
                            cell(&r["completed"]),
                            cell(&r["failed"]),
                            cell(&r["cancelled"]),
                            cell(&r["failedInWindow"]),
                            format!("{:.1}", r["throughputPerMinute"].as_f64().unwrap_or(0.0)),
                            cell(&r["oldestPendingAge"]),
                        ]
                    })
                    .collect();
                let inst: Vec<Vec<String>> = rows(&v["instances"])
                    .iter()
                    .map(|i| {
                        vec![
                            cell(&i["kind"]),
                            cell(&i["job"]),
                            cell(&i["total"]),
                            cell(&i["scheduled"]),
                            cell(&i["retrying"]),
                            cell(&i["due"]),
                            cell(&i["alarmLag"]),
                            cell(&i["nextAlarm"]),
                        ]
                    })
                    .collect();
                format!(
                    "{}\n\n{}",
                    render(
                        &[
                            "step job",
                            "pending",
                            "leased",
                            "completed",
                            "failed",
                            "cancelled",
                            "failed/window",
                            "per min",
                            "oldest pending ms"
                        ],
                        &runs
                    ),
                    render(
                        &[
                            "kind",
                            "job",
                            "instances",
                            "scheduled",
                            "retrying",
                            "due",
                            "lag ms",
                            "next alarm"
                        ],
                        &inst
                    )
                )
            });
        }
        Command::Tail(t) => tail(&api, t).await?,
        Command::Bulk(b) => {
            let mut filter = json!({ "jobName": b.jobs, "status": b.statuses });
            filter["labels"] = b
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect::<serde_json::Map<_, _>>()
                .into();
            let action = match b.action {
                BulkAction::Cancel => "cancel",
                BulkAction::Retrigger => "retrigger",
                BulkAction::Delete => "delete",
            };
            let act = b.yes && !b.dry_run;
            let body = json!({ "action": action, "filter": filter, "dryRun": !act });
            let v = api.post("/runs/bulk", &[], Some(body)).await?;
            print(j, &v, |v| {
                if act {
                    format!(
                        "{action}: {} matched, {} done, {} failed",
                        cell(&v["matched"]),
                        cell(&v["done"]),
                        cell(&v["failed"])
                    )
                } else {
                    format!("{action} would apply to {} of {} matching runs (dry run; add --yes to act)", cell(&v["eligible"]), cell(&v["matched"]))
                }
            });
        }
    }
    Ok(())
}

async fn instance_action(
    api: &Api,
    j: bool,
    action: &str,
    r: InstanceRef,
    reason: Option<String>,
) -> Result<(), Failure> {
    let mut q = vec![("job", r.job.clone()), ("id", r.id.clone())];
    if let Some(reason) = reason {
        q.push(("reason", reason));
    }
    let v = api.post(&format!("/instance/{action}"), &q, None).await?;
    print(j, &v, |v| format!("{action} {}:{}: {v}", r.job, r.id));
    Ok(())
}

/// Prints each event's data as a line; reconnects with the last id when the stream drops
/// (and stops after a run's terminal event with `--run`).
async fn tail(api: &Api, t: Tail) -> Result<(), Failure> {
    let (path, mut query): (&str, Vec<(&str, String)>) = if let Some(run) = &t.run {
        ("/subscribe", vec![("runId", run.clone())])
    } else if t.events {
        ("/events/subscribe", Vec::new())
    } else {
        ("/runs/subscribe", Vec::new())
    };
    let job_param = if t.events { "job" } else { "jobName" };
    query.extend(t.jobs.iter().map(|jb| (job_param, jb.clone())));
    let mut last_id: Option<String> = None;
    let mut failures = 0u32;
    loop {
        let mut req = api.request(Method::GET, path, &query);
        if let Some(id) = &last_id {
            req = req.header("Last-Event-ID", id);
        }
        let mut res = match req.send().await {
            Ok(res) => res,
            Err(e) if failures < 5 && last_id.is_some() => {
                failures += 1;
                eprintln!("reconnecting after: {e}");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => return Err(Failure::Unreachable(e.to_string())),
        };
        if !res.status().is_success() {
            let status = res.status();
            let text = res.text().await.unwrap_or_default();
            let message = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or(text);
            return Err(Failure::Api { status, message });
        }
        failures = 0;
        let mut buffer = String::new();
        let mut id: Option<String> = None;
        let mut data = String::new();
        loop {
            let chunk = match res.chunk().await {
                Ok(Some(c)) => c,
                _ => break,
            };
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find('\n') {
                let line: String = buffer.drain(..=end).collect();
                let line = line.trim_end_matches(['\n', '\r']);
                if line.is_empty() {
                    if !data.is_empty() {
                        println!("{data}");
                        let terminal = serde_json::from_str::<Value>(&data)
                            .ok()
                            .and_then(|v| v["type"].as_str().map(str::to_owned))
                            .is_some_and(|ty| {
                                matches!(
                                    ty.as_str(),
                                    "run:complete" | "run:fail" | "run:cancel" | "run:delete"
                                )
                            });
                        if t.run.is_some() && terminal {
                            return Ok(());
                        }
                    }
                    last_id = id.take().or(last_id.take());
                    data.clear();
                } else if let Some(v) = line.strip_prefix("id: ") {
                    id = Some(v.to_owned());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data.push_str(v);
                }
            }
        }
        if t.run.is_some() && last_id.is_none() {
            return Ok(());
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("durable-jobs: {e}");
            e.exit_code()
        }
    }
}
