//! Tries to start an engine on a database file from a process of its own, for the tests of the
//! file lock: `open_db <db>` prints `opened` (then shuts the engine down) or `refused <error>`,
//! with the error's variant and message, and exits with 0 either way.

use durable_jobs::{Engine, Error};
use durable_jobs_tests::{Probe, TestJobs};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let Some(db) = std::env::args().nth(1) else {
        eprintln!("usage: open_db <db>");
        std::process::exit(2);
    };
    let started = Engine::<TestJobs>::builder()
        .sqlite(db)
        .app(Probe::default())
        .start()
        .await;
    match started {
        Ok(engine) => {
            println!("opened");
            engine.shutdown().await.expect("the engine shuts down");
        }
        Err(e @ Error::Storage { .. }) => println!("refused Storage: {e}"),
        Err(e) => println!("refused {e:?}"),
    }
}
