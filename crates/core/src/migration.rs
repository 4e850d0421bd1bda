//! Schema migrations: a TOML file of operations that takes a schema from one
//! version to the next, and the rewrite of a world's state into it.
//!
//! ```toml
//! [migration]
//! from_version = "2.0.0"
//! to_version = "2.1.0"
//! description = "Add experience field to players"
//!
//! [[operations]]
//! type = "add_field"
//! table = "player"
//! field = { name = "experience", type = "u64" }
//! default_value = 0
//! ```
//!
//! Operations: `add_field` (`field` = a field as the schema writes one,
//! `default_value` optional), `drop_field`, `rename_field` (`field`, `to`),
//! `add_index` (`field`, optional `kind` and `cell_size`), `drop_index`,
//! `add_table` (`table`, optional `parent_table`, `description`, `fields`),
//! `drop_table`, `add_relation` (`relation`, optional `from`, `to`,
//! `description`, `fields`).
//!
//! Why a migration is applied to the canonical TOML of the schema and then
//! re-validated as a whole: every rule a schema obeys (types, foreign keys,
//! parents, reserved names, sizes) is checked by the one schema parser, so a
//! migration cannot produce a schema that could not have been written by
//! hand. The state is then rewritten column by column into a new world
//! (fields kept by name, renamed fields by their old name, new fields with
//! their default, dropped tables and fields left behind); entity ids, slot
//! generations and edges carry over unchanged. A migration is logged as one
//! change set op holding its TOML, so replaying the log replays it, and the
//! log segment after it is written against the new schema's fingerprint.

use std::collections::BTreeMap;
use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet};

use crate::error::{Error, Result};
use crate::load::ColumnBytes;
use crate::schema::{Schema, TableId};
use crate::world::World;

/// Largest migration text accepted.
pub const MAX_MIGRATION_BYTES: usize = 1 << 20;

/// One operation of a migration.
#[derive(Debug, Clone)]
pub enum Operation {
    AddField { table: String, field: toml::Table, default_value: Option<toml::Value> },
    DropField { table: String, field: String },
    RenameField { table: String, field: String, to: String },
    AddIndex { table: String, field: String, kind: Option<String>, cell_size: Option<toml::Value> },
    DropIndex { table: String, field: String },
    AddTable { table: String, spec: toml::Table },
    DropTable { table: String },
    AddRelation { relation: String, spec: toml::Table },
}

impl Operation {
    /// One line saying what the operation does.
    pub fn describe(&self) -> String {
        match self {
            Operation::AddField { table, field, default_value } => format!(
                "add field {table}.{} ({}){}",
                field.get("name").and_then(toml::Value::as_str).unwrap_or("?"),
                field.get("type").and_then(toml::Value::as_str).unwrap_or("?"),
                default_value.as_ref().map(|d| format!(", default {d}")).unwrap_or_default()
            ),
            Operation::DropField { table, field } => format!("drop field {table}.{field}"),
            Operation::RenameField { table, field, to } => format!("rename field {table}.{field} to {to}"),
            Operation::AddIndex { table, field, kind: Some(k), .. } => format!("add {k} index on {table}.{field}"),
            Operation::AddIndex { table, field, kind: None, .. } => {
                format!("add index on {table}.{field} (spatial for a position, else btree)")
            }
            Operation::DropIndex { table, field } => format!("drop index on {table}.{field}"),
            Operation::AddTable { table, .. } => format!("add table {table}"),
            Operation::DropTable { table } => format!("drop table {table}"),
            Operation::AddRelation { relation, .. } => format!("add relation {relation}"),
        }
    }
}

/// A parsed migration.
#[derive(Debug, Clone)]
pub struct Migration {
    pub from_version: String,
    pub to_version: String,
    pub description: Option<String>,
    pub operations: Vec<Operation>,
    /// The text it was parsed from (what the log records).
    pub text: String,
}

fn bad(m: impl Into<String>) -> Error {
    Error::Migration(m.into())
}

