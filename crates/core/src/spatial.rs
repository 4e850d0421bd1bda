//! Spatial indexes: a uniform hash grid over `[f32; 2|3]` / `[f64; 2|3]`
//! positions, answering radius, box and k-nearest queries.
//!
//! Why a grid and not an R-tree: in a live game world most indexed
//! positions move every tick, and a grid moves an entry in O(1) (one hash
//! lookup out, one in) where a tree rebalances; game queries ("who is within
//! 50 m of this player") are small radii around a point, which a grid answers
//! by visiting a handful of cells. `benches/ecs/benches/spatial.rs` measures
//! this grid against the `rstar` R-tree on the same workload (see
//! docs/PERFORMANCE.md). The cell size is the field's `cell_size` (world
//! units, default [`DEFAULT_CELL_SIZE`]); pick about the radius most queries use.
//!
//! The grid holds only which cell each entity is in (its point stays in
//! the column): an entity that moves within its cell costs the index two
//! cell computations and nothing else, which is what keeps a spatially
//! indexed movement system close to the speed of an unindexed one. Queries
//! read candidates' points from the columns to check exact distances.
//!
//! A position with a NaN or infinite coordinate is in no cell: it never lies
//! within any radius or box and is never returned by nearest queries.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use rustc_hash::FxHashMap;

use crate::id::EntityId;
use crate::schema::{FieldType, Scalar};
use crate::value::Value;

/// Cell edge length when a field sets no `cell_size`.
pub const DEFAULT_CELL_SIZE: f64 = 16.0;

/// A point; unused trailing coordinates of 2-D points are 0.
pub type Point = [f64; 3];

/// Whether a field of this type can carry a spatial index, and its dimensions.
pub fn spatial_dims(ty: &FieldType) -> Option<usize> {
    match ty {
        FieldType::Array(inner, n @ (2 | 3)) if matches!(**inner, FieldType::Scalar(Scalar::F32 | Scalar::F64)) => {
            Some(*n)
        }
        _ => None,
    }
}

/// The point a stored value holds (`None` when it is not an array of floats).
pub fn point_of(v: &Value) -> Option<Point> {
    let Value::Array(xs) = v else { return None };
    if xs.len() > 3 || xs.len() < 2 {
        return None;
    }
    let mut p = [0.0; 3];
    for (i, x) in xs.iter().enumerate() {
        p[i] = match x {
            Value::F32(f) => f64::from(*f),
            Value::F64(f) => *f,
            _ => return None,
        };
    }
    Some(p)
}

/// The point stored in `bytes` for a field of type `ty` (little-endian
/// floats), without building a value.
#[inline]
pub fn point_from_bytes(ty: &FieldType, bytes: &[u8]) -> Option<Point> {
    let FieldType::Array(inner, n @ (2 | 3)) = ty else { return None };
    let mut p = [0.0; 3];
    match **inner {
        FieldType::Scalar(Scalar::F32) if bytes.len() == 4 * n => {
            for (i, c) in bytes.chunks_exact(4).enumerate() {
                p[i] = f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]]));
            }
        }
        FieldType::Scalar(Scalar::F64) if bytes.len() == 8 * n => {
            for (i, c) in bytes.chunks_exact(8).enumerate() {
                p[i] = f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
            }
        }
        _ => return None,
    }
    Some(p)
}

/// Euclidean distance, without overflow or underflow for any finite
/// coordinates (the difference is scaled when squaring it would leave the
/// f64 range); infinite when the difference itself exceeds f64, NaN when a
/// coordinate is NaN.
pub fn dist(a: &Point, b: &Point) -> f64 {
    let (dx, dy, dz) = (a[0] - b[0], a[1] - b[1], a[2] - b[2]);
    let big = dx.abs().max(dy.abs()).max(dz.abs());
    if (1e-150..=1e150).contains(&big) {
        return (dx * dx + dy * dy + dz * dz).sqrt();
    }
    if dx.is_nan() || dy.is_nan() || dz.is_nan() {
        return f64::NAN;
    }
    if big == 0.0 || big.is_infinite() {
        return big;
    }
    let (sx, sy, sz) = (dx / big, dy / big, dz / big);
    big * (sx * sx + sy * sy + sz * sz).sqrt()
}

