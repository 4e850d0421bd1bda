//! Conditional and atomic writes: `check` and `add`.
//!
//! A remote client cannot read inside a server-side transaction, so a
//! read-modify-write (move 10 gold from one wallet to another) would race
//! with every other client. Two operations make it atomic: `check` asserts
//! filters on an entity's current values (in a transaction: including the
//! transaction's own writes) and fails the transaction unless all hold;
//! `add` adds a signed amount to a numeric field, refusing any result the
//! field's type cannot hold. Both run under the writer lock like every
//! other operation, so a `check` followed by `add`s sees no interleaving.

use crate::error::{Error, Result};
use crate::id::EntityId;
use crate::query::{Filter, resolve_field};
use crate::schema::{FieldType, Scalar};
use crate::typed::FieldRef;
use crate::value::{self, Value};
use crate::world::World;

impl World {
    /// Whether every filter holds for `id` now. The first that does not —
    /// or names a component the entity lacks — fails with
    /// [`Error::CheckFailed`], naming the field and the value found.
    pub fn check(&self, id: EntityId, filters: &[Filter]) -> Result<()> {
        if !self.contains(id) {
            return Err(Error::NoSuchEntity(id));
        }
        for f in filters {
            let c = self.compile_filter(f)?;
            let fail = |reason: String| Error::CheckFailed { field: f.field.clone(), reason };
            if !self.has(id, c.table) {
                return Err(fail(format!("cannot hold: entity {id} has no `{}` component", self.table_name(c.table))));
            }
            let v = self.field_value(id, c.table, c.field)?;
            if !c.matches(&v) {
                let fd = &self.schema().table(c.table).fields[c.field];
                let found = value::to_json(&fd.ty, &v, self.schema());
                return Err(fail(format!("is {found}, which fails `{} {}`", f.op_name(), f.value)));
            }
        }
        Ok(())
    }

    /// Add `delta` (a JSON number, or a decimal string for 64-bit values)
    /// to the numeric field `path` (`table.field`) of `id`, in the open
    /// transaction. A result the field's type cannot hold (overflow,
    /// underflow below zero for unsigned fields, a non-finite float) is
    /// refused with [`Error::OutOfRange`] and changes nothing.
    // Short names for the arithmetic: scalar kind, delta, current value, result.
    #[allow(clippy::many_single_char_names)]
    pub fn add_to(&mut self, id: EntityId, path: &str, delta: &serde_json::Value) -> Result<()> {
        let (table, field) = resolve_field(self, path)?;
        let fd = self.schema().table(table).fields[field].clone();
        let bad =
            |reason: String| Error::InvalidValue { table: self.table_name(table), field: fd.name.clone(), reason };
        let Some(slot) = fd.slot() else {
            return Err(bad("is the entity's own id and cannot be changed".into()));
        };
        let FieldType::Scalar(s) = fd.ty else {
            return Err(bad(format!("add needs a numeric field, not {}", fd.type_text)));
        };
        if !self.has(id, table) {
            self.location(id)?;
            return Err(Error::ComponentMissing { entity: id, table: self.table_name(table) });
        }
        let current = self.field_value(id, table, field)?;
        let out_of_range =
            |reason: String| Error::OutOfRange { table: self.table_name(table), field: fd.name.clone(), reason };
        let new = match (s, current) {
            (Scalar::F32 | Scalar::F64, cur) => {
                let d = json_f64(delta).ok_or_else(|| bad(format!("`{delta}` is not a number")))?;
                let (x, v) = match cur {
                    Value::F32(x) => {
                        let r = f64::from(x) + d;
                        (r, Value::F32(r as f32))
                    }
                    Value::F64(x) => (x + d, Value::F64(x + d)),
                    _ => return Err(bad("the stored value is not a float".into())),
                };
                let finite = match v {
                    Value::F32(y) => y.is_finite(),
                    _ => x.is_finite(),
                };
                if !finite {
                    return Err(out_of_range(format!("adding {d} gives {x}, which a {} cannot hold", fd.type_text)));
                }
                v
            }
            (Scalar::Bool, _) => return Err(bad("add needs a numeric field, not bool".into())),
            (s, cur) => {
                let d = json_i128(delta).ok_or_else(|| bad(format!("`{delta}` is not an integer")))?;
                let x: i128 = match cur {
                    Value::U64(x) => i128::from(x),
                    Value::I64(x) => i128::from(x),
                    _ => return Err(bad("the stored value is not an integer".into())),
                };
                let (lo, hi) = int_range(s);
                let r = x.checked_add(d).filter(|r| (lo..=hi).contains(r)).ok_or_else(|| {
                    out_of_range(format!("{x} + {d} is outside the range of {} ({lo} to {hi})", fd.type_text))
                })?;
                if lo < 0 {
                    Value::I64(i64::try_from(r).map_err(|_| out_of_range("out of range".into()))?)
                } else {
                    Value::U64(u64::try_from(r).map_err(|_| out_of_range("out of range".into()))?)
                }
            }
        };
        self.set_value(id, FieldRef { table, slot }, &new)
    }
}

