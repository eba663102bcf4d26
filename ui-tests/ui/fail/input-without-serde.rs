use durable_jobs::prelude::*;

/// A step job's input is stored with its run, but it only derives `Deserialize`.
#[derive(serde::Deserialize)]
pub struct SyncInput {
    pub org_id: String,
}

#[durable_jobs::step_job]
async fn sync_users(_step: &mut StepContext, input: SyncInput) -> Result<usize, std::io::Error> {
    Ok(input.org_id.len())
}

fn main() {}
