//! Schema TOML → validated [`Schema`]. The TOML is walked by hand rather than
//! through `serde(deny_unknown_fields)` so that *every* problem is collected
//! and reported with its table and field, not just the first one.

use rustc_hash::{FxHashMap, FxHashSet};

use super::error::{SchemaError, SchemaIssue};
use super::model::{CustomType, EnumDef, Field, FieldRole, IndexKind, RelationDef, Schema, Table, TableId};
use super::types::{FieldType, Scalar, TypeExpr, parse_type_expr};
use crate::value::{self, Value};

/// Longest table, field, enum, type or relation name.
pub const MAX_NAME_LEN: usize = 64;
/// Most tables (component types) in one schema.
pub const MAX_TABLES: usize = 4096;
/// Most relation types in one schema.
pub const MAX_RELATIONS: usize = 4096;
/// Most fields in one table, custom type or relation.
pub const MAX_FIELDS: usize = 1024;
/// Largest fixed part of one row, in bytes.
pub const MAX_ROW_BYTES: usize = 1 << 20;
/// Most variants of one enum (stored in at most two bytes).
pub const MAX_VARIANTS: usize = 65_536;
/// Largest schema text accepted.
pub const MAX_SCHEMA_TEXT: usize = 4 << 20;
/// Most bytes all fixed-size fields of a schema (tables, relations, custom
/// types) may add up to: defaults are built as values, and every table's
/// zero row is kept, so this bounds what loading a schema can cost.
pub const MAX_SCHEMA_FIXED_BYTES: usize = 8 << 20;

const TOP_KEYS: &[&str] = &["database", "tables", "enums", "custom_types", "relations"];
const DATABASE_KEYS: &[&str] = &["name", "version", "description"];
const TABLE_KEYS: &[&str] = &["description", "parent_table", "fields"];
const FIELD_KEYS: &[&str] =
    &["name", "type", "primary_key", "foreign_key", "indexed", "index", "cell_size", "description", "default"];
const ENUM_KEYS: &[&str] = &["variants", "description"];
const CUSTOM_KEYS: &[&str] = &["fields", "description"];
const RELATION_KEYS: &[&str] = &["from", "to", "description", "fields"];
/// Names with a meaning of their own that tables, types and fields may not take.
const RESERVED_TYPE_NAMES: &[&str] =
    &["u8", "u16", "u32", "u64", "i8", "i16", "i32", "i64", "f32", "f64", "bool", "string", "bytes"];

/// Where an issue is, for messages.
#[derive(Clone, Default)]
struct At {
    table: Option<String>,
    field: Option<String>,
}

struct Ctx {
    issues: Vec<SchemaIssue>,
    /// System schemas may use names starting with `_`.
    allow_reserved: bool,
    /// A type is too large or nests too deep: its default values must not
    /// be built (that is what such a schema would blow up).
    types_unsound: bool,
}

impl Ctx {
    fn push(&mut self, at: &At, reason: impl Into<String>) {
        self.issues.push(SchemaIssue { table: at.table.clone(), field: at.field.clone(), reason: reason.into() });
    }

    fn unknown_keys(&mut self, at: &At, t: &toml::Table, allowed: &[&str], what: &str) {
        for k in t.keys() {
            if !allowed.contains(&k.as_str()) {
                self.push(at, format!("unknown key `{k}` in {what} (allowed: {})", allowed.join(", ")));
            }
        }
    }

    fn check_name(&mut self, at: &At, name: &str, what: &str) -> bool {
        let ok_chars = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok_chars {
            self.push(
                at,
                format!("{what} name `{name}` must start with a letter and hold only letters, digits and `_`"),
            );
            return false;
        }
        if name.len() > MAX_NAME_LEN {
            self.push(at, format!("{what} name `{name}` is longer than {MAX_NAME_LEN} characters"));
            return false;
        }
        if name.starts_with('_') && !self.allow_reserved {
            self.push(at, format!("{what} name `{name}` is reserved: names starting with `_` belong to the system"));
            return false;
        }
        true
    }
}

fn get_str<'a>(ctx: &mut Ctx, at: &At, t: &'a toml::Table, key: &str) -> Option<&'a str> {
    match t.get(key) {
        None => None,
        Some(toml::Value::String(s)) => Some(s),
        Some(other) => {
            ctx.push(at, format!("`{key}` must be a string, got {}", other.type_str()));
            None
        }
    }
}

fn get_bool(ctx: &mut Ctx, at: &At, t: &toml::Table, key: &str) -> bool {
    match t.get(key) {
        None => false,
        Some(toml::Value::Boolean(b)) => *b,
        Some(other) => {
            ctx.push(at, format!("`{key}` must be true or false, got {}", other.type_str()));
            false
        }
    }
}

