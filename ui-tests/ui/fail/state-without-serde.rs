use durable_jobs::prelude::*;

// Two mistakes, two errors: the state is kept between runs as JSON, and its type derives
// neither `Serialize` nor `Deserialize`.

/// The state.
#[derive(Default)]
pub struct Tokens {
    pub refresh_token: String,
}

#[durable_jobs::continuous(every = "30m")]
async fn token_refresher(ctx: &mut ContinuousContext<Tokens>) -> Result<(), std::io::Error> {
    let _ = &ctx.state().refresh_token;
    Ok(())
}

fn main() {}
