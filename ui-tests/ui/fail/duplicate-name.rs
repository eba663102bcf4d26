use durable_jobs::prelude::*;

#[durable_jobs::continuous(every = "1h")]
async fn cleanup(_ctx: &mut ContinuousContext<u32>) -> Result<(), std::io::Error> {
    Ok(())
}

// Persisted as "cleanup" too: the store could not tell the two apart.
#[durable_jobs::continuous(every = "1d", name = "cleanup")]
async fn purge(_ctx: &mut ContinuousContext<u32>) -> Result<(), std::io::Error> {
    Ok(())
}

durable_jobs::registry! {
    Jobs { Cleanup, Purge }
}

fn main() {}
