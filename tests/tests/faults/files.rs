//! The database file: one engine per file whatever path reaches it, a file that is not a
//! database is refused, and writes into a file that was deleted under the engine are refused,
//! not acknowledged.

use std::path::{Path, PathBuf};
use std::process::Command;

use durable_jobs::{Engine, Error};
use durable_jobs_tests::{Batcher, Harness, Hook, Probe, TestJobs};

/// Starts an engine on `db` in this process.
async fn open_here(db: &Path) -> Result<Engine<TestJobs>, Error> {
    Engine::<TestJobs>::builder()
        .sqlite(db)
        .app(Probe::default())
        .start()
        .await
}

/// Starts an engine on `db` in a process of its own (from `cwd`); returns what it printed.
fn open_elsewhere(db: &Path, cwd: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_open_db"))
        .arg(db)
        .current_dir(cwd)
        .output()
        .expect("open_db runs");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Checks that `db` cannot be opened, in this process (unless it is relative to `cwd`) nor in
/// another, started in `cwd`.
async fn assert_in_use(db: &Path, cwd: &Path) {
    let elsewhere = open_elsewhere(db, cwd);
    assert!(
        elsewhere.starts_with("refused Storage") && elsewhere.contains("in use"),
        "{}: {elsewhere}",
        db.display()
    );
    if db.is_relative() {
        return;
    }
    match open_here(db).await {
        Err(Error::Storage { source, .. }) => {
            assert!(source.to_string().contains("in use"), "{source}")
        }
        Err(other) => panic!("{}: expected Storage, got {other:?}", db.display()),
        Ok(engine) => {
            engine.shutdown().await.unwrap();
            panic!("{}: a second engine started on the same file", db.display());
        }
    }
}

#[tokio::test]
async fn a_database_opened_through_a_symlink_is_refused() {
    let h = Harness::start().await;
    let dir = h.dir().to_owned();
    let link = dir.join("link.db");
    std::os::unix::fs::symlink(h.sqlite_file(), &link).unwrap();
    assert_in_use(&link, &dir).await;
    // A hard link, another spelling of the path, a path relative to the opener's folder.
    let hard = dir.join("hard.db");
    std::fs::hard_link(h.sqlite_file(), &hard).unwrap();
    assert_in_use(&hard, &dir).await;
    assert_in_use(&dir.join(".").join("jobs.db"), &dir).await;
    assert_in_use(Path::new("jobs.db"), &dir).await;

    // The lock is on the file itself: deleting every other file of the folder lifts nothing.
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with("jobs.db") || name.ends_with(".lock") {
            std::fs::remove_file(&path).unwrap();
        }
    }
    assert_in_use(h.sqlite_file(), &dir).await;

    // The engine holding the file works on; once it is shut down the file opens again.
    h.client
        .debounce::<Batcher>()
        .add("b", Hook { n: 1 })
        .await
        .unwrap();
    let Harness { engine, client, .. } = h;
    drop(client);
    engine.shutdown().await.unwrap();
    std::os::unix::fs::symlink(dir.join("jobs.db"), &link).unwrap();
    assert_eq!(open_elsewhere(&link, &dir), "opened");
    let again = open_here(&link).await.unwrap();
    let batch = again
        .client()
        .debounce::<Batcher>()
        .status("b")
        .await
        .unwrap();
    assert_eq!(batch.event_count, 1);
    again.shutdown().await.unwrap();
}

#[tokio::test]
async fn writes_into_a_deleted_database_fail_with_storage() {
    let root = tempfile::tempdir().unwrap();
    let folder = root.path().join("data");
    std::fs::create_dir(&folder).unwrap();
    let db: PathBuf = folder.join("jobs.db");
    let engine = open_here(&db).await.unwrap();
    let client = engine.client();
    let batcher = client.debounce::<Batcher>();
    batcher.add("kept", Hook { n: 1 }).await.unwrap();

    // The folder goes, database and log with it, while the engine runs.
    std::fs::remove_dir_all(&folder).unwrap();
    let mut acknowledged = 0;
    for n in 0..200 {
        match batcher.add(&format!("lost-{n}"), Hook { n }).await {
            Ok(_) => acknowledged += 1,
            Err(Error::Storage { source, .. }) => {
                assert!(source.to_string().contains("deleted"), "{source}")
            }
            Err(other) => panic!("expected Storage, got {other:?}"),
        }
    }
    assert_eq!(
        acknowledged, 0,
        "writes into the deleted file were acknowledged"
    );
    // Reads say so too, even of what the engine still remembers.
    for id in ["kept", "lost-0", "never-written"] {
        assert!(
            matches!(batcher.status(id).await, Err(Error::Storage { .. })),
            "{id}"
        );
    }
    drop((batcher, client));
    let _ = engine.shutdown().await;

    // A new file at the same path holds none of it.
    std::fs::create_dir(&folder).unwrap();
    let engine = open_here(&db).await.unwrap();
    assert!(engine
        .client()
        .debounce::<Batcher>()
        .status("lost-0")
        .await
        .unwrap()
        .is_not_found());
    engine.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_database_replaced_under_the_engine_fails_the_next_write() {
    let h = Harness::start().await;
    h.client
        .debounce::<Batcher>()
        .add("a", Hook { n: 1 })
        .await
        .unwrap();
    // Another database is moved over the path, as a careless restore would.
    let other = h.dir().join("other.db");
    let restored = open_here(&other).await.unwrap();
    restored.shutdown().await.unwrap();
    std::fs::rename(&other, h.sqlite_file()).unwrap();
    let err = h
        .client
        .debounce::<Batcher>()
        .add("a", Hook { n: 2 })
        .await
        .unwrap_err();
    match err {
        Error::Storage { source, .. } => {
            assert!(source.to_string().contains("replaced"), "{source}")
        }
        other => panic!("expected Storage, got {other:?}"),
    }
}

#[tokio::test]
async fn a_second_engine_on_the_same_file_gets_a_storage_error() {
    let h = Harness::start().await;
    let err = Engine::<TestJobs>::builder()
        .sqlite_options(durable_jobs_tests::store_options(h.sqlite_file()))
        .app(Probe::default())
        .start()
        .await
        .err()
        .unwrap();
    assert!(matches!(err, Error::Storage { .. }), "{err:?}");
}

#[tokio::test]
async fn a_file_that_is_not_a_database_gets_a_storage_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("not-a-db");
    std::fs::write(
        &path,
        b"this is definitely not an sqlite database, just some text bytes",
    )
    .unwrap();
    let err = Engine::<TestJobs>::builder()
        .sqlite_options(durable_jobs_tests::store_options(&path))
        .app(Probe::default())
        .start()
        .await
        .err()
        .unwrap();
    assert!(matches!(err, Error::Storage { .. }), "{err:?}");
}