fn get_table<'a>(ctx: &mut Ctx, at: &At, v: &'a toml::Value, what: &str) -> Option<&'a toml::Table> {
    if let toml::Value::Table(t) = v {
        Some(t)
    } else {
        ctx.push(at, format!("{what} must be a table, got {}", v.type_str()));
        None
    }
}

/// A field as written, before types are resolved.
struct RawField {
    name: String,
    ty: TypeExpr,
    type_text: String,
    primary_key: bool,
    foreign_key: Option<String>,
    indexed: bool,
    index: Option<IndexKind>,
    cell_size: Option<f64>,
    description: Option<String>,
    default: Option<serde_json::Value>,
}

fn raw_fields(ctx: &mut Ctx, at: &At, t: &toml::Table, what: &str) -> Vec<RawField> {
    let mut out = Vec::new();
    let Some(fields) = t.get("fields") else {
        return out;
    };
    let toml::Value::Array(items) = fields else {
        ctx.push(at, format!("`fields` of {what} must be an array of tables ([[...fields]])"));
        return out;
    };
    if items.len() > MAX_FIELDS {
        ctx.push(at, format!("{what} has {} fields; at most {MAX_FIELDS} are allowed", items.len()));
    }
    let mut seen = FxHashSet::default();
    for (i, item) in items.iter().enumerate() {
        let mut fat = at.clone();
        fat.field = Some(format!("#{}", i + 1));
        let Some(ft) = get_table(ctx, &fat, item, "a field") else {
            continue;
        };
        let Some(name) = get_str(ctx, &fat, ft, "name") else {
            if ft.get("name").is_none() {
                ctx.push(&fat, "field has no `name`");
            }
            continue;
        };
        fat.field = Some(name.to_string());
        ctx.unknown_keys(&fat, ft, FIELD_KEYS, "a field");
        if !ctx.check_name(&fat, name, "field") {
            continue;
        }
        if !seen.insert(name.to_string()) {
            ctx.push(&fat, format!("duplicate field name `{name}`"));
            continue;
        }
        let Some(type_text) = get_str(ctx, &fat, ft, "type") else {
            if ft.get("type").is_none() {
                ctx.push(&fat, "field has no `type`");
            }
            continue;
        };
        let ty = match parse_type_expr(type_text) {
            Ok(ty) => ty,
            Err(e) => {
                ctx.push(&fat, e);
                continue;
            }
        };
        let default = match ft.get("default") {
            None => None,
            Some(v) => match serde_json::to_value(v) {
                Ok(j) => Some(j),
                Err(e) => {
                    ctx.push(&fat, format!("`default` cannot be read: {e}"));
                    None
                }
            },
        };
        out.push(RawField {
            name: name.to_string(),
            type_text: ty.to_string(),
            ty,
            primary_key: get_bool(ctx, &fat, ft, "primary_key"),
            foreign_key: get_str(ctx, &fat, ft, "foreign_key").map(str::to_string),
            indexed: get_bool(ctx, &fat, ft, "indexed"),
            index: match get_str(ctx, &fat, ft, "index") {
                None => None,
                Some("btree") => Some(IndexKind::Btree),
                Some("hash") => Some(IndexKind::Hash),
                Some("unique") => Some(IndexKind::Unique),
                Some("spatial") => Some(IndexKind::Spatial),
                Some(other) => {
                    ctx.push(&fat, format!("unknown index kind `{other}` (btree, hash, unique, spatial)"));
                    None
                }
            },
            cell_size: match ft.get("cell_size") {
                None => None,
                Some(v) => match v.as_float().or_else(|| v.as_integer().map(|i| i as f64)) {
                    Some(c) if c.is_finite() && c > 0.0 => Some(c),
                    _ => {
                        ctx.push(&fat, "cell_size must be a positive number (world units per grid cell)");
                        None
                    }
                },
            },
            description: get_str(ctx, &fat, ft, "description").map(str::to_string),
            default,
        });
    }
    out
}

/// A table as written: name, description, `parent_table`, fields.
type RawTable = (String, Option<String>, Option<String>, Vec<RawField>);

/// Named types (enums and custom types) visible to field declarations.
struct TypeNames {
    enums: FxHashMap<String, usize>,
    enum_widths: Vec<usize>,
    customs: FxHashMap<String, usize>,
}

