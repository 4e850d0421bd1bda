//! Row layout: the one byte encoding of a row of stored fields, shared by
//! archetype columns, change sets and snapshots.
//!
//! A row is its *fixed part* — every fixed-size field at a fixed offset, in
//! slot order, packed without padding — followed by its *var tail*: each
//! `string`/`bytes` field, in slot order, as `u32` LE length + bytes.

use crate::schema::{Field, FieldType, Schema};
use crate::value::{self, Value};

/// Where one stored field lives in the row encoding.
#[derive(Debug, Clone)]
pub struct SlotLayout {
    pub ty: FieldType,
    /// `Some((offset, size))` in the fixed part, `None` for var fields.
    pub fixed: Option<(usize, usize)>,
    /// Position among the var fields, for var fields.
    pub var_index: Option<usize>,
    /// Whether some byte patterns are invalid for this type (bool, enum,
    /// strings): only then must written bytes be decoded to be checked.
    pub needs_check: bool,
}

/// Whether some byte patterns of `ty` decode to no value.
pub fn needs_byte_check(ty: &FieldType, schema: &Schema) -> bool {
    match ty {
        FieldType::Scalar(s) => *s == crate::schema::Scalar::Bool,
        FieldType::Array(t, _) => needs_byte_check(t, schema),
        FieldType::FixedString(_) | FieldType::Enum { .. } | FieldType::String => true,
        FieldType::Custom(id) => schema.custom_types[*id].fields.iter().any(|f| needs_byte_check(&f.ty, schema)),
        FieldType::Bytes => false,
    }
}

/// Byte layout of the stored fields of a table or relation.
#[derive(Debug, Clone)]
pub struct RowLayout {
    pub slots: Vec<SlotLayout>,
    pub fixed_size: usize,
    pub var_count: usize,
    /// The encoded row of all defaults.
    pub default_row: Vec<u8>,
}

impl RowLayout {
    /// Layout of `fields` (stored ones only, in order).
    pub fn new<'a>(schema: &Schema, fields: impl IntoIterator<Item = &'a Field>) -> RowLayout {
        let mut slots = Vec::new();
        let mut off = 0;
        let mut var_count = 0;
        let mut defaults = Vec::new();
        for f in fields {
            defaults.push(f.default.clone());
            let needs_check = needs_byte_check(&f.ty, schema);
            if let Some(size) = f.size {
                slots.push(SlotLayout { ty: f.ty.clone(), fixed: Some((off, size)), var_index: None, needs_check });
                off += size;
            } else {
                slots.push(SlotLayout { ty: f.ty.clone(), fixed: None, var_index: Some(var_count), needs_check });
                var_count += 1;
            }
        }
        let mut layout = RowLayout { slots, fixed_size: off, var_count, default_row: Vec::new() };
        layout.default_row = layout.encode(schema, &defaults);
        layout
    }

    /// Encode checked values (one per slot) into a row.
    pub fn encode(&self, schema: &Schema, values: &[Value]) -> Vec<u8> {
        let mut out = vec![0u8; self.fixed_size];
        for (s, v) in self.slots.iter().zip(values) {
            if let Some((off, size)) = s.fixed {
                value::encode_fixed(&s.ty, v, schema, &mut out[off..off + size]);
            }
        }
        for (s, v) in self.slots.iter().zip(values) {
            if s.fixed.is_none() {
                let b = value::encode_var(v);
                out.extend_from_slice(&(b.len() as u32).to_le_bytes());
                out.extend_from_slice(&b);
            }
        }
        out
    }

    /// Split an encoded row into per-slot byte slices, checking its framing.
    pub fn split<'a>(&self, row: &'a [u8]) -> Result<Vec<&'a [u8]>, String> {
        if row.len() < self.fixed_size {
            return Err(format!("row of {} bytes is shorter than its fixed part of {}", row.len(), self.fixed_size));
        }
        let mut vars = Vec::with_capacity(self.var_count);
        let mut pos = self.fixed_size;
        for _ in 0..self.var_count {
            let len_bytes: [u8; 4] = row
                .get(pos..pos + 4)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| "row ends inside a var field length".to_string())?;
            let len = u32::from_le_bytes(len_bytes) as usize;
            let start = pos + 4;
            let b = row.get(start..start + len).ok_or_else(|| "row ends inside a var field".to_string())?;
            vars.push(b);
            pos = start + len;
        }
        if pos != row.len() {
            return Err(format!("row has {} trailing bytes", row.len() - pos));
        }
        Ok(self
            .slots
            .iter()
            .map(|s| match (s.fixed, s.var_index) {
                (Some((off, size)), _) => &row[off..off + size],
                (None, Some(i)) => vars[i],
                (None, None) => &row[0..0],
            })
            .collect())
    }

    /// Decode one slot's bytes into a value, validating them.
    pub fn decode_slot(&self, schema: &Schema, slot: usize, bytes: &[u8]) -> Result<Value, String> {
        let s = &self.slots[slot];
        match s.fixed {
            Some((_, size)) => {
                if bytes.len() != size {
                    return Err(format!("expected {size} bytes, got {}", bytes.len()));
                }
                value::decode_fixed(&s.ty, bytes, schema)
            }
            None => value::decode_var(&s.ty, bytes),
        }
    }

    /// Validate every slot of an encoded row (framing and byte patterns).
    pub fn validate(&self, schema: &Schema, row: &[u8]) -> Result<(), String> {
        let parts = self.split(row)?;
        for (i, p) in parts.iter().enumerate() {
            self.decode_slot(schema, i, p).map_err(|e| format!("slot {i}: {e}"))?;
        }
        Ok(())
    }
}
