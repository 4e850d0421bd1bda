//! The game's data in ecsdb: the schema (`game.toml`), its components as
//! Rust types, opening the database, and the world's fixed scenery.
//!
//! Seed 001 keeps players, sessions and progress in three `PostgreSQL`
//! tables. Here a player is one entity with an `account`, a `progress` and
//! a `gear` component (and, while online, a `body` and a `label` others
//! see); a session is its own entity. Everything the world shows — players,
//! rocks, food, water — has a `body` whose position is spatially indexed,
//! which is what each player's subscription follows.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ecsdb::{Component, Database, DbError, EntityId, Enum};

use crate::remote::Remote;

/// The schema the game server creates its database with.
pub const SCHEMA: &str = include_str!("../game.toml");

#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    Player,
    Rock,
    Food,
    Water,
}

#[derive(Component, Debug, Clone, PartialEq)]
pub struct Account {
    pub username: String,
    pub display_name: String,
    pub email: String,
    pub password_hash: String,
    pub created_at: u64,
    pub last_login: u64,
    pub is_banned: bool,
    pub ban_reason: String,
    pub ban_expires: u64,
}

#[derive(Component, Debug, Clone, PartialEq)]
pub struct Session {
    pub player: u64,
    pub token_hash: String,
    pub created_at: u64,
    pub expires_at: u64,
    pub ip_address: String,
    pub user_agent: String,
}

#[derive(Component, Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    pub level: u32,
    pub experience: u64,
    pub last_position: [f32; 2],
    pub health: f32,
    pub hunger: f32,
    pub thirst: f32,
    pub deaths: u32,
    pub updated_at: u64,
}

#[derive(Component, Debug, Clone, PartialEq)]
pub struct Gear {
    pub inventory: String,
    pub equipment: String,
    pub skills: String,
    pub statistics: String,
}

#[derive(Component, Debug, Clone, Copy, PartialEq)]
pub struct Body {
    pub position: [f32; 3],
    pub velocity: [f32; 3],
    pub radius: f32,
    pub kind: BodyKind,
}

#[derive(Component, Debug, Clone, PartialEq)]
pub struct Label {
    pub name: String,
    pub level: u32,
    pub health: u8,
}

/// Radius of a player's body.
pub const PLAYER_RADIUS: f32 = 12.0;

/// Open (or create) the game database in `dir`, registering every
/// component type (a schema that does not match the types is refused).
pub fn open(dir: &Path) -> Result<Database, DbError> {
    let db = Database::builder().schema_toml(SCHEMA)?.data_dir(dir).build()?;
    register(&db)?;
    Ok(db)
}

/// An in-memory game database (tests, and the working copy of a remote one).
pub fn in_memory() -> Result<Database, DbError> {
    let db = Database::builder().schema_toml(SCHEMA)?.build()?;
    register(&db)?;
    Ok(db)
}

fn register(db: &Database) -> Result<(), DbError> {
    db.register::<Account>()?;
    db.register::<Session>()?;
    db.register::<Progress>()?;
    db.register::<Gear>()?;
    db.register::<Body>()?;
    db.register::<Label>()?;
    Ok(())
}

/// The game's database: embedded, or an in-memory working copy of a
/// remote ecsdb (see `remote.rs`).
#[derive(Debug, Clone)]
pub struct Store {
    pub db: Arc<Database>,
    pub remote: Option<Arc<Remote>>,
}

impl Store {
    /// Ids for `n` new entities: assigned by the remote in remote mode
    /// (create them locally with `create_entity_with_id`), `None` when
    /// embedded (spawn as usual).
    pub fn reserve(&self, n: usize) -> Result<Option<Vec<EntityId>>, String> {
        match &self.remote {
            Some(r) => r.create_ids(n).map(Some),
            None => Ok(None),
        }
    }

    /// Wait until local commit `seq` is durable where the game keeps its
    /// data (immediate when embedded: the commit returned after its fsync).
    pub fn acked(&self, seq: u64) -> Result<(), String> {
        match &self.remote {
            Some(r) => r.wait_pushed(seq, Duration::from_secs(10)),
            None => Ok(()),
        }
    }
}

/// A small deterministic generator (splitmix64): the scenery is the same
/// for the same world size on every server.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// Rocks, food bushes and water pools for a world of `size` (once: a
/// database that already has scenery keeps it). Returns how many were made.
pub fn seed_scenery(store: &Store, size: f32) -> Result<usize, String> {
    let db = &store.db;
    let existing = db.read().query::<(&Body,)>().without::<Account>().count().map_err(|e| e.to_string())?;
    if existing > 0 {
        return Ok(0);
    }
    let cells = (size / 100.0).powi(2);
    let mut rng = Rng::new(0x00ec_5db0 ^ u64::from(size.to_bits()));
    let mut bodies = Vec::new();
    for (kind, per_cell, rmin, rmax) in
        [(BodyKind::Rock, 0.15, 14.0, 40.0), (BodyKind::Food, 0.08, 16.0, 22.0), (BodyKind::Water, 0.05, 28.0, 48.0)]
    {
        let n = (cells * per_cell).ceil() as usize;
        for _ in 0..n {
            let radius = rmin + rng.unit() * (rmax - rmin);
            // A few tries for a spot clear of what is already placed.
            let (mut x, mut y) = (0.0, 0.0);
            for _ in 0..20 {
                x = radius + rng.unit() * (size - 2.0 * radius);
                y = radius + rng.unit() * (size - 2.0 * radius);
                let clear = bodies.iter().all(|(b, _): &(Body, Label)| {
                    (b.position[0] - x).hypot(b.position[1] - y) > b.radius + radius + 2.0 * PLAYER_RADIUS
                });
                if clear {
                    break;
                }
            }
            let name = match kind {
                BodyKind::Rock => "rock",
                BodyKind::Food => "berries",
                BodyKind::Water => "water",
                BodyKind::Player => "",
            };
            bodies.push((
                Body { position: [x, y, 0.0], velocity: [0.0; 3], radius, kind },
                Label { name: name.into(), level: 0, health: 100 },
            ));
        }
    }
    let n = bodies.len();
    match store.reserve(n)? {
        None => db.write(|t| t.spawn_batch(bodies)).map_err(|e| e.to_string())?,
        Some(ids) => db
            .write(|t| {
                for (id, (b, l)) in ids.iter().zip(&bodies) {
                    t.create_entity_with_id(*id)?;
                    t.insert_component(*id, b)?;
                    t.insert_component(*id, l)?;
                }
                Ok(Vec::new())
            })
            .map_err(|e| e.to_string())?,
    };
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_matches_the_types_and_scenery_is_made_once() {
        let db = Arc::new(in_memory().unwrap());
        let store = Store { db: db.clone(), remote: None };
        let n = seed_scenery(&store, 2000.0).unwrap();
        assert!(n > 50, "{n}");
        assert_eq!(seed_scenery(&store, 2000.0).unwrap(), 0);
        let all = db.read().query::<(&Body,)>().collect().unwrap();
        assert_eq!(all.len(), n);
        for (_, (b,)) in all {
            assert!(b.position[0] >= b.radius && b.position[0] <= 2000.0 - b.radius);
            assert!(b.kind != BodyKind::Player);
        }
    }
}