fn resolve(names: &TypeNames, ty: &TypeExpr) -> Result<FieldType, String> {
    match ty {
        TypeExpr::Named(n) => {
            if let Some(s) = Scalar::from_name(n) {
                Ok(FieldType::Scalar(s))
            } else if n == "string" {
                Ok(FieldType::String)
            } else if n == "bytes" {
                Ok(FieldType::Bytes)
            } else if let Some(&id) = names.enums.get(n) {
                Ok(FieldType::Enum { id, width: names.enum_widths[id] })
            } else if let Some(&id) = names.customs.get(n) {
                Ok(FieldType::Custom(id))
            } else {
                Err(format!("unknown type `{n}`"))
            }
        }
        TypeExpr::Array(elem, n) => {
            if matches!(&**elem, TypeExpr::Named(e) if e == "u8") {
                return Ok(FieldType::FixedString(*n));
            }
            let e = resolve(names, elem)?;
            if !e.is_fixed() {
                return Err(format!("array element type `{elem}` must have a fixed size"));
            }
            Ok(FieldType::Array(Box::new(e), *n))
        }
    }
}

fn named_deps(ty: &TypeExpr, out: &mut Vec<String>) {
    match ty {
        TypeExpr::Named(n) => out.push(n.clone()),
        TypeExpr::Array(e, _) => named_deps(e, out),
    }
}

impl Schema {
    /// Parse and validate a schema. Every problem found is reported at once.
    pub fn from_toml_str(text: &str) -> Result<Schema, SchemaError> {
        Self::from_doc(&parse_doc(text)?, false)
    }

    /// A user schema plus system tables, enums and relations (names starting
    /// with `_`, which user schemas may not use). The user schema is
    /// validated on its own first, so its errors read as usual.
    pub fn with_system(user_text: &str, system_text: &str) -> Result<Schema, SchemaError> {
        Self::from_toml_str(user_text)?;
        let mut doc = parse_doc(user_text)?;
        let sys = parse_doc(system_text)?;
        for (section, items) in sys {
            let (Some(toml::Value::Table(items)), false) = (Some(items), section == "database") else { continue };
            let entry = doc.entry(section).or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if let toml::Value::Table(t) = entry {
                for (k, v) in items {
                    t.insert(k, v);
                }
            }
        }
        Self::from_doc(&doc, true)
    }

    /// Read back a schema the database stored itself (a data directory's
    /// `schema.toml`), which may hold system tables.
    pub fn from_stored_toml(text: &str) -> Result<Schema, SchemaError> {
        Self::from_doc(&parse_doc(text)?, true)
    }

