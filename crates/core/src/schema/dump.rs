//! The normalized forms of a schema: canonical TOML (what `dump-schema`
//! prints, and what the fingerprint hashes) and JSON (what the API serves).

use super::model::{Field, Schema};
use crate::value;

fn field_toml(schema: &Schema, f: &Field, fk_table: Option<&str>) -> toml::Table {
    let mut t = toml::Table::new();
    t.insert("name".into(), f.name.clone().into());
    t.insert("type".into(), f.type_text.clone().into());
    if f.primary_key {
        t.insert("primary_key".into(), true.into());
    }
    if let Some(target) = fk_table {
        t.insert("foreign_key".into(), target.into());
    }
    if f.indexed {
        t.insert("indexed".into(), true.into());
    }
    if let Some(k) = f.index {
        t.insert("index".into(), k.name().into());
    }
    if let Some(c) = f.cell_size {
        t.insert("cell_size".into(), c.into());
    }
    if let Some(d) = &f.description {
        t.insert("description".into(), d.clone().into());
    }
    if f.default != crate::value::Value::zero(&f.ty, schema) {
        let j = value::to_json(&f.ty, &f.default, schema);
        if let Ok(v) = toml::Value::try_from(j) {
            t.insert("default".into(), v);
        }
    }
    t
}

fn fk_text(schema: &Schema, f: &Field) -> Option<String> {
    let t = schema.table(f.foreign_key?);
    let pk = &t.fields[t.primary_key?].name;
    Some(format!("{}.{pk}", t.name))
}

impl Schema {
    /// Canonical TOML: fixed key order, normalized type spelling, explicit
    /// defaults only where they differ from zero.
    pub fn to_toml_string(&self) -> String {
        let mut doc = toml::Table::new();
        let mut db = toml::Table::new();
        db.insert("name".into(), self.name.clone().into());
        db.insert("version".into(), self.version.clone().into());
        doc.insert("database".into(), db.into());

        let mut tables = toml::Table::new();
        for t in &self.tables {
            let mut tt = toml::Table::new();
            if let Some(d) = &t.description {
                tt.insert("description".into(), d.clone().into());
            }
            if let Some(p) = t.parent {
                tt.insert("parent_table".into(), self.table(p).name.clone().into());
            }
            let fields: Vec<toml::Value> =
                t.fields.iter().map(|f| field_toml(self, f, fk_text(self, f).as_deref()).into()).collect();
            tt.insert("fields".into(), fields.into());
            tables.insert(t.name.clone(), tt.into());
        }
        doc.insert("tables".into(), tables.into());

        if !self.enums.is_empty() {
            let mut es = toml::Table::new();
            for e in &self.enums {
                let mut et = toml::Table::new();
                et.insert("variants".into(), e.variants.clone().into());
                es.insert(e.name.clone(), et.into());
            }
            doc.insert("enums".into(), es.into());
        }
        if !self.custom_types.is_empty() {
            let mut cs = toml::Table::new();
            for c in &self.custom_types {
                let mut ct = toml::Table::new();
                let fields: Vec<toml::Value> = c.fields.iter().map(|f| field_toml(self, f, None).into()).collect();
                ct.insert("fields".into(), fields.into());
                cs.insert(c.name.clone(), ct.into());
            }
            doc.insert("custom_types".into(), cs.into());
        }
        if !self.relations.is_empty() {
            let mut rs = toml::Table::new();
            for r in &self.relations {
                let mut rt = toml::Table::new();
                if let Some(f) = r.from {
                    rt.insert("from".into(), self.table(f).name.clone().into());
                }
                if let Some(t) = r.to {
                    rt.insert("to".into(), self.table(t).name.clone().into());
                }
                if let Some(d) = &r.description {
                    rt.insert("description".into(), d.clone().into());
                }
                if !r.fields.is_empty() {
                    let fields: Vec<toml::Value> = r.fields.iter().map(|f| field_toml(self, f, None).into()).collect();
                    rt.insert("fields".into(), fields.into());
                }
                rs.insert(r.name.clone(), rt.into());
            }
            doc.insert("relations".into(), rs.into());
        }
        toml::to_string(&doc).unwrap_or_default()
    }

    /// JSON description of the schema (served by the API).
    pub fn to_json(&self) -> serde_json::Value {
        let field_json = |f: &Field| {
            serde_json::json!({
                "name": f.name,
                "type": f.type_text,
                "stored": f.is_stored(),
                "primary_key": f.primary_key,
                "foreign_key": fk_text(self, f),
                "indexed": f.indexed,
                "index": f.index_kind().map(crate::schema::IndexKind::name),
                "cell_size": f.cell_size,
                "description": f.description,
                "default": value::to_json(&f.ty, &f.default, self),
            })
        };
        serde_json::json!({
            "name": self.name,
            "version": self.version,
            "fingerprint": format!("{:016x}", self.fingerprint),
            "tables": self.tables.iter().map(|t| serde_json::json!({
                "name": t.name,
                "description": t.description,
                "parent_table": t.parent.map(|p| self.table(p).name.clone()),
                "fields": t.fields.iter().map(field_json).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "enums": self.enums.iter().map(|e| serde_json::json!({"name": e.name, "variants": e.variants})).collect::<Vec<_>>(),
            "custom_types": self.custom_types.iter().map(|c| serde_json::json!({
                "name": c.name, "size": c.size,
                "fields": c.fields.iter().map(field_json).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "relations": self.relations.iter().map(|r| serde_json::json!({
                "name": r.name, "description": r.description,
                "from": r.from.map(|t| self.table(t).name.clone()),
                "to": r.to.map(|t| self.table(t).name.clone()),
                "fields": r.fields.iter().map(field_json).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        })
    }
}
