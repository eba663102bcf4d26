//! Storage faults on real files: a disk that fills up in the middle of a load (a small tmpfs
//! the test mounts), a database file that cannot be written (an immutable file), a file that is
//! not this engine's database, and a database written by a newer version. Each gives a typed
//! `Storage` error, leaves no partial state, and the engine works again once the fault clears.
//!
//! The disk-full and immutable-file tests need root (to mount a tmpfs and to set the immutable
//! attribute), as CI has; without it they fail with the reason, they do not skip.

use std::path::Path;
use std::process::Command;

use durable_jobs::{Engine, Error};
use durable_jobs_tests::*;

/// Runs a system command the test needs; panics with its output if it fails.
fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "`{program} {}` failed ({}): {}; this test needs root (CI runs as root)",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// A tmpfs of its own, unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_str().unwrap().to_owned();
        run(
            "mount",
            &["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs", &path],
        );
        SmallDisk { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn resize(&self, size: &str) {
        let path = self.dir.path().to_str().unwrap();
        run("mount", &["-o", &format!("remount,size={size}"), path]);
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

async fn open(path: &Path) -> Result<Engine<TestJobs>, Error> {
    Engine::<TestJobs>::builder()
        .sqlite(path)
        .app(Probe::default())
        .start()
        .await
}

fn is_storage<T>(result: &Result<T, Error>) -> bool {
    matches!(result, Err(Error::Storage { .. }))
}

/// Every event of batch `id`, as stored.
async fn events_of(engine: &Engine<TestJobs>, id: &str) -> Vec<i64> {
    engine
        .client()
        .debounce::<QuietBatcher>()
        .get_state(id)
        .await
        .unwrap()
        .map(|b| b.events)
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_writes_with_storage_and_loses_nothing_acknowledged() {
    let disk = SmallDisk::mount("3m");
    let db = disk.path().join("jobs.db");
    let engine = open(&db)
        .await
        .expect("the engine starts on the small disk");
    let batches = engine.client().debounce::<QuietBatcher>();
    // Events with a 2 KiB text each, spread over 20 batches, until the disk is full.
    let padding = 1_000_000_000_000_i64;
    let mut acked: Vec<Vec<i64>> = vec![Vec::new(); 20];
    let mut refused = None;
    for n in 0..100_000i64 {
        let id = format!("b{}", n % 20);
        // The batch state grows by the event's digits; a few hundred bytes per add is enough.
        match batches.add(&id, Hook { n: padding + n }).await {
            Ok(_) => acked[(n % 20) as usize].push(padding + n),
            Err(e) => {
                assert!(matches!(e, Error::Storage { .. }), "{e:?}");
                refused = Some((id, n, e.to_string()));
                break;
            }
        }
    }
    let (id, n, message) = refused.expect("the disk filled up");
    println!("disk full after {n} adds: {message}");
    // Nothing of the refused add is stored, and every acknowledged add is.
    let stored = events_of(&engine, &id).await;
    assert!(
        !stored.contains(&(padding + n)),
        "the refused event is stored"
    );
    for (i, events) in acked.iter().enumerate() {
        assert_eq!(&events_of(&engine, &format!("b{i}")).await, events);
    }

    // The fault clears: more room. Writes succeed again (after a restart if the store gave up).
    disk.resize("64m");
    let engine = match batches.add(&id, Hook { n: padding + n }).await {
        Ok(_) => {
            println!("the same engine writes again once there is room");
            acked[(n % 20) as usize].push(padding + n);
            drop(batches);
            engine.shutdown().await.unwrap();
            engine_on(&db).await
        }
        Err(e) => {
            println!("the engine needs a restart once there is room: {e}");
            assert!(matches!(e, Error::Storage { .. }), "{e:?}");
            drop(batches);
            let _ = engine.shutdown().await;
            let engine = engine_on(&db).await;
            engine
                .client()
                .debounce::<QuietBatcher>()
                .add(&id, Hook { n: padding + n })
                .await
                .expect("a restarted engine writes once there is room");
            acked[(n % 20) as usize].push(padding + n);
            engine
        }
    };
    for (i, events) in acked.iter().enumerate() {
        assert_eq!(&events_of(&engine, &format!("b{i}")).await, events);
    }
    engine.shutdown().await.unwrap();
}

async fn engine_on(db: &Path) -> Engine<TestJobs> {
    open(db)
        .await
        .expect("the engine starts once the fault is gone")
}

/// A database file that cannot be written (immutable, which even root cannot write): the start
/// is refused with `Storage` and the file is unchanged; once writable, it opens with its data.
#[tokio::test]
async fn an_unwritable_database_file_is_refused_with_storage_and_left_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("jobs.db");
    let engine = open(&db).await.unwrap();
    engine
        .client()
        .debounce::<QuietBatcher>()
        .add("kept", Hook { n: 7 })
        .await
        .unwrap();
    engine.shutdown().await.unwrap();
    let before = std::fs::read(&db).unwrap();
    let path = db.to_str().unwrap();
    run("chattr", &["+i", path]);
    let refused = open(&db).await;
    run("chattr", &["-i", path]);
    assert!(is_storage(&refused), "{:?}", refused.err());
    assert!(
        std::fs::read(&db).unwrap() == before,
        "the refused start wrote to the file"
    );
    let engine = open(&db).await.expect("writable again, the file opens");
    assert_eq!(events_of(&engine, "kept").await, [7]);
    engine.shutdown().await.unwrap();
}

/// Files that are not this engine's database: text, random bytes, and another application's
/// SQLite database. Each start is refused with `Storage`, and the file is left as it was.
#[tokio::test]
async fn a_foreign_file_is_refused_with_storage_and_left_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.txt");
    std::fs::write(
        &text,
        "these are not the rows you are looking for\n".repeat(200),
    )
    .unwrap();
    let noise = dir.path().join("noise.bin");
    std::fs::write(
        &noise,
        (0..8192u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let foreign = dir.path().join("other-app.db");
    {
        let conn = rusqlite::Connection::open(&foreign).unwrap();
        conn.execute_batch(
            "CREATE TABLE instances (name TEXT PRIMARY KEY, owner TEXT);
             INSERT INTO instances VALUES ('web-1', 'ops');",
        )
        .unwrap();
    }
    for file in [&text, &noise, &foreign] {
        let before = std::fs::read(file).unwrap();
        let refused = open(file).await;
        assert!(
            is_storage(&refused),
            "{}: {:?}",
            file.display(),
            refused.err()
        );
        assert!(
            std::fs::read(file).unwrap() == before,
            "{} was changed by the refused start",
            file.display()
        );
    }
    // The other application's database has none of the engine's tables.
    let conn = rusqlite::Connection::open(&foreign).unwrap();
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(tables, ["instances"]);
}

/// A database written by a newer version (a schema version this build does not know) is
/// refused with `Storage` naming the versions, unchanged; it opens again once the version is
/// one this build knows.
#[tokio::test]
async fn a_newer_schema_is_refused_with_storage_and_left_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("jobs.db");
    let engine = open(&db).await.unwrap();
    engine
        .client()
        .debounce::<QuietBatcher>()
        .add("kept", Hook { n: 3 })
        .await
        .unwrap();
    engine.shutdown().await.unwrap();
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute(
        "INSERT INTO schema_migrations (version, applied_at) VALUES (999, 0)",
        [],
    )
    .unwrap();
    drop(conn);
    let before = std::fs::read(&db).unwrap();
    match open(&db).await {
        Err(Error::Storage { source, .. }) => {
            assert!(source.to_string().contains("999"), "{source}")
        }
        other => panic!("expected Storage, got {:?}", other.map(drop)),
    }
    assert!(
        std::fs::read(&db).unwrap() == before,
        "the refused start wrote to the file"
    );
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute("DELETE FROM schema_migrations WHERE version = 999", [])
        .unwrap();
    drop(conn);
    let engine = open(&db).await.expect("a known schema opens");
    assert_eq!(events_of(&engine, "kept").await, [3]);
    engine.shutdown().await.unwrap();
}