    fn from_doc(doc: &toml::Table, allow_reserved: bool) -> Result<Schema, SchemaError> {
        let mut ctx = Ctx { issues: Vec::new(), allow_reserved, types_unsound: false };
        let root = At::default();
        ctx.unknown_keys(&root, doc, TOP_KEYS, "the schema");

        // [database]
        let (mut name, mut version) = ("ecsdb".to_string(), "0.0.0".to_string());
        if let Some(d) = doc.get("database").and_then(|v| get_table(&mut ctx, &root, v, "[database]")) {
            ctx.unknown_keys(&root, d, DATABASE_KEYS, "[database]");
            if let Some(n) = get_str(&mut ctx, &root, d, "name") {
                name = n.to_string();
            }
            if let Some(v) = get_str(&mut ctx, &root, d, "version") {
                version = v.to_string();
            }
        }

        // [enums.*]
        let mut enums = Vec::new();
        let mut names =
            TypeNames { enums: FxHashMap::default(), enum_widths: Vec::new(), customs: FxHashMap::default() };
        if let Some(es) = doc.get("enums").and_then(|v| get_table(&mut ctx, &root, v, "[enums]")) {
            for (ename, ev) in es {
                let at = At { table: Some(format!("enum {ename}")), field: None };
                if !ctx.check_name(&at, ename, "enum") {
                    continue;
                }
                if RESERVED_TYPE_NAMES.contains(&ename.as_str()) {
                    ctx.push(&at, format!("enum name `{ename}` is a built-in type name"));
                    continue;
                }
                let Some(et) = get_table(&mut ctx, &at, ev, "an enum") else {
                    continue;
                };
                ctx.unknown_keys(&at, et, ENUM_KEYS, "an enum");
                let mut variants: Vec<String> = Vec::new();
                let mut seen: rustc_hash::FxHashSet<&str> = rustc_hash::FxHashSet::default();
                match et.get("variants") {
                    Some(toml::Value::Array(vs)) if vs.len() > MAX_VARIANTS => {
                        ctx.push(&at, format!("enum has {} variants; at most {MAX_VARIANTS} are allowed", vs.len()));
                    }
                    Some(toml::Value::Array(vs)) => {
                        for v in vs {
                            match v {
                                toml::Value::String(s) => {
                                    if !seen.insert(s.as_str()) {
                                        ctx.push(&at, format!("duplicate variant `{s}`"));
                                    } else if s.is_empty() {
                                        ctx.push(&at, "variant names must not be empty");
                                    } else {
                                        variants.push(s.clone());
                                    }
                                }
                                other => ctx.push(&at, format!("variants must be strings, got {}", other.type_str())),
                            }
                        }
                    }
                    Some(other) => {
                        ctx.push(&at, format!("`variants` must be an array of strings, got {}", other.type_str()));
                    }
                    None => ctx.push(&at, "enum has no `variants`"),
                }
                if variants.is_empty() && matches!(et.get("variants"), Some(toml::Value::Array(v)) if v.is_empty()) {
                    ctx.push(&at, "enum has no variants; declare at least one");
                }
                names.enums.insert(ename.clone(), enums.len());
                names.enum_widths.push(if variants.len() <= 256 { 1 } else { 2 });
                enums.push(EnumDef { name: ename.clone(), variants });
            }
        }

        // [custom_types.*]: collect, then resolve in dependency order.
        let mut raw_customs: Vec<(String, Vec<RawField>)> = Vec::new();
        if let Some(cs) = doc.get("custom_types").and_then(|v| get_table(&mut ctx, &root, v, "[custom_types]")) {
            for (cname, cv) in cs {
                let at = At { table: Some(format!("custom type {cname}")), field: None };
                if !ctx.check_name(&at, cname, "custom type") {
                    continue;
                }
                if RESERVED_TYPE_NAMES.contains(&cname.as_str()) {
                    ctx.push(&at, format!("custom type name `{cname}` is a built-in type name"));
                    continue;
                }
                if names.enums.contains_key(cname) {
                    ctx.push(&at, format!("`{cname}` is declared both as an enum and as a custom type"));
                    continue;
                }
                let Some(ct) = get_table(&mut ctx, &at, cv, "a custom type") else {
                    continue;
                };
                ctx.unknown_keys(&at, ct, CUSTOM_KEYS, "a custom type");
                let fields = raw_fields(&mut ctx, &at, ct, "a custom type");
                if fields.is_empty() {
                    ctx.push(&at, "custom type has no fields");
                }
                for f in &fields {
                    let fat = At { table: at.table.clone(), field: Some(f.name.clone()) };
                    if f.primary_key || f.foreign_key.is_some() || f.indexed || f.index.is_some() {
                        ctx.push(&fat, "custom type fields cannot be primary_key, foreign_key or indexed");
                    }
                }
                names.customs.insert(cname.clone(), raw_customs.len());
                raw_customs.push((cname.clone(), fields));
            }
        }
        let custom_types = resolve_customs(&mut ctx, &names, &raw_customs);

        // [tables.*]
        let mut raw_tables: Vec<RawTable> = Vec::new();
        if let Some(ts) = doc.get("tables").and_then(|v| get_table(&mut ctx, &root, v, "[tables]")) {
            if ts.len() > MAX_TABLES {
                ctx.push(&root, format!("{} tables declared; at most {MAX_TABLES} are allowed", ts.len()));
            }
            for (tname, tv) in ts.iter().take(MAX_TABLES) {
                let at = At { table: Some(tname.clone()), field: None };
                if !ctx.check_name(&at, tname, "table") {
                    continue;
                }
                let Some(tt) = get_table(&mut ctx, &at, tv, "a table") else {
                    continue;
                };
                ctx.unknown_keys(&at, tt, TABLE_KEYS, "a table");
                let desc = get_str(&mut ctx, &at, tt, "description").map(str::to_string);
                let parent = get_str(&mut ctx, &at, tt, "parent_table").map(str::to_string);
                let fields = raw_fields(&mut ctx, &at, tt, "a table");
                raw_tables.push((tname.clone(), desc, parent, fields));
            }
        }
        let table_index: FxHashMap<String, TableId> =
            raw_tables.iter().enumerate().map(|(i, t)| (t.0.clone(), i as TableId)).collect();

        // Parents: must exist, no cycles.
        let parents: Vec<Option<TableId>> = raw_tables
            .iter()
            .map(|(tname, _, parent, _)| {
                let p = parent.as_ref()?;
                let at = At { table: Some(tname.clone()), field: None };
                let pid = table_index.get(p).copied();
                if pid.is_none() {
                    ctx.push(&at, format!("parent_table `{p}` is not a declared table"));
                }
                pid
            })
            .collect();
        for (i, (tname, ..)) in raw_tables.iter().enumerate() {
            let mut seen = FxHashSet::default();
            let mut cur = Some(i as TableId);
            while let Some(c) = cur {
                if !seen.insert(c) {
                    ctx.push(&At { table: Some(tname.clone()), field: None }, "parent_table chain forms a cycle");
                    break;
                }
                cur = parents[c as usize];
            }
        }
        // Primary keys, needed to check foreign keys.
        let pk_of: Vec<Option<String>> = raw_tables
            .iter()
            .map(|(_, _, _, fields)| fields.iter().find(|f| f.primary_key).map(|f| f.name.clone()))
            .collect();

        let mut tables = Vec::new();
        for (i, (tname, desc, _, rfs)) in raw_tables.iter().enumerate() {
            let parent = parents[i];
            let mut fields = Vec::new();
            let mut slot = 0;
            let mut row_bytes = 0usize;
            let mut pk_count = 0;
            for rf in rfs {
                let at = At { table: Some(tname.clone()), field: Some(rf.name.clone()) };
                let ty = match resolve(&names, &rf.ty) {
                    Ok(t) => t,
                    Err(e) => {
                        ctx.push(&at, e);
                        continue;
                    }
                };
                let size = value::fixed_size(&ty, &|id| custom_types.get(id).map_or(0, |c: &CustomType| c.size));
                let mut role = FieldRole::Stored { slot };
                let mut fk = None;
                if rf.primary_key {
                    pk_count += 1;
                    if ty != FieldType::Scalar(Scalar::U64) {
                        ctx.push(
                            &at,
                            format!("primary_key must be of type u64 (it is the entity id), not {}", rf.type_text),
                        );
                    }
                    if parent.is_some() {
                        ctx.push(&at, "primary_key is only allowed in a root table (one without parent_table); components use the entity id of their parent");
                    }
                    if rf.foreign_key.is_some() {
                        ctx.push(&at, "a field cannot be both primary_key and foreign_key");
                    }
                    role = FieldRole::EntityId;
                }
                let spatial_ok = crate::spatial::spatial_dims(&ty).is_some();
                match rf.index {
                    Some(IndexKind::Spatial) if !spatial_ok => ctx.push(
                        &at,
                        format!(
                            "a spatial index needs a position: [f32; 2], [f32; 3], [f64; 2] or [f64; 3], not {}",
                            rf.type_text
                        ),
                    ),
                    Some(k) if k != IndexKind::Spatial && !crate::query::orderable(&ty) => ctx.push(
                        &at,
                        format!(
                            "a {} index needs values with an order (numbers, bool, enums, strings, bytes), not {}{}",
                            k.name(),
                            rf.type_text,
                            if spatial_ok { " (positions take index = \"spatial\")" } else { "" }
                        ),
                    ),
                    _ => {}
                }
                if rf.indexed && !spatial_ok && !crate::query::orderable(&ty) {
                    ctx.push(
                        &at,
                        format!(
                            "`indexed = true` needs values with an order (numbers, bool, enums, strings, bytes) or a position ([f32; 2|3]), not {}",
                            rf.type_text
                        ),
                    );
                }
                let is_spatial =
                    rf.index == Some(IndexKind::Spatial) || (rf.indexed && rf.index.is_none() && spatial_ok);
                if rf.cell_size.is_some() && !is_spatial {
                    ctx.push(&at, "cell_size applies only to a spatial index");
                }
                if rf.index.is_some() && rf.indexed {
                    ctx.push(&at, "give either `indexed = true` or `index = \"…\"`, not both");
                }
                if let Some(target) = &rf.foreign_key {
                    match parse_fk(target, &table_index, &pk_of) {
                        Ok(tid) => {
                            fk = Some(tid);
                            if ty != FieldType::Scalar(Scalar::U64) {
                                ctx.push(
                                    &at,
                                    format!("foreign_key fields hold entity ids and must be u64, not {}", rf.type_text),
                                );
                            }
                        }
                        Err(e) => ctx.push(&at, e),
                    }
                }
                if rf.name == "entity_id" {
                    match (fk, parent) {
                        (None, _) if rf.foreign_key.is_none() => ctx.push(
                            &at,
                            "`entity_id` is reserved for the owning entity and must declare a foreign_key to a root table's primary key (e.g. \"entities.id\")",
                        ),
                        (Some(t), Some(p)) if !is_ancestor_or_self(t, p, &parents) => ctx.push(
                            &at,
                            format!(
                                "entity_id references `{}` but parent_table is `{}`; it must reference the parent or one of its ancestors",
                                raw_tables[t as usize].0, raw_tables[p as usize].0
                            ),
                        ),
                        _ => {}
                    }
                    role = FieldRole::EntityId;
                }
                if rf.primary_key && rf.name == "entity_id" {
                    ctx.push(&at, "`entity_id` cannot be the primary key");
                }
                if matches!(role, FieldRole::Stored { .. }) {
                    slot += 1;
                    row_bytes = row_bytes.saturating_add(size.unwrap_or(16));
                }
                fields.push(Field {
                    name: rf.name.clone(),
                    ty,
                    type_text: rf.type_text.clone(),
                    role,
                    primary_key: rf.primary_key,
                    foreign_key: fk,
                    indexed: rf.indexed,
                    index: rf.index,
                    cell_size: rf.cell_size,
                    description: rf.description.clone(),
                    default: Value::Bool(false), // replaced below, once the schema exists
                    size,
                });
            }
            if pk_count > 1 {
                ctx.push(&At { table: Some(tname.clone()), field: None }, "more than one primary_key field");
            }
            if row_bytes > MAX_ROW_BYTES {
                ctx.push(
                    &At { table: Some(tname.clone()), field: None },
                    format!("row of {row_bytes} bytes is larger than the maximum of {MAX_ROW_BYTES}"),
                );
            }
            tables.push(Table::new(i as TableId, tname.clone(), desc.clone(), parent, fields));
        }

        // [relations.*]
        let mut relations = Vec::new();
        let mut relation_raw_defaults = Vec::new();
        if let Some(rs) = doc.get("relations").and_then(|v| get_table(&mut ctx, &root, v, "[relations]")) {
            if rs.len() > MAX_RELATIONS {
                ctx.push(&root, format!("{} relations declared; at most {MAX_RELATIONS} are allowed", rs.len()));
            }
            for (rname, rv) in rs.iter().take(MAX_RELATIONS) {
                let at = At { table: Some(format!("relation {rname}")), field: None };
                if !ctx.check_name(&at, rname, "relation") {
                    continue;
                }
                let Some(rt) = get_table(&mut ctx, &at, rv, "a relation") else {
                    continue;
                };
                ctx.unknown_keys(&at, rt, RELATION_KEYS, "a relation");
                let mut end = |key: &str| -> Option<TableId> {
                    let t = get_str(&mut ctx, &at, rt, key)?;
                    let id = table_index.get(t).copied();
                    if id.is_none() {
                        ctx.push(&at, format!("`{key}` names `{t}`, which is not a declared table"));
                    }
                    id
                };
                let from = end("from");
                let to = end("to");
                let desc = get_str(&mut ctx, &at, rt, "description").map(str::to_string);
                let rfs = raw_fields(&mut ctx, &at, rt, "a relation");
                let mut fields = Vec::new();
                let mut defaults = Vec::new();
                for rf in rfs {
                    let fat = At { table: at.table.clone(), field: Some(rf.name.clone()) };
                    if rf.primary_key || rf.foreign_key.is_some() {
                        ctx.push(&fat, "relation properties cannot be primary_key or foreign_key");
                    }
                    let ty = match resolve(&names, &rf.ty) {
                        Ok(t) => t,
                        Err(e) => {
                            ctx.push(&fat, e);
                            continue;
                        }
                    };
                    let size = value::fixed_size(&ty, &|id| custom_types.get(id).map_or(0, |c: &CustomType| c.size));
                    if let Some(sz) = size.filter(|&sz| sz > MAX_ROW_BYTES) {
                        ctx.push(&fat, format!("property of {sz} bytes is larger than the maximum of {MAX_ROW_BYTES}"));
                    }
                    if rf.indexed || rf.index.is_some() || rf.cell_size.is_some() {
                        ctx.push(&fat, "relation properties cannot be indexed (index a component's field instead)");
                    }
                    defaults.push(rf.default.clone());
                    fields.push(Field {
                        name: rf.name.clone(),
                        role: FieldRole::Stored { slot: fields.len() },
                        ty,
                        type_text: rf.type_text,
                        primary_key: false,
                        foreign_key: None,
                        indexed: rf.indexed,
                        index: rf.index,
                        cell_size: rf.cell_size,
                        description: rf.description,
                        default: Value::Bool(false),
                        size,
                    });
                }
                relation_raw_defaults.push(defaults);
                relations.push(RelationDef::new(relations.len() as u16, rname.clone(), desc, from, to, fields));
            }
        }

        if !ctx.issues.is_empty() {
            return Err(SchemaError { issues: ctx.issues });
        }

        let relation_index = relations.iter().map(|r| (r.name.clone(), r.id)).collect();
        let mut schema = Schema {
            name,
            version,
            tables,
            enums,
            custom_types,
            relations,
            table_index,
            relation_index,
            fingerprint: 0,
        };
        // Defaults are materialized as values: refuse a schema whose fixed
        // fields add up beyond a bound before building any of them.
        let declared = schema
            .tables
            .iter()
            .flat_map(|t| &t.fields)
            .chain(schema.relations.iter().flat_map(|r| &r.fields))
            .chain(schema.custom_types.iter().flat_map(|c| &c.fields))
            .filter_map(|f| f.size)
            .fold(0usize, usize::saturating_add);
        if declared > MAX_SCHEMA_FIXED_BYTES {
            ctx.push(
                &At::default(),
                format!(
                    "the fixed-size fields of all tables, relations and custom types add up to {declared} bytes; at most {MAX_SCHEMA_FIXED_BYTES} are allowed"
                ),
            );
            return Err(SchemaError { issues: ctx.issues });
        }
        if ctx.types_unsound {
            return Err(SchemaError { issues: ctx.issues });
        }
        fill_defaults(&mut schema, &mut ctx, &raw_tables, &raw_customs, &relation_raw_defaults);
        if !ctx.issues.is_empty() {
            return Err(SchemaError { issues: ctx.issues });
        }
        schema.fingerprint = fnv1a(schema.to_toml_string().as_bytes());
        Ok(schema)
    }
}

