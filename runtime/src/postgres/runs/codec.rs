//! Between run rows and records: the columns of a run, labels, and reading them back.

use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

use crate::postgres::codec::{database_error, to_u32, to_u64, Context, DbTime};
use crate::store::runs::{Labels, RunRecord, RunStatus};
use crate::store::StoreError;
use crate::time::Timestamp;

/// The columns [`run_from_row`] reads, in order, of a run aliased `r`. Counts of an active run
/// are computed from its step rows (they are only written to the run row when an execution
/// ends).
macro_rules! run_columns {
    () => {
        r#"r.id, r.job_name, r.input, r.status, r.idempotency_key, r.concurrency_key,
    CASE WHEN r.status IN ('pending', 'leased')
        THEN (SELECT COALESCE(MAX(s."index") + 1, 0) FROM {s}.run_steps s WHERE s.run_id = r.id AND s.status = 'completed')
        ELSE r.current_step_index END,
    CASE WHEN r.status IN ('pending', 'leased')
        THEN (SELECT COUNT(*) FROM {s}.run_steps s WHERE s.run_id = r.id AND s.status = 'completed')
        ELSE r.completed_step_count END,
    r.progress, r.output, r.error, r.labels, r.lease_owner, r.lease_expires_at, r.lease_generation,
    r.attempt, r.not_before, r.started_at, r.completed_at, r.created_at, r.updated_at"#
    };
}
pub(crate) use run_columns;

/// A run row selected with [`run_columns!`].
pub(crate) fn run_from_row(row: &PgRow) -> Result<RunRecord, StoreError> {
    let read = || -> Result<_, sqlx::Error> {
        let time = |i: usize| -> Result<Option<Timestamp>, sqlx::Error> {
            Ok(row.try_get::<Option<DbTime>, _>(i)?.map(|t| t.0))
        };
        Ok((
            RunRecord {
                id: row.try_get(0)?,
                job_name: row.try_get(1)?,
                input: row.try_get(2)?,
                status: RunStatus::Pending,
                idempotency_key: row.try_get(4)?,
                concurrency_key: row.try_get(5)?,
                current_step_index: to_u64(row.try_get(6)?),
                completed_step_count: to_u64(row.try_get(7)?),
                progress: row
                    .try_get::<Option<String>, _>(8)?
                    .filter(|p| !p.is_empty()),
                output: row
                    .try_get::<Option<String>, _>(9)?
                    .filter(|o| !o.is_empty()),
                error: row.try_get(10)?,
                labels: Labels::new(),
                lease_owner: row.try_get(12)?,
                lease_expires_at: time(13)?,
                lease_generation: to_u64(row.try_get(14)?),
                attempt: to_u32(row.try_get(15)?).max(1),
                not_before: time(16)?,
                started_at: time(17)?,
                completed_at: time(18)?,
                created_at: row.try_get::<DbTime, _>(19)?.0,
                updated_at: row.try_get::<DbTime, _>(20)?.0,
            },
            row.try_get::<String, _>(3)?,
            row.try_get::<String, _>(11)?,
        ))
    };
    let (mut run, status, labels) = read().context("reading a run")?;
    run.status = status.parse().map_err(database_error)?;
    run.labels = parse_labels(&run.id, &labels)?;
    Ok(run)
}

/// The labels of run `id`, stored as a JSON object.
pub(crate) fn parse_labels(id: &str, labels: &str) -> Result<Labels, StoreError> {
    if labels.is_empty() || labels == "{}" {
        return Ok(Labels::new());
    }
    serde_json::from_str(labels)
        .map_err(|e| database_error(format!("labels of run {id} do not decode: {e}")))
}

/// The labels as the JSON object stored with the run.
pub(crate) fn labels_json(labels: &Labels) -> String {
    if labels.is_empty() {
        return "{}".to_owned();
    }
    serde_json::to_string(labels).unwrap_or_else(|_| "{}".to_owned())
}

/// The runs `query` selects with [`run_columns!`].
pub(crate) async fn fetch_runs(
    conn: &mut PgConnection,
    query: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
) -> Result<Vec<RunRecord>, StoreError> {
    let rows = query.fetch_all(conn).await.context("reading runs")?;
    rows.iter().map(run_from_row).collect()
}
