//! A bounded write-through cache of committed instance rows.
//!
//! Used only with a backend that declares it is the only writer of its data
//! ([`Backend::exclusive`](crate::store::Backend::exclusive): SQLite holds an exclusive lock on
//! its file). Every write of this engine goes through [`Inner::commit`](super::Inner) or a
//! claim, which update the cache after the store accepted them, so the cache holds exactly what
//! was last committed: an action can skip the read before its write. Rows that were never
//! loaded, or were evicted, are read from the store as usual.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;

use crate::id::InstanceKey;
use crate::store::{Columns, InstanceRecord, Write};

const SHARDS: usize = 32;

/// `None` caches "no such instance", which is as useful as a row for the first `add`.
type Shard = Mutex<HashMap<InstanceKey, Option<InstanceRecord>>>;

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

    fn shard(
        &self,
        key: &InstanceKey,
    ) -> std::sync::MutexGuard<'_, HashMap<InstanceKey, Option<InstanceRecord>>> {
        let mut h = DefaultHasher::new();
        key.hash(&mut h);
        self.shards[(h.finish() as usize) % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// `Some(row or absence)` when known.
    pub(crate) fn get(&self, key: &InstanceKey) -> Option<Option<InstanceRecord>> {
        self.shard(key).get(key).cloned()
    }

    pub(crate) fn put(&self, key: InstanceKey, record: Option<InstanceRecord>) {
        let mut shard = self.shard(&key);
        if shard.len() >= self.per_shard && !shard.contains_key(&key) {
            // Any entry will do: the cache only saves reads.
            if let Some(victim) = shard.keys().next().cloned() {
                shard.remove(&victim);
            }
        }
        shard.insert(key, record);
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
                if let Some(Some(old)) = self.shard(&record.key).get(&record.key) {
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