fn take_str(t: &toml::Table, key: &str, at: &str) -> Result<String> {
    match t.get(key) {
        Some(toml::Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(_) => Err(bad(format!("{at}: `{key}` must be a non-empty string"))),
        None => Err(bad(format!("{at}: `{key}` is missing"))),
    }
}

fn opt_str(t: &toml::Table, key: &str, at: &str) -> Result<Option<String>> {
    t.get(key).map(|_| take_str(t, key, at)).transpose()
}

fn only_keys(t: &toml::Table, allowed: &[&str], at: &str) -> Result<()> {
    match t.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(bad(format!("{at}: unknown key `{k}` (expected one of: {})", allowed.join(", ")))),
        None => Ok(()),
    }
}

impl Migration {
    /// Parse a migration file. Unknown keys and operations are refused.
    pub fn parse(text: &str) -> Result<Migration> {
        if text.len() > MAX_MIGRATION_BYTES {
            return Err(bad(format!(
                "the migration is {} bytes; at most {MAX_MIGRATION_BYTES} are accepted",
                text.len()
            )));
        }
        let doc: toml::Table = toml::from_str(text).map_err(|e| bad(format!("not valid TOML: {e}")))?;
        only_keys(&doc, &["migration", "operations"], "the migration")?;
        let Some(toml::Value::Table(head)) = doc.get("migration") else {
            return Err(bad("a [migration] section with from_version and to_version is required"));
        };
        only_keys(head, &["from_version", "to_version", "description"], "[migration]")?;
        let from_version = take_str(head, "from_version", "[migration]")?;
        let to_version = take_str(head, "to_version", "[migration]")?;
        let description = opt_str(head, "description", "[migration]")?;
        let ops = match doc.get("operations") {
            Some(toml::Value::Array(a)) if !a.is_empty() => a,
            _ => return Err(bad("at least one [[operations]] entry is required")),
        };
        let mut operations = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            let at = format!("operations[{i}]");
            let toml::Value::Table(t) = op else {
                return Err(bad(format!("{at}: must be a table")));
            };
            let kind = take_str(t, "type", &at)?;
            let at = format!("{at} ({kind})");
            let op = match kind.as_str() {
                "add_field" => {
                    only_keys(t, &["type", "table", "field", "default_value"], &at)?;
                    let field = match t.get("field") {
                        Some(toml::Value::Table(f)) => f.clone(),
                        _ => {
                            return Err(bad(format!(
                                "{at}: `field` must be a table like {{ name = \"x\", type = \"u32\" }}"
                            )));
                        }
                    };
                    take_str(&field, "name", &at)?;
                    take_str(&field, "type", &at)?;
                    Operation::AddField {
                        table: take_str(t, "table", &at)?,
                        field,
                        default_value: t.get("default_value").cloned(),
                    }
                }
                "drop_field" | "drop_index" => {
                    only_keys(t, &["type", "table", "field"], &at)?;
                    let (table, field) = (take_str(t, "table", &at)?, take_str(t, "field", &at)?);
                    if kind == "drop_field" {
                        Operation::DropField { table, field }
                    } else {
                        Operation::DropIndex { table, field }
                    }
                }
                "rename_field" => {
                    only_keys(t, &["type", "table", "field", "to"], &at)?;
                    Operation::RenameField {
                        table: take_str(t, "table", &at)?,
                        field: take_str(t, "field", &at)?,
                        to: take_str(t, "to", &at)?,
                    }
                }
                "add_index" => {
                    only_keys(t, &["type", "table", "field", "kind", "cell_size"], &at)?;
                    Operation::AddIndex {
                        table: take_str(t, "table", &at)?,
                        field: take_str(t, "field", &at)?,
                        kind: opt_str(t, "kind", &at)?,
                        cell_size: t.get("cell_size").cloned(),
                    }
                }
                "add_table" => {
                    only_keys(t, &["type", "table", "parent_table", "description", "fields"], &at)?;
                    let mut spec = t.clone();
                    spec.remove("type");
                    spec.remove("table");
                    Operation::AddTable { table: take_str(t, "table", &at)?, spec }
                }
                "drop_table" => {
                    only_keys(t, &["type", "table"], &at)?;
                    Operation::DropTable { table: take_str(t, "table", &at)? }
                }
                "add_relation" => {
                    only_keys(t, &["type", "relation", "from", "to", "description", "fields"], &at)?;
                    let mut spec = t.clone();
                    spec.remove("type");
                    spec.remove("relation");
                    Operation::AddRelation { relation: take_str(t, "relation", &at)?, spec }
                }
                other => {
                    return Err(bad(format!(
                        "{at}: unknown operation `{other}` (add_field, drop_field, rename_field, add_index, drop_index, add_table, drop_table, add_relation)"
                    )));
                }
            };
            operations.push(op);
        }
        Ok(Migration { from_version, to_version, description, operations, text: text.to_string() })
    }
}

