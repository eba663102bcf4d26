//! Peer benchmark: the `effectum` 0.7 job queue (Rust, rusqlite), burn-down shape, with the
//! journal mode and `synchronous` level its write connection ran with.
//!
//! Usage: `effectum-peer-bench JOBS CONCURRENCY`, with `JOURNAL=wal|delete` (default `wal`) and
//! `SYNC=NORMAL|FULL` (default `NORMAL`; with `JOURNAL=wal` only).
//!
//! Enqueues JOBS no-op jobs in batches of 1,000, then starts one worker with CONCURRENCY slots
//! and waits until every job finished. Prints one JSON line, with the CPU time of the whole
//! process per job during the drain (all threads).
//!
//! **Journal.** effectum 0.7 asks SQLite for WAL with `PRAGMA journal = wal`, a pragma SQLite
//! does not know and ignores, so as shipped it runs with a rollback journal and syncs the disk at
//! every commit, whatever `synchronous` says. `JOURNAL=wal` (as effectum's authors intend) puts
//! the file in WAL before effectum opens it; the mode is stored in the file, so effectum's own
//! connections use it. `JOURNAL=delete` changes nothing: effectum as shipped.
//!
//! **Synchronous.** effectum sets `synchronous = normal` on its write connection. With
//! `JOURNAL=wal`, every connection effectum opens first runs `PRAGMA synchronous = SYNC`, and an
//! authorizer then skips effectum's own `synchronous` pragma, so `SYNC=FULL` measures effectum
//! with the log synced at every commit (with `SYNC=NORMAL` it changes nothing).
//!
//! **What is reported.** Nothing above is taken on trust. Each connection gets a WAL hook (set
//! by the authorizer at the connection's first statement: SQLite installs its default hook after
//! the open's extensions ran). At the connection's first commit the hook reads `PRAGMA
//! journal_mode` and `PRAGMA synchronous` on the connection itself (SQLite runs the hook after
//! the commit, where statements are allowed), and it does what the default hook does: a
//! checkpoint once the log holds 1,000 pages. In rollback mode the hook never runs: the journal
//! mode is then read from the file's header, and `synchronous` is the value effectum's
//! connection set, seen by the authorizer.
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use effectum::{Job, JobRegistry, JobRunner, Queue, RunningJob};
use rusqlite::ffi;

async fn noop(_job: RunningJob, _ctx: ()) -> Result<(), String> {
    Ok(())
}

/// The `synchronous` level forced on effectum's connections (`JOURNAL=wal`), if any.
static FORCED_SYNC: Mutex<Option<String>> = Mutex::new(None);
/// What committing connections ran with: distinct (journal_mode, synchronous) pairs.
static SEEN_ON_COMMIT: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());
/// `synchronous` levels effectum's connections set (or asked for, when forced).
static SET_BY_EFFECTUM: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One connection's hook state, shared by its authorizer and its WAL hook. Never freed: the
/// harness's process opens a handful of connections.
struct Conn {
    db: *mut ffi::sqlite3,
    hooked: bool,
    read: bool,
}

/// The first column of the first row of `sql` on `db`, lower-case.
///
/// # Safety
/// `db` is an open connection, used from the thread running this.
unsafe fn query_text(db: *mut ffi::sqlite3, sql: &CStr) -> Option<String> {
    let mut stmt = std::ptr::null_mut();
    if ffi::sqlite3_prepare_v2(db, sql.as_ptr(), -1, &mut stmt, std::ptr::null_mut()) != 0 {
        return None;
    }
    let value = if ffi::sqlite3_step(stmt) == ffi::SQLITE_ROW {
        let text = ffi::sqlite3_column_text(stmt, 0);
        (!text.is_null()).then(|| {
            CStr::from_ptr(text.cast())
                .to_string_lossy()
                .to_ascii_lowercase()
        })
    } else {
        None
    };
    ffi::sqlite3_finalize(stmt);
    value
}

fn synchronous_name(value: &str) -> String {
    match value.to_ascii_lowercase().as_str() {
        "0" | "off" => "OFF".into(),
        "1" | "normal" => "NORMAL".into(),
        "2" | "full" => "FULL".into(),
        "3" | "extra" => "EXTRA".into(),
        other => other.to_ascii_uppercase(),
    }
}

unsafe extern "C" fn wal_hook(
    state: *mut c_void,
    db: *mut ffi::sqlite3,
    schema: *const c_char,
    pages: c_int,
) -> c_int {
    let conn = &mut *state.cast::<Conn>();
    if !conn.read {
        conn.read = true;
        let journal = query_text(db, c"PRAGMA journal_mode").unwrap_or_default();
        let sync = query_text(db, c"PRAGMA synchronous")
            .map(|s| synchronous_name(&s))
            .unwrap_or_default();
        let mut seen = lock(&SEEN_ON_COMMIT);
        if !seen.contains(&(journal.clone(), sync.clone())) {
            seen.push((journal, sync));
        }
    }
    // SQLite's default hook, which this one replaces.
    if pages >= 1000 {
        ffi::sqlite3_wal_checkpoint(db, schema);
    }
    ffi::SQLITE_OK
}

