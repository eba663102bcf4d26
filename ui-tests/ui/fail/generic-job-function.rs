use durable_jobs::prelude::*;

// A job is one type with one persisted name; a generic function would be many.
#[durable_jobs::step_job]
async fn import<T: serde::Serialize>(_step: &mut StepContext, input: u32) -> Result<u32, std::io::Error> {
    Ok(input)
}

fn main() {}
