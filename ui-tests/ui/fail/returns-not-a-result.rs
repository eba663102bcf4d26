use durable_jobs::prelude::*;

// A job function says whether it failed: it returns `Result<(), Error>`.
#[durable_jobs::continuous(every = "1m")]
async fn heartbeat(ctx: &mut ContinuousContext<u32>) -> u32 {
    *ctx.state()
}

fn main() {}
