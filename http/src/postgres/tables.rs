//! The feed's tables, beside the store's in its schema, and the statements that use them.
//!
//! They are created here, idempotently, and not by the store's migrations: they belong to this
//! crate, which the store does not know, and a node of an older build that does not serve
//! streams leaves them alone.
//!
//! - `http_feed`: the events, `seq` an identity column (never reused), `body` the event's wire
//!   JSON as text (not `jsonb`, which would reorder keys and rewrite numbers: the text is read
//!   back byte for byte), `at` when it was appended.
//! - `http_feed_meta`: one row, the feed's epoch (a random word chosen when the table is made,
//!   so that positions from a feed that was dropped and made again are not taken for positions
//!   in this one) and the last `seq` pruned.
//! - `http_nodes`: one row per node, refreshed by its heartbeat.

use std::time::Duration;

use sqlx::postgres::PgPool;
use sqlx::{Executor, PgConnection};

use super::{FeedError, ResultExt};

/// The most events one append writes.
pub(crate) const APPEND_MOST: usize = 1_000;
/// The most events one read of the tail returns.
pub(crate) const READ_MOST: i64 = 1_000;

/// The statements, with the schema's name in them.
#[derive(Debug)]
pub(crate) struct Tables {
    schema: String,
    /// The `NOTIFY` channel that announces appends.
    pub(crate) channel: String,
    /// `"schema".`, quoted.
    prefix: String,
}

/// One row of the feed: its seq, source and wire JSON.
pub(crate) type Row = (i64, String, String);

/// A node's row.
pub(crate) struct NodeRow {
    pub(crate) id: String,
    pub(crate) host: String,
    pub(crate) pid: u32,
    pub(crate) started_ms: i64,
    pub(crate) last_seen_ms: i64,
}

impl Tables {
    pub(crate) fn new(schema: &str) -> Result<Tables, FeedError> {
        let valid = !schema.is_empty()
            && schema.len() <= 63
            && schema
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && !schema.as_bytes().first().is_some_and(u8::is_ascii_digit);
        if !valid {
            return Err(FeedError::new(format!(
                "invalid schema name {schema:?}: the store's schema is letters, digits and `_`"
            )));
        }
        // Channel names are at most 63 bytes; a shortened one shared with another schema only
        // wakes its tailers for nothing.
        let base = &schema[..schema.len().min(58)];
        Ok(Tables {
            schema: schema.to_owned(),
            channel: format!("{base}:feed"),
            prefix: format!("\"{schema}\"."),
        })
    }

    fn sql(&self, template: &str) -> String {
        template.replace("{s}.", &self.prefix)
    }

    /// Creates the tables if missing, once the store has made its schema.
    pub(crate) async fn create(&self, pool: &PgPool) -> Result<(), FeedError> {
        let store: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(format!("{}instances", self.prefix))
            .fetch_one(pool)
            .await
            .context("looking for the store's tables")?;
        if !store {
            return Err(FeedError::new(format!(
                "schema {} has no durable-jobs store: start the engine on it first",
                self.schema
            )));
        }
        let mut tx = pool.begin().await.context("starting the feed's setup")?;
        // Two nodes starting at once would race on `CREATE TABLE IF NOT EXISTS`.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('durable_jobs_http:' || $1))")
            .bind(&self.schema)
            .execute(&mut *tx)
            .await
            .context("waiting for the feed's setup lock")?;
        let create = self.sql(
            r#"
CREATE TABLE IF NOT EXISTS {s}.http_feed (
    seq    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source text        NOT NULL,
    body   text        NOT NULL,
    node   text        NOT NULL,
    at     timestamptz NOT NULL DEFAULT clock_timestamp()
) WITH (autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_insert_scale_factor = 0.05);
CREATE TABLE IF NOT EXISTS {s}.http_feed_meta (
    one            boolean PRIMARY KEY DEFAULT true CHECK (one),
    epoch          text   NOT NULL DEFAULT substr(md5(random()::text || clock_timestamp()::text), 1, 12),
    pruned_through bigint NOT NULL DEFAULT 0
);
INSERT INTO {s}.http_feed_meta DEFAULT VALUES ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS {s}.http_nodes (
    id         text PRIMARY KEY,
    host       text        NOT NULL,
    pid        bigint      NOT NULL,
    started_at timestamptz NOT NULL,
    last_seen  timestamptz NOT NULL
);
"#,
        );
        tx.execute(create.as_str())
            .await
            .context("creating the feed's tables")?;
        tx.commit().await.context("committing the feed's setup")
    }

    pub(crate) async fn epoch(&self, pool: &PgPool) -> Result<String, FeedError> {
        sqlx::query_scalar(&self.sql("SELECT epoch FROM {s}.http_feed_meta"))
            .fetch_one(pool)
            .await
            .context("reading the feed's epoch")
    }

