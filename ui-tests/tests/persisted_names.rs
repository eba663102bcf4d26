//! Pins the persisted names the macros derive. The store keys instances by these strings:
//! if a change to the macros or a rename of a Rust item changes one, stored instances are
//! orphaned. A failure here means exactly that; give the job `name = "<old name>"` instead of
//! updating the expected value.

use std::str::FromStr;

use durable_jobs::prelude::*;
use durable_jobs::{Error, Job, JobKind};
use serde::{Deserialize, Serialize};

/// The application state.
pub struct App;

/// State of the continuous job.
#[derive(Serialize, Deserialize, Debug, Default)]
pub struct Tokens {
    /// The refresh token.
    pub refresh_token: String,
}

/// Keeps OAuth tokens fresh.
#[durable_jobs::continuous(every = "30m", retry(max_attempts = 5, backoff = exponential("1s", max = "30s")))]
async fn token_refresher(
    ctx: &mut ContinuousContext<Tokens>,
    _app: &App,
) -> Result<(), std::io::Error> {
    if ctx.state().refresh_token.is_empty() {
        return ctx.terminate("no refresh token");
    }
    Ok(())
}

#[durable_jobs::continuous(
    cron = "0 4 * * *",
    tz = "Europe/Paris",
    start_immediately = false,
    name = "nightly-report"
)]
async fn nightly(_ctx: &mut ContinuousContext<u64>) -> Result<(), std::io::Error> {
    Ok(())
}

/// A debounce job.
pub struct WebhookBatcher;

#[durable_jobs::debounce(flush_after = "5s", quiet = "1s", max_events = 100)]
impl DebounceJob<App> for WebhookBatcher {
    type Event = String;
    type State = Vec<String>;
    type Error = std::io::Error;

    fn on_event(
        &self,
        state: Option<Vec<String>>,
        event: String,
        _ctx: &EventContext,
    ) -> Vec<String> {
        let mut batch = state.unwrap_or_default();
        batch.push(event);
        batch
    }

    async fn execute(
        &self,
        _ctx: &mut FlushContext<Vec<String>>,
        _app: &App,
    ) -> Result<(), std::io::Error> {
        Ok(())
    }
}

/// A task job whose name has an acronym.
pub struct HTTPPoller;

#[durable_jobs::task]
impl TaskJob for HTTPPoller {
    type State = u32;
    type Event = u32;
    type Error = std::io::Error;

    async fn on_event(&self, ctx: &mut TaskContext<u32>, event: u32) -> Result<(), std::io::Error> {
        ctx.set_state(event);
        Ok(())
    }

    async fn execute(&self, _ctx: &mut TaskContext<u32>) -> Result<(), std::io::Error> {
        Ok(())
    }
}

/// Input of the step job.
#[derive(Serialize, Deserialize)]
pub struct SyncInput {
    /// The organisation.
    pub org_id: String,
}

#[durable_jobs::step_job(name = "sync-users", retry(max_attempts = 3))]
async fn sync_users(
    _step: &mut StepContext,
    input: SyncInput,
    _app: &App,
) -> Result<usize, std::io::Error> {
    Ok(input.org_id.len())
}

durable_jobs::registry! {
    /// Every job of this test.
    pub Jobs<App> { TokenRefresher, Nightly, WebhookBatcher, HTTPPoller, SyncUsers }
}

#[test]
fn derived_and_explicit_names_are_pinned() {
    assert_eq!(<TokenRefresher as Job>::NAME, "token_refresher");
    assert_eq!(<Nightly as Job>::NAME, "nightly-report");
    assert_eq!(<WebhookBatcher as Job>::NAME, "webhook_batcher");
    assert_eq!(<HTTPPoller as Job>::NAME, "http_poller");
    assert_eq!(<SyncUsers as Job>::NAME, "sync-users");
}

#[test]
fn kinds_follow_the_attribute() {
    assert_eq!(<TokenRefresher as Job>::KIND, JobKind::Continuous);
    assert_eq!(<WebhookBatcher as Job>::KIND, JobKind::Debounce);
    assert_eq!(<HTTPPoller as Job>::KIND, JobKind::Task);
    assert_eq!(<SyncUsers as Job>::KIND, JobKind::Step);
}

#[test]
fn the_name_enum_round_trips() {
    let names: Vec<&str> = JobsName::ALL.iter().map(|n| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "token_refresher",
            "nightly-report",
            "webhook_batcher",
            "http_poller",
            "sync-users"
        ]
    );
    for job in JobsName::ALL {
        assert_eq!(JobsName::from_str(job.as_str()).unwrap(), job);
        assert_eq!(job.to_string(), job.as_str());
    }
    assert_eq!(JobsName::HTTPPoller.kind(), JobKind::Task);
    match JobsName::from_str("tokenRefresher") {
        Err(Error::JobNotFound { name }) => assert_eq!(name, "tokenRefresher"),
        other => panic!("expected JobNotFound, got {other:?}"),
    }
}

#[test]
fn attribute_arguments_become_the_config() {
    let config = TokenRefresher.config();
    let debug = format!("{config:?}");
    assert!(debug.contains("Every(1800s)"), "{debug}");
    assert!(debug.contains("max_attempts: 5"), "{debug}");
    let nightly = format!("{:?}", <Nightly as ContinuousJob<App>>::config(&Nightly));
    assert!(
        nightly.contains("0 4 * * *") && nightly.contains("Europe/Paris"),
        "{nightly}"
    );
    assert!(nightly.contains("start_immediately: false"), "{nightly}");
    let batcher = format!("{:?}", WebhookBatcher.config());
    assert!(
        batcher.contains("flush_after: 5s") && batcher.contains("quiet: Some(1s)"),
        "{batcher}"
    );
    assert!(batcher.contains("max_events: Some(100)"), "{batcher}");
}
