//! Continuous jobs: a token refresher that keeps a user's OAuth tokens fresh every second, with
//! a retry policy, and a nightly report on a cron schedule that does not run at `start`.
//!
//! Shows `start` (running at once, or only scheduled), a run that ends its own instance with
//! `ctx.terminate`, a failed run retried by the policy, a policy that gives up and calls
//! `on_retry_exhausted`, and `status`, `get_state`, `trigger` and `terminate` through the typed
//! client. Runs on an embedded SQLite file for about two seconds and exits.
//!
//! ```sh
//! cargo run -p durable-jobs-examples --example continuous
//! ```

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use durable_jobs::prelude::*;
use durable_jobs::{Error, RetryExhausted};
use serde::{Deserialize, Serialize};

/// What every handler receives: here only the identity provider.
pub struct App {
    idp: Arc<IdentityProvider>,
}

/// A fake OAuth identity provider standing in for a real one.
#[derive(Default)]
pub struct IdentityProvider {
    issued: AtomicU64,
    outages: AtomicU32,
}

impl IdentityProvider {
    /// Trades a refresh token for a new access token.
    async fn refresh(&self, refresh_token: &str) -> Result<String, RefreshError> {
        if refresh_token == "rt_revoked" {
            return Err(RefreshError::Revoked);
        }
        let down = self
            .outages
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok();
        if down {
            return Err(RefreshError::Unavailable);
        }
        let n = self.issued.fetch_add(1, Ordering::Relaxed) + 1;
        Ok(format!("at_{n}"))
    }

    /// Makes the next `n` refreshes fail, as during a short outage.
    fn outage(&self, n: u32) {
        self.outages.store(n, Ordering::Relaxed);
    }
}

/// Why the identity provider refused a refresh.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// A transient failure.
    #[error("the identity provider is unavailable")]
    Unavailable,
    /// The user revoked access.
    #[error("the refresh token was revoked")]
    Revoked,
}

/// A user's OAuth tokens: the job's persisted state.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Tokens {
    /// Short-lived; replaced by every run.
    pub access_token: String,
    /// Long-lived; empty when the user never granted offline access.
    pub refresh_token: String,
}

/// Refreshes a user's access token every second. A failed refresh is retried twice, 100 ms and
/// then 200 ms later; when the third attempt fails too, `token_revoked` runs and the instance is
/// deleted.
#[durable_jobs::continuous(
    every = "1s",
    retry(max_attempts = 3, backoff = exponential("100ms"), jitter = false),
    on_retry_exhausted = token_revoked
)]
pub async fn token_refresher(
    ctx: &mut ContinuousContext<Tokens>,
    app: &App,
) -> Result<(), RefreshError> {
    if ctx.state().refresh_token.is_empty() {
        println!("[token_refresher] {}: no refresh token, ending", ctx.id());
        return ctx.terminate("no refresh token");
    }
    let attempt = ctx.attempt();
    let access_token = match app.idp.refresh(&ctx.state().refresh_token).await {
        Ok(token) => token,
        Err(e) => {
            println!(
                "[token_refresher] {}: run {} attempt {attempt} failed: {e}",
                ctx.id(),
                ctx.run_count()
            );
            return Err(e);
        }
    };
    println!(
        "[token_refresher] {}: run {} attempt {attempt} -> {access_token}",
        ctx.id(),
        ctx.run_count()
    );
    // Kept only because this run returns `Ok`: a failed run changes no state.
    ctx.update_state(|t| t.access_token = access_token);
    Ok(())
}

/// Called once when the retry policy gives up, just before the instance is deleted: where a
/// real service would ask the user to sign in again.
async fn token_revoked(exhausted: RetryExhausted<Tokens>, _app: &App) {
    println!(
        "[token_refresher] {}: gave up after {} attempts ({}): {}",
        exhausted.instance.id(),
        exhausted.attempts,
        exhausted.reason.as_str(),
        exhausted.last_error
    );
}

/// Counts a report every night at 04:00, Paris time.
#[durable_jobs::continuous(cron = "0 4 * * *", tz = "Europe/Paris", start_immediately = false)]
pub async fn nightly_report(ctx: &mut ContinuousContext<u64>) -> Result<(), std::io::Error> {
    *ctx.state_mut() += 1;
    println!("[nightly_report] report #{}", ctx.state());
    Ok(())
}