unsafe extern "C" fn authorizer(
    state: *mut c_void,
    action: c_int,
    name: *const c_char,
    value: *const c_char,
    _: *const c_char,
    _: *const c_char,
) -> c_int {
    let conn = &mut *state.cast::<Conn>();
    if !conn.hooked {
        conn.hooked = true;
        ffi::sqlite3_wal_hook(conn.db, Some(wal_hook), state);
    }
    if action != ffi::SQLITE_PRAGMA || name.is_null() || value.is_null() {
        return ffi::SQLITE_OK;
    }
    if !CStr::from_ptr(name)
        .to_bytes()
        .eq_ignore_ascii_case(b"synchronous")
    {
        return ffi::SQLITE_OK;
    }
    lock(&SET_BY_EFFECTUM).push(synchronous_name(&CStr::from_ptr(value).to_string_lossy()));
    if lock(&FORCED_SYNC).is_some() {
        ffi::SQLITE_IGNORE
    } else {
        ffi::SQLITE_OK
    }
}

/// Runs at the end of every `sqlite3_open` in this process (registered after the harness's own
/// connection closed, so only effectum's connections see it).
unsafe extern "C" fn on_open(
    db: *mut ffi::sqlite3,
    _error: *mut *const c_char,
    _api: *const ffi::sqlite3_api_routines,
) -> c_int {
    let forced = lock(&FORCED_SYNC).clone();
    if let Some(level) = forced {
        let sql = CString::new(format!("PRAGMA synchronous = {level}")).unwrap_or_default();
        let rc = ffi::sqlite3_exec(
            db,
            sql.as_ptr(),
            None,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        );
        if rc != ffi::SQLITE_OK {
            return rc;
        }
    }
    let conn = Box::into_raw(Box::new(Conn {
        db,
        hooked: false,
        read: false,
    }));
    ffi::sqlite3_set_authorizer(db, Some(authorizer), conn.cast());
    ffi::SQLITE_OK
}

/// The journal mode the file's header says: bytes 18 and 19 are 2 in WAL mode, 1 otherwise.
fn header_journal(path: &std::path::Path) -> String {
    match std::fs::read(path) {
        Ok(bytes) if bytes.len() >= 20 => match (bytes[18], bytes[19]) {
            (2, 2) => "wal".into(),
            (1, 1) => "delete".into(),
            (a, b) => format!("header {a} {b}"),
        },
        _ => "unreadable".into(),
    }
}

/// CPU time of every thread of this process so far, in nanoseconds
/// (`/proc/self/task/*/schedstat`).
fn process_cpu_ns() -> u64 {
    std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// One JSON object line; values that parse as numbers are written as numbers.
fn json_line(fields: &[(&str, String)]) -> String {
    let body: Vec<String> = fields
        .iter()
        .map(|(k, v)| {
            if v.parse::<f64>().is_ok() {
                format!("\"{k}\":{v}")
            } else {
                let v = v.replace('\\', "\\\\").replace('"', "\\\"");
                format!("\"{k}\":\"{v}\"")
            }
        })
        .collect();
    format!("{{{}}}", body.join(","))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let jobs: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(50_000);
    let concurrency: u16 = args.next().and_then(|s| s.parse().ok()).unwrap_or(20);
    let journal = std::env::var("JOURNAL").unwrap_or_else(|_| "wal".into());
    let sync = std::env::var("SYNC")
        .unwrap_or_else(|_| "NORMAL".into())
        .to_ascii_uppercase();
    if !matches!(journal.as_str(), "wal" | "delete") || !matches!(sync.as_str(), "NORMAL" | "FULL")
    {
        eprintln!("effectum-peer-bench: JOURNAL is wal or delete, SYNC is NORMAL or FULL");
        std::process::exit(2);
    }
    let dir = std::env::temp_dir().join(format!("effectum-peer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create the scratch folder");
    let path = dir.join("bench.db");
    if journal == "wal" {
        let conn = rusqlite::Connection::open(&path).expect("open the file");
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .expect("put the file in WAL");
        assert_eq!(mode, "wal", "the file could not be put in WAL");
        drop(conn);
        *lock(&FORCED_SYNC) = Some(sync.clone());
    }
    // SAFETY: `on_open` has the signature SQLite calls automatic extensions with, and only
    // touches the connection it is given.
    unsafe {
        ffi::sqlite3_auto_extension(Some(on_open));
    }
    let queue = Queue::new(&path).await.expect("open the queue");

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
    let cpu = process_cpu_ns();
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
    let cpu_us_per_job = process_cpu_ns().saturating_sub(cpu) as f64 / 1_000.0 / jobs as f64;

    let seen = lock(&SEEN_ON_COMMIT).clone();
    let set = lock(&SET_BY_EFFECTUM).clone();
    let (journal_mode, synchronous, read_from) = match seen.as_slice() {
        [(j, s)] => (j.clone(), s.clone(), "its write connection"),
        [] => (
            header_journal(&path),
            set.last().cloned().unwrap_or_else(|| "unknown".into()),
            "the file header and the pragma effectum ran",
        ),
        many => (
            "mixed".into(),
            format!("{many:?}"),
            "its connections disagree",
        ),
    };
    println!(
        "{}",
        json_line(&[
            ("peer", "effectum-0.7".into()),
            ("workload", "burndown".into()),
            (
                "setup",
                if journal == "wal" {
                    format!("file put in WAL first, SYNC={sync}")
                } else {
                    "as shipped".into()
                },
            ),
            ("jobs", jobs.to_string()),
            ("concurrency", concurrency.to_string()),
            ("journal_mode", journal_mode),
            ("synchronous", synchronous),
            ("durability_read_from", read_from.into()),
            ("enqueue_per_s", format!("{:.1}", jobs as f64 / enqueue)),
            ("drain_per_s", format!("{:.1}", jobs as f64 / drain)),
            ("cpu_us_total_per_unit", format!("{cpu_us_per_job:.2}")),
        ])
    );
    let _ = std::fs::remove_dir_all(&dir);
    // The worker and queue tasks would keep the runtime alive; the figures are printed.
    std::process::exit(0);
}