fn parse_doc(text: &str) -> Result<toml::Table, SchemaError> {
    if text.len() > MAX_SCHEMA_TEXT {
        return Err(SchemaError {
            issues: vec![SchemaIssue {
                table: None,
                field: None,
                reason: format!("schema text of {} bytes is larger than the maximum of {MAX_SCHEMA_TEXT}", text.len()),
            }],
        });
    }
    toml::from_str(text).map_err(|e| SchemaError {
        issues: vec![SchemaIssue {
            table: None,
            field: None,
            reason: format!("invalid TOML: {}", e.to_string().trim_end()),
        }],
    })
}

fn is_ancestor_or_self(candidate: TableId, start: TableId, parents: &[Option<TableId>]) -> bool {
    let mut cur = Some(start);
    let mut steps = 0;
    while let Some(c) = cur {
        if c == candidate {
            return true;
        }
        steps += 1;
        if steps > parents.len() {
            return false; // cycle, reported elsewhere
        }
        cur = parents[c as usize];
    }
    false
}

fn parse_fk(
    target: &str,
    table_index: &FxHashMap<String, TableId>,
    pk_of: &[Option<String>],
) -> Result<TableId, String> {
    let (t, f) =
        target.split_once('.').ok_or_else(|| format!("foreign_key `{target}` must be written as `table.field`"))?;
    let &tid = table_index
        .get(t)
        .ok_or_else(|| format!("foreign_key `{target}` references table `{t}`, which is not declared"))?;
    match &pk_of[tid as usize] {
        Some(pk) if pk == f => Ok(tid),
        Some(pk) => Err(format!("foreign_key `{target}` must reference the primary key of `{t}` (`{t}.{pk}`)")),
        None => Err(format!("foreign_key `{target}` references `{t}`, which has no primary_key field `{f}`")),
    }
}

