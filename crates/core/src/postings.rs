//! The ordered index's storage: value → the entities holding it.
//!
//! Why a map of postings rather than one ordered set of (value, entity)
//! pairs: an equality lookup — the common case: a session by token, a
//! player by name, everyone at level 12 — is then one search and a copy of
//! a contiguous list, not a walk over one tree entry per entity (3× faster
//! than `SQLite`'s index on 1M rows, `benches/ecs/benches/index.rs`). A value
//! held by up to 4,096 entities keeps them in a sorted `Vec`; one held by
//! more (a team, a zone: changing every tick) moves to a `BTreeSet`, so
//! adding or removing one stays logarithmic. Either way the
//! entities of one value come in id order, which is how ordered results
//! break ties.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::ops::RangeBounds;

use crate::id::EntityId;
use crate::index::Key;

/// Above this many entities a value's list becomes a set (below, adding or
/// removing one moves at most 32 KiB; lookups copy one slice).
/// (Small in tests, so the properties cover both forms.)
const SMALL_MAX: usize = if cfg!(test) { 64 } else { 4096 };

/// The entities holding one value, in id order.
#[derive(Debug, Clone)]
pub enum Ids {
    Small(Vec<EntityId>),
    Large(BTreeSet<EntityId>),
}

impl PartialEq for Ids {
    fn eq(&self, other: &Ids) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Ids {
    pub fn len(&self) -> usize {
        match self {
            Ids::Small(v) => v.len(),
            Ids::Large(s) => s.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entities, ascending.
    #[allow(clippy::iter_without_into_iter)]
    pub fn iter(&self) -> Box<dyn Iterator<Item = EntityId> + '_> {
        match self {
            Ids::Small(v) => Box::new(v.iter().copied()),
            Ids::Large(s) => Box::new(s.iter().copied()),
        }
    }

    fn extend_into(&self, out: &mut Vec<EntityId>) {
        match self {
            Ids::Small(v) => out.extend_from_slice(v),
            Ids::Large(s) => out.extend(s.iter().copied()),
        }
    }

    /// Add `id`; false when it was there.
    fn insert(&mut self, id: EntityId) -> bool {
        match self {
            Ids::Small(v) => match v.binary_search(&id) {
                Ok(_) => false,
                Err(at) => {
                    v.insert(at, id);
                    if v.len() > SMALL_MAX {
                        *self = Ids::Large(v.iter().copied().collect());
                    }
                    true
                }
            },
            Ids::Large(s) => s.insert(id),
        }
    }

    /// Take `id` out; false when it was not there.
    fn remove(&mut self, id: EntityId) -> bool {
        match self {
            Ids::Small(v) => match v.binary_search(&id) {
                Ok(at) => {
                    v.remove(at);
                    true
                }
                Err(_) => false,
            },
            Ids::Large(s) => s.remove(&id),
        }
    }
}

/// value → entities, ordered by value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Postings {
    map: BTreeMap<Key, Ids>,
    len: usize,
}

impl Postings {
    /// Number of (value, entity) entries.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn insert(&mut self, k: Key, id: EntityId) {
        let added = if let Some(ids) = self.map.get_mut(&k) {
            ids.insert(id)
        } else {
            self.map.insert(k, Ids::Small(vec![id]));
            true
        };
        self.len += usize::from(added);
    }

    pub fn remove(&mut self, k: &Key, id: EntityId) {
        let Some(ids) = self.map.get_mut(k) else { return };
        if ids.remove(id) {
            self.len -= 1;
        }
        if ids.is_empty() {
            self.map.remove(k);
        }
    }

    /// Memory held, estimated in O(1) (it is asked on every commit): per
    /// entry its id with slack, per value its key, list and tree slot.
    /// Out-of-line key bytes (strings) are not counted.
    pub fn heap_bytes(&self) -> usize {
        self.map.len() * (std::mem::size_of::<Key>() + std::mem::size_of::<Ids>() + 16) + self.len * 12
    }

    /// The entities holding `k`.
    pub fn get(&self, k: &Key) -> Option<&Ids> {
        self.map.get(k)
    }

    /// Entities of the values in `range`, by value then id.
    pub fn collect_range(&self, range: impl RangeBounds<Key>, out: &mut Vec<EntityId>) {
        for ids in self.map.range(range).map(|(_, ids)| ids) {
            ids.extend_into(out);
        }
    }

    /// (value, entities) ascending by value.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&Key, &Ids)> {
        self.map.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Value;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn postings_hold_what_a_set_of_pairs_holds(
            ops in proptest::collection::vec((any::<bool>(), 0u64..4, 0u64..600), 0..2000),
        ) {
            let mut p = Postings::default();
            let mut model: BTreeSet<(u64, u64)> = BTreeSet::new();
            for (add, v, id) in ops {
                let k = Key(Value::U64(v));
                if add {
                    p.insert(k, EntityId(id));
                    model.insert((v, id));
                } else {
                    p.remove(&k, EntityId(id));
                    model.remove(&(v, id));
                }
            }
            prop_assert_eq!(p.len(), model.len());
            let got: Vec<(u64, u64)> = p
                .iter()
                .flat_map(|(k, ids)| {
                    let Value::U64(v) = k.0 else { unreachable!() };
                    ids.iter().map(move |id| (v, id.0)).collect::<Vec<_>>()
                })
                .collect();
            prop_assert_eq!(got, model.iter().copied().collect::<Vec<_>>());
            let mut two = Vec::new();
            p.collect_range(Key(Value::U64(1))..=Key(Value::U64(2)), &mut two);
            let want: Vec<u64> = model.iter().filter(|(v, _)| (1..=2).contains(v)).map(|(_, id)| *id).collect();
            prop_assert_eq!(two.into_iter().map(|e| e.0).collect::<Vec<_>>(), want);
        }
    }
}
