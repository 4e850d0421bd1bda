//! Typed components: a Rust struct as a row of a schema table.
//!
//! `#[derive(Component)]` (crate `ecsdb-derive`, re-exported by `ecsdb`)
//! describes a struct — its table and, per field, a name and a Rust type
//! that knows which schema types it fits ([`FieldValue`]). [`Binding`]
//! checks the description against a schema once, reporting every mismatch,
//! and maps struct fields to the table's stored fields; the typed reads and
//! writes on [`World`] go through it.

use crate::archetype::Column;
use crate::error::{Error, Result};
use crate::id::EntityId;
use crate::schema::{FieldType, Scalar, Schema, TableId};
use crate::typed::Element;
use crate::typed::FieldRef;
use crate::value::Value;
use crate::world::World;

/// One struct field, as the derive describes it.
#[derive(Debug, Clone, Copy)]
pub struct FieldDecl {
    pub name: &'static str,
    /// The Rust type as written (for messages).
    pub rust_type: &'static str,
    /// Whether a schema field type can hold this Rust type.
    pub fits: fn(&FieldType) -> bool,
    /// For Rust enums: their variant names, which must be the schema
    /// enum's, in order.
    pub variants: Option<&'static [&'static str]>,
}

/// A Rust struct stored as a row of one table.
///
/// The derive also generates column access for typed queries: `Cols` /
/// `ColsMut` hold one typed view per struct field (its column in one
/// archetype), from which rows are read and written back without going
/// through [`Value`]s.
pub trait Component: Sized + 'static {
    /// The table's name in the schema.
    const TABLE: &'static str;
    /// Read views of the struct's columns, in field order.
    type Cols<'a>;
    /// Write views of the struct's columns, in field order.
    type ColsMut<'a>;
    /// The struct's fields, in declaration order.
    fn fields() -> Vec<FieldDecl>;
    /// Field values, in declaration order.
    fn to_values(&self) -> Vec<Value>;
    /// The struct from field values in declaration order (`None` when a
    /// value does not fit its field's Rust type).
    fn from_values(values: &[Value]) -> Option<Self>;
    /// Field `i`'s stored bytes written into `out` (its fixed size) when the
    /// field type can do so directly; `false` leaves it to the generic path.
    fn write_field(&self, i: usize, out: &mut [u8]) -> bool;
    /// Read views of `cols` (the struct's columns in field order).
    fn cols<'a>(cols: &[&'a Column], types: &[&'a FieldType], schema: &'a Schema) -> Option<Self::Cols<'a>>;
    /// Write views; `None` when a field cannot be written in place.
    fn cols_mut<'a>(cols: Vec<&'a mut Column>, types: &[&'a FieldType]) -> Option<Self::ColsMut<'a>>;
    /// Row `row` from read views.
    fn read(cols: &Self::Cols<'_>, row: usize) -> Self;
    /// Row `row` from write views.
    fn read_mut(cols: &Self::ColsMut<'_>, row: usize) -> Self;
    /// Write `self` back as row `row`.
    fn write(&self, cols: &mut Self::ColsMut<'_>, row: usize);
}

/// A Rust type a field can hold, and how it reads and writes a column.
pub trait FieldValue: Sized {
    /// A column viewed for reading.
    type Col<'a>;
    /// A column viewed for writing in place.
    type ColMut<'a>;
    /// Whether a schema field of type `ty` can hold it.
    fn fits(ty: &FieldType) -> bool;
    /// A Rust enum's variant names (`#[derive(Enum)]`), checked against the
    /// schema enum's at registration.
    fn variants() -> Option<&'static [&'static str]> {
        None
    }
    fn to_value(&self) -> Value;
    fn from_value(v: &Value) -> Option<Self>;
    /// Write the stored bytes into `out` when this type can do so directly.
    fn write_bytes(&self, out: &mut [u8]) -> bool {
        let _ = out;
        false
    }
    fn col<'a>(c: &'a Column, ty: &'a FieldType, schema: &'a Schema) -> Option<Self::Col<'a>>;
    /// `None` when the type cannot be written in place.
    fn col_mut<'a>(c: &'a mut Column, ty: &'a FieldType) -> Option<Self::ColMut<'a>>;
    fn get(col: &Self::Col<'_>, row: usize) -> Self;
    fn get_mut(col: &Self::ColMut<'_>, row: usize) -> Self;
    fn set(&self, col: &mut Self::ColMut<'_>, row: usize);
}

/// Plain numbers and arrays of them: columns are viewed as `&[T]`.
macro_rules! pod_access {
    () => {
        type Col<'a> = &'a [Self];
        type ColMut<'a> = &'a mut [Self];
        fn write_bytes(&self, out: &mut [u8]) -> bool {
            out.copy_from_slice(bytemuck::bytes_of(self));
            true
        }
        fn col<'a>(c: &'a Column, _ty: &'a FieldType, _schema: &'a Schema) -> Option<Self::Col<'a>> {
            match c {
                Column::Fixed(f) => bytemuck::try_cast_slice(f.bytes()).ok(),
                Column::Var(_) => None,
            }
        }
        fn col_mut<'a>(c: &'a mut Column, _ty: &'a FieldType) -> Option<Self::ColMut<'a>> {
            match c {
                Column::Fixed(f) => bytemuck::try_cast_slice_mut(f.bytes_mut()).ok(),
                Column::Var(_) => None,
            }
        }
        #[inline]
        fn get(col: &Self::Col<'_>, row: usize) -> Self {
            col[row]
        }
        #[inline]
        fn get_mut(col: &Self::ColMut<'_>, row: usize) -> Self {
            col[row]
        }
        #[inline]
        fn set(&self, col: &mut Self::ColMut<'_>, row: usize) {
            col[row] = *self;
        }
    };
}

macro_rules! unsigned {
    ($($t:ty => $s:ident),*) => {$(
        impl FieldValue for $t {
            pod_access!();
            fn fits(ty: &FieldType) -> bool {
                *ty == FieldType::Scalar(Scalar::$s)
            }
            fn to_value(&self) -> Value {
                Value::U64(u64::from(*self))
            }
            fn from_value(v: &Value) -> Option<Self> {
                match v {
                    Value::U64(x) => <$t>::try_from(*x).ok(),
                    _ => None,
                }
            }
        }
    )*};
}
unsigned!(u8 => U8, u16 => U16, u32 => U32, u64 => U64);

macro_rules! signed {
    ($($t:ty => $s:ident),*) => {$(
        impl FieldValue for $t {
            pod_access!();
            fn fits(ty: &FieldType) -> bool {
                *ty == FieldType::Scalar(Scalar::$s)
            }
            fn to_value(&self) -> Value {
                Value::I64(i64::from(*self))
            }
            fn from_value(v: &Value) -> Option<Self> {
                match v {
                    Value::I64(x) => <$t>::try_from(*x).ok(),
                    _ => None,
                }
            }
        }
    )*};
}
signed!(i8 => I8, i16 => I16, i32 => I32, i64 => I64);

impl FieldValue for f32 {
    pod_access!();
    fn fits(ty: &FieldType) -> bool {
        *ty == FieldType::Scalar(Scalar::F32)
    }
    fn to_value(&self) -> Value {
        Value::F32(*self)
    }
    fn from_value(v: &Value) -> Option<Self> {
        if let Value::F32(x) = v { Some(*x) } else { None }
    }
}

impl FieldValue for f64 {
    pod_access!();
    fn fits(ty: &FieldType) -> bool {
        *ty == FieldType::Scalar(Scalar::F64)
    }
    fn to_value(&self) -> Value {
        Value::F64(*self)
    }
    fn from_value(v: &Value) -> Option<Self> {
        if let Value::F64(x) = v { Some(*x) } else { None }
    }
}

/// Stored as one byte, 0 or 1.
impl FieldValue for bool {
    type Col<'a> = &'a [u8];
    type ColMut<'a> = &'a mut [u8];
    fn fits(ty: &FieldType) -> bool {
        *ty == FieldType::Scalar(Scalar::Bool)
    }
    fn to_value(&self) -> Value {
        Value::Bool(*self)
    }
    fn from_value(v: &Value) -> Option<Self> {
        if let Value::Bool(x) = v { Some(*x) } else { None }
    }
    fn write_bytes(&self, out: &mut [u8]) -> bool {
        out[0] = u8::from(*self);
        true
    }
    fn col<'a>(c: &'a Column, _ty: &'a FieldType, _schema: &'a Schema) -> Option<Self::Col<'a>> {
        if let Column::Fixed(f) = c { Some(f.bytes()) } else { None }
    }
    fn col_mut<'a>(c: &'a mut Column, _ty: &'a FieldType) -> Option<Self::ColMut<'a>> {
        if let Column::Fixed(f) = c { Some(f.bytes_mut()) } else { None }
    }
    fn get(col: &Self::Col<'_>, row: usize) -> Self {
        col[row] != 0
    }
    fn get_mut(col: &Self::ColMut<'_>, row: usize) -> Self {
        col[row] != 0
    }
    fn set(&self, col: &mut Self::ColMut<'_>, row: usize) {
        col[row] = u8::from(*self);
    }
}

