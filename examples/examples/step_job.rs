//! Step jobs: `sync-users` copies an organisation's users from a directory into a database, one
//! memoised step per user. A step that completed is never run again for its run: when the
//! database drops a connection halfway, the retry resumes after the last completed step instead
//! of fetching and syncing everyone again.
//!
//! Shows `step.run`, a retry policy resuming a failed run, `trigger_and_wait`, an idempotency
//! key returning the existing run, `trigger` and `get_runs` through `client.step_job::<J>()`.
//! Runs on an embedded SQLite file for about a second and exits.
//!
//! ```sh
//! cargo run -p durable-jobs-examples --example step_job
//! ```

use std::sync::{Arc, Mutex};
use std::time::Duration;

use durable_jobs::prelude::*;
use durable_jobs::steps::{RunFilter, StepError, TriggerOptions};
use durable_jobs::BoxError;
use serde::{Deserialize, Serialize};

/// What every handler receives: a fake user directory and a fake database.
pub struct App {
    db: Arc<Database>,
}

/// A user, as the directory lists it.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct User {
    /// The directory's id.
    pub id: String,
    /// Where to reach them.
    pub email: String,
}

impl App {
    /// Lists the users of an organisation.
    async fn fetch_users(&self, org_id: &str) -> Result<Vec<User>, BoxError> {
        println!("  [directory] listing the users of {org_id}");
        let user = |id: &str, email: &str| User {
            id: id.into(),
            email: email.into(),
        };
        Ok(match org_id {
            "org_123" => vec![
                user("u1", "ada@example.com"),
                user("u2", "grace@example.com"),
                user("u3", "not-an-email"),
                user("u4", "alan@example.com"),
            ],
            _ => vec![user("u9", "edsger@example.com")],
        })
    }
}

/// Why the database did not store a user.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// A transient failure: the step fails and the run is retried.
    #[error("connection reset by the database")]
    ConnectionReset,
    /// The row itself is refused: retrying would not help.
    #[error("rejected: {0}")]
    Rejected(&'static str),
}

/// A fake database that can drop a connection on request.
#[derive(Default)]
pub struct Database {
    reset_on: Mutex<Option<String>>,
}

impl Database {
    /// Inserts or updates a user.
    async fn upsert(&self, user: &User) -> Result<(), DbError> {
        let mut reset_on = self.reset_on.lock().unwrap_or_else(|e| e.into_inner());
        if reset_on.as_deref() == Some(user.id.as_str()) {
            *reset_on = None;
            println!("  [database] upsert {}: connection reset", user.id);
            return Err(DbError::ConnectionReset);
        }
        drop(reset_on);
        if !user.email.contains('@') {
            println!("  [database] upsert {}: invalid email", user.id);
            return Err(DbError::Rejected("invalid email"));
        }
        println!("  [database] upsert {} <{}>", user.id, user.email);
        Ok(())
    }

    /// Makes the next upsert of `user_id` fail with a reset connection.
    fn drop_connection_on(&self, user_id: &str) {
        *self.reset_on.lock().unwrap_or_else(|e| e.into_inner()) = Some(user_id.to_owned());
    }
}

/// Which organisation to sync.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct SyncInput {
    /// The organisation.
    pub org_id: String,
}

/// What a completed sync reports.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct SyncOutput {
    /// Users stored.
    pub synced_count: usize,
    /// Users the database refused, and why.
    pub errors: Vec<String>,
}

/// Why a sync failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// A step failed, or the run was cancelled.
    #[error(transparent)]
    Step(#[from] StepError),
}

/// Copies an organisation's users into the database, one step per user. A failed run is
/// retried twice, 200 ms apart, resuming after its last completed step.
#[durable_jobs::step_job(
    name = "sync-users",
    retry(max_attempts = 3, backoff = constant("200ms"), jitter = false)
)]
pub async fn sync_users(
    step: &mut StepContext,
    input: SyncInput,
    app: &App,
) -> Result<SyncOutput, SyncError> {
    println!(
        "[sync-users] run {} attempt {} for {}",
        step.run_id(),
        step.attempt(),
        input.org_id
    );
    // Memoised: a retry of this run gets the stored list instead of asking the directory.
    let users: Vec<User> = step
        .run("fetch-users", |_| app.fetch_users(&input.org_id))
        .await?;
    let mut errors = Vec::new();
    for (done, user) in users.iter().enumerate() {
        // The step's output, "refused or not", is memoised with it, so the error list is the
        // same whether the step ran now or in an earlier attempt.
        let refused: Option<String> = step
            .run(&format!("sync-{}", user.id), |_| async {
                match app.db.upsert(user).await {
                    Ok(()) => Ok(None),
                    Err(DbError::Rejected(why)) => Ok(Some(format!("{}: {why}", user.id))),
                    Err(e) => Err(e.into()),
                }
            })
            .await?;
        errors.extend(refused);
        step.progress((done as u64 + 1, users.len() as u64)).await;
    }
    Ok(SyncOutput {
        synced_count: users.len() - errors.len(),
        errors,
    })
}

durable_jobs::registry! {
    /// The jobs of this example.
    pub Jobs<App> { SyncUsers }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("durable-jobs-step-job-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("jobs.db");
    println!("database: {}", path.display());

    let db = Arc::new(Database::default());
    let engine = Jobs::builder()
        .sqlite(&path)
        .app(App { db: db.clone() })
        .start()
        .await?;
    let client = engine.client();
    let sync = client.step_job::<SyncUsers>();

    // The database drops the connection when u2 is stored: attempt 1 fails at `sync-u2`, and
    // attempt 2 resumes there. `trigger_and_wait` returns once the run has completed.
    println!("-- sync org_123, waiting for the result");
    db.drop_connection_on("u2");
    let key = "sync-org_123-2026-01-01";
    let input = SyncInput {
        org_id: "org_123".into(),
    };
    let done = sync
        .trigger_and_wait(
            input.clone(),
            TriggerOptions::new().idempotency_key(key),
            Duration::from_secs(10),
        )
        .await?;
    println!("run {} ({}): {:?}", done.id, done.disposition, done.output);

    // The same idempotency key returns the existing run: nothing runs again.
    println!("-- the same sync again, with the same idempotency key");
    let again = sync
        .trigger(input, TriggerOptions::new().idempotency_key(key))
        .await?;
    println!(
        "run {} ({}), status {}",
        again.run.id, again.disposition, again.run.status
    );

    // `trigger` returns at once with a pending run; the worker picks it up.
    println!("-- sync org_456 in the background");
    let pending = sync
        .trigger(
            SyncInput {
                org_id: "org_456".into(),
            },
            TriggerOptions::new(),
        )
        .await?;
    println!("run {} is {}", pending.run.id, pending.run.status);
    sync.wait_for_run(&pending.run.id, Some(Duration::from_secs(10)))
        .await?;

    println!("-- every run of sync-users, newest first");
    for run in sync.get_runs(RunFilter::new()).await? {
        println!(
            "run {} {} for {}: {}, attempt {}, {} steps, output {:?}, last error {:?}",
            run.id,
            run.idempotency_key.as_deref().unwrap_or("(no key)"),
            run.input.org_id,
            run.status,
            run.attempt,
            run.completed_step_count,
            run.output,
            run.error
        );
    }

    drop(sync);
    drop(client);
    engine.shutdown().await?;
    std::fs::remove_dir_all(&dir)?;
    println!("done");
    Ok(())
}
