use durable_jobs::prelude::*;

// `migrate` names the function that upgrades a stored state: `migrate = migrate_heartbeat`.
#[durable_jobs::continuous(every = "30m", state_version = 2, migrate = 3)]
async fn heartbeat(_ctx: &mut ContinuousContext<u32>) -> Result<(), std::io::Error> {
    Ok(())
}

fn main() {}
