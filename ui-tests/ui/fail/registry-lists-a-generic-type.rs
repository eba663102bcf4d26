pub struct Poller<T>(std::marker::PhantomData<T>);

// Each job has one persisted name, so a job type has no type arguments.
durable_jobs::registry! {
    Jobs { Poller<u32> }
}

fn main() {}