/// A stored entity reference (`u64` with `foreign_key`).
impl FieldValue for EntityId {
    type Col<'a> = &'a [u64];
    type ColMut<'a> = &'a mut [u64];
    fn fits(ty: &FieldType) -> bool {
        *ty == FieldType::Scalar(Scalar::U64)
    }
    fn to_value(&self) -> Value {
        Value::U64(self.0)
    }
    fn from_value(v: &Value) -> Option<Self> {
        if let Value::U64(x) = v { Some(EntityId(*x)) } else { None }
    }
    fn write_bytes(&self, out: &mut [u8]) -> bool {
        out.copy_from_slice(&self.0.to_le_bytes());
        true
    }
    fn col<'a>(c: &'a Column, _ty: &'a FieldType, _schema: &'a Schema) -> Option<Self::Col<'a>> {
        if let Column::Fixed(f) = c { bytemuck::try_cast_slice(f.bytes()).ok() } else { None }
    }
    fn col_mut<'a>(c: &'a mut Column, _ty: &'a FieldType) -> Option<Self::ColMut<'a>> {
        if let Column::Fixed(f) = c { bytemuck::try_cast_slice_mut(f.bytes_mut()).ok() } else { None }
    }
    fn get(col: &Self::Col<'_>, row: usize) -> Self {
        EntityId(col[row])
    }
    fn get_mut(col: &Self::ColMut<'_>, row: usize) -> Self {
        EntityId(col[row])
    }
    fn set(&self, col: &mut Self::ColMut<'_>, row: usize) {
        col[row] = self.0;
    }
}