durable_jobs::registry! {
    /// The jobs of this example.
    pub Jobs<App> { TokenRefresher, NightlyReport }
}

/// How far `at` is from now, for printing.
fn from_now(at: Option<Timestamp>) -> String {
    match at {
        Some(at) => {
            let ms = at.as_millis() - Timestamp::now_system().as_millis();
            if ms >= 60_000 {
                let minutes = ms / 60_000;
                format!("in {}h{:02}m ({at})", minutes / 60, minutes % 60)
            } else {
                format!("in {:.1}s ({at})", ms as f64 / 1000.0)
            }
        }
        None => "never".to_owned(),
    }
}

fn tokens(refresh_token: &str) -> Tokens {
    Tokens {
        access_token: String::new(),
        refresh_token: refresh_token.into(),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("durable-jobs-continuous-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("jobs.db");
    println!("database: {}", path.display());

    let idp = Arc::new(IdentityProvider::default());
    let engine = Jobs::builder()
        .sqlite(&path)
        .app(App { idp: idp.clone() })
        .start()
        .await?;
    let client = engine.client();
    let refresher = client.continuous::<TokenRefresher>();

    // `start` runs the first refresh before it returns, then the cadence takes over.
    let started = refresher.start("user-123", tokens("rt_abc")).await?;
    println!(
        "start user-123: created {}, {:?}, next run {}",
        started.created,
        started.status,
        from_now(started.next_run_at)
    );
    // A second `start` of the same id changes nothing.
    let again = refresher.start("user-123", tokens("rt_other")).await?;
    println!("start user-123 again: created {}", again.created);

    // A run may end its own instance.
    let ended = refresher.start("user-456", tokens("")).await?;
    println!("start user-456: {:?}", ended.status);

    // A cron job with `start_immediately = false` only schedules its first run.
    let report = client
        .continuous::<NightlyReport>()
        .start("acme", 0)
        .await?;
    println!(
        "start nightly_report/acme: {:?}, first run {}",
        report.status,
        from_now(report.next_run_at)
    );

    // `trigger` runs a refresh now. The provider is down for one call: the run fails and the
    // retry policy schedules attempt 2, which succeeds 100 ms later.
    println!("-- the provider is down for one call; trigger user-123");
    idp.outage(1);
    let triggered = refresher.trigger("user-123").await?;
    println!("trigger: retry scheduled {}", triggered.retry_scheduled);
    let status = refresher.status("user-123").await?;
    println!(
        "status: {:?}, attempt {}, next {}",
        status.status,
        status.attempt,
        from_now(status.next_run_at)
    );
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A revoked token fails every attempt: the policy gives up and the instance is gone.
    println!("-- user-789's token was revoked");
    let revoked = refresher.start("user-789", tokens("rt_revoked")).await?;
    println!("start user-789: {:?}", revoked.status);
    tokio::time::sleep(Duration::from_millis(500)).await;
    println!(
        "user-789 after the retries: {:?}",
        refresher.status("user-789").await?.status
    );

    // Let the cadence run user-123 once more.
    tokio::time::sleep(Duration::from_millis(900)).await;
    let status = refresher.status("user-123").await?;
    println!(
        "user-123: {:?}, {} runs, next {}",
        status.status,
        status.run_count,
        from_now(status.next_run_at)
    );
    println!(
        "user-123 tokens: {:?}",
        refresher.get_state("user-123").await?
    );

    let terminated = refresher
        .terminate("user-123", Some("user deleted"))
        .await?;
    println!(
        "terminated {} ({:?})",
        terminated.instance, terminated.reason
    );
    println!(
        "user-123 now: {:?}, state {:?}",
        refresher.status("user-123").await?.status,
        refresher.get_state("user-123").await?
    );
    // Queries answer `NotFound`/`None`; commands on a missing instance are an error.
    match refresher.trigger("user-123").await {
        Err(Error::InstanceNotFound {
            instance,
            operation,
        }) => println!("{operation} {instance}: instance not found"),
        other => println!("unexpected: {other:?}"),
    }

    client
        .continuous::<NightlyReport>()
        .terminate("acme", None)
        .await?;
    drop(client);
    engine.shutdown().await?;
    std::fs::remove_dir_all(&dir)?;
    println!("done");
    Ok(())
}
