use durable_jobs::prelude::*;

// Two mistakes, two errors: both are reported from one attribute, in one build.

#[durable_jobs::step_job(retry(max_attempts = 0, backoff = exponentail("1s")))]
async fn import(_step: &mut StepContext, input: u32) -> Result<u32, std::io::Error> {
    Ok(input)
}

fn main() {}
