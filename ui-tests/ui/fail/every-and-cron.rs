use durable_jobs::prelude::*;

#[durable_jobs::continuous(every = "1d", cron = "0 4 * * *")]
async fn nightly(_ctx: &mut ContinuousContext<u32>) -> Result<(), std::io::Error> {
    Ok(())
}

fn main() {}
