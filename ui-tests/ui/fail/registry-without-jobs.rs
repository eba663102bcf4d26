// A registry lists at least one job.
durable_jobs::registry! {
    Jobs {}
}

fn main() {}