/// Depth-first sizing of custom type `i`, reporting cycles and nesting
/// deeper than `MAX_TYPE_DEPTH` (which also bounds this recursion).
fn visit(
    i: usize,
    raw: &[(String, Vec<RawField>)],
    names: &TypeNames,
    state: &mut [u8],
    sizes: &mut [usize],
    ctx: &mut Ctx,
    depth: usize,
) {
    if state[i] == 2 {
        return;
    }
    let at = At { table: Some(format!("custom type {}", raw[i].0)), field: None };
    if depth > super::types::MAX_TYPE_DEPTH {
        ctx.types_unsound = true;
        ctx.push(&at, format!("custom types nest more than {} deep here", super::types::MAX_TYPE_DEPTH));
        state[i] = 2;
        return;
    }
    if state[i] == 1 {
        ctx.push(&at, "custom type contains itself");
        return;
    }
    state[i] = 1;
    let mut total = 0usize;
    for f in &raw[i].1 {
        let mut deps = Vec::new();
        named_deps(&f.ty, &mut deps);
        for d in deps {
            if let Some(&j) = names.customs.get(&d) {
                if state[j] == 1 {
                    ctx.push(&at, format!("custom type contains itself through field `{}`", f.name));
                    state[i] = 2;
                    return;
                }
                visit(j, raw, names, state, sizes, ctx, depth + 1);
            }
        }
        let fat = At { table: at.table.clone(), field: Some(f.name.clone()) };
        match resolve(names, &f.ty) {
            Ok(ty) if ty.is_fixed() => {
                // Sizes of nested types multiply: add with a bound so a small
                // schema cannot declare (or make us materialize) a huge type.
                let size = value::fixed_size(&ty, &|id| sizes[id]).unwrap_or(0);
                total = total.saturating_add(size);
                if size > MAX_ROW_BYTES {
                    ctx.types_unsound = true;
                    ctx.push(&fat, format!("type of {size} bytes is larger than the maximum of {MAX_ROW_BYTES}"));
                }
            }
            Ok(_) => ctx.push(&fat, "custom type fields must have a fixed size (no string or bytes)"),
            Err(e) => ctx.push(&fat, e),
        }
    }
    if total > MAX_ROW_BYTES {
        ctx.types_unsound = true;
        ctx.push(&at, format!("custom type of {total} bytes is larger than the maximum of {MAX_ROW_BYTES}"));
    }
    sizes[i] = total;
    state[i] = 2;
}

