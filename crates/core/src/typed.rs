//! Typed column access: game code views a field's column as `&[T]` /
//! `&mut [T]` for plain types (`f32`, `[f32; 3]`, `u64`, ...), checked once
//! per archetype against the schema. This is how a system iterates at ECS
//! speed: dense slices, no per-row lookups or decoding.
//!
//! Shapes: `bool` and 1-byte enums are viewed as `u8`, 2-byte enums as `u16`,
//! `[u8; N]` fixed strings as `[u8; N]`, and custom types whose fields share
//! one scalar type (`vec3`) as arrays of it (`[f32; 3]`).

use crate::archetype::Archetype;
use crate::error::{Error, Result};
use crate::id::EntityId;
use crate::schema::{FieldType, Scalar, Schema, TableId};

/// The memory shape of a plain element type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shape {
    Scalar(Scalar),
    Array(Box<Shape>, usize),
}

/// A plain type a column can be viewed as.
pub trait Element: bytemuck::Pod {
    fn shape() -> Shape;
}

macro_rules! scalar_element {
    ($($t:ty => $s:ident),*) => {$(
        impl Element for $t {
            fn shape() -> Shape { Shape::Scalar(Scalar::$s) }
        }
    )*};
}
scalar_element!(u8 => U8, u16 => U16, u32 => U32, u64 => U64, i8 => I8, i16 => I16, i32 => I32, i64 => I64, f32 => F32, f64 => F64);

impl<T: Element, const N: usize> Element for [T; N] {
    fn shape() -> Shape {
        Shape::Array(Box::new(T::shape()), N)
    }
}

/// The shape of a field type, if it has a plain one.
pub fn field_shape(ty: &FieldType, schema: &Schema) -> Option<Shape> {
    Some(match ty {
        FieldType::Scalar(Scalar::Bool) | FieldType::Enum { width: 1, .. } => Shape::Scalar(Scalar::U8),
        FieldType::Scalar(s) => Shape::Scalar(*s),
        FieldType::Array(t, n) => Shape::Array(Box::new(field_shape(t, schema)?), *n),
        FieldType::FixedString(n) => Shape::Array(Box::new(Shape::Scalar(Scalar::U8)), *n),
        FieldType::Enum { .. } => Shape::Scalar(Scalar::U16),
        FieldType::Custom(id) => {
            let c = &schema.custom_types[*id];
            Shape::Array(Box::new(Shape::Scalar(c.uniform?)), c.fields.len())
        }
        FieldType::String | FieldType::Bytes => return None,
    })
}

/// A resolved reference to one stored field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FieldRef {
    pub table: TableId,
    pub slot: usize,
}

impl Schema {
    /// Resolve `table.field` to a stored field reference.
    pub fn field_ref(&self, table: &str, field: &str) -> Result<FieldRef> {
        let t = self.table_by_name(table).ok_or_else(|| Error::NoSuchTable(table.to_string()))?;
        let f =
            t.field(field).ok_or_else(|| Error::NoSuchField { table: table.to_string(), field: field.to_string() })?;
        let slot = f.slot().ok_or_else(|| Error::TypeMismatch {
            table: table.to_string(),
            field: field.to_string(),
            reason: "is the entity id, which is not stored; use the row's entity".into(),
        })?;
        Ok(FieldRef { table: t.id, slot })
    }

    /// Check that field `f` can be viewed as `T`.
    pub(crate) fn check_element<T: Element>(&self, f: FieldRef) -> Result<()> {
        let table = self.table(f.table);
        let field = table.stored_field(f.slot);
        let mismatch =
            |reason: String| Error::TypeMismatch { table: table.name.clone(), field: field.name.clone(), reason };
        let shape = field_shape(&field.ty, self)
            .ok_or_else(|| mismatch(format!("type {} has no plain element view", field.type_text)))?;
        if shape != T::shape() {
            return Err(mismatch(format!(
                "type {} cannot be viewed as {}",
                field.type_text,
                std::any::type_name::<T>()
            )));
        }
        Ok(())
    }
}

/// Read-only view of one archetype's rows.
#[derive(Debug, Clone, Copy)]
pub struct Chunk<'a> {
    pub(crate) arch: &'a Archetype,
    pub(crate) schema: &'a Schema,
}

impl<'a> Chunk<'a> {
    /// Entities, row by row.
    pub fn entities(&self) -> &'a [EntityId] {
        &self.arch.entities
    }

    pub fn len(&self) -> usize {
        self.arch.len()
    }

    pub fn is_empty(&self) -> bool {
        self.arch.is_empty()
    }

    pub fn has(&self, t: TableId) -> bool {
        self.arch.has(t)
    }

    /// Column of `f` viewed as `&[T]`.
    pub fn column<T: Element>(&self, f: FieldRef) -> Result<&'a [T]> {
        typed_column(self.arch, self.schema, f)
    }
}

pub(crate) fn typed_column<'a, T: Element>(arch: &'a Archetype, schema: &Schema, f: FieldRef) -> Result<&'a [T]> {
    schema.check_element::<T>(f)?;
    let c = missing_table(arch, schema, f)?;
    match &arch.columns[c] {
        crate::archetype::Column::Fixed(col) => {
            bytemuck::try_cast_slice(col.bytes()).map_err(|e| cast_err(schema, f, e))
        }
        crate::archetype::Column::Var(_) => Err(cast_err(schema, f, bytemuck::PodCastError::SizeMismatch)),
    }
}

pub(crate) fn missing_table(arch: &Archetype, schema: &Schema, f: FieldRef) -> Result<usize> {
    arch.column_index(f.table, f.slot).ok_or_else(|| Error::TypeMismatch {
        table: schema.table(f.table).name.clone(),
        field: schema.table(f.table).stored_field(f.slot).name.clone(),
        reason: "this archetype does not hold the table; include it in the query's tables".into(),
    })
}

pub(crate) fn cast_err(schema: &Schema, f: FieldRef, e: bytemuck::PodCastError) -> Error {
    Error::TypeMismatch {
        table: schema.table(f.table).name.clone(),
        field: schema.table(f.table).stored_field(f.slot).name.clone(),
        reason: format!("column cannot be viewed: {e:?}"),
    }
}

impl crate::world::World {
    /// Read-only chunks of every archetype holding all of `tables`.
    pub fn chunks<'a>(&'a self, tables: &'a [TableId]) -> impl Iterator<Item = Chunk<'a>> + 'a {
        self.archetypes
            .iter()
            .filter(move |a| !a.is_empty() && a.has_all(tables))
            .map(move |arch| Chunk { arch, schema: &self.schema })
    }
}
