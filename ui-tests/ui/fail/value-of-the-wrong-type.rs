use durable_jobs::prelude::*;

// Durations are strings with a unit: `every = "30s"`.
#[durable_jobs::continuous(every = 30)]
async fn heartbeat(_ctx: &mut ContinuousContext<u32>) -> Result<(), std::io::Error> {
    Ok(())
}

fn main() {}
