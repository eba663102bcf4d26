//! The power-cut disk (`durable_jobs_tests::powercut`, a FUSE file system that drops every
//! write not yet synced): what it keeps and loses at a cut, and SQLite on it in both
//! synchronous modes.
//!
//! These tests mount a file system, which needs root, as CI has; without it they fail and say
//! why.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;

use durable_jobs_tests::kill::{fresh_seed, Rng};
use durable_jobs_tests::powercut::{Disk, Loss};

/// Cuts the power of `disk`, lets whatever used it (`users`) go (its writes fail from now on),
/// and mounts what the disk held again.
fn cut_and_remount<T>(disk: Disk, loss: &mut Loss, users: T) -> Disk {
    let (volume, _) = disk.cut_power(loss);
    disk.fail_requests();
    drop(users);
    let mountpoint = disk.path().to_owned();
    disk.unmount().expect("unmount after the cut");
    Disk::mount_volume(&mountpoint, volume).expect("mount after the cut")
}

fn sync_dir(path: &Path) {
    File::open(path).unwrap().sync_all().unwrap();
}

#[test]
fn the_disk_keeps_synced_writes_and_loses_the_rest_at_a_power_cut() {
    let dir = tempfile::tempdir().unwrap();
    let disk = Disk::mount(dir.path()).unwrap();
    let root = disk.path().to_owned();

    // Synced file, synced entry.
    let mut kept = File::create(root.join("kept")).unwrap();
    kept.write_all(b"synced").unwrap();
    kept.sync_data().unwrap();
    sync_dir(&root);
    kept.write_all(b" and more").unwrap();
    // Synced file whose entry was not synced.
    let mut orphan = File::create(root.join("orphan")).unwrap();
    orphan.write_all(b"data").unwrap();
    orphan.sync_all().unwrap();
    drop((kept, orphan));
    assert_eq!(fs::read(root.join("kept")).unwrap(), b"synced and more");

    let disk = cut_and_remount(disk, &mut Loss::Unsynced, ());
    assert_eq!(fs::read(root.join("kept")).unwrap(), b"synced");
    assert!(!root.join("orphan").exists());

    // A removal not synced is undone too.
    fs::remove_file(root.join("kept")).unwrap();
    let disk = cut_and_remount(disk, &mut Loss::Unsynced, ());
    assert_eq!(fs::read(root.join("kept")).unwrap(), b"synced");

    let mut f = OpenOptions::new()
        .append(true)
        .open(root.join("kept"))
        .unwrap();
    f.write_all(b"!").unwrap();
    f.sync_all().unwrap();
    drop(f);
    let disk = cut_and_remount(disk, &mut Loss::Unsynced, ());
    assert_eq!(fs::read(root.join("kept")).unwrap(), b"synced!");
    disk.unmount().unwrap();
}

/// Commits `rows` single-row transactions to a fresh WAL database on a fresh disk, cuts the
/// power, and returns how many rows the database holds afterwards (after `integrity_check`).
fn rows_after_cut(synchronous: &str, rows: i64, loss: &mut Loss) -> (i64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let disk = Disk::mount(dir.path()).unwrap();
    let db = disk.path().join("t.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    // The table itself is made durable first (a checkpoint syncs the log and the file).
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL; CREATE TABLE t (n INTEGER PRIMARY KEY, pad TEXT);
         PRAGMA wal_checkpoint; PRAGMA synchronous = {synchronous};"
    ))
    .unwrap();
    for n in 0..rows {
        conn.execute("INSERT INTO t VALUES (?1, hex(randomblob(300)))", [n])
            .unwrap();
    }
    let syncs = disk.counters().file_syncs;
    // The connection is open at the cut, and closed (failing) after it.
    let disk = cut_and_remount(disk, loss, conn);
    let conn = rusqlite::Connection::open(&db).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let count = conn
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    drop(conn);
    disk.unmount().unwrap();
    (count, syncs)
}

#[test]
fn sqlite_keeps_every_commit_with_synchronous_full_and_loses_the_last_with_normal() {
    let (full, full_syncs) = rows_after_cut("FULL", 50, &mut Loss::Unsynced);
    let (normal, normal_syncs) = rows_after_cut("NORMAL", 50, &mut Loss::Unsynced);
    println!("FULL: {full} rows, {full_syncs} syncs; NORMAL: {normal} rows, {normal_syncs} syncs");
    assert_eq!(full, 50);
    assert!(normal < 50);
}

#[test]
fn sqlite_is_never_corrupted_when_a_cut_keeps_some_unsynced_pages() {
    let mut seeds = Rng::new(fresh_seed());
    for _ in 0..10 {
        let seed = seeds.next_u64();
        let (full, _) = rows_after_cut("FULL", 40, &mut Loss::SomePages(Rng::new(seed)));
        let (normal, _) = rows_after_cut("NORMAL", 40, &mut Loss::SomePages(Rng::new(seed)));
        assert_eq!(full, 40, "seed {seed}");
        assert!(normal <= 40, "seed {seed}");
    }
}
