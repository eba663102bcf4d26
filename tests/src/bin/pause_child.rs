//! The child process of the pause test: `pause_child <url>#<schema> <dir> <holder|taker>`.
//!
//! Runs an engine of `durable_jobs_tests::pause`'s jobs on the schema, with short leases
//! ([`LEASE`]), and prints `ready`. The holder runs on a current-thread runtime and holds the
//! first execution of each job (see the module documentation of `durable_jobs_tests::pause`);
//! the taker runs on a multi-thread runtime and holds nothing. Then it reads commands on its
//! standard input:
//!
//! - `trigger <mode>`: triggers a `pause-steps` run with input `<mode>`, prints `run <mode> <id>`;
//! - `start-tick`: starts the `pause-tick` instance `c`, prints `started`;
//! - `arm`: lets an execution waiting to be held go on to its hold.
//!
//! What the engine reports is printed too: the end of a step run (`run-event run:complete
//! <id>`), a worker error (`run-event worker:error <id> <context>`), a run of an instance
//! (`job-event job.executed <id> <run count>`), and every warning or error it logs (`log <level>
//! <message> <fields>`). It never exits by itself.

use std::fmt::{self, Write as _};
use std::io::BufRead;
use std::path::PathBuf;
use std::sync::Arc;

use durable_jobs::postgres::PostgresOptions;
use durable_jobs::steps::{RunEventKind, StepOptions, TriggerOptions};
use durable_jobs::{Engine, Event};
use durable_jobs_tests::kill::harness::Db;
use durable_jobs_tests::kill::say;
use durable_jobs_tests::pause::{PauseApp, PauseJobs, PauseSteps, PauseTick, LEASE};
use tokio::sync::mpsc;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [db, dir, role] = args.as_slice() else {
        eprintln!("usage: pause_child <url>#<schema> <dir> <holder|taker>");
        std::process::exit(2);
    };
    let Db::Postgres { url, schema } = Db::from_arg(db) else {
        eprintln!("pause_child: {db} is not <url>#<schema>");
        std::process::exit(2);
    };
    let holder = role == "holder";
    if tracing::subscriber::set_global_default(Printer).is_err() {
        say("unexpected tracing subscriber");
    }
    let runtime = if holder {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    }
    .enable_all()
    .build()
    .expect("a runtime");
    let app = PauseApp::new(PathBuf::from(dir), holder);
    let options = PostgresOptions::new(url)
        .schema(schema)
        .fallback_poll_interval(LEASE / 10);
    runtime.block_on(run(options, app));
}

async fn run(options: PostgresOptions, app: Arc<PauseApp>) {
    let engine = match Engine::<PauseJobs>::builder()
        .postgres_options(options)
        .lease_duration(LEASE)
        .step_options(
            StepOptions::default()
                .lease_duration(LEASE)
                .lease_renew_interval(LEASE / 4)
                .preserve_steps(true),
        )
        .app(app.clone())
        .start()
        .await
    {
        Ok(engine) => engine,
        Err(e) => {
            say(&format!("unexpected engine-start {e}"));
            std::process::exit(3);
        }
    };
    let mut events = engine.events();
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            report(&event);
        }
    });
    let (commands, mut received) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if commands.send(line).is_err() {
                break;
            }
        }
    });
    say("ready");
    let client = engine.client();
    while let Some(command) = received.recv().await {
        let words: Vec<&str> = command.split_whitespace().collect();
        match words.as_slice() {
            ["trigger", mode] => match client
                .step_job::<PauseSteps>()
                .trigger((*mode).to_owned(), TriggerOptions::new())
                .await
            {
                Ok(triggered) => say(&format!("run {mode} {}", triggered.run.id)),
                Err(e) => say(&format!("unexpected trigger {e}")),
            },
            ["start-tick"] => match client
                .continuous::<PauseTick>()
                .start("c", Vec::new())
                .await
            {
                Ok(_) => say("started"),
                Err(e) => say(&format!("unexpected start {e}")),
            },
            ["arm"] => app.arm(),
            _ => say(&format!("unexpected command {command}")),
        }
    }
    std::future::pending::<()>().await;
}

/// Prints what the engine reports of the ends of executions.
fn report(event: &Event) {
    match event {
        Event::Run(run) => match &run.kind {
            RunEventKind::Complete { .. } => say(&format!("run-event run:complete {}", run.run_id)),
            RunEventKind::WorkerError { context, .. } => {
                say(&format!("run-event worker:error {} {context}", run.run_id))
            }
            _ => {}
        },
        Event::Job(job) if job.type_name() == "job.executed" => {
            let json = job.to_json();
            say(&format!(
                "job-event job.executed {} {}",
                json["id"].as_str().unwrap_or_default(),
                json["runCount"]
            ));
        }
        _ => {}
    }
}

/// A `tracing` subscriber that prints every warning and error as one `log` line.
struct Printer;

impl tracing::Subscriber for Printer {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        *metadata.level() <= tracing::Level::WARN
    }

    fn new_span(&self, _span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _span: &tracing::span::Id, _values: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _span: &tracing::span::Id, _follows: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        say(&format!(
            "log {} {}{}",
            event.metadata().level(),
            fields.message,
            fields.rest
        ));
    }

    fn enter(&self, _span: &tracing::span::Id) {}

    fn exit(&self, _span: &tracing::span::Id) {}
}

/// An event's message, and its other fields as ` name=value`.
#[derive(Default)]
struct Fields {
    message: String,
    rest: String,
}

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.rest, " {}={value:?}", field.name());
        }
    }
}
