//! Stable numeric IDs for frontends (rev-NAT) and backends.
//!
//! The datapath refers to backends and reverse-NAT entries by number, so the
//! numbers must stay put while their key exists (a change would break
//! established connections) and survive agent restarts ([`IdAllocator::restore`]).
//! Freed numbers are reused lowest-first to keep the maps dense.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

use thiserror::Error;

use crate::compile::{BackendAddr, Frontend};

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IdError {
    #[error("all {0} IDs are in use")]
    Exhausted(&'static str),
    #[error("{what} ID {id} is out of range 1..={max}")]
    OutOfRange {
        what: &'static str,
        id: u32,
        max: u32,
    },
    #[error("{what} ID {id} appears twice in the restored maps")]
    Duplicate { what: &'static str, id: u32 },
}

/// Set of free IDs as disjoint inclusive ranges, so an allocator spanning
/// 4 billion IDs costs memory proportional to its holes, not its size.
#[derive(Debug, Clone)]
struct FreeList {
    ranges: BTreeMap<u32, u32>,
}

impl FreeList {
    fn new(max: u32) -> Self {
        Self {
            ranges: BTreeMap::from([(1, max)]),
        }
    }

    fn take_lowest(&mut self) -> Option<u32> {
        let (start, end) = self.ranges.pop_first()?;
        if start < end {
            self.ranges.insert(start + 1, end);
        }
        Some(start)
    }

    /// Removes `id` from the free set; false if it was not free.
    fn take(&mut self, id: u32) -> bool {
        let Some((&start, &end)) = self.ranges.range(..=id).next_back() else {
            return false;
        };
        if id > end {
            return false;
        }
        self.ranges.remove(&start);
        if start < id {
            self.ranges.insert(start, id - 1);
        }
        if id < end {
            self.ranges.insert(id + 1, end);
        }
        true
    }

    fn give_back(&mut self, id: u32) {
        let mut start = id;
        let mut end = id;
        if let Some((&s, &e)) = self.ranges.range(..id).next_back() {
            if e.checked_add(1) == Some(id) {
                self.ranges.remove(&s);
                start = s;
            }
        }
        if let Some(next) = id.checked_add(1) {
            if let Some(e) = self.ranges.remove(&next) {
                end = e;
            }
        }
        self.ranges.insert(start, end);
    }
}

/// Reference-counted key → ID map.
#[derive(Debug, Clone)]
struct IdPool<K> {
    what: &'static str,
    max: u32,
    by_key: HashMap<K, (u32, u32)>,
    free: FreeList,
}

/// Result of taking a reference on a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Acquired {
    pub id: u32,
    /// True when the key had no ID before: the map entry must be written.
    pub new: bool,
}

impl<K: Eq + Hash + Clone> IdPool<K> {
    fn new(what: &'static str, max: u32) -> Self {
        Self {
            what,
            max,
            by_key: HashMap::new(),
            free: FreeList::new(max),
        }
    }

    fn get(&self, key: &K) -> Option<u32> {
        self.by_key.get(key).map(|&(id, _)| id)
    }

    fn acquire(&mut self, key: &K) -> Result<Acquired, IdError> {
        if let Some((id, refs)) = self.by_key.get_mut(key) {
            *refs += 1;
            return Ok(Acquired {
                id: *id,
                new: false,
            });
        }
        let id = self
            .free
            .take_lowest()
            .ok_or(IdError::Exhausted(self.what))?;
        self.by_key.insert(key.clone(), (id, 1));
        Ok(Acquired { id, new: true })
    }

    /// Drops one reference; returns the ID if it became free.
    fn release(&mut self, key: &K) -> Option<u32> {
        let (id, refs) = self.by_key.get_mut(key)?;
        *refs = refs.saturating_sub(1);
        if *refs > 0 {
            return None;
        }
        let id = *id;
        self.by_key.remove(key);
        self.free.give_back(id);
        Some(id)
    }

    /// Reserves `id` for `key` with no references yet (restored state).
    fn restore(&mut self, id: u32, key: K) -> Result<(), IdError> {
        if id == 0 || id > self.max {
            return Err(IdError::OutOfRange {
                what: self.what,
                id,
                max: self.max,
            });
        }
        if self.by_key.contains_key(&key) || !self.free.take(id) {
            return Err(IdError::Duplicate {
                what: self.what,
                id,
            });
        }
        self.by_key.insert(key, (id, 0));
        Ok(())
    }

    /// Frees restored IDs nobody claimed; returns (key, id) of each.
    fn prune_unreferenced(&mut self) -> Vec<(K, u32)> {
        let dead: Vec<(K, u32)> = self
            .by_key
            .iter()
            .filter(|(_, &(_, refs))| refs == 0)
            .map(|(k, &(id, _))| (k.clone(), id))
            .collect();
        for (k, id) in &dead {
            self.by_key.remove(k);
            self.free.give_back(*id);
        }
        dead
    }

    fn len(&self) -> usize {
        self.by_key.len()
    }
}

/// IDs for rev-NAT entries (one per frontend, `u32`) and backends (`u32`,
/// shared between services, reference counted).
#[derive(Debug, Clone)]
pub struct IdAllocator {
    rev_nat: IdPool<Frontend>,
    backends: IdPool<BackendAddr>,
    /// Restored IDs not yet confirmed by a compile; pruned after the first one.
    provisional: bool,
}

impl Default for IdAllocator {
    fn default() -> Self {
        Self::new()
    }
}

impl IdAllocator {
    pub fn new() -> Self {
        Self::with_limits(u32::MAX, u32::MAX)
    }

    /// Small limits make exhaustion testable.
    pub fn with_limits(max_rev_nat: u32, max_backend: u32) -> Self {
        Self {
            rev_nat: IdPool::new("rev-NAT", max_rev_nat),
            backends: IdPool::new("backend", max_backend),
            provisional: false,
        }
    }

    /// Rebuilds the allocator from the pinned maps after a restart, so that
    /// every frontend and backend keeps its ID. Entries that the next
    /// compile does not use are freed after it.
    pub fn restore(
        rev_nat: impl Iterator<Item = (u32, Frontend)>,
        backends: impl Iterator<Item = (u32, BackendAddr)>,
    ) -> Result<Self, IdError> {
        let mut ids = Self::new();
        for (id, fe) in rev_nat {
            ids.rev_nat.restore(id, fe)?;
        }
        for (id, be) in backends {
            ids.backends.restore(id, be)?;
        }
        ids.provisional = true;
        Ok(ids)
    }

    pub fn rev_nat_id(&self, frontend: &Frontend) -> Option<u32> {
        self.rev_nat.get(frontend)
    }

    pub fn backend_id(&self, backend: &BackendAddr) -> Option<u32> {
        self.backends.get(backend)
    }

    pub fn rev_nat_len(&self) -> usize {
        self.rev_nat.len()
    }

    pub fn backends_len(&self) -> usize {
        self.backends.len()
    }

    pub(crate) fn acquire_rev_nat(&mut self, fe: &Frontend) -> Result<(u32, bool), IdError> {
        let a = self.rev_nat.acquire(fe)?;
        Ok((a.id, a.new))
    }

    pub(crate) fn release_rev_nat(&mut self, fe: &Frontend) -> Option<u32> {
        self.rev_nat.release(fe)
    }

    pub(crate) fn acquire_backend(&mut self, be: &BackendAddr) -> Result<Acquired, IdError> {
        self.backends.acquire(be)
    }

    pub(crate) fn release_backend(&mut self, be: &BackendAddr) -> Option<u32> {
        self.backends.release(be)
    }

    /// After the first compile following a restore, frees what it did not
    /// claim. Returns the freed (rev-NAT, backend) IDs.
    pub(crate) fn finish_restore(&mut self) -> (Vec<u16>, Vec<u32>) {
        if !self.provisional {
            return (Vec::new(), Vec::new());
        }
        self.provisional = false;
        let rn = self
            .rev_nat
            .prune_unreferenced()
            .into_iter()
            .filter_map(|(_, id)| u16::try_from(id).ok())
            .collect();
        let be = self
            .backends
            .prune_unreferenced()
            .into_iter()
            .map(|(_, id)| id)
            .collect();
        (rn, be)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn free_list_reuses_lowest_and_merges() {
        let mut f = FreeList::new(10);
        assert_eq!(f.take_lowest(), Some(1));
        assert_eq!(f.take_lowest(), Some(2));
        assert_eq!(f.take_lowest(), Some(3));
        f.give_back(2);
        f.give_back(1);
        assert_eq!(f.ranges, BTreeMap::from([(1, 2), (4, 10)]));
        f.give_back(3);
        assert_eq!(f.ranges, BTreeMap::from([(1, 10)]));
        assert!(f.take(5));
        assert!(!f.take(5));
        assert_eq!(f.ranges, BTreeMap::from([(1, 4), (6, 10)]));
    }

    #[test]
    fn free_list_handles_u32_max() {
        let mut f = FreeList::new(u32::MAX);
        assert!(f.take(u32::MAX));
        f.give_back(u32::MAX);
        assert_eq!(f.ranges, BTreeMap::from([(1, u32::MAX)]));
    }

    #[test]
    fn pool_refcounts_and_exhausts() {
        let mut p: IdPool<&str> = IdPool::new("test", 2);
        assert_eq!(p.acquire(&"a").unwrap(), Acquired { id: 1, new: true });
        assert_eq!(p.acquire(&"a").unwrap(), Acquired { id: 1, new: false });
        assert_eq!(p.acquire(&"b").unwrap().id, 2);
        assert_eq!(p.acquire(&"c"), Err(IdError::Exhausted("test")));
        assert_eq!(p.release(&"a"), None);
        assert_eq!(p.release(&"a"), Some(1));
        assert_eq!(p.acquire(&"c").unwrap().id, 1);
    }

    #[test]
    fn restore_rejects_bad_ids() {
        let mut p: IdPool<&str> = IdPool::new("test", 5);
        assert!(matches!(p.restore(0, "a"), Err(IdError::OutOfRange { .. })));
        assert!(matches!(p.restore(6, "a"), Err(IdError::OutOfRange { .. })));
        p.restore(3, "a").unwrap();
        assert!(matches!(p.restore(3, "b"), Err(IdError::Duplicate { .. })));
        assert_eq!(p.acquire(&"b").unwrap().id, 1);
        assert_eq!(p.acquire(&"a").unwrap(), Acquired { id: 3, new: false });
    }
}
