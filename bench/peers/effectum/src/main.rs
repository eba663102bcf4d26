//! Peer benchmark: the `effectum` 0.7 job queue (Rust, rusqlite, WAL), burn-down shape.
//!
//! Usage: `effectum-peer-bench JOBS CONCURRENCY`
//!
//! Enqueues JOBS no-op jobs in batches of 1,000, then starts one worker with CONCURRENCY slots
//! and waits until every job finished. Prints one JSON line.
use std::time::{Duration, Instant};

use effectum::{Job, JobRegistry, JobRunner, Queue, RunningJob};

async fn noop(_job: RunningJob, _ctx: ()) -> Result<(), String> {
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let jobs: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(50_000);
    let concurrency: u16 = args.next().and_then(|s| s.parse().ok()).unwrap_or(20);
    let dir = std::env::temp_dir().join(format!("effectum-peer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create the scratch folder");
    let queue = Queue::new(&dir.join("bench.db")).await.expect("open the queue");

    let t0 = Instant::now();
    let mut i = 0;
    while i < jobs {
        let end = (i + 1000).min(jobs);
        let batch = (i..end).map(|_| Job::builder("noop").build()).collect();
        queue.add_jobs(batch).await.expect("enqueue");
        i = end;
    }
    let enqueue = t0.elapsed().as_secs_f64();

    let registry = JobRegistry::new(&[JobRunner::builder("noop", noop).build()]);
    let t1 = Instant::now();
    let worker = effectum::Worker::builder(&queue, ())
        .registry(&registry)
        .min_concurrency(concurrency)
        .max_concurrency(concurrency)
        .build()
        .await
        .expect("start the worker");
    while (worker.counts().finished as usize) < jobs {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let drain = t1.elapsed().as_secs_f64();
    println!(
        "{{\"peer\":\"effectum-0.7\",\"workload\":\"burndown\",\"jobs\":{jobs},\"concurrency\":{concurrency},\"enqueue_per_s\":{:.1},\"drain_per_s\":{:.1}}}",
        jobs as f64 / enqueue,
        jobs as f64 / drain
    );
    let _ = std::fs::remove_dir_all(&dir);
    // The worker and queue tasks would keep the runtime alive; the figures are printed.
    std::process::exit(0);
}
