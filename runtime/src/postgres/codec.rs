//! Between Rust values and PostgreSQL ones: timestamps, counters, the schema-qualified SQL of
//! the store, and errors.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::types::Oid;
use sqlx::postgres::{
    PgArgumentBuffer, PgHasArrayType, PgTypeInfo, PgValueFormat, PgValueRef, Postgres,
};
use sqlx::{Decode, Encode, Type};

use crate::store::StoreError;
use crate::time::Timestamp;

/// A [`Timestamp`] as a `timestamptz`: microseconds since 2000-01-01 UTC on the wire.
///
/// sqlx 0.8 reads and writes `timestamptz` only through its `chrono` or `time` features, which
/// would name its SQLite driver (see the workspace manifest); this is the few lines they would
/// give. Times keep their milliseconds exactly. Times PostgreSQL cannot hold (before 4713 BC,
/// after 294276 AD; a saturated "never" is one) are written as its nearest bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct DbTime(pub(crate) Timestamp);

/// 2000-01-01T00:00:00Z, PostgreSQL's epoch, in Unix milliseconds.
const PG_EPOCH_MS: i64 = 946_684_800_000;
/// The earliest `timestamptz`, 4713-11-24 BC, in microseconds since PostgreSQL's epoch.
const PG_MIN_US: i64 = -211_813_488_000_000_000;
/// Just before the end of `timestamptz`'s range (294277-01-01), in the same unit.
const PG_MAX_US: i64 = 9_223_371_331_199_999_999;
/// The OIDs of `timestamptz` and `timestamptz[]`: fixed for built-in types.
const TIMESTAMPTZ: Oid = Oid(1184);
const TIMESTAMPTZ_ARRAY: Oid = Oid(1185);

impl DbTime {
    fn micros(self) -> i64 {
        self.0
            .as_millis()
            .saturating_sub(PG_EPOCH_MS)
            .saturating_mul(1000)
            .clamp(PG_MIN_US, PG_MAX_US)
    }

    fn from_micros(us: i64) -> Self {
        DbTime(Timestamp::from_millis(
            us.div_euclid(1000).saturating_add(PG_EPOCH_MS),
        ))
    }
}

impl From<Timestamp> for DbTime {
    fn from(t: Timestamp) -> Self {
        DbTime(t)
    }
}

impl Type<Postgres> for DbTime {
    fn type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(TIMESTAMPTZ)
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        *ty == PgTypeInfo::with_oid(TIMESTAMPTZ)
    }
}

impl PgHasArrayType for DbTime {
    fn array_type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(TIMESTAMPTZ_ARRAY)
    }
}

impl Encode<'_, Postgres> for DbTime {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        <i64 as Encode<'_, Postgres>>::encode(self.micros(), buf)
    }

    fn size_hint(&self) -> usize {
        std::mem::size_of::<i64>()
    }
}

impl<'r> Decode<'r, Postgres> for DbTime {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        match value.format() {
            PgValueFormat::Binary => Ok(DbTime::from_micros(
                <i64 as Decode<'r, Postgres>>::decode(value)?,
            )),
            // Only the simple query protocol returns text, and the store never reads a time
            // through it.
            PgValueFormat::Text => Err("a timestamptz in text format".into()),
        }
    }
}

/// An optional [`Timestamp`] as an optional `timestamptz`.
pub(crate) fn db_time(t: Option<Timestamp>) -> Option<DbTime> {
    t.map(DbTime)
}

/// Counters are `u64` in Rust and `bigint` in PostgreSQL; no counter gets near the limit.
pub(crate) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The inverse of [`to_i64`]; negative values (never written) read as 0.
pub(crate) fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// A `u32` stored in a `bigint` column, read back.
pub(crate) fn to_u32(value: i64) -> u32 {
    u32::try_from(value.max(0)).unwrap_or(u32::MAX)
}

/// The schema's name, and every statement of the store written out for it.
///
/// Statements name their tables `{s}.table`; the first use of a statement replaces `{s}` by the
/// quoted schema name and keeps the result, so each statement is built once per store and
/// prepared once per connection (sqlx caches prepared statements by their text).
#[derive(Debug)]
pub(crate) struct Sql {
    /// The schema, as given.
    name: String,
    /// The schema as an SQL identifier, quoted.
    quoted: String,
    built: RwLock<HashMap<&'static str, Arc<str>>>,
}

impl Sql {
    /// The statements of the schema `name`, which [`check_schema_name`] accepted.
    pub(crate) fn new(name: &str) -> Self {
        Sql {
            name: name.to_owned(),
            quoted: format!("\"{name}\""),
            built: RwLock::new(HashMap::new()),
        }
    }

    /// The schema's name.
    pub(crate) fn schema(&self) -> &str {
        &self.name
    }

    /// The schema as an SQL identifier, quoted.
    pub(crate) fn quoted(&self) -> &str {
        &self.quoted
    }

