//! Where the behavioural suites keep their data, chosen per test binary: a SQLite file in a
//! temporary folder, owned exclusively (each suite's own binary) or shared (the `shared`
//! binary). Every engine a suite starts opens its store through a [`TestDb`], so that a binary
//! picks the backing for all of them at once.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use durable_jobs::sqlite::{SqliteOptions, SqliteStore};
use durable_jobs::store::{Ownership, Store};

/// The store the suites of this test binary run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backing {
    /// A SQLite file of the test's own, opened with this ownership.
    Sqlite(Ownership),
}

/// The backing of this test binary, from its name: SQLite in shared mode in the `shared`
/// binary (cargo names it `shared-<hash>`), SQLite owned exclusively in every other. The
/// `shared` binary checks what it sees, so the suites cannot silently run on one backing twice.
pub fn backing() -> Backing {
    static BACKING: OnceLock<Backing> = OnceLock::new();
    *BACKING.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        let name = exe.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        let binary = name.split_once('-').map_or(name, |(binary, _hash)| binary);
        match binary {
            "shared" => Backing::Sqlite(Ownership::Shared),
            _ => Backing::Sqlite(Ownership::Exclusive),
        }
    })
}

/// The ownership of this binary's stores.
pub fn ownership() -> Ownership {
    match backing() {
        Backing::Sqlite(ownership) => ownership,
    }
}

/// A SQLite store in the file at `path`, with this binary's [`ownership`]: for the tests about
/// SQLite files themselves.
pub fn store_options(path: impl AsRef<Path>) -> SqliteOptions {
    SqliteOptions::file(path.as_ref()).ownership(ownership())
}

/// The data of one test, on this binary's [`backing`], removed when dropped. Each
/// [`open`](Self::open) opens another store on the same data, as an engine started again does.
pub struct TestDb {
    dir: tempfile::TempDir,
    path: PathBuf,
}

impl TestDb {
    /// Fresh, empty data.
    pub async fn new() -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.db");
        TestDb { dir, path }
    }

    /// A store on the data; an engine handed it closes it at shutdown.
    pub async fn open(&self) -> Arc<dyn Store> {
        self.try_open().await.unwrap()
    }

    /// As [`open`](Self::open), returning the store's error.
    pub async fn try_open(&self) -> Result<Arc<dyn Store>, durable_jobs::store::StoreError> {
        match backing() {
            Backing::Sqlite(_) => {
                let store: Arc<dyn Store> = SqliteStore::open(store_options(&self.path))?;
                Ok(store)
            }
        }
    }

    /// The SQLite file, on a SQLite backing.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The temporary folder the data lives in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}
