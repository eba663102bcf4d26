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
//!
//! Beside the rows, [`KnownKeys`] remembers which keys the store may hold: every key read once
//! at start, and every key this engine inserts since. A key it does not know is absent from the
//! store, so the first action on a new instance inserts without reading first.

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
    /// The keys the store may hold.
    pub(crate) known: KnownKeys,
}

impl RecordCache {
    pub(crate) fn new(capacity: usize) -> Self {
        RecordCache {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
            known: KnownKeys::new(),
        }
    }

    /// Whether `key` is known to be absent from the store (no row, and none being written).
    pub(crate) fn known_absent(&self, key: &InstanceKey) -> bool {
        self.known.is_primed() && !self.known.may_contain(key)
    }

    /// Notes the rows `batch` is about to insert, before it commits: from then on, until it
    /// fails or commits, the store may hold them.
    pub(crate) fn will_write(&self, batch: &[Write]) {
        for write in batch {
            if let Write::Insert(record) = write {
                self.known.insert(&record.key);
            }
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

/// The instance keys a store may hold: a Bloom filter over the keys read at start and those
/// inserted since, so "not in the filter" means "not in the store" (while this engine is the
/// store's only writer), and "in the filter" means "read to find out" (0.1 to 0.2% of absent
/// keys per layer: under 1% with a million keys in five layers). It grows in layers that
/// double, at 1.75 bytes per key of capacity, so 1.75 to 3.5 bytes per key held: 1,000,000
/// instances take 3.6 MiB at most. Keys are never removed (a deleted instance only costs a
/// read).
pub(crate) struct KnownKeys {
    layers: Mutex<Vec<BloomLayer>>,
    /// Set once every key of the store was added: before that, nothing is known absent.
    primed: tokio::sync::watch::Sender<bool>,
}

/// One layer: `capacity` keys at [`BITS_PER_KEY`] bits each.
struct BloomLayer {
    bits: Vec<u64>,
    len: usize,
    capacity: usize,
}

/// 14 bits and 9 probes a key: a false "may contain" for about 0.2% of absent keys per layer.
const BITS_PER_KEY: usize = 14;
const PROBES: u64 = 9;
const FIRST_LAYER_KEYS: usize = 1 << 16;

impl BloomLayer {
    fn new(capacity: usize) -> Self {
        BloomLayer {
            bits: vec![0; (capacity * BITS_PER_KEY).div_ceil(64)],
            len: 0,
            capacity,
        }
    }

    /// The bit positions of a key's hash pair (double hashing).
    fn positions(&self, (h1, h2): (u64, u64)) -> impl Iterator<Item = (usize, u64)> {
        let m = (self.bits.len() * 64) as u64;
        (0..PROBES).map(move |i| {
            let bit = h1.wrapping_add(i.wrapping_mul(h2)) % m;
            ((bit / 64) as usize, 1u64 << (bit % 64))
        })
    }

    fn contains(&self, hash: (u64, u64)) -> bool {
        self.positions(hash)
            .all(|(word, mask)| self.bits.get(word).is_some_and(|w| w & mask != 0))
    }

    fn insert(&mut self, hash: (u64, u64)) {
        let positions: Vec<_> = self.positions(hash).collect();
        for (word, mask) in positions {
            if let Some(w) = self.bits.get_mut(word) {
                *w |= mask;
            }
        }
        self.len += 1;
    }
}

impl KnownKeys {
    fn new() -> Self {
        KnownKeys {
            layers: Mutex::new(vec![BloomLayer::new(FIRST_LAYER_KEYS)]),
            primed: tokio::sync::watch::channel(false).0,
        }
    }

    fn hash(key: &InstanceKey) -> (u64, u64) {
        let mut h = DefaultHasher::new();
        key.hash(&mut h);
        let h1 = h.finish();
        0x9e37_79b9_7f4a_7c15u64.hash(&mut h);
        // Odd, so the probes of one key never repeat a position.
        (h1, h.finish() | 1)
    }

    fn layers(&self) -> std::sync::MutexGuard<'_, Vec<BloomLayer>> {
        self.layers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the store may hold `key`.
    pub(crate) fn may_contain(&self, key: &InstanceKey) -> bool {
        let hash = Self::hash(key);
        self.layers().iter().any(|layer| layer.contains(hash))
    }

    /// Notes that the store may hold `key`.
    pub(crate) fn insert(&self, key: &InstanceKey) {
        let hash = Self::hash(key);
        let mut layers = self.layers();
        if layers.iter().any(|layer| layer.contains(hash)) {
            return;
        }
        let full = layers.last().is_none_or(|l| l.len >= l.capacity);
        if full {
            let capacity = layers.last().map_or(FIRST_LAYER_KEYS, |l| l.capacity * 2);
            layers.push(BloomLayer::new(capacity));
        }
        if let Some(layer) = layers.last_mut() {
            layer.insert(hash);
        }
    }

    /// Every key the store held at start was added: absences are known from now on.
    pub(crate) fn set_primed(&self) {
        self.primed.send_replace(true);
    }

    pub(crate) fn is_primed(&self) -> bool {
        *self.primed.borrow()
    }

    /// Waits until [`set_primed`](Self::set_primed).
    #[cfg(feature = "bench-internals")]
    pub(crate) async fn primed(&self) {
        let mut rx = self.primed.subscribe();
        let _ = rx.wait_for(|primed| *primed).await;
    }

    /// The filter's memory, in bytes.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.layers().iter().map(|l| l.bits.len() * 8).sum()
    }
}

/// Reads every instance key of the store into the engine's [`KnownKeys`], a page at a time,
/// then marks them primed. Runs once, beside the engine, at start; until it ends, first
/// actions read the store as they always did. On a failed read nothing is known absent.
pub(crate) async fn prime(store: std::sync::Arc<dyn crate::store::Backend>, cache: &RecordCache) {
    const PAGE: u32 = 10_000;
    let mut after = None;
    loop {
        match store.instance_keys(after.take(), PAGE).await {
            Ok(keys) => {
                for key in &keys {
                    cache.known.insert(key);
                }
                if keys.len() < PAGE as usize {
                    break;
                }
                after = keys.last().cloned();
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading the instance keys failed; every first action reads the store");
                return;
            }
        }
    }
    cache.known.set_primed();
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
    fn known_keys_never_call_an_inserted_key_absent_and_rarely_a_new_one_present() {
        let known = KnownKeys::new();
        assert!(!known.may_contain(&key(0)));
        for i in 0..200_000 {
            known.insert(&key(i));
        }
        assert!((0..200_000).all(|i| known.may_contain(&key(i))));
        let false_present = (200_000..300_000)
            .filter(|&i| known.may_contain(&key(i)))
            .count();
        // Three layers (64k, 128k, 256k keys) at about 0.2% each.
        assert!(false_present < 1_000, "{false_present} of 100,000");
        assert!(known.bytes() < 200_000 * 5, "{} bytes", known.bytes());
    }

    #[test]
    fn nothing_is_known_absent_before_the_keys_are_primed() {
        let cache = RecordCache::new(64);
        assert!(!cache.known_absent(&key(1)));
        cache.will_write(&[Write::Insert(InstanceRecord::new(key(1), Timestamp::EPOCH))]);
        cache.known.set_primed();
        assert!(!cache.known_absent(&key(1)), "being inserted");
        assert!(cache.known_absent(&key(2)));
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
