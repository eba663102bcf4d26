//! The embedded SQLite backend.

/// The SQLite store.
#[derive(Debug)]
pub struct SqliteStore {
    _private: (),
}

pub(crate) mod runs;
