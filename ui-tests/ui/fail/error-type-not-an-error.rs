use durable_jobs::prelude::*;

// The error must convert into `Box<dyn Error + Send + Sync>`; a bare `u32` does not.
#[durable_jobs::step_job]
async fn import(_step: &mut StepContext, input: u32) -> Result<u32, u32> {
    Err(input)
}

fn main() {}