/// A migration checked against a schema: the schema it produces and what
/// it does to the data.
#[derive(Debug, Clone)]
pub struct MigrationPlan {
    pub migration: Migration,
    pub schema: Arc<Schema>,
    /// (table, new field) → old field, for renamed fields.
    renames: FxHashMap<(String, String), String>,
    /// Tables and fields the migration created (no data carries into them,
    /// even when an old one had the same name).
    fresh_tables: FxHashSet<String>,
    fresh_fields: FxHashSet<(String, String)>,
}

fn tables_of(doc: &mut toml::Table) -> &mut toml::Table {
    let v = doc.entry("tables").or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if !v.is_table() {
        *v = toml::Value::Table(toml::Table::new());
    }
    match v {
        toml::Value::Table(t) => t,
        _ => unreachable!("just made a table"),
    }
}

fn fields_of<'a>(doc: &'a mut toml::Table, table: &str) -> Result<&'a mut Vec<toml::Value>> {
    let t = tables_of(doc)
        .get_mut(table)
        .and_then(toml::Value::as_table_mut)
        .ok_or_else(|| bad(format!("no table `{table}`")))?;
    let f = t.entry("fields").or_insert_with(|| toml::Value::Array(Vec::new()));
    f.as_array_mut().ok_or_else(|| bad(format!("table `{table}` has malformed fields")))
}

fn find_field<'a>(fields: &'a mut [toml::Value], name: &str) -> Option<&'a mut toml::Table> {
    fields
        .iter_mut()
        .filter_map(toml::Value::as_table_mut)
        .find(|f| f.get("name").and_then(toml::Value::as_str) == Some(name))
}

impl Schema {
    /// Check `m` against this schema and compute the schema it produces.
    /// `allow_system`: operations may touch system (`_`) tables (the
    /// server's own upgrades); user migrations may not.
    pub fn plan_migration(&self, m: &Migration, allow_system: bool) -> Result<MigrationPlan> {
        if m.from_version == m.to_version && !allow_system {
            return Err(bad(format!("[migration]: from_version and to_version are both {}", m.to_version)));
        }
        if !allow_system {
            let to = parse_version(&m.to_version).ok_or_else(|| {
                bad(format!(
                    "to_version `{}` is not a version (major.minor.patch, as SemVer: 2.1.0, 3.0.0-rc.1)",
                    m.to_version
                ))
            })?;
            if let Some(from) = parse_version(&m.from_version)
                && to.cmp_precedence(&from) != std::cmp::Ordering::Greater
            {
                return Err(bad(format!(
                    "migrations go forward: to_version {} is not newer than from_version {} (SemVer precedence)",
                    m.to_version, m.from_version
                )));
            }
        }
        if m.from_version != self.version {
            return Err(bad(format!(
                "this migration goes from version {} to {}, but the data is at version {}{}",
                m.from_version,
                m.to_version,
                self.version,
                if m.to_version == self.version {
                    " (it was already applied)"
                } else {
                    " (apply the migrations in order)"
                }
            )));
        }
        let mut doc: toml::Table = toml::from_str(&self.to_toml_string())
            .map_err(|e| bad(format!("the current schema does not re-read: {e}")))?;
        let mut renames: FxHashMap<(String, String), String> = FxHashMap::default();
        let mut fresh_tables = FxHashSet::default();
        let mut fresh_fields = FxHashSet::default();
        for (i, op) in m.operations.iter().enumerate() {
            let at = |e: Error| match e {
                Error::Migration(s) => bad(format!("operations[{i}] ({}): {s}", op.describe())),
                other => other,
            };
            let name_touched = match op {
                Operation::AddRelation { relation, .. } => relation.as_str(),
                Operation::AddField { table, .. }
                | Operation::DropField { table, .. }
                | Operation::RenameField { table, .. }
                | Operation::AddIndex { table, .. }
                | Operation::DropIndex { table, .. }
                | Operation::AddTable { table, .. }
                | Operation::DropTable { table } => table.as_str(),
            };
            if name_touched.starts_with('_') && !allow_system {
                return Err(at(bad(format!("`{name_touched}` is a system name; migrations change user tables only"))));
            }
            apply_op(&mut doc, op, &mut renames, &mut fresh_tables, &mut fresh_fields).map_err(at)?;
        }
        let db = doc.entry("database").or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if let toml::Value::Table(d) = db {
            d.insert("version".into(), m.to_version.clone().into());
            if !d.contains_key("name") {
                d.insert("name".into(), self.name.clone().into());
            }
        }
        let text = toml::to_string(&doc).map_err(|e| bad(format!("cannot write the new schema: {e}")))?;
        let schema = Schema::from_stored_toml(&text)
            .map_err(|e| bad(format!("the schema after this migration is not valid: {e}")))?;
        if !allow_system && let Some(name) = new_reserved_name(self, &schema) {
            return Err(bad(format!(
                "the schema after this migration is not valid: `{name}`: names starting with `_` are reserved"
            )));
        }
        Ok(MigrationPlan { migration: m.clone(), schema: Arc::new(schema), renames, fresh_tables, fresh_fields })
    }
}

