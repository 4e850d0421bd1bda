//! Lossless JSON export/import.
//!
//! ```json
//! {"format": "ecsdb-export", "format_version": 1,
//!  "schema": "rpg_game", "version": "2.1.0", "fingerprint": "…", "seq": 42,
//!  "entities": [{"id": 4294967296}, …],
//!  "components": {"player": [{"entity_id": 4294967296, "name": "ana", …}], …},
//!  "relations": {"owns": [{"from": …, "to": …, "slot": 3}], …}}
//! ```
//! Rows are keyed by the table's entity-id field (its primary key, its
//! `entity_id`, or `entity_id` when the table declares neither). Values follow
//! the JSON rules of [`crate::value`]; ids survive exactly.

use crate::error::{Error, Result};
use crate::id::EntityId;
use crate::world::{World, id_from_json, id_json};

pub const EXPORT_FORMAT: &str = "ecsdb-export";
pub const EXPORT_FORMAT_VERSION: u64 = 1;

/// Name under which a table's rows carry their entity id.
pub(crate) fn id_key(world: &World, t: crate::schema::TableId) -> String {
    world
        .schema()
        .table(t)
        .fields
        .iter()
        .find(|f| f.slot().is_none())
        .map_or_else(|| "entity_id".to_string(), |f| f.name.clone())
}

/// Export one table: an array of rows, each keyed by its entity id field,
/// sorted by entity id.
pub fn export_table_json(world: &World, t: crate::schema::TableId) -> serde_json::Value {
    let key = id_key(world, t);
    let mut rows = Vec::new();
    for chunk in world.chunks(&[t]) {
        for &id in chunk.entities() {
            if let Ok(serde_json::Value::Object(mut obj)) = world.component_json(id, t) {
                obj.remove(&key);
                let mut row = serde_json::Map::new();
                row.insert(key.clone(), id_json(id));
                row.extend(obj);
                rows.push((id, serde_json::Value::Object(row)));
            }
        }
    }
    rows.sort_by_key(|r| r.0);
    rows.into_iter().map(|r| r.1).collect::<Vec<_>>().into()
}

/// Export the whole state.
pub fn export_json(world: &World) -> serde_json::Value {
    let schema = world.schema();
    let entities: Vec<serde_json::Value> =
        world.entities().iter().map(|id| serde_json::json!({ "id": id_json(id) })).collect();
    let mut components = serde_json::Map::new();
    for t in &schema.tables {
        components.insert(t.name.clone(), export_table_json(world, t.id));
    }
    let mut relations = serde_json::Map::new();
    for r in &schema.relations {
        let mut edges: Vec<_> = world.relations().iter().filter(|(k, _)| k.rel == r.id).collect();
        edges.sort_by_key(|(k, _)| **k);
        let rows: Vec<serde_json::Value> = edges
            .into_iter()
            .map(|(k, p)| {
                let mut m = serde_json::Map::new();
                m.insert("from".into(), id_json(k.from));
                m.insert("to".into(), id_json(k.to));
                if let serde_json::Value::Object(props) = world.props_json(r.id, p) {
                    m.extend(props);
                }
                serde_json::Value::Object(m)
            })
            .collect();
        relations.insert(r.name.clone(), rows.into());
    }
    serde_json::json!({
        "format": EXPORT_FORMAT,
        "format_version": EXPORT_FORMAT_VERSION,
        "schema": schema.name,
        "version": schema.version,
        "fingerprint": format!("{:016x}", schema.fingerprint),
        "seq": world.seq(),
        "entities": entities,
        "components": components,
        "relations": relations,
    })
}