/// A column read through the generic decoder (strings, bytes): correct for
/// every type, one allocation per value. Such fields are not written in place.
#[derive(Debug, Clone, Copy)]
pub struct DecodedCol<'a> {
    column: &'a Column,
    ty: &'a FieldType,
    schema: &'a Schema,
}

impl DecodedCol<'_> {
    /// Row `row`'s value (`None` only for bytes no write could have stored).
    fn value(&self, row: usize) -> Option<Value> {
        let b = self.column.get(row);
        match crate::value::size_in(self.schema, self.ty) {
            Some(_) => crate::value::decode_fixed(self.ty, b, self.schema).ok(),
            None => crate::value::decode_var(self.ty, b).ok(),
        }
    }
}

macro_rules! decoded_access {
    ($default:expr) => {
        type Col<'a> = DecodedCol<'a>;
        type ColMut<'a> = ();
        fn col<'a>(c: &'a Column, ty: &'a FieldType, schema: &'a Schema) -> Option<Self::Col<'a>> {
            Some(DecodedCol { column: c, ty, schema })
        }
        fn col_mut<'a>(_c: &'a mut Column, _ty: &'a FieldType) -> Option<Self::ColMut<'a>> {
            None
        }
        fn get(col: &Self::Col<'_>, row: usize) -> Self {
            col.value(row).and_then(|v| Self::from_value(&v)).unwrap_or_else(|| $default)
        }
        fn get_mut(_col: &Self::ColMut<'_>, _row: usize) -> Self {
            $default
        }
        fn set(&self, _col: &mut Self::ColMut<'_>, _row: usize) {}
    };
}

/// `[u8; N]` fixed strings and `string`.
impl FieldValue for String {
    decoded_access!(String::new());
    fn fits(ty: &FieldType) -> bool {
        matches!(ty, FieldType::FixedString(_) | FieldType::String)
    }
    fn to_value(&self) -> Value {
        Value::Str(self.clone())
    }
    fn from_value(v: &Value) -> Option<Self> {
        if let Value::Str(s) = v { Some(s.clone()) } else { None }
    }
}

/// `bytes`.
impl FieldValue for Vec<u8> {
    decoded_access!(Vec::new());
    fn fits(ty: &FieldType) -> bool {
        *ty == FieldType::Bytes
    }
    fn to_value(&self) -> Value {
        Value::Bytes(self.clone())
    }
    fn from_value(v: &Value) -> Option<Self> {
        if let Value::Bytes(b) = v { Some(b.clone()) } else { None }
    }
}

