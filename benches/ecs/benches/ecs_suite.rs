//! ecs_bench_suite workloads, side by side: ecsdb vs hecs vs bevy_ecs.
//!
//! `cargo bench -p ecsdb-bench --bench ecs_suite`
//!
//! ecsdb runs every workload as real database transactions: each mutation is
//! validated, logged for rollback and recorded in the commit's change set
//! (what the commit log and replication carry). The peers are in-memory ECS
//! libraries with none of that. After criterion's report, a table of
//! ecsdb/peer ratios is printed from criterion's own estimates.
#![allow(clippy::unwrap_used, missing_docs)]
// Benchmark harness: prose in docs names tools, and short names keep the workloads readable.
#![allow(clippy::doc_markdown, clippy::many_single_char_names, clippy::similar_names)]
// The peer component types mirror the suite; several fields are only written.
#![allow(dead_code)]

use std::sync::Arc;

use criterion::{BatchSize, Criterion, criterion_group};
use ecsdb::{Database, Schema, TableId};
use ecsdb_bench::{ADD_REMOVE_SCHEMA, SIMPLE_SCHEMA, frag_schema};

const N: usize = 10_000;

// ------------------------------------------------------------------ peers' types

#[derive(Clone, Copy, bevy_ecs::component::Component)]
struct Transform([f32; 16]);
#[derive(Clone, Copy, bevy_ecs::component::Component)]
struct Position([f32; 3]);
#[derive(Clone, Copy, bevy_ecs::component::Component)]
struct Rotation([f32; 3]);
#[derive(Clone, Copy, bevy_ecs::component::Component)]
struct Velocity([f32; 3]);
#[derive(Clone, Copy, bevy_ecs::component::Component)]
struct Data(f32);
#[derive(Clone, Copy, bevy_ecs::component::Component)]
struct CompA(f32);
#[derive(Clone, Copy, bevy_ecs::component::Component)]
struct CompB(f32);

