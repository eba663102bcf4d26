//! Per-instance serialisation: a keyed async mutex whose entries disappear when unused.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

use crate::id::InstanceKey;

const SHARDS: usize = 64;

type Shard = Mutex<HashMap<InstanceKey, Arc<AsyncMutex<()>>>>;

/// One async mutex per instance key, created on first use and dropped with its last user, so
/// memory follows the number of instances being worked on, not the number that exist.
pub(crate) struct KeyedLocks {
    shards: Box<[Shard]>,
}

/// Holds one instance's lock; releases it (and its map entry, when unused) on drop.
pub(crate) struct KeyGuard<'a> {
    locks: &'a KeyedLocks,
    key: InstanceKey,
    guard: Option<OwnedMutexGuard<()>>,
}

impl KeyedLocks {
    pub(crate) fn new() -> Self {
        KeyedLocks {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    // In range: the index is taken modulo `SHARDS`, and `new` makes `SHARDS` shards.
    #[allow(clippy::indexing_slicing)]
    fn shard(&self, key: &InstanceKey) -> &Shard {
        let mut h = DefaultHasher::new();
        key.hash(&mut h);
        &self.shards[(h.finish() as usize) % SHARDS]
    }

    pub(crate) async fn lock(&self, key: &InstanceKey) -> KeyGuard<'_> {
        let mutex = {
            let mut map = self.shard(key).lock().unwrap_or_else(|e| e.into_inner());
            map.entry(key.clone()).or_default().clone()
        };
        let guard = mutex.lock_owned().await;
        KeyGuard {
            locks: self,
            key: key.clone(),
            guard: Some(guard),
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|m| m.len()).unwrap_or(0))
            .sum()
    }
}

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        let mut map = self
            .locks
            .shard(&self.key)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // The map and our guard hold one reference each; any more are waiters.
        if map
            .get(&self.key)
            .is_some_and(|m| Arc::strong_count(m) == 2)
        {
            map.remove(&self.key);
        }
        self.guard.take();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::JobKind;

    #[tokio::test]
    async fn entries_are_removed_when_unused() {
        let locks = KeyedLocks::new();
        let key = InstanceKey::new(JobKind::Task, "t", "1");
        {
            let _g = locks.lock(&key).await;
            assert_eq!(locks.len(), 1);
        }
        assert_eq!(locks.len(), 0);
    }

    #[tokio::test]
    async fn a_second_locker_waits_and_keeps_the_entry() {
        let locks = KeyedLocks::new();
        let key = InstanceKey::new(JobKind::Task, "t", "1");
        let other = InstanceKey::new(JobKind::Task, "t", "2");
        let first = locks.lock(&key).await;
        let mut second = Box::pin(locks.lock(&key));
        // Polled once: it must not get the lock while `first` holds it.
        tokio::select! {
            biased;
            _ = &mut second => panic!("the second locker got the lock while the first held it"),
            () = std::future::ready(()) => {}
        }
        // Another instance is not blocked meanwhile.
        drop(locks.lock(&other).await);
        assert_eq!(
            locks.len(),
            1,
            "one entry, shared by the holder and the waiter"
        );
        drop(first);
        // The waiter keeps the entry alive after the first guard is gone ...
        assert_eq!(locks.len(), 1);
        let second = tokio::time::timeout(std::time::Duration::from_secs(10), second)
            .await
            .expect("the waiter gets the lock once the first guard is dropped");
        assert_eq!(locks.len(), 1);
        // ... and the entry goes with the last guard.
        drop(second);
        assert_eq!(locks.len(), 0);
    }
}
