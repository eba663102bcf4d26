//! A step's closure fails with the service's own error type, which the job gets back as the
//! source of `StepError::Failed`.

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
    // A function returning its own error type, passed as it is.
    let users = step.run("list-users", |_| list_users(&org_id)).await?;
    // A closure returning its own error type.
    let count = step
        .run("count-users", |_| async {
            if users.is_empty() {
                return Err(DirectoryError("empty directory".into()));
            }
            Ok(users.len())
        })
        .await?;
    // `std::io::Error` and `String` convert into a boxed error too.
    step.run("io", |_| async { Ok::<_, std::io::Error>(()) }).await?;
    step.run("text", |_| async { Ok::<_, String>(()) }).await?;
    Ok(count)
}

durable_jobs::registry! {
    /// The job of this case.
    pub Jobs { SyncUsers }
}

fn main() {
    let _ = Jobs::builder();
}
