use durable_jobs::prelude::*;

// A step job takes its context and its input (and optionally the app).
#[durable_jobs::step_job]
async fn cleanup(_step: &mut StepContext) -> Result<(), std::io::Error> {
    Ok(())
}

fn main() {}
