use durable_jobs::prelude::*;

// The attribute names the job type after the function, in PascalCase: `Heartbeat` here would
// clash with the function itself.
#[durable_jobs::continuous(every = "1m")]
#[allow(non_snake_case)]
async fn Heartbeat(_ctx: &mut ContinuousContext<u32>) -> Result<(), std::io::Error> {
    Ok(())
}

fn main() {}
