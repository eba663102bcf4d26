use durable_jobs::prelude::*;

// A step job receives a `StepContext`.
#[durable_jobs::step_job]
async fn import(step: &mut ContinuousContext<u32>, input: u32) -> Result<u32, std::io::Error> {
    let _ = step.state();
    Ok(input)
}

fn main() {}
