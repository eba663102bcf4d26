use durable_jobs::prelude::*;

// A time zone changes how a cron expression reads the clock; an interval has none.
#[durable_jobs::continuous(every = "1h", tz = "Europe/Paris")]
async fn heartbeat(_ctx: &mut ContinuousContext<u32>) -> Result<(), std::io::Error> {
    Ok(())
}

fn main() {}
