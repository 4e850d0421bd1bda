//! Relations: typed, directed edges between entities, with property rows, and
//! the graph traversals over them (neighbours, k-hop, shortest path).
//!
//! Each edge is keyed by (relation, from, to): at most one edge of a type
//! between two entities. Adjacency is kept in both directions so incoming and
//! outgoing neighbours are equally cheap and deleting an entity finds all its
//! edges without a scan.

use std::collections::VecDeque;

use rustc_hash::{FxHashMap, FxHashSet};

use crate::id::EntityId;
use crate::schema::RelationId;

/// Which way to follow edges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// From source to target.
    Out,
    /// From target to source.
    In,
    /// Either way.
    Both,
}

/// The key of one edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EdgeKey {
    pub rel: RelationId,
    pub from: EntityId,
    pub to: EntityId,
}

/// All edges of all relation types.
#[derive(Debug, Clone, Default)]
pub struct Relations {
    edges: FxHashMap<EdgeKey, Box<[u8]>>,
    out: FxHashMap<EntityId, Vec<(RelationId, EntityId)>>,
    inc: FxHashMap<EntityId, Vec<(RelationId, EntityId)>>,
    prop_bytes: usize,
}

fn remove_pair(map: &mut FxHashMap<EntityId, Vec<(RelationId, EntityId)>>, k: EntityId, v: (RelationId, EntityId)) {
    if let Some(list) = map.get_mut(&k) {
        if let Some(i) = list.iter().position(|x| *x == v) {
            list.swap_remove(i);
        }
        if list.is_empty() {
            map.remove(&k);
        }
    }
}

impl Relations {
    pub fn len(&self) -> usize {
        self.edges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.edges.is_empty()
    }

    pub fn get(&self, k: &EdgeKey) -> Option<&[u8]> {
        self.edges.get(k).map(|b| &**b)
    }

    /// Insert or replace an edge; returns the previous properties.
    pub(crate) fn link(&mut self, k: EdgeKey, props: &[u8]) -> Option<Box<[u8]>> {
        self.prop_bytes += props.len();
        let old = self.edges.insert(k, props.into());
        if let Some(o) = &old {
            self.prop_bytes -= o.len();
        } else {
            self.out.entry(k.from).or_default().push((k.rel, k.to));
            self.inc.entry(k.to).or_default().push((k.rel, k.from));
        }
        old
    }

    /// Remove an edge; returns its properties.
    pub(crate) fn unlink(&mut self, k: &EdgeKey) -> Option<Box<[u8]>> {
        let old = self.edges.remove(k)?;
        self.prop_bytes -= old.len();
        remove_pair(&mut self.out, k.from, (k.rel, k.to));
        remove_pair(&mut self.inc, k.to, (k.rel, k.from));
        Some(old)
    }

    /// Every edge touching `e`, either direction (self-loops once).
    pub fn edges_of(&self, e: EntityId) -> Vec<EdgeKey> {
        let mut v: Vec<EdgeKey> =
            self.out.get(&e).into_iter().flatten().map(|&(rel, to)| EdgeKey { rel, from: e, to }).collect();
        v.extend(self.inc.get(&e).into_iter().flatten().filter(|&&(_, from)| from != e).map(|&(rel, from)| EdgeKey {
            rel,
            from,
            to: e,
        }));
        v
    }

