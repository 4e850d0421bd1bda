//! Relations: typed, directed edges between entities, with property rows, and
//! the graph traversals over them (neighbours, k-hop, shortest path).
//!
//! Each edge is keyed by (relation, from, to): at most one edge of a type
//! between two entities. Adjacency is kept in both directions so incoming and
//! outgoing neighbours are equally cheap and deleting an entity finds all its
//! edges without a scan.

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

    /// Call `f` for each neighbour of `e` along edges whose relation
    /// `allow` accepts, without allocating (a neighbour reached by edges of
    /// several relations or in both directions comes once per edge).
    #[inline]
    pub fn for_each_neighbor(
        &self,
        e: EntityId,
        allow: &dyn Fn(RelationId) -> bool,
        dir: Direction,
        mut f: impl FnMut(EntityId),
    ) {
        if matches!(dir, Direction::Out | Direction::Both) {
            for &(r, other) in self.out.get(&e).into_iter().flatten() {
                if allow(r) {
                    f(other);
                }
            }
        }
        if matches!(dir, Direction::In | Direction::Both) {
            for &(r, other) in self.inc.get(&e).into_iter().flatten() {
                if allow(r) {
                    f(other);
                }
            }
        }
    }

    /// Entities reachable from `start` in 1..=`k` hops, with their distance,
    /// nearest first (ties by id). `start` itself is not included.
    pub fn k_hop(&self, start: EntityId, rel: Option<RelationId>, dir: Direction, k: usize) -> Vec<(EntityId, usize)> {
        self.k_hop_by(start, &|r| rel.is_none_or(|x| x == r), dir, k)
    }

    /// [`Relations::k_hop`] over the relations `allow` accepts. Breadth
    /// first over two reused frontier buffers and one visited set: nothing is
    /// allocated per edge or per visited node.
    pub fn k_hop_by(
        &self,
        start: EntityId,
        allow: &dyn Fn(RelationId) -> bool,
        dir: Direction,
        k: usize,
    ) -> Vec<(EntityId, usize)> {
        let mut seen = FxHashSet::default();
        seen.insert(start);
        let mut out = Vec::new();
        let mut frontier = vec![start];
        let mut next = Vec::new();
        for depth in 1..=k {
            next.clear();
            for &e in &frontier {
                self.for_each_neighbor(e, allow, dir, |n| {
                    if seen.insert(n) {
                        next.push(n);
                    }
                });
            }
            if next.is_empty() {
                break;
            }
            next.sort_unstable();
            out.extend(next.iter().map(|&n| (n, depth)));
            std::mem::swap(&mut frontier, &mut next);
        }
        out
    }

    /// How many entities are reachable from `start` in 1..=`k` hops, without
    /// listing them.
    pub fn k_hop_count(&self, start: EntityId, allow: &dyn Fn(RelationId) -> bool, dir: Direction, k: usize) -> usize {
        let mut seen = FxHashSet::default();
        seen.insert(start);
        let (mut frontier, mut next) = (vec![start], Vec::new());
        let mut count = 0;
        for _ in 1..=k {
            next.clear();
            for &e in &frontier {
                self.for_each_neighbor(e, allow, dir, |n| {
                    if seen.insert(n) {
                        next.push(n);
                    }
                });
            }
            count += next.len();
            if next.is_empty() {
                break;
            }
            std::mem::swap(&mut frontier, &mut next);
        }
        count
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
        self.shortest_path_by(a, b, &|r| rel.is_none_or(|x| x == r), dir, max_hops)
    }

    /// [`Relations::shortest_path`] over the relations `allow` accepts;
    /// breadth first, nothing allocated per edge.
    pub fn shortest_path_by(
        &self,
        a: EntityId,
        b: EntityId,
        allow: &dyn Fn(RelationId) -> bool,
        dir: Direction,
        max_hops: usize,
    ) -> Option<Vec<EntityId>> {
        if a == b {
            return Some(vec![a]);
        }
        let mut prev: FxHashMap<EntityId, EntityId> = FxHashMap::default();
        prev.insert(a, a);
        let (mut frontier, mut next) = (vec![a], Vec::new());
        for _ in 0..max_hops {
            next.clear();
            let mut found = false;
            for &e in &frontier {
                self.for_each_neighbor(e, allow, dir, |n| {
                    if !found && !prev.contains_key(&n) {
                        prev.insert(n, e);
                        found = n == b;
                        next.push(n);
                    }
                });
                if found {
                    let mut path = vec![b];
                    let mut cur = b;
                    while cur != a {
                        // Every node reached has its predecessor recorded.
                        let &p = prev.get(&cur)?;
                        cur = p;
                        path.push(cur);
                    }
                    path.reverse();
                    return Some(path);
                }
            }
            if next.is_empty() {
                return None;
            }
            std::mem::swap(&mut frontier, &mut next);
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

    /// Breadth-first distances by the plain definition, for comparison.
    fn distances(edges: &[(u32, u32, u16)], start: u32, dir: Direction, rel: Option<u16>) -> FxHashMap<u32, usize> {
        let mut d = FxHashMap::default();
        d.insert(start, 0);
        let mut frontier = vec![start];
        let mut depth = 0;
        while !frontier.is_empty() {
            depth += 1;
            let mut next = Vec::new();
            for &x in &frontier {
                for &(a, b, r) in edges {
                    if rel.is_some_and(|q| q != r) {
                        continue;
                    }
                    let mut reach = Vec::new();
                    if a == x && matches!(dir, Direction::Out | Direction::Both) {
                        reach.push(b);
                    }
                    if b == x && matches!(dir, Direction::In | Direction::Both) {
                        reach.push(a);
                    }
                    for n in reach {
                        if let std::collections::hash_map::Entry::Vacant(v) = d.entry(n) {
                            v.insert(depth);
                            next.push(n);
                        }
                    }
                }
            }
            frontier = next;
        }
        d
    }

    proptest::proptest! {
        /// k-hop lists, counts and shortest paths agree with plain BFS distances.
        #[test]
        fn traversals_match_breadth_first_distances(
            edges in proptest::collection::vec((0u32..30, 0u32..30, 0u16..2), 0..80),
            start in 0u32..30,
            goal in 0u32..30,
            k in 1usize..6,
            dir in proptest::prop_oneof![proptest::strategy::Just(Direction::Out), proptest::strategy::Just(Direction::In), proptest::strategy::Just(Direction::Both)],
            rel in proptest::option::of(0u16..2),
        ) {
            let mut r = Relations::default();
            for &(a, b, rl) in &edges {
                r.link(EdgeKey { rel: rl, from: e(a), to: e(b) }, &[]);
            }
            let d = distances(&edges, start, dir, rel);
            let mut expect: Vec<(EntityId, usize)> =
                d.iter().filter(|&(&n, &dist)| n != start && dist <= k).map(|(&n, &dist)| (e(n), dist)).collect();
            expect.sort_by_key(|&(n, dist)| (dist, n));
            proptest::prop_assert_eq!(r.k_hop(e(start), rel, dir, k), expect.clone());
            let allow = |x: RelationId| rel.is_none_or(|q| q == x);
            proptest::prop_assert_eq!(r.k_hop_count(e(start), &allow, dir, k), expect.len());
            let path = r.shortest_path(e(start), e(goal), rel, dir, k);
            match d.get(&goal).filter(|&&dist| dist <= k) {
                Some(&dist) => {
                    let p = path.unwrap();
                    proptest::prop_assert_eq!(p.len(), dist + 1);
                    proptest::prop_assert_eq!(p[0], e(start));
                    proptest::prop_assert_eq!(p[dist], e(goal));
                    for w in p.windows(2) {
                        let linked = |a: EntityId, b: EntityId| {
                            edges.iter().any(|&(x, y, rl)| e(x) == a && e(y) == b && allow(rl))
                        };
                        let ok = match dir {
                            Direction::Out => linked(w[0], w[1]),
                            Direction::In => linked(w[1], w[0]),
                            Direction::Both => linked(w[0], w[1]) || linked(w[1], w[0]),
                        };
                        proptest::prop_assert!(ok, "{:?} is not an edge", w);
                    }
                }
                None => proptest::prop_assert!(path.is_none()),
            }
        }
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
