//! Versioned schema migrations.
//!
//! The applied versions are rows of `schema_migrations` in the store's schema. At connect, the
//! migrations the schema lacks are applied in order, in one transaction that first takes a
//! transaction-scoped advisory lock (`pg_advisory_xact_lock`) on the schema: engines starting
//! together wait for each other, and the lock ends with the transaction, so it needs no session
//! of its own and works through a transaction-mode pooler. A schema with a version this build
//! does not know was written by a newer build and is refused rather than misread.
//!
//! To change the schema, append a [`Migration`] with the next version to [`MIGRATIONS`]; never
//! edit one that was released.

use sqlx::postgres::PgPool;
use sqlx::{Executor, PgConnection};

use super::codec::{database_error, Context, Sql};
use super::schema;
use crate::store::StoreError;

/// One schema change.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Migration {
    /// Its number: 1, 2, 3, ... in the order of [`MIGRATIONS`].
    pub(crate) version: i64,
    /// The statements, with `{s}` for the schema, run as one batch.
    pub(crate) sql: &'static str,
}

/// Every migration, oldest first.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        sql: schema::VERSION_1,
    },
    Migration {
        version: 2,
        sql: schema::VERSION_2,
    },
    Migration {
        version: 3,
        sql: schema::VERSION_3,
    },
    Migration {
        version: 4,
        sql: schema::VERSION_4,
    },
];

/// The second key of the advisory lock migrations take (the first is the schema's hash).
pub(crate) const MIGRATION_LOCK: i32 = 1;

/// Applies the migrations of `migrations` that the schema of `sql` lacks, creating the schema
/// if needed.
///
/// # Errors
///
/// [`StoreError::Database`] if the schema holds tables that are not this store's, has a version
/// newer than the last of `migrations`, or if a migration fails (then none is applied).
pub(crate) async fn apply(
    pool: &PgPool,
    sql: &Sql,
    migrations: &[Migration],
) -> Result<(), StoreError> {
    let known = migrations.last().map_or(0, |m| m.version);
    // Without the lock first: an engine starting on an up-to-date schema waits for nobody.
    if let Some(current) = current_version(pool, sql).await? {
        refuse_newer(current, known)?;
        if current == known {
            return Ok(());
        }
    }
    let mut tx = pool
        .begin()
        .await
        .context("starting the migration transaction")?;
    migrate_locked(&mut tx, sql, migrations, known).await?;
    tx.commit().await.context("committing the migrations")
}

/// The migration transaction's work: the lock, the checks, the missing migrations.
async fn migrate_locked(
    tx: &mut PgConnection,
    sql: &Sql,
    migrations: &[Migration],
    known: i64,
) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('durable_jobs:' || $1), $2)")
        .bind(sql.schema())
        .bind(MIGRATION_LOCK)
        .execute(&mut *tx)
        .await
        .context("waiting for the migration lock")?;
    check_ownership(tx, sql).await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
            .bind(sql.schema())
            .fetch_one(&mut *tx)
            .await
            .context("looking for the schema")?;
    if !exists {
        // Only when missing: `IF NOT EXISTS` alone would ask for the right to create schemas
        // even when there is nothing to create.
        let create = sql.expand("CREATE SCHEMA IF NOT EXISTS {s}");
        tx.execute(create.as_str())
            .await
            .context_with(|| format!("creating schema {}", sql.schema()))?;
    }
    let create = sql.expand(
        "CREATE TABLE IF NOT EXISTS {s}.schema_migrations (
            version    bigint      PRIMARY KEY,
            applied_at timestamptz NOT NULL DEFAULT now()
        )",
    );
    tx.execute(create.as_str())
        .await
        .context("creating schema_migrations")?;
    let current: i64 = sqlx::query_scalar(
        &sql.get("SELECT COALESCE(MAX(version), 0)::bigint FROM {s}.schema_migrations"),
    )
    .fetch_one(&mut *tx)
    .await
    .context("reading the schema version")?;
    refuse_newer(current, known)?;
    for migration in migrations.iter().filter(|m| m.version > current) {
        let statements = sql.expand(migration.sql);
        // A string without parameters goes as one simple query: several statements in one
        // round trip. (Not `sqlx::raw_sql`, whose future rustc cannot prove `Send` here.)
        tx.execute(statements.as_str())
            .await
            .context_with(|| format!("applying schema migration {}", migration.version))?;
        sqlx::query(&sql.get("INSERT INTO {s}.schema_migrations (version) VALUES ($1)"))
            .bind(migration.version)
            .execute(&mut *tx)
            .await
            .context("recording a schema migration")?;
        tracing::info!(
            schema = sql.schema(),
            version = migration.version,
            "applied schema migration"
        );
    }
    Ok(())
}

/// The schema's version, or `None` when it has no `schema_migrations` table yet.
async fn current_version(pool: &PgPool, sql: &Sql) -> Result<Option<i64>, StoreError> {
    let table = format!("{}.schema_migrations", sql.quoted());
    let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(&table)
        .fetch_one(pool)
        .await
        .context("looking for schema_migrations")?;
    if !exists {
        return Ok(None);
    }
    let version = sqlx::query_scalar(
        &sql.get("SELECT COALESCE(MAX(version), 0)::bigint FROM {s}.schema_migrations"),
    )
    .fetch_one(pool)
    .await
    .context("reading the schema version")?;
    Ok(Some(version))
}

fn refuse_newer(current: i64, known: i64) -> Result<(), StoreError> {
    if current > known {
        return Err(database_error(format!(
            "the schema has version {current}, newer than the newest this build of \
             durable-jobs knows ({known}); it was written by a newer version, upgrade to use it"
        )));
    }
    Ok(())
}

/// Refuses a schema that holds another application's tables, before anything is written to
/// it. A schema is this store's when it is missing, empty, or has both `schema_migrations` and
/// `instances`.
async fn check_ownership(tx: &mut PgConnection, sql: &Sql) -> Result<(), StoreError> {
    let (tables, ours): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE tablename IN ('schema_migrations', 'instances'))
           FROM pg_tables WHERE schemaname = $1",
    )
    .bind(sql.schema())
    .fetch_one(&mut *tx)
    .await
    .context("reading the schema's tables")?;
    if tables > 0 && ours < 2 {
        return Err(database_error(format!(
            "schema {} holds another application's tables (it has tables, but not \
             durable-jobs' schema_migrations and instances); refusing to change it: choose \
             another schema with PostgresOptions::schema",
            sql.schema()
        )));
    }
    Ok(())
}