    /// Neighbours of `e` along edges of `rel` (any type when `None`).
    pub fn neighbors(&self, e: EntityId, rel: Option<RelationId>, dir: Direction) -> Vec<EntityId> {
        let mut v = Vec::new();
        let pick = |list: Option<&Vec<(RelationId, EntityId)>>, v: &mut Vec<EntityId>| {
            for &(r, other) in list.into_iter().flatten() {
                if rel.is_none_or(|x| x == r) {
                    v.push(other);
                }
            }
        };
        if matches!(dir, Direction::Out | Direction::Both) {
            pick(self.out.get(&e), &mut v);
        }
        if matches!(dir, Direction::In | Direction::Both) {
            pick(self.inc.get(&e), &mut v);
        }
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Entities reachable from `start` in 1..=`k` hops, with their distance,
    /// nearest first (ties by id). `start` itself is not included.
    pub fn k_hop(&self, start: EntityId, rel: Option<RelationId>, dir: Direction, k: usize) -> Vec<(EntityId, usize)> {
        let mut seen = FxHashSet::default();
        seen.insert(start);
        let mut out = Vec::new();
        let mut frontier = vec![start];
        for depth in 1..=k {
            let mut next = Vec::new();
            for &e in &frontier {
                for n in self.neighbors(e, rel, dir) {
                    if seen.insert(n) {
                        next.push(n);
                    }
                }
            }
            next.sort_unstable();
            out.extend(next.iter().map(|&n| (n, depth)));
            if next.is_empty() {
                break;
            }
            frontier = next;
        }
        out
    }

    /// A shortest path (fewest edges) from `a` to `b`, both ends included;
    /// `None` when `b` is unreachable within `max_hops`.
    pub fn shortest_path(
        &self,
        a: EntityId,
        b: EntityId,
        rel: Option<RelationId>,
        dir: Direction,
        max_hops: usize,
    ) -> Option<Vec<EntityId>> {
        if a == b {
            return Some(vec![a]);
        }
        let mut prev: FxHashMap<EntityId, EntityId> = FxHashMap::default();
        let mut q = VecDeque::new();
        q.push_back((a, 0usize));
        prev.insert(a, a);
        while let Some((e, d)) = q.pop_front() {
            if d >= max_hops {
                continue;
            }
            for n in self.neighbors(e, rel, dir) {
                if prev.contains_key(&n) {
                    continue;
                }
                prev.insert(n, e);
                if n == b {
                    let mut path = vec![b];
                    let mut cur = b;
                    while cur != a {
                        cur = prev[&cur];
                        path.push(cur);
                    }
                    path.reverse();
                    return Some(path);
                }
                q.push_back((n, d + 1));
            }
        }
        None
    }

    /// Iterate all edges (unordered).
    pub fn iter(&self) -> impl Iterator<Item = (&EdgeKey, &[u8])> {
        self.edges.iter().map(|(k, v)| (k, &**v))
    }

    /// Bytes of live data, for memory accounting.
    pub fn data_bytes(&self) -> usize {
        self.prop_bytes + self.edges.len() * 96
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(i: u32) -> EntityId {
        EntityId::new(i, 1)
    }

    fn chain() -> Relations {
        // 1 -> 2 -> 3 -> 4, 1 -> 5 (rel 1), 5 -> 4 (rel 0)
        let mut r = Relations::default();
        for (a, b) in [(1, 2), (2, 3), (3, 4)] {
            r.link(EdgeKey { rel: 0, from: e(a), to: e(b) }, &[]);
        }
        r.link(EdgeKey { rel: 1, from: e(1), to: e(5) }, &[9]);
        r.link(EdgeKey { rel: 0, from: e(5), to: e(4) }, &[]);
        r
    }

    #[test]
    fn neighbours_by_type_and_direction() {
        let r = chain();
        assert_eq!(r.neighbors(e(1), None, Direction::Out), vec![e(2), e(5)]);
        assert_eq!(r.neighbors(e(1), Some(0), Direction::Out), vec![e(2)]);
        assert_eq!(r.neighbors(e(4), None, Direction::In), vec![e(3), e(5)]);
        assert_eq!(r.neighbors(e(2), None, Direction::Both), vec![e(1), e(3)]);
        assert_eq!(r.get(&EdgeKey { rel: 1, from: e(1), to: e(5) }), Some(&[9u8][..]));
    }

    #[test]
    fn k_hop_and_shortest_path() {
        let r = chain();
        assert_eq!(r.k_hop(e(1), None, Direction::Out, 2), vec![(e(2), 1), (e(5), 1), (e(3), 2), (e(4), 2)]);
        assert_eq!(r.k_hop(e(1), Some(0), Direction::Out, 10), vec![(e(2), 1), (e(3), 2), (e(4), 3)]);
        assert_eq!(r.shortest_path(e(1), e(4), None, Direction::Out, 10), Some(vec![e(1), e(5), e(4)]));
        assert_eq!(r.shortest_path(e(1), e(4), Some(0), Direction::Out, 10), Some(vec![e(1), e(2), e(3), e(4)]));
        assert_eq!(r.shortest_path(e(1), e(4), Some(0), Direction::Out, 2), None);
        assert_eq!(r.shortest_path(e(4), e(1), None, Direction::Out, 10), None);
        assert_eq!(r.shortest_path(e(4), e(1), None, Direction::In, 10), Some(vec![e(4), e(5), e(1)]));
    }

    #[test]
    fn unlink_and_edges_of() {
        let mut r = chain();
        assert_eq!(r.edges_of(e(2)).len(), 2);
        assert!(r.unlink(&EdgeKey { rel: 0, from: e(1), to: e(2) }).is_some());
        assert!(r.unlink(&EdgeKey { rel: 0, from: e(1), to: e(2) }).is_none());
        assert_eq!(r.neighbors(e(1), None, Direction::Out), vec![e(5)]);
        assert_eq!(r.len(), 4);
    }
}
