use std::rc::Rc;

use durable_jobs::prelude::*;

async fn refresh() {}

// Jobs run on a multi-threaded runtime: an `Rc` held across an `.await` makes the future `!Send`.
#[durable_jobs::continuous(every = "1m")]
async fn heartbeat(ctx: &mut ContinuousContext<u32>) -> Result<(), std::io::Error> {
    let shared = Rc::new(*ctx.state());
    refresh().await;
    ctx.set_state(*shared + 1);
    Ok(())
}

fn main() {}
