use durable_jobs::prelude::*;

#[durable_jobs::continuous(cron = "0 25 * * *")]
async fn nightly(_ctx: &mut ContinuousContext<u32>) -> Result<(), std::io::Error> {
    Ok(())
}

fn main() {}
