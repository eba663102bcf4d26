use durable_jobs::prelude::*;

// Instance keys display as `kind:name:id`: with `:` in the name, job `billing` with id `sync:1`
// and job `billing:sync` with id `1` would both read `step:billing:sync:1`.
#[durable_jobs::step_job(name = "billing:sync")]
async fn sync_billing(_step: &mut StepContext, input: u32) -> Result<u32, std::io::Error> {
    Ok(input)
}

fn main() {}