/// Whether `p` lies within `radius` of `c` (inclusive): the one test both
/// the grid and a scan use. In the usual range it compares squares (no
/// square root); elsewhere it measures with [`dist`].
#[inline]
pub fn within_radius(p: &Point, c: &Point, radius: f64) -> bool {
    let (dx, dy, dz) = (p[0] - c[0], p[1] - c[1], p[2] - c[2]);
    let big = dx.abs().max(dy.abs()).max(dz.abs());
    if (1e-150..=1e150).contains(&big) && (1e-150..=1e150).contains(&radius) {
        return dx * dx + dy * dy + dz * dz <= radius * radius;
    }
    dist(p, c) <= radius
}

/// A quarter of the distance from `a` to `b`, finite for any finite points
/// (the distance itself can exceed f64 between two far-apart points, and
/// nearest-first order must still hold there): what nearest queries sort
/// by. Multiplied by 4 it is the distance (infinite past f64).
pub fn dist_key(a: &Point, b: &Point) -> f64 {
    let d = dist(a, b);
    if d.is_nan() || (d.is_finite() && d < 1e300) {
        return d / 4.0;
    }
    dist(&a.map(|x| x / 4.0), &b.map(|x| x / 4.0))
}

/// A grid cell's coordinates (the third is 0 for 2-D positions).
pub type Cell = [i64; 3];

/// Where the grid finds an entity's current point (the stored column): the
/// grid keeps only which cell each entity is in, so an entity that moves
/// within its cell costs the index nothing.
pub type Positions<'a> = &'a dyn Fn(EntityId) -> Option<Point>;

/// A uniform grid: cell → entities in it.
#[derive(Debug, Clone)]
pub struct Grid {
    cell: f64,
    /// `1 / cell`: cells are found by multiplying (every path uses
    /// [`Grid::cell_of`], so they all agree at cell borders).
    inv: f64,
    dims: usize,
    cells: FxHashMap<Cell, Vec<EntityId>>,
    /// Entities in cells (those at finite points).
    placed: usize,
}

/// Largest cell coordinate used; farther points share the border cells.
const MAX_CELL: f64 = (1u64 << 40) as f64;

impl Grid {
    pub fn new(dims: usize, cell: f64) -> Grid {
        let cell = if cell.is_finite() && cell > 0.0 { cell } else { DEFAULT_CELL_SIZE };
        Grid { cell, inv: 1.0 / cell, dims, cells: FxHashMap::default(), placed: 0 }
    }

    /// Number of entities held (those at finite points).
    pub fn len(&self) -> usize {
        self.placed
    }

    pub fn is_empty(&self) -> bool {
        self.placed == 0
    }

    /// Cell edge length.
    pub fn cell_size(&self) -> f64 {
        self.cell
    }

    /// 2 or 3.
    pub fn dims(&self) -> usize {
        self.dims
    }

    /// Memory held, estimated: every entity's id and each cell's slot.
    pub fn heap_bytes(&self) -> usize {
        self.placed * 12 + self.cells.len() * (std::mem::size_of::<Cell>() + std::mem::size_of::<Vec<EntityId>>() + 8)
    }

