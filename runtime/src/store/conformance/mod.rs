//! What every [`Store`] must do, written against the traits alone, for every backend to run:
//! [`conformance_tests!`] turns each check into a test of the store its argument opens.
//!
//! These are the guarantees the engine builds on whichever process it shares the store with:
//! versioned, all-or-nothing commits; event ids recorded once; an alarm claimed by one owner
//! until its lease lapses; a run claimed by one worker at a time, whose writes are fenced by the
//! generation it claimed; enqueues that honour idempotency and concurrency keys; listings,
//! counts and purges that see exactly the rows they should. [`instances`] checks [`Backend`]
//! (instances, alarms, leases, the outbox, event ids, closing), [`runs`] checks
//! [`RunStore`](super::RunStore) (runs, steps, logs).
//!
//! # Running the suite on a backend
//!
//! One macro call in the driver's tests, with an expression that opens a fresh, empty store:
//!
//! ```text
//! mod conformance {
//!     crate::store::conformance::conformance_tests!({
//!         let database = TestDatabase::create().await; // the guard
//!         let store: Arc<dyn Store> = PgStore::connect(database.url()).await.unwrap();
//!         (database, store)
//!     });
//! }
//! ```
//!
//! The expression is evaluated inside each (async) test, so it may `.await`, and it must give a
//! pair: a guard kept alive until the test ends (a temporary folder, a scratch database; `()`
//! when there is nothing to clean up) and an `Arc<dyn Store>` with no data in it. Each check
//! gets a store of its own. A backend with several modes (SQLite's exclusive and shared
//! ownership) calls the macro once per mode, each in a module of its own.
//!
//! Every check calls the trait methods the way the engine does, `RunStore::recover` and
//! `Backend::recover` included: the engine calls those on exclusive stores only, but what they
//! do is the same on any store. A backend's own details (its SQL, its files, its locks and how
//! it groups commits) are tested beside it.

pub(crate) mod instances;
pub(crate) mod runs;

use std::time::Duration;

use crate::id::{InstanceKey, JobKind};
use crate::time::Timestamp;

/// The start of every check's clock: a recent date, so stored times look like real ones.
const T0: Timestamp = Timestamp::from_millis(1_767_225_600_000);

/// `seconds` after [`T0`].
fn at(seconds: u64) -> Timestamp {
    T0 + Duration::from_secs(seconds)
}

/// The instance `id` of the task job `job`: the key every instance check uses unless it needs
/// another kind or job.
pub(crate) fn key(id: &str) -> InstanceKey {
    InstanceKey::new(JobKind::Task, "job", id)
}

/// One test per check of [`instances`] and [`runs`], each on a store that `$open` opens: an
/// expression, evaluated in the test's async body, giving a pair of a guard (kept alive for the
/// test, such as a temporary folder) and an `Arc<dyn Store>` with no data in it.
macro_rules! conformance_tests {
    ($open:expr) => {
        $crate::store::conformance::conformance_tests!(
            @each $open;
            // The instance side: `Backend`.
            instances::every_field_round_trips,
            instances::a_conflict_leaves_nothing_of_the_batch_applied,
            instances::a_duplicate_event_id_is_refused_and_rolls_back_its_batch,
            instances::concurrent_batches_each_get_their_own_outcome,
            instances::event_ids_outlive_their_instance,
            instances::pruning_deletes_old_event_ids_only,
            instances::claiming_an_alarm,
            instances::an_instance_is_claimed_at_the_version_read,
            instances::instance_keys_are_listed_in_pages,
            instances::renewing_leases_moves_their_alarms_but_not_the_version,
            instances::scanning_returns_due_alarms_earliest_first_and_the_next_one,
            instances::scans_merge_the_jobs_asked_for_and_leave_out_other_jobs_and_broken_instances,
            instances::pulling_alarms_moves_only_later_unleased_first_attempts,
            instances::recover_fires_leased_rows_at_once,
            instances::listing_filters_and_pages_in_key_order_without_gaps_or_repeats,
            instances::counts_per_job_with_due_and_next_alarms,
            instances::outbox_rows_are_peeked_oldest_first_and_acknowledged_up_to_a_sequence_number,
            instances::a_closed_store_refuses_everything,
            // The step-job side: `RunStore`.
            runs::enqueue_creates_a_pending_run_with_generation_zero,
            runs::idempotency_key_is_per_job_and_returns_the_original_run,
            runs::one_pending_run_per_job_and_concurrency_key,
            runs::idempotency_wins_over_a_concurrency_conflict,
            runs::batches_are_all_or_nothing_and_see_their_own_runs,
            runs::filters_order_and_paginate,
            runs::keyset_pages_stay_exact_while_runs_are_deleted_and_created,
            runs::claim_leases_fifo_and_keeps_started_at_on_reclaim,
            runs::simultaneous_claims_have_one_winner,
            runs::a_claim_takes_one_run_per_concurrency_key_across_jobs,
            runs::fenced_writes_need_the_claimed_generation,
            runs::step_counts_follow_completed_steps,
            runs::renewal_extends_live_leases_of_the_owner_only,
            runs::failing_with_a_retry_goes_back_to_pending_unless_a_sibling_is_pending,
            runs::next_due_reports_retries_and_foreign_lease_expiries,
            runs::cancel_and_delete_follow_the_status,
            runs::delete_cascades_to_labels_steps_and_logs,
            runs::completion_with_cleanup_deletes_steps_and_logs,
            runs::recover_expires_every_live_lease,
            runs::purge_removes_only_old_terminal_runs,
            runs::counts_runs_per_job_and_status,
            runs::runs_are_listed_newest_first_with_cursors,
            runs::label_listings_page_with_cursors_and_ranges,
        );
    };
    (@each $open:expr; $($side:ident :: $check:ident,)*) => {
        $(
            #[tokio::test]
            async fn $check() {
                let (_guard, store) = $open;
                $crate::store::conformance::$side::$check(store).await;
            }
        )*
    };
}
pub(crate) use conformance_tests;
