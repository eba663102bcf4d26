//! A bounded write-through cache of committed instance rows.
//!
//! Used only with a store that is the only writer of its data
//! ([`Ownership::Exclusive`](crate::store::Ownership::Exclusive); see `claims.rs`). Every write of this engine goes through [`Inner::commit`](super::Inner) or a
//! claim, which update the cache after the store accepted them, so the cache holds exactly what
//! was last committed: an action can skip the read before its write. Rows that were never
//! loaded, or were evicted, are read from the store as usual.
//!
//! Next to a row it can keep the row's state already decoded (a debounce batch being
//! collected), valid for that row's version only, so the next `add` does not parse the JSON it
//! just wrote.

use std::any::Any;
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;

use crate::id::InstanceKey;
use crate::store::{Columns, InstanceRecord, Write};

const SHARDS: usize = 32;

/// A state decoded from a row's JSON, by the job's own type.
pub(crate) type DecodedState = Box<dyn Any + Send>;

struct Entry {
    /// `None` caches "no such instance", which is as useful as a row for the first `add`.
    record: Option<InstanceRecord>,
    /// `record.state` decoded, when an action left it here.
    decoded: Option<DecodedState>,
}

type Shard = Mutex<HashMap<InstanceKey, Entry>>;

pub(crate) struct RecordCache {
    shards: Box<[Shard]>,
    per_shard: usize,
}

impl RecordCache {
    pub(crate) fn new(capacity: usize) -> Self {
        RecordCache {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
        }
    }