/// A schema version as `SemVer` (`2.1` and `2` read as `2.1.0` and `2.0.0`).
pub fn parse_version(v: &str) -> Option<semver::Version> {
    let v = v.trim();
    semver::Version::parse(v).ok().or_else(|| {
        let core_len = v.find(['-', '+']).unwrap_or(v.len());
        let (core, rest) = v.split_at(core_len);
        let pad = match core.matches('.').count() {
            0 => ".0.0",
            1 => ".0",
            _ => return None,
        };
        semver::Version::parse(&format!("{core}{pad}{rest}")).ok()
    })
}

/// Whether version `a` is older than `b` (`SemVer` precedence; versions that
/// do not parse compare as neither).
pub fn older(a: &str, b: &str) -> bool {
    matches!((parse_version(a), parse_version(b)), (Some(x), Some(y)) if x.cmp_precedence(&y) == std::cmp::Ordering::Less)
}

/// A reserved (`_`) table, field or relation name `new` has and `old` has
/// not: user migrations may not introduce one (the system's own names
/// were there before).
fn new_reserved_name(old: &Schema, new: &Schema) -> Option<String> {
    // User tables and relations may not lean on system tables either
    // (a parent, a foreign key or a relation end naming one).
    let system =
        |t: Option<crate::schema::TableId>| t.map(|t| new.table(t).name.clone()).filter(|n| n.starts_with('_'));
    for t in new.tables.iter().filter(|t| !t.name.starts_with('_')) {
        if let Some(n) = system(t.parent) {
            return Some(format!("{} (parent_table of {})", n, t.name));
        }
        for f in &t.fields {
            if let Some(n) = system(f.foreign_key) {
                return Some(format!("{n} (foreign key of {}.{})", t.name, f.name));
            }
        }
    }
    for r in new.relations.iter().filter(|r| !r.name.starts_with('_')) {
        if let Some(n) = system(r.from).or_else(|| system(r.to)) {
            return Some(format!("{n} (an end of relation {})", r.name));
        }
    }
    for t in &new.tables {
        let before = old.table_id(&t.name).map(|id| old.table(id));
        if t.name.starts_with('_') && before.is_none() {
            return Some(t.name.clone());
        }
        for f in &t.fields {
            if f.name.starts_with('_') && before.is_none_or(|b| b.field(&f.name).is_none()) {
                return Some(format!("{}.{}", t.name, f.name));
            }
        }
    }
    for r in &new.relations {
        let before = old.relation_id(&r.name).map(|id| old.relation(id));
        if r.name.starts_with('_') && before.is_none() {
            return Some(r.name.clone());
        }
        for f in &r.fields {
            if f.name.starts_with('_') && before.is_none_or(|b| b.field_index(&f.name).is_none()) {
                return Some(format!("{}.{}", r.name, f.name));
            }
        }
    }
    None
}

