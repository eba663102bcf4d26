//! Task jobs: an order processor, a state machine driven by events that schedules its own work.
//! An order is placed, then paid; once paid it is shipped half a second later.
//!
//! Shows `send` and the state machine's transitions, `schedule_in` and the `execute` it
//! schedules, `on_idle` when nothing is scheduled, `on_error` rescuing a declined payment (and
//! passing an invalid event back to the caller), `trigger`, `terminate` and `status`. Runs on an
//! embedded SQLite file for about a second and exits.
//!
//! ```sh
//! cargo run -p durable-jobs-examples --example task
//! ```

use std::time::Duration;

use durable_jobs::prelude::*;
use durable_jobs::Error;
use serde::{Deserialize, Serialize};

/// What every handler receives: here a fake payment gateway's limit.
pub struct App {
    /// The gateway declines payments above this amount.
    card_limit: u64,
}

/// Where an order is.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
pub enum Stage {
    /// Waiting for payment.
    Placed,
    /// Paid, shipping scheduled.
    Paid,
    /// The payment was declined; waiting for another one.
    PaymentDeclined,
    /// Left the warehouse.
    Shipped,
}

/// An order: the job's persisted state.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Order {
    /// Total, in cents.
    pub amount: u64,
    /// Where it is.
    pub stage: Stage,
}

/// What happens to an order.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub enum OrderEvent {
    /// The customer ordered.
    Placed {
        /// Total, in cents.
        amount: u64,
    },
    /// The customer paid.
    Paid,
}

/// Why an order handler failed.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    /// The payment gateway declined the payment.
    #[error("payment of {0} declined")]
    Declined(u64),
    /// An event that makes no sense at this stage.
    #[error("cannot accept {event} while the order is {stage:?}")]
    Unexpected {
        /// The event's name.
        event: &'static str,
        /// The order's stage, if it exists.
        stage: Option<Stage>,
    },
}

/// Drives one order from placed to shipped.
pub struct OrderProcessor;

#[durable_jobs::task]
impl TaskJob<App> for OrderProcessor {
    type State = Order;
    type Event = OrderEvent;
    type Error = OrderError;

    async fn on_event(
        &self,
        ctx: &mut TaskContext<Order>,
        event: OrderEvent,
        app: &App,
    ) -> Result<(), OrderError> {
        let stage = ctx.state().map(|o| o.stage);
        match (event, stage) {
            (OrderEvent::Placed { amount }, None) => {
                println!("[order_processor] {}: placed for {amount}", ctx.id());
                ctx.set_state(Order {
                    amount,
                    stage: Stage::Placed,
                });
            }
            (OrderEvent::Paid, Some(Stage::Placed | Stage::PaymentDeclined)) => {
                // Marked before charging: if the charge fails, `on_error` sees this change.
                ctx.update_state(|o| o.stage = Stage::Paid);
                let amount = ctx.state().map_or(0, |o| o.amount);
                if amount > app.card_limit {
                    return Err(OrderError::Declined(amount));
                }
                println!(
                    "[order_processor] {}: paid {amount}, shipping in 500 ms",
                    ctx.id()
                );
                ctx.schedule_in(Duration::from_millis(500));
            }
            (OrderEvent::Placed { .. }, stage) => {
                return Err(OrderError::Unexpected {
                    event: "Placed",
                    stage,
                })
            }
            (OrderEvent::Paid, stage) => {
                return Err(OrderError::Unexpected {
                    event: "Paid",
                    stage,
                })
            }
        }
        Ok(())
    }

    async fn execute(&self, ctx: &mut TaskContext<Order>, _app: &App) -> Result<(), OrderError> {
        if ctx.state().map(|o| o.stage) == Some(Stage::Paid) {
            ctx.update_state(|o| o.stage = Stage::Shipped);
            // A `trigger` leaves a pending schedule in place; shipping twice would be wrong.
            ctx.cancel_schedule();
            println!(
                "[order_processor] {}: shipped (execution #{})",
                ctx.id(),
                ctx.execute_count()
            );
        }
        Ok(())
    }

    async fn on_idle(&self, ctx: &mut TaskContext<Order>, reason: IdleReason, _app: &App) {
        let stage = ctx.state().map(|o| o.stage);
        println!(
            "[order_processor] {}: idle after {reason:?}, {stage:?}",
            ctx.id()
        );
    }