fn int_range(s: Scalar) -> (i128, i128) {
    match s {
        Scalar::U8 => (0, i128::from(u8::MAX)),
        Scalar::U16 => (0, i128::from(u16::MAX)),
        Scalar::U32 => (0, i128::from(u32::MAX)),
        Scalar::U64 => (0, i128::from(u64::MAX)),
        Scalar::I8 => (i128::from(i8::MIN), i128::from(i8::MAX)),
        Scalar::I16 => (i128::from(i16::MIN), i128::from(i16::MAX)),
        Scalar::I32 => (i128::from(i32::MIN), i128::from(i32::MAX)),
        _ => (i128::from(i64::MIN), i128::from(i64::MAX)),
    }
}

/// An integer from a JSON number or a decimal string (64-bit values beyond
/// 2^53 travel as strings).
fn json_i128(v: &serde_json::Value) -> Option<i128> {
    match v {
        serde_json::Value::Number(n) => n.as_i64().map(i128::from).or_else(|| n.as_u64().map(i128::from)),
        serde_json::Value::String(s) => s.parse::<i128>().ok().filter(|x| x.unsigned_abs() <= u128::from(u64::MAX)),
        _ => None,
    }
}

fn json_f64(v: &serde_json::Value) -> Option<f64> {
    match v {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => s.parse::<f64>().ok(),
        _ => None,
    }
    .filter(|d| d.is_finite())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::schema::Schema;

    const SCHEMA: &str = r#"
[tables.wallet]
[[tables.wallet.fields]]
name = "gold"
type = "u32"
[[tables.wallet.fields]]
name = "debt"
type = "i8"
[[tables.wallet.fields]]
name = "weight"
type = "f32"
[[tables.wallet.fields]]
name = "owner"
type = "[u8; 8]"
"#;

    fn world() -> (World, EntityId) {
        let mut w = World::new(Arc::new(Schema::from_toml_str(SCHEMA).unwrap()));
        w.begin().unwrap();
        let id = w.create_entity().unwrap();
        let t = w.table_id("wallet").unwrap();
        w.insert_json(id, t, &serde_json::json!({"gold": 10, "debt": -100, "weight": 1.5, "owner": "ana"})).unwrap();
        w.commit().unwrap();
        (w, id)
    }

    fn filter(field: &str, op: &str, value: &serde_json::Value) -> Filter {
        serde_json::from_value(serde_json::json!({"field": field, "op": op, "value": value})).unwrap()
    }

    #[test]
    fn checks_name_the_failing_field_and_value() {
        let (w, id) = world();
        w.check(id, &[filter("wallet.gold", "ge", &10.into()), filter("wallet.owner", "eq", &"ana".into())]).unwrap();
        let e = w.check(id, &[filter("wallet.gold", "ge", &11.into())]).unwrap_err().to_string();
        assert!(e.contains("`wallet.gold` is 10, which fails `ge 11`"), "{e}");
        assert!(w.check(EntityId(999), &[]).is_err());
    }

    #[test]
    fn adds_refuse_what_the_type_cannot_hold_and_change_nothing() {
        let (mut w, id) = world();
        w.begin().unwrap();
        w.add_to(id, "wallet.gold", &(-10).into()).unwrap();
        let e = w.add_to(id, "wallet.gold", &(-1).into()).unwrap_err().to_string();
        assert!(e.contains("0 + -1 is outside the range of u32"), "{e}");
        assert!(w.add_to(id, "wallet.gold", &"4294967296".into()).is_err());
        w.add_to(id, "wallet.gold", &"4294967295".into()).unwrap();
        assert!(w.add_to(id, "wallet.debt", &(-29).into()).is_err());
        w.add_to(id, "wallet.debt", &(-28).into()).unwrap();
        w.add_to(id, "wallet.weight", &0.25.into()).unwrap();
        assert!(w.add_to(id, "wallet.weight", &1e39.into()).is_err());
        assert!(w.add_to(id, "wallet.owner", &1.into()).is_err());
        assert!(w.add_to(id, "wallet.gold", &"x".into()).is_err());
        assert!(w.add_to(id, "wallet.gold", &1.5.into()).is_err());
        assert!(w.add_to(id, "wallet.gold", &" 5 ".into()).is_err());
        assert!(w.add_to(id, "wallet.weight", &" 0.5".into()).is_err());
        w.commit().unwrap();
        let t = w.table_id("wallet").unwrap();
        let j = w.component_json(id, t).unwrap();
        assert_eq!(j["gold"], 4_294_967_295u64);
        assert_eq!(j["debt"], -128);
        assert_eq!(j["weight"], 1.75);
    }
}