    /// Every (cell, entity), in no particular order.
    pub fn entries(&self) -> impl Iterator<Item = (Cell, EntityId)> + '_ {
        self.cells.iter().flat_map(|(c, ids)| ids.iter().map(move |id| (*c, *id)))
    }

    #[inline]
    fn coord(&self, x: f64) -> i64 {
        // floor without a libm call (this runs twice per moved entity).
        let v = (x * self.inv).clamp(-MAX_CELL, MAX_CELL);
        let t = v as i64;
        if (t as f64) > v { t - 1 } else { t }
    }

    /// The cell of the point stored in `bytes` (`f64s`: 8-byte coordinates,
    /// else 4-byte), read straight from the column: the per-row step of
    /// index maintenance after in-place writes.
    #[inline]
    pub fn cell_of_bytes(&self, f64s: bool, bytes: &[u8]) -> Option<Cell> {
        let mut p = [0.0f64; 3];
        if f64s {
            for (i, c) in bytes.chunks_exact(8).take(3).enumerate() {
                p[i] = f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
            }
        } else {
            for (i, c) in bytes.chunks_exact(4).take(3).enumerate() {
                p[i] = f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]]));
            }
        }
        self.cell_of(&p)
    }

    /// Whether the points stored in `old` and `new` lie in the same cell —
    /// coordinate by coordinate, in registers (most moves stay in their
    /// cell; this is the common path).
    #[inline]
    pub fn same_cell_bytes(&self, f64s: bool, old: &[u8], new: &[u8]) -> bool {
        let dims = self.dims;
        let read = |b: &[u8], i: usize| -> f64 {
            if f64s {
                let c = &b[i * 8..i * 8 + 8];
                f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])
            } else {
                let c = &b[i * 4..i * 4 + 4];
                f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            }
        };
        let need = if f64s { 8 * dims } else { 4 * dims };
        if old.len() < need || new.len() < need {
            return self.cell_of_bytes(f64s, old) == self.cell_of_bytes(f64s, new);
        }
        // Every coordinate is read (a non-finite one anywhere puts the point
        // in no cell, whatever the others say).
        let mut same = true;
        for i in 0..dims {
            let (a, b) = (read(old, i), read(new, i));
            if !(a.is_finite() && b.is_finite()) {
                return self.cell_of_bytes(f64s, old) == self.cell_of_bytes(f64s, new);
            }
            same &= self.coord(a) == self.coord(b);
        }
        same
    }

    /// The cell of a point, `None` for a non-finite one (held nowhere).
    #[inline]
    pub fn cell_of(&self, p: &Point) -> Option<Cell> {
        if !p.iter().all(|x| x.is_finite()) {
            return None;
        }
        Some([self.coord(p[0]), self.coord(p[1]), if self.dims == 3 { self.coord(p[2]) } else { 0 }])
    }

    /// File `id` in cell `c`.
    pub fn add(&mut self, id: EntityId, c: Option<Cell>) {
        if let Some(c) = c {
            self.cells.entry(c).or_default().push(id);
            self.placed += 1;
        }
    }

    /// File `id` in cell `c` unless it is there already.
    fn add_once(&mut self, id: EntityId, c: Option<Cell>) {
        if let Some(c) = c
            && !self.cells.get(&c).is_some_and(|ids| ids.contains(&id))
        {
            self.add(id, Some(c));
        }
    }

    /// Take `id` out of cell `c` (where its old point put it); whether it
    /// was there.
    pub fn remove(&mut self, id: EntityId, c: Option<Cell>) -> bool {
        let Some(c) = c else { return false };
        let mut found = false;
        if let Some(v) = self.cells.get_mut(&c) {
            if let Some(i) = v.iter().position(|&e| e == id) {
                v.swap_remove(i);
                self.placed -= 1;
                found = true;
            }
            if v.is_empty() {
                self.cells.remove(&c);
            }
        }
        found
    }

    /// `id` moved from cell `from` to cell `to` (nothing to do within a
    /// cell). A move the index never saw — a rollback replaying one back —
    /// finds `id` not in `from` and leaves it where it is.
    pub fn moved(&mut self, id: EntityId, from: Option<Cell>, to: Option<Cell>) {
        if from == to {
            return;
        }
        match from {
            Some(_) => {
                if self.remove(id, from) {
                    self.add(id, to);
                }
            }
            // From no cell (a non-finite point): it may already be back.
            None => self.add_once(id, to),
        }
    }

    /// Visit every entity whose cell intersects the box `lo..=hi` (a superset
    /// of the box's points; callers check the exact condition).
    fn visit_box(&self, lo: &Point, hi: &Point, f: &mut dyn FnMut(EntityId)) {
        let (Some(a), Some(b)) = (self.cell_of(lo), self.cell_of(hi)) else {
            // An infinite extent: every held entity is a candidate.
            for id in self.cells.values().flatten() {
                f(*id);
            }
            return;
        };
        let span = |i: usize| (b[i] - a[i] + 1).max(0) as u128;
        let boxed = span(0) * span(1) * span(2);
        if boxed > self.cells.len() as u128 {
            // More cells in the box than cells in use: walk those in use.
            for (c, ids) in &self.cells {
                if (0..3).all(|i| c[i] >= a[i] && c[i] <= b[i]) {
                    for id in ids {
                        f(*id);
                    }
                }
            }
            return;
        }
        for x in a[0]..=b[0] {
            for y in a[1]..=b[1] {
                for z in a[2]..=b[2] {
                    if let Some(ids) = self.cells.get(&[x, y, z]) {
                        for id in ids {
                            f(*id);
                        }
                    }
                }
            }
        }
    }

    /// Entities within `radius` of `center` (inclusive), sorted by id.
    pub fn within(&self, center: &Point, radius: f64, pos: Positions<'_>) -> Vec<EntityId> {
        let mut out = Vec::new();
        if radius.is_nan() || radius < 0.0 {
            return out;
        }
        // The box around the sphere, widened by a few ulps of its extent:
        // `center ± radius` rounds, and a point the exact check finds
        // within the radius must never fall outside the box searched.
        let m = |c: f64| (c.abs() + radius) * 4.0 * f64::EPSILON;
        let lo = [0, 1, 2].map(|i| center[i] - radius - m(center[i]));
        let hi = [0, 1, 2].map(|i| center[i] + radius + m(center[i]));
        self.visit_box(&lo, &hi, &mut |id| {
            if pos(id).is_some_and(|p| p.iter().all(|x| x.is_finite()) && within_radius(&p, center, radius)) {
                out.push(id);
            }
        });
        out.sort_unstable();
        out
    }

    /// Entities inside the box `lo..=hi` (inclusive), sorted by id.
    pub fn in_box(&self, lo: &Point, hi: &Point, pos: Positions<'_>) -> Vec<EntityId> {
        let mut out = Vec::new();
        let dims = self.dims;
        self.visit_box(lo, hi, &mut |id| {
            if pos(id).is_some_and(|p| (0..dims).all(|i| p[i].is_finite() && p[i] >= lo[i] && p[i] <= hi[i])) {
                out.push(id);
            }
        });
        out.sort_unstable();
        out
    }

    /// The `k` entities nearest `center` that `accept` takes, nearest first
    /// (ties by id), with their distances. Searches rings of cells outward
    /// and stops once no unvisited cell can hold a nearer entity.
    pub fn nearest(
        &self,
        center: &Point,
        k: usize,
        pos: Positions<'_>,
        accept: &mut dyn FnMut(EntityId) -> bool,
    ) -> Vec<(EntityId, f64)> {
        if k == 0 || self.placed == 0 {
            return Vec::new();
        }
        let mut best: BinaryHeap<Near> = BinaryHeap::new();
        let mut offer = |id: EntityId, best: &mut BinaryHeap<Near>| {
            let Some(p) = pos(id) else { return };
            let d = dist_key(&p, center);
            if d.is_nan() || !p.iter().all(|x| x.is_finite()) {
                return;
            }
            let cand = Near(d, id);
            if best.len() == k && best.peek().is_some_and(|w| cand >= *w) {
                return;
            }
            if !accept(id) {
                return;
            }
            best.push(cand);
            if best.len() > k {
                best.pop();
            }
        };
        let finish =
            |best: BinaryHeap<Near>| best.into_sorted_vec().into_iter().map(|Near(d, id)| (id, d * 4.0)).collect();
        let Some(c) = self.cell_of(center) else {
            return Vec::new();
        };
        let mut seen = 0usize;
        let mut ring: i64 = 0;
        loop {
            // Cells at Chebyshev distance `ring` from the center's cell.
            let zr = if self.dims == 3 { ring } else { 0 };
            let cells_in_ring = if ring == 0 { 1 } else { (2 * ring + 1).pow(if self.dims == 3 { 3 } else { 2 }) };
            if cells_in_ring as usize > self.cells.len().saturating_mul(4) {
                // The ring has grown past the grid: start over with every
                // entity (those already offered included, so none twice).
                best.clear();
                for id in self.cells.values().flatten() {
                    offer(*id, &mut best);
                }
                return finish(best);
            }
            for x in c[0] - ring..=c[0] + ring {
                for y in c[1] - ring..=c[1] + ring {
                    for z in c[2] - zr..=c[2] + zr {
                        let on_ring = (x - c[0]).abs() == ring || (y - c[1]).abs() == ring || (z - c[2]).abs() == ring;
                        if !on_ring {
                            continue;
                        }
                        if let Some(ids) = self.cells.get(&[x, y, z]) {
                            seen += ids.len();
                            for id in ids {
                                offer(*id, &mut best);
                            }
                        }
                    }
                }
            }
            // Anything outside rings 0..=ring is farther than ring * cell.
            let reach = ring as f64 * self.cell;
            let done = best.len() == k && best.peek().is_some_and(|w| w.0 <= reach / 4.0);
            if done || seen >= self.placed {
                return finish(best);
            }
            ring += 1;
        }
    }
}

