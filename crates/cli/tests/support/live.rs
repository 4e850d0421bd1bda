//! A server for the stream suites: a schema with a spatial index.
#![allow(dead_code, clippy::unwrap_used)]

use super::support::{Server, spawn};

/// `unit { pos: [f32; 2] (spatial, cell 10), hp: u32, note: string }`.
pub const SCHEMA: &str = r#"
[database]
name = "live"
version = "1.0.0"

[tables.unit]
[[tables.unit.fields]]
name = "pos"
type = "[f32; 2]"
index = "spatial"
cell_size = 10.0
[[tables.unit.fields]]
name = "hp"
type = "u32"
[[tables.unit.fields]]
name = "note"
type = "string"
"#;

/// `ecsdb serve` with [`SCHEMA`] and an optional config file.
pub fn server(config: Option<&str>) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("schema.toml");
    std::fs::write(&schema, SCHEMA).unwrap();
    spawn(dir, &[("ECSDB_SCHEMA_FILE", schema.to_str().unwrap())], config)
}
