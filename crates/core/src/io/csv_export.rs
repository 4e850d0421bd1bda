//! CSV export of one table: a header of the entity-id column and every
//! field; scalars and strings as text, arrays and custom types as JSON text.

use crate::error::{Error, Result};
use crate::schema::TableId;
use crate::value;
use crate::world::World;

/// Write table `t` as CSV.
pub fn export_table_csv<W: std::io::Write>(world: &World, t: TableId, out: W) -> Result<()> {
    let io = |e: csv::Error| Error::Import(format!("csv: {e}"));
    let schema = world.schema();
    let table = schema.table(t);
    let key = super::json::id_key(world, t);
    let mut w = csv::Writer::from_writer(out);
    let mut header = vec![key.clone()];
    header.extend(table.fields.iter().filter(|f| f.slot().is_some()).map(|f| f.name.clone()));
    w.write_record(&header).map_err(io)?;
    let mut ids: Vec<_> = world.chunks(&[t]).flat_map(|c| c.entities().iter().copied()).collect();
    ids.sort_unstable();
    for id in ids {
        let mut rec = vec![id.0.to_string()];
        for (i, f) in table.fields.iter().enumerate() {
            if f.slot().is_none() {
                continue;
            }
            let v = world.field_value(id, t, i)?;
            rec.push(match value::to_json(&f.ty, &v, schema) {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            });
        }
        w.write_record(&rec).map_err(io)?;
    }
    w.flush().map_err(|e| Error::Import(format!("csv: {e}")))?;
    Ok(())
}
