//! Bulk loading of a whole state (snapshot restore): slot generations,
//! archetypes column by column, edges. Only into a world with no transaction;
//! every byte is validated as it would be by the primitives.

use crate::error::{Error, Result};
use crate::id::EntityId;
use crate::relation::EdgeKey;
use crate::schema::TableId;
use crate::world::World;

/// The bytes of one column, as a snapshot stores them.
#[derive(Debug)]
pub enum ColumnBytes<'a> {
    /// `rows * size` bytes.
    Fixed(&'a [u8]),
    /// One value per row.
    Var(Vec<&'a [u8]>),
}

impl World {
    fn load_guard(&self) -> Result<()> {
        if self.txn.is_some() { Err(Error::TransactionActive) } else { Ok(()) }
    }

    /// Restore the generations of every slot (alive ones are created by
    /// [`World::load_archetype`]).
    pub fn load_slot_generations(&mut self, slots: &[(u32, bool)]) -> Result<()> {
        self.load_guard()?;
        for (i, &(generation, alive)) in slots.iter().enumerate() {
            if !alive {
                self.entities.set_dead_generation(i as u32, generation);
            }
        }
        Ok(())
    }

    /// Load one archetype: its entities (created with their ids) and the
    /// bytes of every column, in the archetype's column order.
    pub fn load_archetype(&mut self, tables: &[TableId], ids: &[EntityId], columns: &[ColumnBytes<'_>]) -> Result<()> {
        self.load_guard()?;
        let corrupt = |m: String| Error::Apply { seq: self.seq, reason: m };
        if tables.iter().any(|&t| t as usize >= self.schema.tables.len()) || !tables.windows(2).all(|w| w[0] < w[1]) {
            return Err(corrupt(format!("archetype tables {tables:?} are not sorted ids of this schema")));
        }
        // Expected column shapes.
        let mut shapes = Vec::new();
        for &t in tables {
            for s in &self.layouts[t as usize].slots {
                shapes.push((t, s.fixed.map(|(_, n)| n), s.needs_check));
            }
        }
        if shapes.len() != columns.len() {
            return Err(corrupt(format!("archetype has {} columns, expected {}", columns.len(), shapes.len())));
        }
        let n = ids.len();
        for (i, (&(t, size, _), col)) in shapes.iter().zip(columns).enumerate() {
            let ok = match (size, col) {
                (Some(sz), ColumnBytes::Fixed(b)) => b.len() == sz * n,
                (None, ColumnBytes::Var(v)) => v.len() == n,
                _ => false,
            };
            if !ok {
                return Err(corrupt(format!("column {i} of table #{t} has the wrong size")));
            }
        }
        // Validate value bytes before changing anything.
        let mut slot_of = Vec::new();
        for &t in tables {
            for slot in 0..self.layouts[t as usize].slots.len() {
                slot_of.push((t, slot));
            }
        }
        for (&(t, slot), col) in slot_of.iter().zip(columns) {
            let layout = &self.layouts[t as usize];
            if !layout.slots[slot].needs_check {
                continue;
            }
            let check = |b: &[u8]| layout.decode_slot(&self.schema, slot, b).map(|_| ()).map_err(&corrupt);
            match col {
                ColumnBytes::Fixed(b) => {
                    let size = layout.slots[slot].fixed.map_or(1, |(_, n)| n);
                    b.chunks_exact(size).try_for_each(check)?;
                }
                ColumnBytes::Var(v) => v.iter().try_for_each(|b| check(b))?,
            }
        }
        for &id in ids {
            if id.is_null() || self.entities.contains(id) {
                return Err(corrupt(format!("entity {id} appears twice")));
            }
        }
        // Apply: create, place, push columns.
        let mut to = 0;
        for &t in tables {
            to = self.archetype_with(to, t);
        }
        for &id in ids {
            self.spawn_at(id)?;
        }
        for &id in ids {
            let (a, r) = self.location(id)?;
            self.move_entity(id, a, r, to);
        }
        let arch = &mut self.archetypes[to as usize];
        let base = arch.len() - n;
        debug_assert!(arch.columns.iter().all(|c| c.len() == base));
        for (c, col) in arch.columns.iter_mut().zip(columns) {
            match col {
                ColumnBytes::Fixed(b) => c.extend_fixed(b),
                ColumnBytes::Var(v) => v.iter().for_each(|b| c.push(b)),
            }
        }
        // Index entries of the loaded rows.
        for &id in ids {
            self.index_entity(id, true);
        }
        // Foreign-key reference counts.
        for &(t, slot) in &slot_of {
            if self.fk_slots[t as usize].contains(&slot) {
                let arch = &self.archetypes[to as usize];
                let Some(c) = arch.column_index(t, slot) else { continue };
                let vals: Vec<Vec<u8>> = (base..base + n).map(|r| arch.columns[c].get(r).to_vec()).collect();
                for v in vals {
                    self.fk_adjust(t, slot, &v, 1);
                }
            }
        }
        Ok(())
    }

    /// Load one edge.
    pub fn load_edge(&mut self, k: EdgeKey, props: &[u8]) -> Result<()> {
        self.load_guard()?;
        if (k.rel as usize) >= self.schema.relations.len() {
            return Err(Error::Apply { seq: self.seq, reason: format!("unknown relation #{}", k.rel) });
        }
        self.link(k, props)?;
        Ok(())
    }
}
