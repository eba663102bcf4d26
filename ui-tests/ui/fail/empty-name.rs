use durable_jobs::prelude::*;

#[durable_jobs::step_job(name = "")]
async fn import(_step: &mut StepContext, input: u32) -> Result<u32, std::io::Error> {
    Ok(input)
}

fn main() {}