fn apply_op(
    doc: &mut toml::Table,
    op: &Operation,
    renames: &mut FxHashMap<(String, String), String>,
    fresh_tables: &mut FxHashSet<String>,
    fresh_fields: &mut FxHashSet<(String, String)>,
) -> Result<()> {
    match op {
        Operation::AddField { table, field, default_value } => {
            let name = field.get("name").and_then(toml::Value::as_str).unwrap_or_default().to_string();
            let fields = fields_of(doc, table)?;
            if find_field(fields, &name).is_some() {
                return Err(bad(format!("{table}.{name} exists already")));
            }
            let mut f = field.clone();
            if let Some(d) = default_value {
                if f.contains_key("default") {
                    return Err(bad("give the default once (default_value, or `default` in the field)"));
                }
                f.insert("default".into(), d.clone());
            }
            fields.push(toml::Value::Table(f));
            renames.remove(&(table.clone(), name.clone()));
            fresh_fields.insert((table.clone(), name));
        }
        Operation::DropField { table, field } => {
            let fields = fields_of(doc, table)?;
            let before = fields.len();
            fields.retain(|f| f.get("name").and_then(toml::Value::as_str) != Some(field.as_str()));
            if fields.len() == before {
                return Err(bad(format!("no field {table}.{field}")));
            }
            renames.remove(&(table.clone(), field.clone()));
        }
        Operation::RenameField { table, field, to } => {
            let fields = fields_of(doc, table)?;
            if find_field(fields, to).is_some() {
                return Err(bad(format!("{table}.{to} exists already")));
            }
            let f = find_field(fields, field).ok_or_else(|| bad(format!("no field {table}.{field}")))?;
            f.insert("name".into(), to.clone().into());
            let key = (table.clone(), field.clone());
            let origin = renames.remove(&key).unwrap_or_else(|| field.clone());
            if fresh_fields.remove(&key) {
                fresh_fields.insert((table.clone(), to.clone()));
            } else {
                renames.insert((table.clone(), to.clone()), origin);
            }
        }
        Operation::AddIndex { table, field, kind, cell_size } => {
            let fields = fields_of(doc, table)?;
            let f = find_field(fields, field).ok_or_else(|| bad(format!("no field {table}.{field}")))?;
            if f.contains_key("index") || f.get("indexed").and_then(toml::Value::as_bool) == Some(true) {
                return Err(bad(format!("{table}.{field} is indexed already (drop_index first to change its kind)")));
            }
            f.remove("indexed");
            match kind {
                Some(k) => {
                    f.insert("index".into(), k.clone().into());
                }
                None => {
                    f.insert("indexed".into(), true.into());
                }
            }
            if let Some(c) = cell_size {
                f.insert("cell_size".into(), c.clone());
            }
        }
        Operation::DropIndex { table, field } => {
            let fields = fields_of(doc, table)?;
            let f = find_field(fields, field).ok_or_else(|| bad(format!("no field {table}.{field}")))?;
            let had = f.remove("index").is_some() | f.remove("indexed").is_some();
            f.remove("cell_size");
            if !had {
                return Err(bad(format!("{table}.{field} has no index")));
            }
        }
        Operation::AddTable { table, spec } => {
            let tables = tables_of(doc);
            if tables.contains_key(table) {
                return Err(bad(format!("table `{table}` exists already")));
            }
            tables.insert(table.clone(), toml::Value::Table(spec.clone()));
            fresh_tables.insert(table.clone());
            renames.retain(|(t, _), _| t != table);
        }
        Operation::DropTable { table } => {
            if tables_of(doc).remove(table).is_none() {
                return Err(bad(format!("no table `{table}`")));
            }
            fresh_tables.remove(table);
            renames.retain(|(t, _), _| t != table);
            fresh_fields.retain(|(t, _)| t != table);
        }
        Operation::AddRelation { relation, spec } => {
            let v = doc.entry("relations").or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let rels = v.as_table_mut().ok_or_else(|| bad("malformed relations"))?;
            if rels.contains_key(relation) {
                return Err(bad(format!("relation `{relation}` exists already")));
            }
            rels.insert(relation.clone(), toml::Value::Table(spec.clone()));
        }
    }
    Ok(())
}

