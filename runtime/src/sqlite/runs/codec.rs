//! Between rows and records: errors, ISO timestamps, labels, and the columns of a run.

use rusqlite::{Connection, Row};

use crate::store::runs::{Labels, RunRecord, RunStatus};
use crate::store::StoreError;
use crate::time::Timestamp;

pub(super) fn db(e: rusqlite::Error) -> StoreError {
    StoreError::Database(Box::new(e))
}

pub(super) fn corrupt(what: impl Into<String>) -> StoreError {
    StoreError::Database(what.into().into())
}

/// `YYYY-MM-DDTHH:MM:SS.sssZ`, as JavaScript's `toISOString` writes it.
pub(crate) fn format_ts(t: Timestamp) -> String {
    let ms = t.as_millis();
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    if !(0..=9999).contains(&y) {
        return t.to_rfc3339();
    }
    let (h, rest) = (in_day / 3_600_000, in_day % 3_600_000);
    let (mi, rest) = (rest / 60_000, rest % 60_000);
    let (s, milli) = (rest / 1000, rest % 1000);
    // Written by hand: this runs several times per step on the writer thread.
    let mut b = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, mut v: i64| {
        for i in (0..width).rev() {
            if let Some(digit) = b.get_mut(at + i) {
                *digit = b'0' + (v % 10) as u8;
            }
            v /= 10;
        }
    };
    put(0, 4, y);
    put(5, 2, m);
    put(8, 2, d);
    put(11, 2, h);
    put(14, 2, mi);
    put(17, 2, s);
    put(20, 3, milli);
    String::from_utf8_lossy(&b).into_owned()
}

/// Parses what [`format_ts`] writes, and any other RFC 3339 form.
pub(crate) fn parse_ts(s: &str) -> Result<Timestamp, StoreError> {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| -> Option<i64> {
        b.get(r.clone())?.iter().try_fold(0i64, |acc, c| {
            c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
        })
    };
    let at = |i: usize, c: u8| b.get(i) == Some(&c);
    if b.len() == 24 && at(4, b'-') && at(7, b'-') && at(10, b'T') && at(19, b'.') && at(23, b'Z') {
        if let (Some(y), Some(m), Some(d), Some(h), Some(mi), Some(sec), Some(ms)) = (
            digits(0..4),
            digits(5..7),
            digits(8..10),
            digits(11..13),
            digits(14..16),
            digits(17..19),
            digits(20..23),
        ) {
            if (1..=12).contains(&m) && (1..=31).contains(&d) && h < 24 && mi < 60 && sec < 61 {
                let days = days_from_civil(y, m, d);
                return Ok(Timestamp::from_millis(
                    days * 86_400_000 + ((h * 60 + mi) * 60 + sec) * 1000 + ms,
                ));
            }
        }
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|dt| Timestamp::from_chrono(&dt))
        .map_err(|e| corrupt(format!("stored timestamp {s:?} is invalid: {e}")))
}

// Howard Hinnant's civil calendar algorithms.
pub(super) fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

pub(super) fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

pub(super) fn opt_ts(s: Option<String>) -> Result<Option<Timestamp>, StoreError> {
    s.as_deref().map(parse_ts).transpose()
}

pub(super) fn labels_json(labels: &Labels) -> String {
    if labels.is_empty() {
        return "{}".to_owned();
    }
    serde_json::to_string(labels).unwrap_or_else(|_| "{}".to_owned())
}

/// The columns [`run_from_row`] reads, in order. Counts of an active run are computed from its
/// step rows (they are only written to the run row when an execution ends).
pub(super) const RUN_COLUMNS: &str = r#"r.id, r.job_name, r.input, r.status, r.idempotency_key, r.concurrency_key,
    CASE WHEN r.status IN ('pending', 'leased')
        THEN (SELECT COALESCE(MAX(s."index") + 1, 0) FROM durably_steps s WHERE s.run_id = r.id AND s.status = 'completed')
        ELSE r.current_step_index END,
    CASE WHEN r.status IN ('pending', 'leased')
        THEN (SELECT COUNT(*) FROM durably_steps s WHERE s.run_id = r.id AND s.status = 'completed')
        ELSE r.completed_step_count END,
    r.progress, r.output, r.error, r.labels, r.lease_owner, r.lease_expires_at, r.lease_generation,
    r.attempt, r.not_before, r.started_at, r.completed_at, r.created_at, r.updated_at"#;

