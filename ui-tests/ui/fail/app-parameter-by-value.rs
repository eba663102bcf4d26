use durable_jobs::prelude::*;

pub struct App;

// Handlers share the app: it is taken by reference, `app: &App`.
#[durable_jobs::continuous(every = "1m")]
async fn heartbeat(_ctx: &mut ContinuousContext<u32>, app: App) -> Result<(), std::io::Error> {
    let _ = app;
    Ok(())
}

fn main() {}
