use durable_jobs::prelude::*;

// `state_version` is the number of the state type's version: `state_version = 2`.
#[durable_jobs::continuous(every = "30m", state_version = "x")]
async fn heartbeat(_ctx: &mut ContinuousContext<u32>) -> Result<(), std::io::Error> {
    Ok(())
}

fn main() {}