pub(super) struct RawRun {
    id: String,
    job_name: String,
    input: String,
    status: String,
    idempotency_key: Option<String>,
    concurrency_key: Option<String>,
    current_step_index: i64,
    completed_step_count: i64,
    progress: Option<String>,
    output: Option<String>,
    error: Option<String>,
    labels: String,
    lease_owner: Option<String>,
    lease_expires_at: Option<String>,
    lease_generation: i64,
    attempt: i64,
    not_before: Option<String>,
    started_at: Option<String>,
    completed_at: Option<String>,
    created_at: String,
    updated_at: String,
}

pub(super) fn raw_run(row: &Row<'_>) -> rusqlite::Result<RawRun> {
    Ok(RawRun {
        id: row.get(0)?,
        job_name: row.get(1)?,
        input: row.get(2)?,
        status: row.get(3)?,
        idempotency_key: row.get(4)?,
        concurrency_key: row.get(5)?,
        current_step_index: row.get(6)?,
        completed_step_count: row.get(7)?,
        progress: row.get(8)?,
        output: row.get(9)?,
        error: row.get(10)?,
        labels: row.get(11)?,
        lease_owner: row.get(12)?,
        lease_expires_at: row.get(13)?,
        lease_generation: row.get(14)?,
        attempt: row.get(15)?,
        not_before: row.get(16)?,
        started_at: row.get(17)?,
        completed_at: row.get(18)?,
        created_at: row.get(19)?,
        updated_at: row.get(20)?,
    })
}

impl RawRun {
    pub(super) fn decode(self) -> Result<RunRecord, StoreError> {
        let status = self.status.parse::<RunStatus>().map_err(corrupt)?;
        let labels: Labels = if self.labels.is_empty() {
            Labels::new()
        } else {
            serde_json::from_str(&self.labels)
                .map_err(|e| corrupt(format!("labels of run {}: {e}", self.id)))?
        };
        Ok(RunRecord {
            status,
            labels,
            current_step_index: self.current_step_index.max(0) as u64,
            completed_step_count: self.completed_step_count.max(0) as u64,
            lease_expires_at: opt_ts(self.lease_expires_at)?,
            lease_generation: self.lease_generation.max(0) as u64,
            attempt: u32::try_from(self.attempt.max(1)).unwrap_or(u32::MAX),
            not_before: opt_ts(self.not_before)?,
            started_at: opt_ts(self.started_at)?,
            completed_at: opt_ts(self.completed_at)?,
            created_at: parse_ts(&self.created_at)?,
            updated_at: parse_ts(&self.updated_at)?,
            id: self.id,
            job_name: self.job_name,
            input: self.input,
            idempotency_key: self.idempotency_key,
            concurrency_key: self.concurrency_key,
            progress: self.progress.filter(|p| !p.is_empty()),
            output: self.output.filter(|o| !o.is_empty()),
            error: self.error,
            lease_owner: self.lease_owner,
        })
    }
}

pub(super) fn query_runs(
    conn: &Connection,
    where_sql: &str,
    params: &[&dyn rusqlite::ToSql],
) -> Result<Vec<RunRecord>, StoreError> {
    let sql = format!("SELECT {RUN_COLUMNS} FROM durably_runs r {where_sql}");
    let mut stmt = conn.prepare_cached(&sql).map_err(db)?;
    let raws = stmt
        .query_map(params, raw_run)
        .map_err(db)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(db)?;
    raws.into_iter().map(RawRun::decode).collect()
}
