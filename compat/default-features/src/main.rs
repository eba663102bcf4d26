//! durable-jobs at its default features, running a step job.

#[path = "../../common.rs"]
mod common;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let doubled = common::run_a_step_job(21).await?;
    assert_eq!(doubled, 42);
    println!("durable-jobs at its default features: ran a step job");
    Ok(())
}