/// A candidate: distance, then id (the max-heap keeps the worst on top).
#[derive(Debug, Clone, Copy)]
struct Near(f64, EntityId);

impl PartialEq for Near {
    fn eq(&self, o: &Near) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Near {}
impl PartialOrd for Near {
    fn partial_cmp(&self, o: &Near) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Near {
    fn cmp(&self, o: &Near) -> Ordering {
        self.0.total_cmp(&o.0).then(self.1.cmp(&o.1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rustc_hash::FxHashMap;

    /// A grid with the points it indexes (what the columns hold).
    struct Held {
        g: Grid,
        pts: FxHashMap<EntityId, Point>,
    }

    impl Held {
        fn new(dims: usize, cell: f64) -> Held {
            Held { g: Grid::new(dims, cell), pts: FxHashMap::default() }
        }
        fn put(&mut self, id: EntityId, p: Point) {
            let old = self.pts.insert(id, p);
            let to = self.g.cell_of(&p);
            match old {
                Some(o) => {
                    let from = self.g.cell_of(&o);
                    self.g.moved(id, from, to);
                }
                None => self.g.add(id, to),
            }
        }
        fn drop_(&mut self, id: EntityId) {
            if let Some(o) = self.pts.remove(&id) {
                let c = self.g.cell_of(&o);
                self.g.remove(id, c);
            }
        }
        fn within(&self, c: &Point, r: f64) -> Vec<EntityId> {
            self.g.within(c, r, &|id| self.pts.get(&id).copied())
        }
        fn in_box(&self, lo: &Point, hi: &Point) -> Vec<EntityId> {
            self.g.in_box(lo, hi, &|id| self.pts.get(&id).copied())
        }
        fn nearest(&self, c: &Point, k: usize, accept: &mut dyn FnMut(EntityId) -> bool) -> Vec<(EntityId, f64)> {
            self.g.nearest(c, k, &|id| self.pts.get(&id).copied(), accept)
        }
    }

    fn brute_nearest(pts: &[(EntityId, Point)], c: &Point, k: usize) -> Vec<EntityId> {
        let mut v: Vec<Near> = pts
            .iter()
            .filter(|(_, p)| p.iter().all(|x| x.is_finite()))
            .map(|(id, p)| Near(dist_key(p, c), *id))
            .collect();
        v.sort();
        v.into_iter().take(k).map(|n| n.1).collect()
    }

    #[test]
    fn moves_and_removals_keep_cells_exact() {
        let mut h = Held::new(3, 10.0);
        h.put(EntityId(1), [1.0, 1.0, 1.0]);
        h.put(EntityId(2), [25.0, 1.0, 1.0]);
        assert_eq!(h.within(&[0.0; 3], 5.0), vec![EntityId(1)]);
        h.put(EntityId(1), [2.0, 1.0, 1.0]);
        assert_eq!(h.g.cells.len(), 2, "a move within a cell changes no cell");
        h.put(EntityId(1), [100.0, 0.0, 0.0]);
        assert!(h.within(&[0.0; 3], 5.0).is_empty());
        assert_eq!(h.within(&[100.0, 0.0, 0.0], 0.0), vec![EntityId(1)]);
        h.drop_(EntityId(1));
        h.drop_(EntityId(1));
        assert_eq!(h.g.len(), 1);
        assert!(h.within(&[100.0, 0.0, 0.0], 1.0).is_empty());
        assert_eq!(h.g.cells.len(), 1, "empty cells are dropped");
    }

    #[test]
    fn non_finite_points_are_never_near() {
        let mut h = Held::new(2, 4.0);
        h.put(EntityId(1), [f64::NAN, 0.0, 0.0]);
        h.put(EntityId(2), [f64::INFINITY, 0.0, 0.0]);
        h.put(EntityId(3), [0.0, 0.0, 0.0]);
        assert_eq!(h.g.len(), 1);
        assert_eq!(h.within(&[0.0; 3], f64::INFINITY), vec![EntityId(3)]);
        assert_eq!(h.within(&[0.0; 3], f64::NAN), Vec::<EntityId>::new());
        assert_eq!(h.nearest(&[0.0; 3], 5, &mut |_| true), vec![(EntityId(3), 0.0)]);
        assert!(h.nearest(&[f64::NAN, 0.0, 0.0], 5, &mut |_| true).is_empty());
        // Back to a finite point, and away again.
        h.put(EntityId(1), [1.0, 0.0, 0.0]);
        assert_eq!(h.within(&[0.0; 3], 1.0), vec![EntityId(1), EntityId(3)]);
        h.put(EntityId(1), [f64::NAN, 0.0, 0.0]);
        assert_eq!(h.g.len(), 1);
    }

    #[test]
    fn far_points_share_border_cells_without_overflow() {
        let mut h = Held::new(3, 1e-300);
        h.put(EntityId(1), [1e300, -1e300, 0.0]);
        h.put(EntityId(2), [0.0, 0.0, 0.0]);
        assert_eq!(h.within(&[1e300, -1e300, 0.0], 1.0), vec![EntityId(1)]);
        assert_eq!(h.nearest(&[1e300, -1e300, 0.0], 1, &mut |_| true)[0].0, EntityId(1));
    }

    fn special() -> impl Strategy<Value = f64> {
        prop_oneof![
            -1e6f64..1e6,
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(-0.0),
            Just(1e300),
            (-100i32..100).prop_map(|x| f64::from(x) * 2.5),
        ]
    }

    proptest! {
        #[test]
        fn the_fast_same_cell_test_agrees_with_the_cells(
            a in proptest::collection::vec(special(), 3),
            b in proptest::collection::vec(special(), 3),
            cell in prop_oneof![Just(2.5), Just(16.0), Just(0.1)],
            dims in 2usize..4,
            wide in any::<bool>(),
        ) {
            let g = Grid::new(dims, cell);
            let bytes = |p: &[f64]| -> Vec<u8> {
                p[..dims].iter().flat_map(|x| if wide { x.to_le_bytes().to_vec() } else { (*x as f32).to_le_bytes().to_vec() }).collect()
            };
            let (x, y) = (bytes(&a), bytes(&b));
            prop_assert_eq!(g.same_cell_bytes(wide, &x, &y), g.cell_of_bytes(wide, &x) == g.cell_of_bytes(wide, &y));
        }

        #[test]
        fn grid_answers_like_brute_force(
            pts in proptest::collection::vec((-50i32..50, -50i32..50, -5i32..5), 0..120),
            moves in proptest::collection::vec((0usize..120, -50i32..50, -50i32..50), 0..40),
            cx in -60i32..60, cy in -60i32..60, r in 0u32..40, k in 1usize..12, cell in 1u32..30,
            dims in 2usize..4,
        ) {
            let mut h = Held::new(dims, f64::from(cell));
            let z = |v: i32| if dims == 3 { f64::from(v) } else { 0.0 };
            let mut held: Vec<(EntityId, Point)> = Vec::new();
            for (i, (x, y, zz)) in pts.iter().enumerate() {
                let p = [f64::from(*x), f64::from(*y), z(*zz)];
                h.put(EntityId(i as u64 + 1), p);
                held.push((EntityId(i as u64 + 1), p));
            }
            for (i, x, y) in moves {
                if held.is_empty() { break; }
                let i = i % held.len();
                if x % 7 == 0 {
                    h.drop_(held[i].0);
                    held.remove(i);
                } else {
                    let p = [f64::from(x), f64::from(y), 0.0];
                    h.put(held[i].0, p);
                    held[i].1 = p;
                }
            }
            let c = [f64::from(cx), f64::from(cy), 0.0];
            let rr = f64::from(r);
            let mut expect: Vec<EntityId> = held.iter().filter(|(_, p)| dist(p, &c) <= rr).map(|(id, _)| *id).collect();
            expect.sort_unstable();
            prop_assert_eq!(h.within(&c, rr), expect);
            let lo = [c[0] - rr, c[1] - rr, -3.0];
            let hi = [c[0] + rr, c[1] + rr, 3.0];
            let mut inbox: Vec<EntityId> = held.iter()
                .filter(|(_, p)| (0..dims).all(|i| p[i] >= lo[i] && p[i] <= hi[i]))
                .map(|(id, _)| *id).collect();
            inbox.sort_unstable();
            prop_assert_eq!(h.in_box(&lo, &hi), inbox);
            let got: Vec<EntityId> = h.nearest(&c, k, &mut |_| true).into_iter().map(|(id, _)| id).collect();
            prop_assert_eq!(got, brute_nearest(&held, &c, k));
            // With a predicate: only even ids.
            let got: Vec<EntityId> = h.nearest(&c, k, &mut |id| id.0 % 2 == 0).into_iter().map(|(id, _)| id).collect();
            let evens: Vec<(EntityId, Point)> = held.iter().copied().filter(|(id, _)| id.0 % 2 == 0).collect();
            prop_assert_eq!(got, brute_nearest(&evens, &c, k));
        }
    }
}
