use durable_jobs::prelude::*;

// A continuous job receives a `ContinuousContext`; `FlushContext` belongs to debounce jobs.
#[durable_jobs::continuous(every = "1m")]
async fn heartbeat(ctx: &mut FlushContext<u32>) -> Result<(), std::io::Error> {
    let _ = ctx.state();
    Ok(())
}

fn main() {}