    // In range: the index is taken modulo `SHARDS`, and `new` makes `SHARDS` shards.
    #[allow(clippy::indexing_slicing)]
    fn shard(&self, key: &InstanceKey) -> std::sync::MutexGuard<'_, HashMap<InstanceKey, Entry>> {
        let mut h = DefaultHasher::new();
        key.hash(&mut h);
        self.shards[(h.finish() as usize) % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// `Some(row or absence)` when known.
    pub(crate) fn get(&self, key: &InstanceKey) -> Option<Option<InstanceRecord>> {
        self.shard(key).get(key).map(|e| e.record.clone())
    }

    /// Remembers `record` as committed; a decoded state of an earlier version is dropped.
    pub(crate) fn put(&self, key: InstanceKey, record: Option<InstanceRecord>) {
        let mut shard = self.shard(&key);
        if shard.len() >= self.per_shard && !shard.contains_key(&key) {
            // Any entry will do: the cache only saves reads.
            if let Some(victim) = shard.keys().next().cloned() {
                shard.remove(&victim);
            }
        }
        shard.insert(
            key,
            Entry {
                record,
                decoded: None,
            },
        );
    }

    /// Takes the decoded state of `key`'s cached row if that row is at `version`.
    pub(crate) fn take_decoded(&self, key: &InstanceKey, version: u64) -> Option<DecodedState> {
        let mut shard = self.shard(key);
        let entry = shard.get_mut(key)?;
        match &entry.record {
            Some(r) if r.version == version => entry.decoded.take(),
            _ => None,
        }
    }

    /// Keeps `decoded` next to `key`'s cached row if that row is at `version` (the row the
    /// state was decoded from, or encoded into).
    pub(crate) fn put_decoded(&self, key: &InstanceKey, version: u64, decoded: DecodedState) {
        let mut shard = self.shard(key);
        if let Some(entry) = shard.get_mut(key) {
            if entry.record.as_ref().is_some_and(|r| r.version == version) {
                entry.decoded = Some(decoded);
            }
        }
    }

    pub(crate) fn forget(&self, key: &InstanceKey) {
        self.shard(key).remove(key);
    }

    /// Narrows each update of `batch` to the columns that differ from the cached row it
    /// replaces, so the store can skip the rest (and the indexes on them). A row that is not
    /// cached, or cached at another version, keeps [`Columns::ALL`].
    pub(crate) fn narrow_updates(&self, batch: &mut [Write]) {
        for write in batch {
            if let Write::Update {
                record,
                expected_version,
                changed,
            } = write
            {
                let shard = self.shard(&record.key);
                if let Some(old) = shard.get(&record.key).and_then(|e| e.record.as_ref()) {
                    if old.version == *expected_version {
                        *changed = Columns::between(old, record);
                    }
                }
            }
        }
    }

    /// What the store holds for each instance a batch writes, once it commits.
    pub(crate) fn effects(batch: &[Write]) -> Vec<(InstanceKey, Option<InstanceRecord>)> {
        batch
            .iter()
            .filter_map(|w| match w {
                Write::Insert(r) | Write::Update { record: r, .. } => {
                    Some((r.key.clone(), Some(r.clone())))
                }
                Write::Delete { key, .. } => Some((key.clone(), None)),
                Write::RecordEvent { .. } | Write::Outbox(_) => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::JobKind;
    use crate::time::Timestamp;

    fn key(i: usize) -> InstanceKey {
        InstanceKey::new(JobKind::Task, "t", i.to_string())
    }

    #[test]
    fn updates_are_narrowed_against_the_cached_row_of_their_version_only() {
        let cache = RecordCache::new(64);
        let mut old = InstanceRecord::new(key(1), Timestamp::EPOCH);
        old.version = 4;
        old.alarm_at = Some(Timestamp::from_millis(100));
        cache.put(key(1), Some(old.clone()));
        let update = |record: &InstanceRecord, expected_version| {
            let mut new = record.clone();
            new.event_count += 1;
            new.version = expected_version + 1;
            Write::Update {
                record: new,
                expected_version,
                changed: Columns::ALL,
            }
        };
        let mut other = InstanceRecord::new(key(2), Timestamp::EPOCH);
        other.version = 4;
        let mut batch = vec![update(&old, 4), update(&old, 3), update(&other, 4)];
        cache.narrow_updates(&mut batch);
        let changed: Vec<Columns> = batch
            .iter()
            .map(|w| match w {
                Write::Update { changed, .. } => *changed,
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(
            changed,
            [
                Columns::UPDATED.union(Columns::EVENT_COUNT),
                Columns::ALL,
                Columns::ALL
            ]
        );
    }

    #[test]
    fn a_decoded_state_is_only_handed_out_for_the_version_it_was_kept_for() {
        let cache = RecordCache::new(64);
        let mut row = InstanceRecord::new(key(1), Timestamp::EPOCH);
        row.version = 7;
        cache.put(key(1), Some(row.clone()));
        cache.put_decoded(&key(1), 6, Box::new(vec![1u32]));
        assert!(
            cache.take_decoded(&key(1), 6).is_none(),
            "kept for a version not cached"
        );
        cache.put_decoded(&key(1), 7, Box::new(vec![1u32, 2]));
        assert!(cache.take_decoded(&key(1), 8).is_none());
        let taken = cache.take_decoded(&key(1), 7).expect("kept for version 7");
        assert_eq!(*taken.downcast::<Vec<u32>>().unwrap(), [1, 2]);
        assert!(cache.take_decoded(&key(1), 7).is_none(), "taken once");

        // A new committed row drops what was decoded from the old one.
        cache.put_decoded(&key(1), 7, Box::new(vec![3u32]));
        row.version = 8;
        cache.put(key(1), Some(row));
        assert!(cache.take_decoded(&key(1), 7).is_none());
        assert!(cache.take_decoded(&key(1), 8).is_none());
    }

    #[test]
    fn remembers_rows_and_absences_within_its_capacity() {
        let cache = RecordCache::new(64);
        cache.put(key(1), Some(InstanceRecord::new(key(1), Timestamp::EPOCH)));
        cache.put(key(2), None);
        assert!(matches!(cache.get(&key(1)), Some(Some(_))));
        assert!(matches!(cache.get(&key(2)), Some(None)));
        assert!(cache.get(&key(3)).is_none());
        cache.forget(&key(1));
        assert!(cache.get(&key(1)).is_none());
        for i in 0..10_000 {
            cache.put(key(i), None);
        }
        let held: usize = cache.shards.iter().map(|s| s.lock().unwrap().len()).sum();
        assert!(held <= 64 + SHARDS, "{held}");
    }
}