/// What applying a plan does, for `migrate plan` and dry runs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MigrationReport {
    pub from_version: String,
    pub to_version: String,
    pub description: Option<String>,
    pub operations: Vec<String>,
    /// Rows rewritten per table (every row of a table whose columns change).
    pub rows_rewritten: BTreeMap<String, usize>,
    /// Rows dropped with their table.
    pub rows_dropped: BTreeMap<String, usize>,
    /// Indexes built (`table.field`) with their entry count.
    pub indexes_built: BTreeMap<String, usize>,
    /// Indexes no longer kept.
    pub indexes_dropped: Vec<String>,
    /// Estimated bytes the new state holds, and those copied to get there.
    pub estimated_bytes: usize,
    pub fingerprint_before: String,
    pub fingerprint_after: String,
}

impl World {
    /// What `plan` would do to this state, after checking that it can: the
    /// rewrite is done and thrown away, so every refusal the real apply
    /// would meet (a unique index over duplicates, a default breaking a
    /// foreign key) is met here. Nothing is changed.
    pub fn check_migration(&self, plan: &MigrationPlan) -> Result<MigrationReport> {
        drop(self.migrated(plan)?);
        Ok(self.migration_report(plan))
    }

    /// What `plan` would do to this state (nothing is checked or changed).
    pub fn migration_report(&self, plan: &MigrationPlan) -> MigrationReport {
        let old = self.schema();
        let new = &plan.schema;
        let count = |t: TableId| {
            self.archetypes().iter().filter(|a| a.has(t)).map(crate::archetype::Archetype::len).sum::<usize>()
        };
        let mut rows_rewritten = BTreeMap::new();
        let mut rows_dropped = BTreeMap::new();
        for (ti, t) in old.tables.iter().enumerate() {
            let rows = count(ti as TableId);
            match new.table_id(&t.name) {
                None => {
                    rows_dropped.insert(t.name.clone(), rows);
                }
                Some(nt) if plan.fresh_tables.contains(&t.name) => {
                    rows_dropped.insert(t.name.clone(), rows);
                    let _ = nt;
                }
                Some(nt) => {
                    let a: Vec<(&str, &str)> = t
                        .fields
                        .iter()
                        .filter(|f| f.is_stored())
                        .map(|f| (f.name.as_str(), f.type_text.as_str()))
                        .collect();
                    let b: Vec<(&str, &str)> = new
                        .table(nt)
                        .fields
                        .iter()
                        .filter(|f| f.is_stored())
                        .map(|f| (f.name.as_str(), f.type_text.as_str()))
                        .collect();
                    if a != b && rows > 0 {
                        rows_rewritten.insert(t.name.clone(), rows);
                    }
                }
            }
        }
        let index_names = |s: &Schema| -> Vec<(String, String)> {
            s.tables
                .iter()
                .flat_map(|t| {
                    t.fields
                        .iter()
                        .filter(|f| f.is_stored() && f.index_kind().is_some())
                        .map(|f| {
                            (
                                format!("{}.{}", t.name, f.name),
                                f.index_kind().map(crate::schema::IndexKind::name).unwrap_or_default().to_string(),
                            )
                        })
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        let before = index_names(old);
        let after = index_names(new);
        let mut indexes_built = BTreeMap::new();
        for (name, kind) in &after {
            if !before.iter().any(|(n, k)| n == name && k == kind) {
                let table = name.split('.').next().unwrap_or_default();
                let rows = old.table_id(table).filter(|_| !plan.fresh_tables.contains(table)).map_or(0, count);
                indexes_built.insert(name.clone(), rows);
            }
        }
        let indexes_dropped = before
            .iter()
            .filter(|(n, k)| !after.iter().any(|(m, j)| m == n && j == k))
            .map(|(n, _)| n.clone())
            .collect();
        MigrationReport {
            from_version: plan.migration.from_version.clone(),
            to_version: plan.migration.to_version.clone(),
            description: plan.migration.description.clone(),
            operations: plan.migration.operations.iter().map(Operation::describe).collect(),
            rows_rewritten,
            rows_dropped,
            indexes_built,
            indexes_dropped,
            estimated_bytes: self.data_bytes(),
            fingerprint_before: format!("{:016x}", old.fingerprint),
            fingerprint_after: format!("{:016x}", new.fingerprint),
        }
    }

    /// This state rewritten into the plan's schema: a new world at the same
    /// sequence, with the same entities (ids and slot generations), their
    /// kept components and fields, new fields at their defaults, and every
    /// edge. Fails without changing anything.
    pub fn migrated(&self, plan: &MigrationPlan) -> Result<World> {
        if self.txn.is_some() {
            return Err(Error::TransactionActive);
        }
        let old = self.schema().clone();
        let new_schema = plan.schema.clone();
        let mut w = World::new(new_schema.clone());
        w.set_memory_limit(self.memory_limit_bytes);
        w.set_max_commit_bytes(self.max_commit_bytes);
        // Old table → new table, and per new (table, slot): old slot or none.
        let table_map: Vec<Option<TableId>> = old
            .tables
            .iter()
            .map(|t| if plan.fresh_tables.contains(&t.name) { None } else { new_schema.table_id(&t.name) })
            .collect();
        let slot_source = |nt: TableId, slot: usize| -> Option<(TableId, usize)> {
            let t = new_schema.table(nt);
            if plan.fresh_tables.contains(&t.name) {
                return None;
            }
            let f = t.stored_field(slot);
            if plan.fresh_fields.contains(&(t.name.clone(), f.name.clone())) {
                return None;
            }
            let ot = old.table_id(&t.name)?;
            let old_name = plan.renames.get(&(t.name.clone(), f.name.clone())).unwrap_or(&f.name);
            let of = old.table(ot).field(old_name)?;
            (of.type_text == f.type_text && of.ty == f.ty).then_some((ot, of.slot()?))
        };
        let slots: Vec<(u32, bool)> = self.entities().slots().collect();
        w.load_slot_generations(&slots)?;
        let defaults: Vec<Vec<Vec<u8>>> = w
            .layouts
            .iter()
            .map(|l| l.split(&l.default_row).map(|p| p.into_iter().map(<[u8]>::to_vec).collect()).unwrap_or_default())
            .collect();
        for arch in self.archetypes() {
            if arch.is_empty() {
                continue;
            }
            let mut tables: Vec<TableId> = arch.tables.iter().filter_map(|&t| table_map[t as usize]).collect();
            tables.sort_unstable();
            let n = arch.len();
            let mut owned: Vec<Vec<u8>> = Vec::new();
            let mut plan_cols: Vec<(bool, Option<usize>, usize, usize)> = Vec::new();
            for &nt in &tables {
                for (slot, sl) in w.layouts[nt as usize].slots.iter().enumerate() {
                    let fixed = sl.fixed.is_some();
                    let src = slot_source(nt, slot).and_then(|(ot, os)| arch.column_index(ot, os));
                    if src.is_none() && fixed {
                        owned.push(defaults[nt as usize][slot].repeat(n));
                    }
                    plan_cols.push((fixed, src, nt as usize, slot));
                }
            }
            let mut owned_iter = owned.iter();
            let columns: Vec<ColumnBytes<'_>> = plan_cols
                .iter()
                .map(|&(fixed, src, nt, slot)| match (src, fixed) {
                    (Some(c), true) => match &arch.columns[c] {
                        crate::archetype::Column::Fixed(f) => ColumnBytes::Fixed(f.bytes()),
                        crate::archetype::Column::Var(_) => ColumnBytes::Fixed(&[]),
                    },
                    (Some(c), false) => ColumnBytes::Var((0..n).map(|r| arch.columns[c].get(r)).collect()),
                    (None, true) => ColumnBytes::Fixed(owned_iter.next().map_or(&[][..], Vec::as_slice)),
                    (None, false) => ColumnBytes::Var(vec![defaults[nt][slot].as_slice(); n]),
                })
                .collect();
            w.load_archetype(&tables, &arch.entities, &columns)?;
        }
        for (k, props) in self.relations().iter() {
            let name = &old.relation(k.rel).name;
            let rel = new_schema
                .relation_id(name)
                .ok_or_else(|| bad(format!("relation `{name}` has edges and is not in the new schema")))?;
            w.load_edge(crate::relation::EdgeKey { rel, from: k.from, to: k.to }, props)?;
        }
        w.set_seq(self.seq());
        w.reset_change_marks(self.seq());
        if let Some(e) = w.unique_duplicate() {
            return Err(bad(format!("a unique index cannot be built: {e}")));
        }
        let problems = w.check_integrity();
        if !problems.is_empty() {
            return Err(bad(format!("the migrated state does not check: {}", problems.join("; "))));
        }
        Ok(w)
    }
}