/// `[T; N]` arrays of numbers.
impl<T: FieldValue + Element, const N: usize> FieldValue for [T; N] {
    pod_access!();
    fn fits(ty: &FieldType) -> bool {
        matches!(ty, FieldType::Array(t, n) if *n == N && T::fits(t))
    }
    fn to_value(&self) -> Value {
        Value::Array(self.iter().map(FieldValue::to_value).collect())
    }
    fn from_value(v: &Value) -> Option<Self> {
        let Value::Array(items) = v else { return None };
        let items: Vec<T> = items.iter().map(T::from_value).collect::<Option<_>>()?;
        <[T; N]>::try_from(items).ok()
    }
}

/// A schema enum's column (1 or 2 bytes per value), for `#[derive(Enum)]`.
#[derive(Debug)]
pub struct EnumCol<B> {
    bytes: B,
    width: usize,
}

impl<B: AsRef<[u8]>> EnumCol<B> {
    /// The variant index stored in row `row`.
    pub fn index(&self, row: usize) -> u16 {
        let b = self.bytes.as_ref();
        if self.width == 1 { u16::from(b[row]) } else { u16::from_le_bytes([b[row * 2], b[row * 2 + 1]]) }
    }
}

impl EnumCol<&mut [u8]> {
    /// Store variant index `i` in row `row`.
    pub fn set_index(&mut self, row: usize, i: u16) {
        if self.width == 1 {
            self.bytes[row] = i as u8;
        } else {
            self.bytes[row * 2..row * 2 + 2].copy_from_slice(&i.to_le_bytes());
        }
    }
}

/// Column views for enum fields (used by `#[derive(Enum)]`).
pub fn enum_col<'a>(c: &'a Column, ty: &FieldType) -> Option<EnumCol<&'a [u8]>> {
    match (c, ty) {
        (Column::Fixed(f), FieldType::Enum { width, .. }) => Some(EnumCol { bytes: f.bytes(), width: *width }),
        _ => None,
    }
}

/// Writable column views for enum fields (used by `#[derive(Enum)]`).
pub fn enum_col_mut<'a>(c: &'a mut Column, ty: &FieldType) -> Option<EnumCol<&'a mut [u8]>> {
    match (c, ty) {
        (Column::Fixed(f), FieldType::Enum { width, .. }) => Some(EnumCol { bytes: f.bytes_mut(), width: *width }),
        _ => None,
    }
}

/// Write a variant index as an enum field's stored bytes.
pub fn enum_write_bytes(i: u16, out: &mut [u8]) -> bool {
    match out.len() {
        1 => out[0] = i as u8,
        2 => out.copy_from_slice(&i.to_le_bytes()),
        _ => return false,
    }
    true
}

/// How a component type maps onto its table in one schema.
#[derive(Debug, Clone)]
pub struct Binding {
    pub table: TableId,
    /// Per struct field, its stored slot.
    pub slots: Vec<usize>,
    /// Per stored slot, the struct field holding it.
    pub field_of_slot: Vec<usize>,
}

impl Binding {
    /// Check `T` against `schema`; every mismatch is reported at once.
    pub fn of<T: Component>(schema: &Schema) -> std::result::Result<Binding, Vec<String>> {
        let type_name = std::any::type_name::<T>().rsplit("::").next().unwrap_or("component");
        let Some(t) = schema.table_id(T::TABLE) else {
            return Err(vec![format!("{type_name}: the schema has no table `{}`", T::TABLE)]);
        };
        let table = schema.table(t);
        let mut problems = Vec::new();
        let mut slots = Vec::new();
        for f in T::fields() {
            match table.field(f.name) {
                None => problems.push(format!("{type_name}.{}: table `{}` has no field `{}`", f.name, table.name, f.name)),
                Some(sf) => match sf.slot() {
                    None => problems.push(format!(
                        "{type_name}.{}: `{}.{}` is the entity id itself, not a stored value; leave it out of the struct",
                        f.name, table.name, f.name
                    )),
                    Some(_) if !(f.fits)(&sf.ty) => problems.push(format!(
                        "{type_name}.{}: the Rust type {} cannot hold `{}.{}` of type {}",
                        f.name, f.rust_type, table.name, f.name, sf.type_text
                    )),
                    Some(_)
                        if f.variants.is_some_and(|vs| match &sf.ty {
                            FieldType::Enum { id, .. } => {
                                !schema.enums[*id].variants.iter().map(String::as_str).eq(vs.iter().copied())
                            }
                            _ => false,
                        }) =>
                    {
                        let schema_variants = match &sf.ty {
                            FieldType::Enum { id, .. } => schema.enums[*id].variants.join(", "),
                            _ => String::new(),
                        };
                        problems.push(format!(
                            "{type_name}.{}: the variants of {} ({}) are not those of `{}` ({schema_variants}), in order",
                            f.name,
                            f.rust_type,
                            f.variants.unwrap_or_default().join(", "),
                            sf.type_text
                        ));
                    }
                    Some(slot) => slots.push(slot),
                },
            }
        }
        let mut field_of_slot = vec![usize::MAX; table.stored_len()];
        for (i, &s) in slots.iter().enumerate() {
            field_of_slot[s] = i;
        }
        for (s, &i) in field_of_slot.iter().enumerate() {
            if i == usize::MAX {
                let f = table.stored_field(s);
                problems.push(format!(
                    "{type_name}: field `{}` of table `{}` ({}) has no struct field",
                    f.name, table.name, f.type_text
                ));
            }
        }
        if problems.is_empty() { Ok(Binding { table: t, slots, field_of_slot }) } else { Err(problems) }
    }
}

