//! A step calls code that fails with the service's own error type: `?` converts it into the
//! step's `BoxError`, and the job gets it back as the source of `StepError::Failed`. Closures
//! that only return `Ok(..)` need no type annotation.

use durable_jobs::prelude::*;
use durable_jobs::steps::StepError;

#[derive(Debug, thiserror::Error)]
#[error("the directory refused: {0}")]
pub struct DirectoryError(String);

async fn list_users(org_id: &str) -> Result<Vec<String>, DirectoryError> {
    if org_id.is_empty() {
        return Err(DirectoryError("no organisation".into()));
    }
    Ok(vec![format!("{org_id}-admin")])
}

#[durable_jobs::step_job]
async fn sync_users(step: &mut StepContext, org_id: String) -> Result<usize, StepError> {
    // A function returning its own error type, called inside `Ok(..)` with `?`.
    let users = step
        .run("list-users", |_| async { Ok(list_users(&org_id).await?) })
        .await?;
    // A closure failing with its own error type, converted with `into`.
    let count = step
        .run("count-users", |_| async {
            if users.is_empty() {
                return Err(DirectoryError("empty directory".into()).into());
            }
            Ok(users.len())
        })
        .await;
    // The job reads the service's error back.
    let count = match count {
        Err(StepError::Failed { source, .. }) if source.is::<DirectoryError>() => 0,
        other => other?,
    };
    // `std::io::Error` and `String` convert too; a unit output needs no annotation.
    step.run("io", |_| async { Ok(std::fs::metadata(".")?.len()) })
        .await?;
    step.run("text", |_| async { Err(String::from("refused").into()) })
        .await
        .or_else(|_| Ok::<(), StepError>(()))?;
    step.run("unit", |_| async { Ok(()) }).await?;
    Ok(count)
}

durable_jobs::registry! {
    /// The job of this case.
    pub Jobs { SyncUsers }
}

fn main() {
    let _ = Jobs::builder();
}