fn resolve_customs(ctx: &mut Ctx, names: &TypeNames, raw: &[(String, Vec<RawField>)]) -> Vec<CustomType> {
    // Sizes in dependency order; a cycle is an error.
    let n = raw.len();
    let mut state = vec![0u8; n]; // 0 new, 1 visiting, 2 done
    let mut sizes = vec![0usize; n];
    for i in 0..n {
        visit(i, raw, names, &mut state, &mut sizes, ctx, 0);
    }
    raw.iter()
        .enumerate()
        .map(|(i, (name, rfs))| {
            let fields: Vec<Field> = rfs
                .iter()
                .filter_map(|rf| {
                    let ty = resolve(names, &rf.ty).ok()?;
                    let size = value::fixed_size(&ty, &|id| sizes[id]);
                    Some(Field {
                        name: rf.name.clone(),
                        ty,
                        type_text: rf.type_text.clone(),
                        role: FieldRole::Stored { slot: 0 },
                        primary_key: false,
                        foreign_key: None,
                        indexed: false,
                        index: None,
                        cell_size: None,
                        description: rf.description.clone(),
                        default: Value::Bool(false),
                        size,
                    })
                })
                .collect();
            let uniform = match fields.first().map(|f| &f.ty) {
                Some(FieldType::Scalar(s)) if fields.iter().all(|f| f.ty == FieldType::Scalar(*s)) => Some(*s),
                _ => None,
            };
            CustomType { name: name.clone(), fields, size: sizes[i], uniform }
        })
        .collect()
}

