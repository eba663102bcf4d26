use durable_jobs::prelude::*;

#[durable_jobs::continuous(start_immediately = false)]
async fn heartbeat(_ctx: &mut ContinuousContext<u32>) -> Result<(), std::io::Error> {
    Ok(())
}

fn main() {}