    /// `template` with `{s}` replaced by the schema.
    pub(crate) fn get(&self, template: &'static str) -> Arc<str> {
        if let Some(sql) = self
            .built
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(template)
        {
            return Arc::clone(sql);
        }
        let sql: Arc<str> = self.expand(template).into();
        self.built
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(template, Arc::clone(&sql));
        sql
    }

    /// `template` with `{s}` replaced by the schema, not kept: for statements built at run time
    /// (listings with optional conditions).
    pub(crate) fn expand(&self, template: &str) -> String {
        template.replace("{s}", &self.quoted)
    }
}

/// Whether `name` can be the store's schema: a plain identifier (letters, digits and `_`, not
/// starting with a digit) of at most 63 bytes, so it is used as written, case included.
pub(crate) fn check_schema_name(name: &str) -> Result<(), StoreError> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !name.as_bytes().first().is_some_and(u8::is_ascii_digit)
        && !name.starts_with("pg_");
    if valid {
        Ok(())
    } else {
        Err(database_error(format!(
            "invalid schema name {name:?}: use letters, digits and `_` (at most 63, not \
             starting with a digit or `pg_`)"
        )))
    }
}

/// A database failure with what the store was doing.
#[derive(Debug, thiserror::Error)]
#[error("postgres: {context}{}", source.as_ref().map(|e| format!(": {e}")).unwrap_or_default())]
pub(crate) struct PostgresError {
    context: Cow<'static, str>,
    #[source]
    source: Option<sqlx::Error>,
}

impl PostgresError {
    /// The SQLSTATE of the server's error, if it was one.
    pub(crate) fn sqlstate(&self) -> Option<Cow<'_, str>> {
        match &self.source {
            Some(sqlx::Error::Database(e)) => e.code(),
            _ => None,
        }
    }
}

/// A [`StoreError::Database`] with a message and no underlying error.
pub(crate) fn database_error(message: impl Into<Cow<'static, str>>) -> StoreError {
    StoreError::Database(Box::new(PostgresError {
        context: message.into(),
        source: None,
    }))
}

/// The [`StoreError`] for `source`, met while doing `context`: [`StoreError::Closed`] when the
/// pool was closed, [`StoreError::Database`] otherwise.
pub(crate) fn sql_error(context: impl Into<Cow<'static, str>>, source: sqlx::Error) -> StoreError {
    match source {
        sqlx::Error::PoolClosed => StoreError::Closed,
        source => StoreError::Database(Box::new(PostgresError {
            context: context.into(),
            source: Some(source),
        })),
    }
}

/// Adds what the store was doing to an sqlx error.
pub(crate) trait Context<T> {
    /// Maps the error with [`sql_error`].
    fn context(self, context: &'static str) -> Result<T, StoreError>;
    /// As [`context`](Self::context), computing the message only on error.
    fn context_with(self, context: impl FnOnce() -> String) -> Result<T, StoreError>;
}

impl<T> Context<T> for Result<T, sqlx::Error> {
    fn context(self, context: &'static str) -> Result<T, StoreError> {
        self.map_err(|e| sql_error(context, e))
    }

    fn context_with(self, context: impl FnOnce() -> String) -> Result<T, StoreError> {
        self.map_err(|e| sql_error(context(), e))
    }
}

/// The SQLSTATE of a failed statement, when `error` is one the server reported.
pub(crate) fn sqlstate(error: &StoreError) -> Option<String> {
    match error {
        StoreError::Database(e) => e
            .downcast_ref::<PostgresError>()
            .and_then(|e| e.sqlstate().map(Cow::into_owned)),
        _ => None,
    }
}

/// Whether a transaction that failed with `error` may simply be run again: the server chose it
/// as a deadlock's victim, or refused it for a serialization failure. Nothing of it was applied.
pub(crate) fn is_transient(error: &StoreError) -> bool {
    matches!(sqlstate(error).as_deref(), Some("40001" | "40P01"))
}

/// `unique_violation`.
pub(crate) const UNIQUE_VIOLATION: &str = "23505";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_keep_their_milliseconds_and_extremes_are_clamped() {
        for ms in [0, -5, 1, 8, 1_767_225_600_123, -62_135_596_800_000] {
            let t = Timestamp::from_millis(ms);
            assert_eq!(DbTime::from_micros(DbTime(t).micros()).0, t, "{ms}");
        }
        assert_eq!(DbTime(Timestamp::from_millis(i64::MAX)).micros(), PG_MAX_US);
        assert_eq!(DbTime(Timestamp::from_millis(i64::MIN)).micros(), PG_MIN_US);
    }

    #[test]
    fn schema_names_are_plain_identifiers() {
        for ok in ["durable_jobs", "Jobs2", "_x"] {
            check_schema_name(ok).unwrap();
        }
        for bad in ["", "1a", "a-b", "a\"b", "pg_catalog", &"x".repeat(64)] {
            assert!(check_schema_name(bad).is_err(), "{bad:?}");
        }
    }
}
