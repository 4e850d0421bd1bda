//! The spatial index: ecsdb's grid beside the `rstar` R-tree on a game
//! workload, and `near` / `nearest` queries beside a scan.
//!
//! `cargo bench -p ecsdb-bench --bench spatial`   (ECSDB_BENCH_QUICK=1 for 20,000 points;
//! ECSDB_BENCH_ONLY=maintenance for the index-maintenance figures alone)
//!
//! 100,000 points spread over a 4,000 × 4,000 world (z in 0..50). One tick
//! moves every point by up to 2 units (a grid moves an entry between cells;
//! the R-tree removes and re-inserts it). Queries: radius 50 around random
//! points, and the 10 nearest. The structures are compared bare (the same
//! f64 points, the same queries); then the same queries run end to end
//! through `Database::query` (planning, the grid, the row checks) with the
//! spatial index and without it (a scan measuring every entity).
#![allow(clippy::unwrap_used, missing_docs)]
#![allow(clippy::doc_markdown, clippy::cast_possible_truncation, clippy::cast_precision_loss)]

use std::time::Instant;

use ecsdb::core::spatial::Grid;
use ecsdb::{Component, Database, EntityId, Query, QueryBudget};
use ecsdb_bench::{fmt_duration, median};
use rstar::primitives::GeomWithData;
use rstar::{PointDistance, RTree};

type Tree = RTree<GeomWithData<[f64; 3], u64>>;

/// A small deterministic generator (xorshift).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn time<F: FnMut()>(runs: usize, mut f: F) -> std::time::Duration {
    let v: Vec<std::time::Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    median(v)
}

#[derive(Component, Clone, Copy)]
#[ecsdb(table = "body")]
struct Body {
    pos: [f32; 3],
    vel: [f32; 3],
}

/// `simple_iter` of the ECS suite (10,000 entities, position += velocity,
/// one commit) with the position unindexed and spatially indexed; then one
/// tick of `n` moving entities with the index, per moved entity.
fn maintenance(n: usize) {
    let schema = |index: &str| {
        format!(
            "[tables.body]\n[[tables.body.fields]]\nname = \"pos\"\ntype = \"[f32; 3]\"\n{index}\n[[tables.body.fields]]\nname = \"vel\"\ntype = \"[f32; 3]\"\n"
        )
    };
    let tick = |db: &Database| {
        let mut t = db.transaction().unwrap();
        t.query::<(&mut Body,)>()
            .for_each(|_, (b,)| {
                b.pos[0] += b.vel[0];
                b.pos[1] += b.vel[1];
                b.pos[2] += b.vel[2];
            })
            .unwrap();
        t.commit().unwrap();
    };
    let build = |index: &str, count: usize| {
        let db = Database::builder().schema_toml(&schema(index)).unwrap().build().unwrap();
        let mut rng = Rng(11);
        db.write(|t| {
            t.spawn_batch((0..count).map(|_| {
                (Body { pos: [(rng.next() * 4000.0) as f32, (rng.next() * 4000.0) as f32, 0.0], vel: [1.0, 0.5, 0.0] },)
            }))
        })
        .unwrap();
        db
    };
    let mut figures = Vec::new();
    for index in ["", "index = \"spatial\"\ncell_size = 50.0"] {
        let db = build(index, 10_000);
        tick(&db);
        figures.push(time(200, || tick(&db)));
    }
    println!(
        "simple_iter (10k, typed, one commit): unindexed {}, spatially indexed {} (+{:.0} %)",
        fmt_duration(figures[0]),
        fmt_duration(figures[1]),
        (figures[1].as_secs_f64() / figures[0].as_secs_f64() - 1.0) * 100.0
    );
    let mut big = Vec::new();
    for index in ["", "index = \"spatial\"\ncell_size = 50.0"] {
        let db = build(index, n);
        big.push(time(5, || tick(&db)));
    }
    println!(
        "tick moving {n}: unindexed {}, indexed {}; index maintenance {:.0} ns per moved entity",
        fmt_duration(big[0]),
        fmt_duration(big[1]),
        (big[1].as_secs_f64() - big[0].as_secs_f64()) * 1e9 / n as f64
    );
}

