use durable_jobs::prelude::*;
use durable_jobs::steps::StepError;

#[derive(Debug, thiserror::Error)]
#[error("the directory refused")]
pub struct DirectoryError;

async fn list_users(_org_id: &str) -> Result<Vec<String>, DirectoryError> {
    Ok(Vec::new())
}

#[durable_jobs::step_job]
async fn sync_users(step: &mut StepContext, org_id: String) -> Result<usize, StepError> {
    // The closure's future resolves to the service's own `Result`: a step's closure returns
    // `Result<_, BoxError>`, so the call goes inside `Ok(..)` with `?`.
    let users = step.run("list-users", |_| list_users(&org_id)).await?;
    Ok(users.len())
}

fn main() {}