    async fn on_error(
        &self,
        ctx: &mut TaskContext<Order>,
        error: OrderError,
        source: ErrorSource,
        _app: &App,
    ) -> Result<(), OrderError> {
        if let OrderError::Declined(_) = error {
            // Rescued: a declined payment is a stage of the order, not a failure of the call.
            // The `Paid` stage set before the failure is kept unless changed here.
            println!(
                "[order_processor] {}: {source:?} failed ({error}), waiting for another payment",
                ctx.id()
            );
            ctx.update_state(|o| o.stage = Stage::PaymentDeclined);
            return Ok(());
        }
        // Not rescued: the caller gets the error and nothing of this invocation is kept.
        Err(error)
    }
}

durable_jobs::registry! {
    /// The jobs of this example.
    pub Jobs<App> { OrderProcessor }
}

/// How far `at` is from now, for printing.
fn from_now(at: Option<Timestamp>) -> String {
    match at {
        Some(at) => {
            let ms = at.as_millis() - Timestamp::now_system().as_millis();
            format!("in {ms} ms")
        }
        None => "nothing".to_owned(),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("durable-jobs-task-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("jobs.db");
    println!("database: {}", path.display());

    let engine = Jobs::builder()
        .sqlite(&path)
        .app(App { card_limit: 10_000 })
        .start()
        .await?;
    let client = engine.client();
    let orders = client.task::<OrderProcessor>();

    // placed -> paid -> (500 ms later) shipped
    println!("-- order-1: placed, paid, shipped");
    let sent = orders
        .send("order-1", OrderEvent::Placed { amount: 4_200 })
        .await?;
    println!(
        "sent Placed: created {}, scheduled {}",
        sent.created,
        from_now(sent.scheduled_at)
    );
    let sent = orders.send("order-1", OrderEvent::Paid).await?;
    println!("sent Paid: scheduled {}", from_now(sent.scheduled_at));
    let status = orders.status("order-1").await?;
    println!(
        "status: {:?}, {} events, {} executions",
        status.status, status.event_count, status.execute_count
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    let status = orders.status("order-1").await?;
    println!(
        "status: {:?}, {} events, {} executions; state {:?}",
        status.status,
        status.event_count,
        status.execute_count,
        orders.get_state("order-1").await?
    );

    // A declined payment is rescued by `on_error`: the call succeeds, the state says why.
    println!("-- order-2: a declined payment");
    orders
        .send("order-2", OrderEvent::Placed { amount: 25_000 })
        .await?;
    let sent = orders.send("order-2", OrderEvent::Paid).await?;
    println!(
        "sent Paid: ok, scheduled {}; state {:?}",
        from_now(sent.scheduled_at),
        orders.get_state("order-2").await?
    );

    // An event `on_error` does not rescue reaches the caller, with the job's own error inside.
    println!("-- order-3: paid before it was placed");
    match orders.send("order-3", OrderEvent::Paid).await {
        Err(Error::Execution {
            instance, source, ..
        }) => {
            let cause = source.downcast_ref::<OrderError>();
            println!("send to {instance} failed: {cause:?}");
        }
        other => println!("unexpected: {other:?}"),
    }
    // A first event that fails creates nothing.
    println!(
        "order-3 status: {:?}",
        orders.status("order-3").await?.status
    );

    // `trigger` runs `execute` now instead of waiting for the schedule.
    println!("-- order-4: express shipping with trigger");
    orders
        .send("order-4", OrderEvent::Placed { amount: 990 })
        .await?;
    orders.send("order-4", OrderEvent::Paid).await?;
    let triggered = orders.trigger("order-4").await?;
    println!("triggered: scheduled {}", from_now(triggered.scheduled_at));
    println!(
        "order-4 status: {:?}",
        orders.status("order-4").await?.status
    );

    // `terminate` deletes an instance and any schedule; the id can be used again.
    println!("-- order-2: abandoned");
    let key = orders.terminate("order-2").await?;
    println!("terminated {key}");
    println!(
        "order-2 status: {:?}, state {:?}",
        orders.status("order-2").await?.status,
        orders.get_state("order-2").await?
    );
    match orders.terminate("order-2").await {
        Err(Error::InstanceNotFound { instance, .. }) => {
            println!("terminate {instance} again: instance not found")
        }
        other => println!("unexpected: {other:?}"),
    }

    drop(client);
    engine.shutdown().await?;
    std::fs::remove_dir_all(&dir)?;
    println!("done");
    Ok(())
}