fn main() {
    let n: usize = if std::env::var("ECSDB_BENCH_QUICK").is_ok() { 20_000 } else { 1_000_000 };
    if std::env::var("ECSDB_BENCH_ONLY").is_ok_and(|v| v == "maintenance") {
        maintenance(n);
        return;
    }
    let world = 4000.0;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let pts: Vec<[f64; 3]> = (0..n).map(|_| [rng.next() * world, rng.next() * world, rng.next() * 50.0]).collect();
    let centers: Vec<[f64; 3]> = (0..1000).map(|_| [rng.next() * world, rng.next() * world, 25.0]).collect();

    // --- bare structures ---
    let t = Instant::now();
    let mut grid = Grid::new(3, 50.0);
    for (i, p) in pts.iter().enumerate() {
        grid.add(EntityId(i as u64), grid.cell_of(p));
    }
    let grid_build = t.elapsed();
    let t = Instant::now();
    let mut tree: Tree =
        RTree::bulk_load(pts.iter().enumerate().map(|(i, p)| GeomWithData::new(*p, i as u64)).collect());
    let tree_build = t.elapsed();
    println!(
        "{n} points; build: grid {} (one by one), R-tree {} (bulk load)",
        fmt_duration(grid_build),
        fmt_duration(tree_build)
    );

    let moved: Vec<[f64; 3]> =
        pts.iter().map(|p| [p[0] + rng.next() * 4.0 - 2.0, p[1] + rng.next() * 4.0 - 2.0, p[2]]).collect();
    let t = Instant::now();
    for (i, (old, new)) in pts.iter().zip(&moved).enumerate() {
        let (from, to) = (grid.cell_of(old), grid.cell_of(new));
        grid.moved(EntityId(i as u64), from, to);
    }
    let grid_tick = t.elapsed();
    let t = Instant::now();
    for (i, (old, new)) in pts.iter().zip(&moved).enumerate() {
        tree.remove(&GeomWithData::new(*old, i as u64));
        tree.insert(GeomWithData::new(*new, i as u64));
    }
    let tree_tick = t.elapsed();
    let pts = moved;
    println!(
        "tick (move all {n}): grid {}, R-tree {} (R-tree / grid = {:.1}×)",
        fmt_duration(grid_tick),
        fmt_duration(tree_tick),
        tree_tick.as_secs_f64() / grid_tick.as_secs_f64()
    );

    // The grid reads points where the engine keeps them (the column).
    let at = |id: EntityId| pts.get(id.0 as usize).copied();
    let mut found = (0usize, 0usize);
    let g_r = time(5, || {
        for c in &centers {
            found.0 += grid.within(c, 50.0, &at).len();
        }
    });
    let t_r = time(5, || {
        for c in &centers {
            found.1 += tree.locate_within_distance(*c, 2500.0).count();
        }
    });
    assert_eq!(found.0, found.1, "both find the same points");
    println!(
        "radius 50 ×1000: grid {}, R-tree {} (R-tree / grid = {:.2}×; {:.1} points per query)",
        fmt_duration(g_r),
        fmt_duration(t_r),
        t_r.as_secs_f64() / g_r.as_secs_f64(),
        found.0 as f64 / 5000.0
    );
    let g_k = time(5, || {
        for c in &centers {
            std::hint::black_box(grid.nearest(c, 10, &at, &mut |_| true));
        }
    });
    let t_k = time(5, || {
        for c in &centers {
            std::hint::black_box(tree.nearest_neighbor_iter(c).take(10).map(|g| g.geom().distance_2(c)).sum::<f64>());
        }
    });
    println!(
        "10 nearest ×1000: grid {}, R-tree {} (R-tree / grid = {:.2}×)",
        fmt_duration(g_k),
        fmt_duration(t_k),
        t_k.as_secs_f64() / g_k.as_secs_f64()
    );

    // --- end to end through queries ---
    let schema =
        |index: &str| format!("[tables.body]\n[[tables.body.fields]]\nname = \"pos\"\ntype = \"[f32; 3]\"\n{index}\n");
    let budget = QueryBudget { max_result_bytes: usize::MAX, ..QueryBudget::default() };
    let mut figures = Vec::new();
    for (name, idx) in [("grid", "index = \"spatial\"\ncell_size = 50.0"), ("scan", "")] {
        let db = Database::builder().schema_toml(&schema(idx)).unwrap().build().unwrap();
        let mut rng = Rng(7);
        db.write(|t| {
            let mut b = t.batch(&["body"])?;
            for _ in 0..n {
                let p = [(rng.next() * world) as f32, (rng.next() * world) as f32, (rng.next() * 50.0) as f32];
                b.push_field(0, bytemuck::bytes_of(&p));
                b.end_row()?;
            }
            t.spawn_columns(b)
        })
        .unwrap();
        let view = db.read();
        let runs = if name == "scan" { 20 } else { 200 };
        let near: Vec<Query> = centers[..runs]
            .iter()
            .map(|c| {
                serde_json::from_value(serde_json::json!({"with": ["body"], "select": [],
                    "near": {"field": "body.pos", "point": c, "radius": 50}}))
                .unwrap()
            })
            .collect();
        let mut i = 0;
        let q_near = time(runs, || {
            std::hint::black_box(view.query_within(&near[i % runs], &budget).unwrap());
            i += 1;
        });
        let knn: Vec<Query> = centers[..runs]
            .iter()
            .map(|c| {
                serde_json::from_value(serde_json::json!({"with": ["body"], "select": [],
                    "nearest": {"field": "body.pos", "point": c, "k": 10}}))
                .unwrap()
            })
            .collect();
        let q_knn = time(runs, || {
            std::hint::black_box(view.query_within(&knn[i % runs], &budget).unwrap());
            i += 1;
        });
        println!("query with {name}: near r=50 {}, nearest 10 {}", fmt_duration(q_near), fmt_duration(q_knn));
        figures.push((q_near, q_knn));
    }
    println!(
        "scan / grid: near {:.0}×, nearest {:.0}×",
        figures[1].0.as_secs_f64() / figures[0].0.as_secs_f64(),
        figures[1].1.as_secs_f64() / figures[0].1.as_secs_f64()
    );
    maintenance(n);
}
