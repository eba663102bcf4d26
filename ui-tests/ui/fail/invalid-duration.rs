use durable_jobs::prelude::*;

#[durable_jobs::continuous(every = "30 minuets")]
async fn heartbeat(_ctx: &mut ContinuousContext<u32>) -> Result<(), std::io::Error> {
    Ok(())
}

fn main() {}
