//! The world the backup and replication benchmarks share: one `body`
//! table of fixed-size fields (position, velocity, three numbers), the
//! shape of a game world's hot table. Included by each benchmark with
//! `#[path]` (they live in different crates).

/// The schema, as `schema.toml` text.
pub const SCHEMA: &str = r#"
[database]
name = "bench"
version = "1.0.0"
[tables.body]
[[tables.body.fields]]
name = "pos"
type = "[f32; 3]"
[[tables.body.fields]]
name = "vel"
type = "[f32; 3]"
[[tables.body.fields]]
name = "hp"
type = "u32"
[[tables.body.fields]]
name = "level"
type = "u32"
[[tables.body.fields]]
name = "score"
type = "u64"
"#;

#[derive(ecsdb::Component, Clone, Copy)]
#[ecsdb(table = "body")]
pub struct Body {
    pub pos: [f32; 3],
    pub vel: [f32; 3],
    pub hp: u32,
    pub level: u32,
    pub score: u64,
}