    /// Appends `events` (source, wire JSON) in one short transaction, and announces them.
    ///
    /// Why the table lock: a tailer reads `seq > last` and moves `last` to the greatest `seq`
    /// it saw, so a row committed later with a smaller `seq` than one already read would be
    /// missed. Identity values are handed out when rows are inserted, not when they commit, so
    /// two appends running at once could commit out of `seq` order. `EXCLUSIVE` mode conflicts
    /// with itself and with inserts, and not with reads: appends (one per node and period, of
    /// many rows each) take turns, each one's `seq`s are above those of every append committed
    /// before it, and readers never wait. The engine's own transactions never touch this
    /// table: job throughput pays for one batch per period, not for each event.
    pub(crate) async fn append(
        &self,
        pool: &PgPool,
        node: &str,
        events: &[(&'static str, String)],
    ) -> Result<(), FeedError> {
        let tx = self.write_append(pool, node, events).await?;
        tx.commit().await.context("committing an append")
    }

    /// An append's writes, in a transaction left open for [`append`](Self::append) to commit.
    pub(crate) async fn write_append(
        &self,
        pool: &PgPool,
        node: &str,
        events: &[(&'static str, String)],
    ) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, FeedError> {
        let (sources, bodies): (Vec<&str>, Vec<&str>) =
            events.iter().map(|(s, b)| (*s, b.as_str())).unzip();
        let mut tx = pool.begin().await.context("starting an append")?;
        tx.execute(
            self.sql("LOCK TABLE {s}.http_feed IN EXCLUSIVE MODE")
                .as_str(),
        )
        .await
        .context("locking the feed for an append")?;
        sqlx::query(&self.sql(
            "INSERT INTO {s}.http_feed (source, body, node)
             SELECT e.source, e.body, $3
               FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS e(source, body, n)
              ORDER BY e.n",
        ))
        .bind(&sources)
        .bind(&bodies)
        .bind(node)
        .execute(&mut *tx)
        .await
        .context("appending events")?;
        // Sent when the append commits, and only then.
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(&self.channel)
            .execute(&mut *tx)
            .await
            .context("announcing an append")?;
        Ok(tx)
    }

    /// The rows after `after`, oldest first, at most [`READ_MOST`].
    pub(crate) async fn read_after(
        &self,
        pool: &PgPool,
        after: i64,
    ) -> Result<Vec<Row>, FeedError> {
        sqlx::query_as(&self.sql(
            "SELECT seq, source, body FROM {s}.http_feed WHERE seq > $1 ORDER BY seq LIMIT $2",
        ))
        .bind(after)
        .bind(READ_MOST)
        .fetch_all(pool)
        .await
        .context("reading the feed")
    }

    /// The last `seq` pruned.
    pub(crate) async fn pruned_through(&self, pool: &PgPool) -> Result<i64, FeedError> {
        sqlx::query_scalar(&self.sql("SELECT pruned_through FROM {s}.http_feed_meta"))
            .fetch_one(pool)
            .await
            .context("reading what the feed pruned")
    }

    /// The newest `count` rows, oldest first, and the seq after which the feed holds every
    /// row: the one before the oldest returned when there were more, the last pruned
    /// otherwise.
    pub(crate) async fn newest(
        &self,
        pool: &PgPool,
        count: usize,
    ) -> Result<(Vec<Row>, i64), FeedError> {
        let limit = i64::try_from(count).unwrap_or(i64::MAX);
        let mut rows: Vec<Row> = sqlx::query_as(
            &self.sql("SELECT seq, source, body FROM {s}.http_feed ORDER BY seq DESC LIMIT $1"),
        )
        .bind(limit)
        .fetch_all(pool)
        .await
        .context("reading the feed's newest events")?;
        rows.reverse();
        // Read after the rows: a prune in between only makes this larger (safer).
        let pruned = self.pruned_through(pool).await?;
        let covered = if rows.len() as i64 == limit {
            rows.first().map_or(pruned, |(seq, _, _)| seq - 1)
        } else {
            pruned
        };
        Ok((rows, covered.max(pruned)))
    }

    /// Deletes the events beyond the newest `keep`, and those older than `retention`.
    ///
    /// Rows in `seq` order are in append order, so the old ones are a prefix: the scan stops
    /// at the first young row. The watermark (always the `seq` of a row that was there) moves
    /// in the same transaction, so a node filling its memory knows which positions it can no
    /// longer resume from, and a node whose reading fell behind a prune can tell.
    pub(crate) async fn prune(
        &self,
        pool: &PgPool,
        keep: u64,
        retention: Duration,
    ) -> Result<u64, FeedError> {
        let mut tx = pool.begin().await.context("starting a prune")?;
        let by_count: Option<i64> = sqlx::query_scalar(
            &self.sql("SELECT seq FROM {s}.http_feed ORDER BY seq DESC OFFSET $1 LIMIT 1"),
        )
        .bind(i64::try_from(keep).unwrap_or(i64::MAX))
        .fetch_optional(&mut *tx)
        .await
        .context("finding the events beyond the count kept")?;
        let by_age: Option<i64> = sqlx::query_scalar(&self.sql(
            "SELECT max(seq) FROM {s}.http_feed
              WHERE seq < COALESCE(
                  (SELECT seq FROM {s}.http_feed
                    WHERE at >= clock_timestamp() - make_interval(secs => $1)
                    ORDER BY seq LIMIT 1),
                  9223372036854775807)",
        ))
        .bind(retention.as_secs_f64())
        .fetch_one(&mut *tx)
        .await
        .context("finding the events older than the retention")?;
        let Some(through) = by_count.max(by_age) else {
            return Ok(0);
        };
        let deleted = sqlx::query(&self.sql("DELETE FROM {s}.http_feed WHERE seq <= $1"))
            .bind(through)
            .execute(&mut *tx)
            .await
            .context("pruning the feed")?
            .rows_affected();
        sqlx::query(
            &self
                .sql("UPDATE {s}.http_feed_meta SET pruned_through = greatest(pruned_through, $1)"),
        )
        .bind(through)
        .execute(&mut *tx)
        .await
        .context("recording what the feed pruned")?;
        tx.commit().await.context("committing a prune")?;
        Ok(deleted)
    }

    /// Records that `node` is alive, and forgets nodes silent for longer than `forget`.
    pub(crate) async fn heartbeat(
        &self,
        pool: &PgPool,
        node: &NodeRow,
        forget: Duration,
    ) -> Result<(), FeedError> {
        sqlx::query(&self.sql(
            "INSERT INTO {s}.http_nodes (id, host, pid, started_at, last_seen)
             VALUES ($1, $2, $3, to_timestamp($4::double precision / 1000), clock_timestamp())
             ON CONFLICT (id) DO UPDATE SET last_seen = excluded.last_seen",
        ))
        .bind(&node.id)
        .bind(&node.host)
        .bind(i64::from(node.pid))
        .bind(node.started_ms)
        .execute(pool)
        .await
        .context("recording the node's heartbeat")?;
        sqlx::query(&self.sql(
            "DELETE FROM {s}.http_nodes WHERE last_seen < clock_timestamp() - make_interval(secs => $1)",
        ))
        .bind(forget.as_secs_f64())
        .execute(pool)
        .await
        .context("forgetting silent nodes")?;
        Ok(())
    }

    /// Removes `node`'s row: it left.
    pub(crate) async fn leave(&self, pool: &PgPool, node: &str) -> Result<(), FeedError> {
        sqlx::query(&self.sql("DELETE FROM {s}.http_nodes WHERE id = $1"))
            .bind(node)
            .execute(pool)
            .await
            .context("removing the node's row")?;
        Ok(())
    }

    /// The nodes heard from within `lapse`, oldest first, and the database's time (ms).
    pub(crate) async fn live_nodes(
        &self,
        conn: &mut PgConnection,
        lapse: Duration,
    ) -> Result<(Vec<NodeRow>, i64), FeedError> {
        let now: i64 =
            sqlx::query_scalar("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint")
                .fetch_one(&mut *conn)
                .await
                .context("reading the database's time")?;
        let rows: Vec<(String, String, i64, i64, i64)> = sqlx::query_as(&self.sql(
            "SELECT id, host, pid,
                    (extract(epoch FROM started_at) * 1000)::bigint,
                    (extract(epoch FROM last_seen) * 1000)::bigint
               FROM {s}.http_nodes
              WHERE last_seen >= to_timestamp($1::double precision / 1000) - make_interval(secs => $2)
              ORDER BY started_at, id",
        ))
        .bind(now)
        .bind(lapse.as_secs_f64())
        .fetch_all(&mut *conn)
        .await
        .context("reading the nodes")?;
        let nodes = rows
            .into_iter()
            .map(|(id, host, pid, started_ms, last_seen_ms)| NodeRow {
                id,
                host,
                pid: u32::try_from(pid).unwrap_or_default(),
                started_ms,
                last_seen_ms,
            })
            .collect();
        Ok((nodes, now))
    }

    /// Leased runs and live instance leases, per owner.
    pub(crate) async fn leases(
        &self,
        conn: &mut PgConnection,
    ) -> Result<Vec<(String, i64, i64)>, FeedError> {
        sqlx::query_as(&self.sql(
            "SELECT owner, sum(runs)::bigint, sum(instances)::bigint FROM (
                 SELECT lease_owner AS owner, count(*) AS runs, 0 AS instances
                   FROM {s}.runs WHERE status = 'leased' AND lease_owner IS NOT NULL
                  GROUP BY lease_owner
                 UNION ALL
                 SELECT lease_owner, 0, count(*)
                   FROM {s}.instances
                  WHERE lease_owner IS NOT NULL AND lease_until > clock_timestamp()
                  GROUP BY lease_owner
             ) held GROUP BY owner ORDER BY owner",
        ))
        .fetch_all(&mut *conn)
        .await
        .context("reading the leases")
    }
}
