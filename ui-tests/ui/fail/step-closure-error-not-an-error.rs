use durable_jobs::prelude::*;
use durable_jobs::steps::StepError;

#[durable_jobs::step_job]
async fn import(step: &mut StepContext, input: u32) -> Result<u32, StepError> {
    // A step fails with an error type; a bare `u32` is none.
    let doubled = step
        .run("double", |_| async move {
            if input > 100 {
                return Err(input);
            }
            Ok(input * 2)
        })
        .await?;
    Ok(doubled)
}

fn main() {}