/// Resolve declared defaults (they need the finished schema for enums and
/// custom types) and fill zero values for the rest.
// Index loops: each step reads the schema while writing one field of it.
#[allow(clippy::needless_range_loop)]
fn fill_defaults(
    schema: &mut Schema,
    ctx: &mut Ctx,
    raw_tables: &[RawTable],
    raw_customs: &[(String, Vec<RawField>)],
    relation_defaults: &[Vec<Option<serde_json::Value>>],
) {
    // Custom types first: their zero values feed table defaults.
    for ci in 0..schema.custom_types.len() {
        for fi in 0..schema.custom_types[ci].fields.len() {
            let raw = raw_customs[ci].1.iter().find(|r| r.name == schema.custom_types[ci].fields[fi].name);
            let at = At {
                table: Some(format!("custom type {}", schema.custom_types[ci].name)),
                field: Some(schema.custom_types[ci].fields[fi].name.clone()),
            };
            let d = compute_default(
                schema,
                &schema.custom_types[ci].fields[fi].ty,
                raw.and_then(|r| r.default.as_ref()),
                ctx,
                &at,
            );
            schema.custom_types[ci].fields[fi].default = d;
        }
    }
    for ti in 0..schema.tables.len() {
        for fi in 0..schema.tables[ti].fields.len() {
            let f = &schema.tables[ti].fields[fi];
            let raw = raw_tables[ti].3.iter().find(|r| r.name == f.name);
            let at = At { table: Some(schema.tables[ti].name.clone()), field: Some(f.name.clone()) };
            let d = compute_default(schema, &f.ty, raw.and_then(|r| r.default.as_ref()), ctx, &at);
            schema.tables[ti].fields[fi].default = d;
        }
    }
    for ri in 0..schema.relations.len() {
        for fi in 0..schema.relations[ri].fields.len() {
            let at = At {
                table: Some(format!("relation {}", schema.relations[ri].name)),
                field: Some(schema.relations[ri].fields[fi].name.clone()),
            };
            let raw = relation_defaults[ri].get(fi).and_then(Option::as_ref);
            let d = compute_default(schema, &schema.relations[ri].fields[fi].ty, raw, ctx, &at);
            schema.relations[ri].fields[fi].default = d;
        }
    }
}

fn compute_default(schema: &Schema, ty: &FieldType, raw: Option<&serde_json::Value>, ctx: &mut Ctx, at: &At) -> Value {
    if value::size_in(schema, ty).is_some_and(|s| s > MAX_ROW_BYTES) {
        return Value::Bool(false); // already reported as too large; never materialized
    }
    match raw {
        None => Value::zero(ty, schema),
        Some(j) => value::from_json(ty, j, schema).unwrap_or_else(|e| {
            ctx.push(at, format!("default: {e}"));
            Value::zero(ty, schema)
        }),
    }
}

/// 64-bit FNV-1a, for schema fingerprints (not a security hash).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}