/// Import an export into the active transaction, preserving entity ids.
/// The caller commits (all or nothing) or rolls back.
pub fn import_json(world: &mut World, doc: &serde_json::Value) -> Result<usize> {
    let bad = |m: String| Error::Import(m);
    let obj = doc.as_object().ok_or_else(|| bad("the document must be a JSON object".into()))?;
    for k in obj.keys() {
        if ![
            "format",
            "format_version",
            "schema",
            "version",
            "fingerprint",
            "seq",
            "entities",
            "components",
            "relations",
        ]
        .contains(&k.as_str())
        {
            return Err(bad(format!("unknown top-level key `{k}`")));
        }
    }
    if let Some(f) = obj.get("format")
        && f != EXPORT_FORMAT
    {
        return Err(bad(format!("format is {f}, expected \"{EXPORT_FORMAT}\"")));
    }
    if let Some(v) = obj.get("format_version")
        && v.as_u64() != Some(EXPORT_FORMAT_VERSION)
    {
        return Err(bad(format!("format_version {v} is not supported (this build reads {EXPORT_FORMAT_VERSION})")));
    }
    let schema = world.schema().clone();
    if let Some(name) = obj.get("schema")
        && name.as_str() != Some(schema.name.as_str())
    {
        return Err(bad(format!("the file is for schema {name}, this database has \"{}\"", schema.name)));
    }
    if let Some(v) = obj.get("version")
        && v.as_str() != Some(schema.version.as_str())
    {
        return Err(bad(format!("the file is for schema version {v}, this database has \"{}\"", schema.version)));
    }
    let entities =
        obj.get("entities").and_then(|e| e.as_array()).ok_or_else(|| bad("`entities` must be an array".into()))?;
    for (i, e) in entities.iter().enumerate() {
        let id = e
            .get("id")
            .and_then(id_from_json)
            .filter(|id| !id.is_null())
            .ok_or_else(|| bad(format!("entities[{i}] has no valid `id`")))?;
        world.create_entity_with_id(id).map_err(|e| bad(format!("entities[{i}]: {e}")))?;
    }
    if let Some(comps) = obj.get("components") {
        let comps = comps.as_object().ok_or_else(|| bad("`components` must be an object".into()))?;
        // Parents before children, so parent_table checks see a consistent set
        // (they are only checked at commit, but keep the log readable).
        for (tname, rows) in comps {
            let t = world.table_id(tname).map_err(|e| bad(e.to_string()))?;
            let key = id_key(world, t);
            let rows = rows.as_array().ok_or_else(|| bad(format!("components.{tname} must be an array")))?;
            for (i, row) in rows.iter().enumerate() {
                let id: EntityId = row
                    .get(&key)
                    .and_then(id_from_json)
                    .ok_or_else(|| bad(format!("components.{tname}[{i}] has no valid `{key}`")))?;
                let mut fields = row.clone();
                if let Some(m) = fields.as_object_mut()
                    && world.schema().table(t).field_index(&key).is_none()
                {
                    m.remove(&key);
                }
                world.insert_json(id, t, &fields).map_err(|e| bad(format!("components.{tname}[{i}]: {e}")))?;
            }
        }
    }
    if let Some(rels) = obj.get("relations") {
        let rels = rels.as_object().ok_or_else(|| bad("`relations` must be an object".into()))?;
        for (rname, edges) in rels {
            let rel = schema.relation_id(rname).ok_or_else(|| bad(format!("unknown relation `{rname}`")))?;
            let edges = edges.as_array().ok_or_else(|| bad(format!("relations.{rname} must be an array")))?;
            for (i, e) in edges.iter().enumerate() {
                let m = e.as_object().ok_or_else(|| bad(format!("relations.{rname}[{i}] must be an object")))?;
                let end = |k: &str| {
                    m.get(k)
                        .and_then(id_from_json)
                        .ok_or_else(|| bad(format!("relations.{rname}[{i}] has no valid `{k}`")))
                };
                let (from, to) = (end("from")?, end("to")?);
                let mut props = m.clone();
                props.remove("from");
                props.remove("to");
                world
                    .link_json(rel, from, to, Some(&serde_json::Value::Object(props)))
                    .map_err(|e| bad(format!("relations.{rname}[{i}]: {e}")))?;
            }
        }
    }
    Ok(entities.len())
}