/// The binding of `T` in this world, checked once and then kept: a world's
/// schema never changes, and typed reads and writes run on hot paths.
pub(crate) fn bind<T: Component>(w: &World) -> Result<std::sync::Arc<Binding>> {
    let key = std::any::TypeId::of::<T>();
    if let Some(b) = w.bindings.lock().ok().and_then(|m| m.get(&key).cloned()) {
        return Ok(b);
    }
    let b = std::sync::Arc::new(Binding::of::<T>(w.schema()).map_err(|p| Error::TypeMismatch {
        table: T::TABLE.to_string(),
        field: "*".into(),
        reason: p.join("; "),
    })?);
    if let Ok(mut m) = w.bindings.lock() {
        m.insert(key, b.clone());
    }
    Ok(b)
}

impl World {
    /// Component `T` of `id`, typed.
    pub fn get_component<T: Component>(&self, id: EntityId) -> Result<T> {
        let b = bind::<T>(self)?;
        let table = self.schema().table(b.table);
        let values =
            b.slots.iter().map(|&s| self.field_value(id, b.table, table.stored[s])).collect::<Result<Vec<_>>>()?;
        T::from_values(&values).ok_or_else(|| Error::TypeMismatch {
            table: T::TABLE.into(),
            field: "*".into(),
            reason: "a stored value does not fit its Rust type".into(),
        })
    }

    /// The binding of `T` to this world's schema (checked once, then kept).
    pub fn binding<T: Component>(&self) -> Result<std::sync::Arc<Binding>> {
        bind::<T>(self)
    }

    /// Add component `T` to `id` (in a transaction).
    pub fn insert_component<T: Component>(&mut self, id: EntityId, c: &T) -> Result<()> {
        let b = bind::<T>(self)?;
        self.insert_component_bound(id, c, &b)
    }

    /// [`World::insert_component`] with its binding already at hand.
    pub fn insert_component_bound<T: Component>(&mut self, id: EntityId, c: &T, b: &Binding) -> Result<()> {
        // All-fixed rows whose fields write their own bytes skip `Value`s
        // (the row is still checked like any encoded row).
        let layout = &self.layouts[b.table as usize];
        if layout.var_count == 0 {
            let mut row = vec![0u8; layout.fixed_size];
            let direct = b.slots.iter().enumerate().all(|(i, &slot)| match layout.slots[slot].fixed {
                Some((off, size)) => c.write_field(i, &mut row[off..off + size]),
                None => false,
            });
            if direct {
                return self.insert_row(id, b.table, &row);
            }
        }
        let values = c.to_values();
        let ordered: Vec<Value> = b.field_of_slot.iter().map(|&i| values[i].clone()).collect();
        self.insert_values(id, b.table, &ordered)
    }

    /// Remove component `T` from `id` (in a transaction).
    pub fn remove_component_typed<T: Component>(&mut self, id: EntityId) -> Result<()> {
        let b = bind::<T>(self)?;
        self.remove(id, b.table)
    }

    /// Overwrite component `T` of `id` field by field (in a transaction).
    pub fn set_component<T: Component>(&mut self, id: EntityId, c: &T) -> Result<()> {
        let b = bind::<T>(self)?;
        for (v, &slot) in c.to_values().iter().zip(&b.slots) {
            self.set_value(id, FieldRef { table: b.table, slot }, v)?;
        }
        Ok(())
    }
}