macro_rules! letters {
    ($($name:ident),*) => {
        $(#[derive(Clone, Copy, bevy_ecs::component::Component)] struct $name(f32);)*
        fn spawn_frag_hecs(world: &mut hecs::World) {
            $( for _ in 0..20 { world.spawn(($name(0.0), Data(1.0))); } )*
        }
        fn spawn_frag_bevy(world: &mut bevy_ecs::world::World) {
            $( for _ in 0..20 { world.spawn(($name(0.0), Data(1.0))); } )*
        }
    };
}
letters!(A, B, C, D, E, F, G, H, I, J, K, L, M, N2, O, P, Q, R, S, T, U, V, W, X, Y, Z);

fn simple_bundle() -> (Transform, Position, Rotation, Velocity) {
    (Transform([1.0; 16]), Position([1.0, 0.0, 0.0]), Rotation([1.0, 0.0, 0.0]), Velocity([1.0, 0.0, 0.0]))
}

/// The same components as ecsdb typed components (`#[derive(Component)]`).
mod typed {
    #[derive(Clone, Copy, ecsdb::Component)]
    pub struct Transform {
        pub m: [f32; 16],
    }
    #[derive(Clone, Copy, ecsdb::Component)]
    pub struct Position {
        pub v: [f32; 3],
    }
    #[derive(Clone, Copy, ecsdb::Component)]
    pub struct Rotation {
        pub v: [f32; 3],
    }
    #[derive(Clone, Copy, ecsdb::Component)]
    pub struct Velocity {
        pub v: [f32; 3],
    }
    #[derive(Clone, Copy, ecsdb::Component)]
    pub struct Data {
        pub x: f32,
    }

    #[derive(Clone, Copy, ecsdb::Component)]
    #[ecsdb(table = "a")]
    pub struct CompA {
        pub x: f32,
    }
    #[derive(Clone, Copy, ecsdb::Component)]
    #[ecsdb(table = "b")]
    pub struct CompB {
        pub x: f32,
    }

    pub fn bundle() -> (Transform, Position, Rotation, Velocity) {
        (
            Transform { m: [1.0; 16] },
            Position { v: [1.0, 0.0, 0.0] },
            Rotation { v: [1.0, 0.0, 0.0] },
            Velocity { v: [1.0, 0.0, 0.0] },
        )
    }

    pub fn pv() -> (Position, Velocity) {
        (Position { v: [1.0, 0.0, 0.0] }, Velocity { v: [1.0, 0.0, 0.0] })
    }
}

fn simple_insert_typed(s: &Simple, n: usize) {
    let mut txn = s.db.transaction().unwrap();
    txn.spawn_batch((0..n).map(|_| typed::bundle())).unwrap();
    txn.commit().unwrap();
}

fn simple_iter_typed(s: &Simple) {
    let mut txn = s.db.transaction().unwrap();
    txn.query::<(&mut typed::Position, &typed::Velocity)>()
        .for_each(|_, (p, v)| {
            p.v[0] += v.v[0];
            p.v[1] += v.v[1];
            p.v[2] += v.v[2];
        })
        .unwrap();
    txn.commit().unwrap();
}

// ------------------------------------------------------------------ ecsdb fixtures

struct Simple {
    db: Database,
    t: [TableId; 4],
}

fn simple_db(schema: &Arc<Schema>) -> Simple {
    let db = Database::builder().schema(schema.clone()).build().unwrap();
    let t = ["transform", "position", "rotation", "velocity"].map(|n| schema.table_id(n).unwrap());
    Simple { db, t }
}

/// The bulk path, as the peers' `spawn_batch`: rows gathered column by
/// column, then one spawn (one `SpawnMany` in the change set).
fn simple_insert_batch(s: &Simple, n: usize) {
    let m = bytemuck::bytes_of(&[1.0f32; 16]);
    let v = bytemuck::bytes_of(&[1.0f32, 0.0, 0.0]);
    let mut txn = s.db.transaction().unwrap();
    let mut b = txn.batch(&["transform", "position", "rotation", "velocity"]).unwrap();
    b.reserve(n);
    let cols = [m, v, v, v];
    let order: Vec<usize> = s.t.iter().map(|&t| b.column_of(t, 0).unwrap()).collect();
    for _ in 0..n {
        for (k, &c) in order.iter().enumerate() {
            b.push_field(c, cols[k]);
        }
        b.end_row().unwrap();
    }
    txn.spawn_columns(b).unwrap();
    txn.commit().unwrap();
}

fn simple_insert_ecsdb(s: &Simple, n: usize) {
    let m = bytemuck::bytes_of(&[1.0f32; 16]).to_vec();
    let v = bytemuck::bytes_of(&[1.0f32, 0.0, 0.0]).to_vec();
    let mut txn = s.db.transaction().unwrap();
    for _ in 0..n {
        txn.spawn_rows(&[(s.t[0], &m), (s.t[1], &v), (s.t[2], &v), (s.t[3], &v)]).unwrap();
    }
    txn.commit().unwrap();
}

fn simple_iter_ecsdb(s: &Simple) {
    let schema = s.db.schema();
    let pos = schema.field_ref("position", "v").unwrap();
    let vel = schema.field_ref("velocity", "v").unwrap();
    let mut txn = s.db.transaction().unwrap();
    txn.for_each_chunk_mut(&[pos.table, vel.table], |chunk| {
        let (p, v) = chunk.write_read::<[f32; 3], [f32; 3]>(pos, vel)?;
        for (p, v) in p.iter_mut().zip(v) {
            p[0] += v[0];
            p[1] += v[1];
            p[2] += v[2];
        }
        Ok(())
    })
    .unwrap();
    txn.commit().unwrap();
}

fn bench_simple_insert(c: &mut Criterion) {
    let schema = Arc::new(Schema::from_toml_str(SIMPLE_SCHEMA).unwrap());
    let mut g = c.benchmark_group("simple_insert");
    g.bench_function("ecsdb", |b| {
        b.iter_batched(
            || simple_db(&schema),
            |s| {
                simple_insert_batch(&s, N);
                s
            },
            BatchSize::LargeInput,
        );
    });
    g.bench_function("ecsdb_typed", |b| {
        b.iter_batched(
            || simple_db(&schema),
            |s| {
                simple_insert_typed(&s, N);
                s
            },
            BatchSize::LargeInput,
        );
    });
    g.bench_function("ecsdb_rows", |b| {
        b.iter_batched(
            || simple_db(&schema),
            |s| {
                simple_insert_ecsdb(&s, N);
                s
            },
            BatchSize::LargeInput,
        );
    });
    g.bench_function("hecs", |b| {
        b.iter(|| {
            let mut world = hecs::World::new();
            world.spawn_batch((0..N).map(|_| simple_bundle()));
            world
        });
    });
    g.bench_function("bevy_ecs", |b| {
        b.iter(|| {
            let mut world = bevy_ecs::world::World::new();
            world.spawn_batch((0..N).map(|_| simple_bundle()));
            world
        });
    });
    g.finish();
}

fn bench_simple_iter(c: &mut Criterion) {
    let schema = Arc::new(Schema::from_toml_str(SIMPLE_SCHEMA).unwrap());
    let mut g = c.benchmark_group("simple_iter");
    let s = simple_db(&schema);
    simple_insert_ecsdb(&s, N);
    g.bench_function("ecsdb", |b| b.iter(|| simple_iter_ecsdb(&s)));
    g.bench_function("ecsdb_typed", |b| b.iter(|| simple_iter_typed(&s)));
    let mut hw = hecs::World::new();
    hw.spawn_batch((0..N).map(|_| simple_bundle()));
    g.bench_function("hecs", |b| {
        b.iter(|| {
            for (p, v) in hw.query_mut::<(&mut Position, &Velocity)>() {
                p.0[0] += v.0[0];
                p.0[1] += v.0[1];
                p.0[2] += v.0[2];
            }
        });
    });
    let mut bw = bevy_ecs::world::World::new();
    bw.spawn_batch((0..N).map(|_| simple_bundle()));
    let mut q = bw.query::<(&mut Position, &Velocity)>();
    g.bench_function("bevy_ecs", |b| {
        b.iter(|| {
            for (mut p, v) in q.iter_mut(&mut bw) {
                p.0[0] += v.0[0];
                p.0[1] += v.0[1];
                p.0[2] += v.0[2];
            }
        });
    });
    g.finish();
}

/// Read-only iteration: sum position · velocity over 10k entities.
fn bench_read_iter(c: &mut Criterion) {
    let schema = Arc::new(Schema::from_toml_str(SIMPLE_SCHEMA).unwrap());
    let mut g = c.benchmark_group("read_iter");
    let s = simple_db(&schema);
    simple_insert_ecsdb(&s, N);
    g.bench_function("ecsdb_typed", |b| {
        b.iter(|| {
            let mut acc = 0.0f32;
            let r = s.db.read();
            for (_, (p, v)) in r.query::<(&typed::Position, &typed::Velocity)>().iter().unwrap() {
                acc += p.v[0] * v.v[0] + p.v[1] * v.v[1] + p.v[2] * v.v[2];
            }
            std::hint::black_box(acc)
        });
    });
    let pos = schema.field_ref("position", "v").unwrap();
    let vel = schema.field_ref("velocity", "v").unwrap();
    g.bench_function("ecsdb", |b| {
        b.iter(|| {
            let mut acc = 0.0f32;
            let r = s.db.read();
            for chunk in r.chunks(&[pos.table, vel.table]) {
                let p = chunk.column::<[f32; 3]>(pos).unwrap();
                let v = chunk.column::<[f32; 3]>(vel).unwrap();
                for (p, v) in p.iter().zip(v) {
                    acc += p[0] * v[0] + p[1] * v[1] + p[2] * v[2];
                }
            }
            std::hint::black_box(acc)
        });
    });
    let mut hw = hecs::World::new();
    hw.spawn_batch((0..N).map(|_| simple_bundle()));
    g.bench_function("hecs", |b| {
        b.iter(|| {
            let mut acc = 0.0f32;
            for (p, v) in &mut hw.query::<(&Position, &Velocity)>() {
                acc += p.0[0] * v.0[0] + p.0[1] * v.0[1] + p.0[2] * v.0[2];
            }
            std::hint::black_box(acc)
        });
    });
    let mut bw = bevy_ecs::world::World::new();
    bw.spawn_batch((0..N).map(|_| simple_bundle()));
    let mut q = bw.query::<(&Position, &Velocity)>();
    g.bench_function("bevy_ecs", |b| {
        b.iter(|| {
            let mut acc = 0.0f32;
            for (p, v) in q.iter(&bw) {
                acc += p.0[0] * v.0[0] + p.0[1] * v.0[1] + p.0[2] * v.0[2];
            }
            std::hint::black_box(acc)
        });
    });
    g.finish();
}

fn bench_frag_iter(c: &mut Criterion) {
    let schema = Arc::new(Schema::from_toml_str(&frag_schema()).unwrap());
    let db = Database::builder().schema(schema.clone()).build().unwrap();
    let data = schema.table_id("data").unwrap();
    let one = 1.0f32.to_le_bytes();
    let zero = 0.0f32.to_le_bytes();
    {
        let mut txn = db.transaction().unwrap();
        for c in 'a'..='z' {
            let t = schema.table_id(&c.to_string()).unwrap();
            for _ in 0..20 {
                let e = txn.create_entity().unwrap();
                txn.insert_row(e, t, &zero).unwrap();
                txn.insert_row(e, data, &one).unwrap();
            }
        }
        txn.commit().unwrap();
    }
    let x = schema.field_ref("data", "x").unwrap();
    let mut g = c.benchmark_group("frag_iter");
    g.bench_function("ecsdb", |b| {
        b.iter(|| {
            let mut txn = db.transaction().unwrap();
            txn.for_each_chunk_mut(&[data], |chunk| {
                for d in chunk.write::<f32>(x)? {
                    *d *= 2.0;
                }
                Ok(())
            })
            .unwrap();
            txn.commit().unwrap();
        });
    });
    g.bench_function("ecsdb_typed", |b| {
        b.iter(|| {
            let mut txn = db.transaction().unwrap();
            txn.query::<(&mut typed::Data,)>().for_each(|_, (d,)| d.x *= 2.0).unwrap();
            txn.commit().unwrap();
        });
    });
    let mut hw = hecs::World::new();
    spawn_frag_hecs(&mut hw);
    g.bench_function("hecs", |b| {
        b.iter(|| {
            for d in hw.query_mut::<&mut Data>() {
                d.0 *= 2.0;
            }
        });
    });
    let mut bw = bevy_ecs::world::World::new();
    spawn_frag_bevy(&mut bw);
    let mut q = bw.query::<&mut Data>();
    g.bench_function("bevy_ecs", |b| {
        b.iter(|| {
            for mut d in q.iter_mut(&mut bw) {
                d.0 *= 2.0;
            }
        });
    });
    g.finish();
}

fn bench_add_remove(c: &mut Criterion) {
    let schema = Arc::new(Schema::from_toml_str(ADD_REMOVE_SCHEMA).unwrap());
    let db = Database::builder().schema(schema.clone()).build().unwrap();
    let (ta, tb) = (schema.table_id("a").unwrap(), schema.table_id("b").unwrap());
    let zero = 0.0f32.to_le_bytes();
    let ids = {
        let mut txn = db.transaction().unwrap();
        let ids: Vec<_> = (0..N)
            .map(|_| {
                let e = txn.create_entity().unwrap();
                txn.insert_row(e, ta, &zero).unwrap();
                e
            })
            .collect();
        txn.commit().unwrap();
        ids
    };
    let mut g = c.benchmark_group("add_remove");
    g.bench_function("ecsdb", |b| {
        b.iter(|| {
            let mut txn = db.transaction().unwrap();
            for &e in &ids {
                txn.insert_row(e, tb, &zero).unwrap();
            }
            for &e in &ids {
                txn.remove_component(e, tb).unwrap();
            }
            txn.commit().unwrap();
        });
    });
    g.bench_function("ecsdb_typed", |b| {
        b.iter(|| {
            let mut txn = db.transaction().unwrap();
            for &e in &ids {
                txn.insert_component(e, &typed::CompB { x: 0.0 }).unwrap();
            }
            for &e in &ids {
                txn.remove_typed::<typed::CompB>(e).unwrap();
            }
            txn.commit().unwrap();
        });
    });
    let mut hw = hecs::World::new();
    let hids: Vec<_> = (0..N).map(|_| hw.spawn((CompA(0.0),))).collect();
    g.bench_function("hecs", |b| {
        b.iter(|| {
            for &e in &hids {
                hw.insert_one(e, CompB(0.0)).unwrap();
            }
            for &e in &hids {
                hw.remove_one::<CompB>(e).unwrap();
            }
        });
    });
    let mut bw = bevy_ecs::world::World::new();
    let bids: Vec<_> = (0..N).map(|_| bw.spawn(CompA(0.0)).id()).collect();
    g.bench_function("bevy_ecs", |b| {
        b.iter(|| {
            for &e in &bids {
                bw.entity_mut(e).insert(CompB(0.0));
            }
            for &e in &bids {
                bw.entity_mut(e).remove::<CompB>();
            }
        });
    });
    g.finish();
}

fn bench_million(c: &mut Criterion) {
    const M: usize = 1_000_000;
    let schema = Arc::new(Schema::from_toml_str(SIMPLE_SCHEMA).unwrap());
    let mut g = c.benchmark_group("million");
    g.sample_size(10);
    let v = bytemuck::bytes_of(&[1.0f32, 0.0, 0.0]).to_vec();
    let create_ecsdb = |s: &Simple| {
        let mut txn = s.db.transaction().unwrap();
        let mut b = txn.batch(&["position", "velocity"]).unwrap();
        b.reserve(M);
        for _ in 0..M {
            b.push_field(0, &v);
            b.push_field(1, &v);
            b.end_row().unwrap();
        }
        txn.spawn_columns(b).unwrap();
        txn.commit().unwrap();
    };
    g.bench_function("create/ecsdb", |b| {
        b.iter_batched(
            || simple_db(&schema),
            |s| {
                create_ecsdb(&s);
                s
            },
            BatchSize::PerIteration,
        );
    });
    g.bench_function("create/hecs", |b| {
        b.iter(|| {
            let mut w = hecs::World::new();
            w.spawn_batch((0..M).map(|_| (Position([1.0, 0.0, 0.0]), Velocity([1.0, 0.0, 0.0]))));
            w
        });
    });
    g.bench_function("create/bevy_ecs", |b| {
        b.iter(|| {
            let mut w = bevy_ecs::world::World::new();
            w.spawn_batch((0..M).map(|_| (Position([1.0, 0.0, 0.0]), Velocity([1.0, 0.0, 0.0]))));
            w
        });
    });
    g.bench_function("create/ecsdb_typed", |b| {
        b.iter_batched(
            || simple_db(&schema),
            |s| {
                let mut txn = s.db.transaction().unwrap();
                txn.spawn_batch((0..M).map(|_| typed::pv())).unwrap();
                txn.commit().unwrap();
                s
            },
            BatchSize::PerIteration,
        );
    });
    let s = simple_db(&schema);
    create_ecsdb(&s);
    g.bench_function("iter/ecsdb", |b| b.iter(|| simple_iter_ecsdb(&s)));
    g.bench_function("iter/ecsdb_typed", |b| b.iter(|| simple_iter_typed(&s)));
    let mut hw = hecs::World::new();
    hw.spawn_batch((0..M).map(|_| (Position([1.0, 0.0, 0.0]), Velocity([1.0, 0.0, 0.0]))));
    g.bench_function("iter/hecs", |b| {
        b.iter(|| {
            for (p, v) in hw.query_mut::<(&mut Position, &Velocity)>() {
                p.0[0] += v.0[0];
                p.0[1] += v.0[1];
                p.0[2] += v.0[2];
            }
        });
    });
    let mut bw = bevy_ecs::world::World::new();
    bw.spawn_batch((0..M).map(|_| (Position([1.0, 0.0, 0.0]), Velocity([1.0, 0.0, 0.0]))));
    let mut q = bw.query::<(&mut Position, &Velocity)>();
    g.bench_function("iter/bevy_ecs", |b| {
        b.iter(|| {
            for (mut p, v) in q.iter_mut(&mut bw) {
                p.0[0] += v.0[0];
                p.0[1] += v.0[1];
                p.0[2] += v.0[2];
            }
        });
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_simple_insert,
    bench_simple_iter,
    bench_read_iter,
    bench_frag_iter,
    bench_add_remove,
    bench_million
);

/// Median estimate (ns) criterion recorded for `group/name`.
fn median_ns(group: &str, name: &str) -> Option<f64> {
    let dir =
        std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| format!("{}/../../target", env!("CARGO_MANIFEST_DIR")));
    // criterion stores `create/ecsdb` under `create_ecsdb`.
    let path = format!("{dir}/criterion/{group}/{}/new/estimates.json", name.replace('/', "_"));
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["median"]["point_estimate"].as_f64()
}

fn print_ratios() {
    println!("\n{:<28} {:>12} {:>12} {:>12} {:>10} {:>10}", "workload", "ecsdb", "hecs", "bevy_ecs", "/hecs", "/bevy");
    let rows = [
        ("simple_insert", "", "simple_insert", "ecsdb"),
        ("simple_insert typed", "", "simple_insert", "ecsdb_typed"),
        ("simple_insert row by row", "", "simple_insert", "ecsdb_rows"),
        ("simple_iter", "", "simple_iter", "ecsdb"),
        ("simple_iter typed", "", "simple_iter", "ecsdb_typed"),
        ("read_iter (read-only)", "", "read_iter", "ecsdb"),
        ("read_iter typed", "", "read_iter", "ecsdb_typed"),
        ("frag_iter", "", "frag_iter", "ecsdb"),
        ("frag_iter typed", "", "frag_iter", "ecsdb_typed"),
        ("add_remove", "", "add_remove", "ecsdb"),
        ("add_remove typed", "", "add_remove", "ecsdb_typed"),
        ("million create", "create/", "million", "ecsdb"),
        ("million create typed", "create/", "million", "ecsdb_typed"),
        ("million iter", "iter/", "million", "ecsdb"),
        ("million iter typed", "iter/", "million", "ecsdb_typed"),
    ];
    let fmt = |ns: f64| if ns >= 1e6 { format!("{:.2} ms", ns / 1e6) } else { format!("{:.1} us", ns / 1e3) };
    for (label, prefix, group, ours) in rows {
        let get = |peer: &str| median_ns(group, &format!("{prefix}{peer}"));
        if let (Some(e), Some(h), Some(b)) = (get(ours), get("hecs"), get("bevy_ecs")) {
            println!("{label:<28} {:>12} {:>12} {:>12} {:>9.2}x {:>9.2}x", fmt(e), fmt(h), fmt(b), e / h, e / b);
        }
    }
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    print_ratios();
}
