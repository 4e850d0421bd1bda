//! Typed queries for systems: `(&mut Transform, &Velocity)` over every
//! archetype holding those components.
//!
//! Why this shape: components are stored column-wise, one column per field,
//! so a Rust struct is not contiguous in memory and a `&mut Transform` cannot
//! point into storage. Each row is therefore gathered from typed column views
//! (`&[f32; 3]` slices, checked once per archetype) into a struct on the
//! stack, handed to the system, and — for `&mut` — scattered back. For plain
//! fields this is a few loads and stores per row, the same work an ECS does;
//! strings go through the generic decoder and are read-only.
//!
//! Writes go through the transaction's column images like
//! [`crate::ChunkMut::write`], so they are logged (`SetRun`), validated and
//! rolled back exactly as untyped writes are. Components with a foreign key
//! or a variable-length field cannot be written in place (use
//! [`World::set_component`]); asking for `&mut` on one is an error before
//! anything runs.

use std::marker::PhantomData;
use std::sync::Arc;

use crate::archetype::{Archetype, Column};
use crate::component::{Binding, Component, bind};
use crate::error::{Error, Result};
use crate::id::EntityId;
use crate::schema::{FieldType, Schema, TableId};
use crate::world::World;

/// Where one query element's columns are in one archetype.
#[derive(Debug, Clone)]
pub struct ElemPlan {
    binding: Arc<Binding>,
    /// Archetype column of each struct field.
    columns: Vec<usize>,
}

/// One element of a typed query: `&T` (read) or `&mut T` (read and write).
pub trait Fetch {
    type Comp: Component;
    /// Whether the element writes.
    const WRITE: bool;
    /// The element's column views in one archetype.
    type View<'a>;
    /// What the system receives for a row.
    type Item<'r>;
    fn view<'a>(
        slots: &mut [Option<&'a mut Column>],
        plan: &ElemPlan,
        types: &[&'a FieldType],
        schema: &'a Schema,
    ) -> Option<Self::View<'a>>;
    /// Views from shared columns (`None` for writing elements).
    fn view_shared<'a>(
        cols: &'a [Column],
        plan: &ElemPlan,
        types: &[&'a FieldType],
        schema: &'a Schema,
    ) -> Option<Self::View<'a>>;
    fn read(view: &Self::View<'_>, row: usize) -> Self::Comp;
    fn item(value: &mut Self::Comp) -> Self::Item<'_>;
    fn write_back(value: &Self::Comp, view: &mut Self::View<'_>, row: usize);
}

fn take_cols<'a>(slots: &mut [Option<&'a mut Column>], plan: &ElemPlan) -> Option<Vec<&'a mut Column>> {
    plan.columns.iter().map(|&c| slots.get_mut(c)?.take()).collect()
}

impl<T: Component> Fetch for &T {
    type Comp = T;
    const WRITE: bool = false;
    type View<'a> = T::Cols<'a>;
    type Item<'r> = &'r T;
    fn view<'a>(
        slots: &mut [Option<&'a mut Column>],
        plan: &ElemPlan,
        types: &[&'a FieldType],
        schema: &'a Schema,
    ) -> Option<Self::View<'a>> {
        let cols: Vec<&'a Column> = take_cols(slots, plan)?.into_iter().map(|c| &*c).collect();
        T::cols(&cols, types, schema)
    }
    fn view_shared<'a>(
        cols: &'a [Column],
        plan: &ElemPlan,
        types: &[&'a FieldType],
        schema: &'a Schema,
    ) -> Option<Self::View<'a>> {
        let cols: Vec<&'a Column> = plan.columns.iter().map(|&c| cols.get(c)).collect::<Option<_>>()?;
        T::cols(&cols, types, schema)
    }
    #[inline]
    fn read(view: &Self::View<'_>, row: usize) -> T {
        T::read(view, row)
    }
    #[inline]
    fn item(value: &mut T) -> &T {
        value
    }
    #[inline]
    fn write_back(_value: &T, _view: &mut Self::View<'_>, _row: usize) {}
}

impl<T: Component> Fetch for &mut T {
    type Comp = T;
    const WRITE: bool = true;
    type View<'a> = T::ColsMut<'a>;
    type Item<'r> = &'r mut T;
    fn view<'a>(
        slots: &mut [Option<&'a mut Column>],
        plan: &ElemPlan,
        types: &[&'a FieldType],
        _schema: &'a Schema,
    ) -> Option<Self::View<'a>> {
        T::cols_mut(take_cols(slots, plan)?, types)
    }
    fn view_shared<'a>(
        _cols: &'a [Column],
        _plan: &ElemPlan,
        _types: &[&'a FieldType],
        _schema: &'a Schema,
    ) -> Option<Self::View<'a>> {
        None
    }
    #[inline]
    fn read(view: &Self::View<'_>, row: usize) -> T {
        T::read_mut(view, row)
    }
    #[inline]
    fn item(value: &mut T) -> &mut T {
        value
    }
    #[inline]
    fn write_back(value: &T, view: &mut Self::View<'_>, row: usize) {
        value.write(view, row);
    }
}

/// A set of query elements: one `Fetch` or a tuple of them.
pub trait QueryData {
    type Views<'a>;
    type Values;
    type Items<'r>;
    /// Each element's component binding and whether it writes.
    fn elements(world: &World) -> Result<Vec<(Arc<Binding>, bool)>>;
    fn views<'a>(
        slots: &mut [Option<&'a mut Column>],
        plans: &[ElemPlan],
        types: &[Vec<&'a FieldType>],
        schema: &'a Schema,
    ) -> Option<Self::Views<'a>>;
    fn views_shared<'a>(
        cols: &'a [Column],
        plans: &[ElemPlan],
        types: &[Vec<&'a FieldType>],
        schema: &'a Schema,
    ) -> Option<Self::Views<'a>>;
    fn read(views: &Self::Views<'_>, row: usize) -> Self::Values;
    fn items(values: &mut Self::Values) -> Self::Items<'_>;
    fn write_back(values: &Self::Values, views: &mut Self::Views<'_>, row: usize);
}

macro_rules! tuple_query {
    ($($f:ident $i:tt),+) => {
        impl<$($f: Fetch),+> QueryData for ($($f,)+) {
            type Views<'a> = ($($f::View<'a>,)+);
            type Values = ($($f::Comp,)+);
            type Items<'r> = ($($f::Item<'r>,)+);
            fn elements(world: &World) -> Result<Vec<(Arc<Binding>, bool)>> {
                Ok(vec![$((bind::<$f::Comp>(world)?, $f::WRITE)),+])
            }
            fn views<'a>(
                slots: &mut [Option<&'a mut Column>],
                plans: &[ElemPlan],
                types: &[Vec<&'a FieldType>],
                schema: &'a Schema,
            ) -> Option<Self::Views<'a>> {
                Some(($($f::view(slots, plans.get($i)?, types.get($i)?, schema)?,)+))
            }
            fn views_shared<'a>(
                cols: &'a [Column],
                plans: &[ElemPlan],
                types: &[Vec<&'a FieldType>],
                schema: &'a Schema,
            ) -> Option<Self::Views<'a>> {
                Some(($($f::view_shared(cols, plans.get($i)?, types.get($i)?, schema)?,)+))
            }
            #[inline]
            fn read(views: &Self::Views<'_>, row: usize) -> Self::Values {
                ($($f::read(&views.$i, row),)+)
            }
            #[inline]
            fn items(values: &mut Self::Values) -> Self::Items<'_> {
                ($($f::item(&mut values.$i),)+)
            }
            #[inline]
            fn write_back(values: &Self::Values, views: &mut Self::Views<'_>, row: usize) {
                $($f::write_back(&values.$i, &mut views.$i, row);)+
            }
        }
    };
}
tuple_query!(A 0);
tuple_query!(A 0, B 1);
tuple_query!(A 0, B 1, C 2);
tuple_query!(A 0, B 1, C 2, D 3);
tuple_query!(A 0, B 1, C 2, D 3, E 4);
tuple_query!(A 0, B 1, C 2, D 3, E 4, F 5);
tuple_query!(A 0, B 1, C 2, D 3, E 4, F 5, G 6);
tuple_query!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7);

/// Filters of a typed query.
#[derive(Debug, Clone, Default)]
pub struct QueryFilter {
    pub with: Vec<TableId>,
    pub without: Vec<TableId>,
    /// Only entities changed by a commit after this sequence number.
    pub changed_since: Option<u64>,
    /// Only these entities (a spatial clause picked them).
    pub only: Option<rustc_hash::FxHashSet<EntityId>>,
}

/// A typed query over a world: build it with filters, run it with
/// [`TypedQuery::for_each`]. Created by [`World::query_typed`] (read-only
/// elements) or [`World::query_typed_mut`] (in a transaction, `&mut` allowed).
pub struct TypedQuery<'w, Q: QueryData> {
    world: WorldRef<'w>,
    filter: QueryFilter,
    error: Option<Error>,
    _q: PhantomData<fn() -> Q>,
}

enum WorldRef<'w> {
    Read(&'w World),
    Write(&'w mut World),
}

impl<Q: QueryData> std::fmt::Debug for TypedQuery<'_, Q> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TypedQuery").field("filter", &self.filter).finish_non_exhaustive()
    }
}

impl<'w, Q: QueryData> TypedQuery<'w, Q> {
    fn world(&self) -> &World {
        match &self.world {
            WorldRef::Read(w) => w,
            WorldRef::Write(w) => w,
        }
    }

    fn table_of<T: Component>(&mut self) -> Option<TableId> {
        match bind::<T>(self.world()) {
            Ok(b) => Some(b.table),
            Err(e) => {
                self.error.get_or_insert(e);
                None
            }
        }
    }

    /// Only entities that also have component `T`.
    #[must_use]
    pub fn with<T: Component>(mut self) -> Self {
        if let Some(t) = self.table_of::<T>() {
            self.filter.with.push(t);
        }
        self
    }

    /// Only entities without component `T`.
    #[must_use]
    pub fn without<T: Component>(mut self) -> Self {
        if let Some(t) = self.table_of::<T>() {
            self.filter.without.push(t);
        }
        self
    }

    /// Only entities changed by a commit after sequence `seq` (created,
    /// given or relieved of a component, or any field written). Tracking is
    /// per entity, not per component; entities changed before this process
    /// loaded the data all count as changed when `seq` is older than the
    /// load (see [`World::changes_known_from`]).
    #[must_use]
    pub fn changed_since(mut self, seq: u64) -> Self {
        self.filter.changed_since = Some(seq);
        self
    }

    /// Only entities whose position field `field` (`"table.field"`, a
    /// `[f32|f64; 2|3]`) lies within `radius` of `point` — through the
    /// field's spatial index when it has one (see [`crate::near`]).
    /// Combined with an earlier `near`/`nearest`, both must hold.
    #[must_use]
    pub fn near(self, field: &str, point: &[f64], radius: f64) -> Self {
        let ids = self.world().within(field, point, radius);
        self.restrict(ids)
    }

    /// Only the `k` entities whose position field `field` is nearest
    /// `point` (iteration stays in storage order; use
    /// [`World::nearest`] for the distance order).
    #[must_use]
    pub fn nearest(self, field: &str, point: &[f64], k: usize) -> Self {
        let ids = self.world().nearest(field, point, k).map(|v| v.into_iter().map(|(id, _)| id).collect());
        self.restrict(ids)
    }

    fn restrict(mut self, ids: Result<Vec<EntityId>>) -> Self {
        match ids {
            Ok(ids) => {
                let set: rustc_hash::FxHashSet<EntityId> = ids.into_iter().collect();
                self.filter.only = Some(match self.filter.only.take() {
                    Some(prev) => prev.intersection(&set).copied().collect(),
                    None => set,
                });
            }
            Err(e) => {
                self.error.get_or_insert(e);
            }
        }
        self
    }

    /// Matching entities and copies of their components, as an iterator
    /// (read views only: `&T` elements over a shared world).
    // Fallible: binding the components to the schema can fail.
    #[allow(clippy::iter_not_returning_iterator)]
    pub fn iter(self) -> Result<QueryIter<'w, Q>> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let WorldRef::Read(w) = self.world else {
            return Err(Error::TypeMismatch {
                table: "*".into(),
                field: "*".into(),
                reason: "iter() runs over a read view; in a transaction use for_each".into(),
            });
        };
        let (elements, tables) = read_elements::<Q>(w)?;
        let mut chunks = Vec::new();
        for arch in &w.archetypes {
            if !matches(arch, &tables, &self.filter) {
                continue;
            }
            let plans = plans(arch, &elements);
            let types = field_types(&w.schema, &plans);
            let views =
                Q::views_shared(&arch.columns, &plans, &types, &w.schema).ok_or_else(|| view_error(w, &plans))?;
            chunks.push((views, arch));
        }
        let since = self.filter.changed_since.filter(|&s| s >= w.changes_known_from);
        Ok(QueryIter { chunks: chunks.into_iter(), cur: None, row: 0, len: 0, since, only: self.filter.only })
    }

    /// Number of matching entities.
    pub fn count(self) -> Result<usize> {
        let mut n = 0;
        self.for_each_read(|_, _| n += 1)?;
        Ok(n)
    }

    /// Matching entities with their components, copied out (read-only
    /// elements; `&mut` ones are read like `&`).
    pub fn collect(self) -> Result<Vec<(EntityId, Q::Values)>>
    where
        Q::Values: Clone,
    {
        let mut out = Vec::new();
        self.for_each_read(|id, v| out.push((id, v.clone())))?;
        Ok(out)
    }

    fn for_each_read(self, mut f: impl FnMut(EntityId, &Q::Values)) -> Result<()> {
        let mut g = |id: EntityId, v: &mut Q::Values| f(id, v);
        self.run(false, &mut g)
    }

    /// Run `f` on every matching entity. `&mut` elements are written back
    /// after each call and become part of the transaction.
    pub fn for_each(self, mut f: impl FnMut(EntityId, Q::Items<'_>)) -> Result<()> {
        let mut g = |id: EntityId, v: &mut Q::Values| f(id, Q::items(v));
        self.run(true, &mut g)
    }

    fn run<F: FnMut(EntityId, &mut Q::Values)>(self, write: bool, f: &mut F) -> Result<()> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let filter = self.filter;
        match self.world {
            WorldRef::Read(w) => {
                let (elements, tables) = read_elements::<Q>(w)?;
                for arch in &w.archetypes {
                    if !matches(arch, &tables, &filter) {
                        continue;
                    }
                    run_archetype_read::<Q, F>(w, arch, &elements, &filter, f)?;
                }
                Ok(())
            }
            WorldRef::Write(w) => {
                let elements = Q::elements(w)?;
                let mut tables: Vec<TableId> = elements.iter().map(|(b, _)| b.table).collect();
                check_distinct(w, &mut tables)?;
                let writes = write && elements.iter().any(|(_, m)| *m);
                if writes {
                    check_writable(w, &elements)?;
                }
                let ids: Vec<usize> =
                    (0..w.archetypes.len()).filter(|&a| matches(&w.archetypes[a], &tables, &filter)).collect();
                if writes {
                    for &a in &ids {
                        w.capture_for_query(a, &elements)?;
                    }
                }
                run_archetypes_write::<Q, F>(w, &ids, &elements, &filter, writes, f)
            }
        }
    }
}

/// Iterator of [`TypedQuery::iter`].
pub struct QueryIter<'w, Q: QueryData> {
    chunks: std::vec::IntoIter<(Q::Views<'w>, &'w Archetype)>,
    cur: Option<(Q::Views<'w>, &'w Archetype)>,
    row: usize,
    len: usize,
    since: Option<u64>,
    only: Option<rustc_hash::FxHashSet<EntityId>>,
}

impl<Q: QueryData> std::fmt::Debug for QueryIter<'_, Q> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryIter").field("row", &self.row).field("len", &self.len).finish_non_exhaustive()
    }
}

impl<Q: QueryData> Iterator for QueryIter<'_, Q> {
    type Item = (EntityId, Q::Values);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.row < self.len
                && let Some((views, arch)) = &self.cur
            {
                let row = self.row;
                self.row += 1;
                if let Some(since) = self.since
                    && arch.changed[row] <= since
                {
                    continue;
                }
                if self.only.as_ref().is_some_and(|o| !o.contains(&arch.entities[row])) {
                    continue;
                }
                return Some((arch.entities[row], Q::read(views, row)));
            }
            let next = self.chunks.next()?;
            self.len = next.1.entities.len();
            self.row = 0;
            self.cur = Some(next);
        }
    }
}

/// A query element: its component's binding and whether it writes.
type Element = (Arc<Binding>, bool);

/// The elements of a query run over a read view (all `&T`: a `&mut`
/// element needs a transaction) and their tables, each named once.
fn read_elements<Q: QueryData>(w: &World) -> Result<(Vec<Element>, Vec<TableId>)> {
    let elements = Q::elements(w)?;
    if elements.iter().any(|(_, m)| *m) {
        return Err(Error::TypeMismatch {
            table: "*".into(),
            field: "*".into(),
            reason: "a `&mut` query element needs a transaction (query_typed_mut)".into(),
        });
    }
    let mut tables: Vec<TableId> = elements.iter().map(|(b, _)| b.table).collect();
    check_distinct(w, &mut tables)?;
    Ok((elements, tables))
}

fn check_distinct(w: &World, tables: &mut [TableId]) -> Result<()> {
    let mut sorted = tables.to_vec();
    sorted.sort_unstable();
    for p in sorted.windows(2) {
        if p[0] == p[1] {
            return Err(Error::TypeMismatch {
                table: w.schema.table(p[0]).name.clone(),
                field: "*".into(),
                reason: "a query names each component once".into(),
            });
        }
    }
    Ok(())
}

/// `&mut` elements: every field must be fixed-size, plain and not a foreign key.
fn check_writable(w: &World, elements: &[(Arc<Binding>, bool)]) -> Result<()> {
    for (b, m) in elements {
        if !m {
            continue;
        }
        let table = w.schema.table(b.table);
        for &slot in &b.slots {
            let f = table.stored_field(slot);
            let why = if f.foreign_key.is_some() {
                Some("is a foreign key; set it with set_component so the reference is checked")
            } else if f.size.is_none() || matches!(f.ty, FieldType::FixedString(_)) {
                Some("is a string or bytes, read through the decoder; set it with set_component")
            } else {
                None
            };
            if let Some(why) = why {
                return Err(Error::TypeMismatch {
                    table: table.name.clone(),
                    field: f.name.clone(),
                    reason: format!("cannot be written in place by a query: it {why}"),
                });
            }
        }
    }
    Ok(())
}

fn matches(arch: &Archetype, tables: &[TableId], filter: &QueryFilter) -> bool {
    !arch.is_empty()
        && arch.has_all(tables)
        && arch.has_all(&filter.with)
        && !filter.without.iter().any(|&t| arch.has(t))
}

fn plans(arch: &Archetype, elements: &[(Arc<Binding>, bool)]) -> Vec<ElemPlan> {
    let mut plans: Vec<ElemPlan> =
        elements.iter().map(|(b, _)| ElemPlan { binding: b.clone(), columns: Vec::new() }).collect();
    fill_plans(&mut plans, arch);
    plans
}

/// Point `plans` at `arch`'s columns (reusing their buffers).
fn fill_plans(plans: &mut [ElemPlan], arch: &Archetype) {
    for p in plans {
        let b = &p.binding;
        p.columns.clear();
        p.columns.extend(b.slots.iter().map(|&s| arch.column_index(b.table, s).unwrap_or(usize::MAX)));
    }
}

fn field_types<'a>(schema: &'a Schema, plans: &[ElemPlan]) -> Vec<Vec<&'a FieldType>> {
    plans
        .iter()
        .map(|p| {
            let t = schema.table(p.binding.table);
            p.binding.slots.iter().map(|&s| &t.stored_field(s).ty).collect()
        })
        .collect()
}

fn view_error(w: &World, plans: &[ElemPlan]) -> Error {
    let names: Vec<String> = plans.iter().map(|p| w.schema.table(p.binding.table).name.clone()).collect();
    view_mismatch(&names)
}

fn view_mismatch(names: &[String]) -> Error {
    Error::TypeMismatch {
        table: names.join(", "),
        field: "*".into(),
        reason: "a field's Rust type cannot view its column".into(),
    }
}

fn passes(w: &World, id: EntityId, filter: &QueryFilter) -> bool {
    filter.only.as_ref().is_none_or(|o| o.contains(&id))
        && match filter.changed_since {
            None => true,
            Some(since) => w.changed_after(id, since),
        }
}

fn run_archetype_read<Q: QueryData, F: FnMut(EntityId, &mut Q::Values)>(
    w: &World,
    arch: &Archetype,
    elements: &[(Arc<Binding>, bool)],
    filter: &QueryFilter,
    f: &mut F,
) -> Result<()> {
    let plans = plans(arch, elements);
    let types = field_types(&w.schema, &plans);
    let views = Q::views_shared(&arch.columns, &plans, &types, &w.schema).ok_or_else(|| view_error(w, &plans))?;
    if filter.changed_since.is_none() && filter.only.is_none() {
        for (row, &id) in arch.entities.iter().enumerate() {
            let mut v = Q::read(&views, row);
            f(id, &mut v);
        }
    } else {
        for (row, &id) in arch.entities.iter().enumerate() {
            if passes(w, id, filter) {
                let mut v = Q::read(&views, row);
                f(id, &mut v);
            }
        }
    }
    Ok(())
}

fn run_archetypes_write<Q: QueryData, F: FnMut(EntityId, &mut Q::Values)>(
    w: &mut World,
    ids: &[usize],
    elements: &[(Arc<Binding>, bool)],
    filter: &QueryFilter,
    write_back: bool,
    f: &mut F,
) -> Result<()> {
    let known_from = w.changes_known_from;
    let World { archetypes, schema, .. } = w;
    let mut plans: Vec<ElemPlan> =
        elements.iter().map(|(b, _)| ElemPlan { binding: b.clone(), columns: Vec::new() }).collect();
    let types = field_types(schema, &plans);
    let since = filter.changed_since.filter(|&s| s >= known_from);
    for &a in ids {
        let arch = &mut archetypes[a];
        fill_plans(&mut plans, arch);
        let mut slots: Vec<Option<&mut Column>> = arch.columns.iter_mut().map(Some).collect();
        let Some(mut views) = Q::views(&mut slots, &plans, &types, schema) else {
            let names: Vec<String> = plans.iter().map(|p| schema.table(p.binding.table).name.clone()).collect();
            return Err(view_mismatch(&names));
        };
        for (row, &id) in arch.entities.iter().enumerate() {
            if let Some(since) = since
                && arch.changed[row] <= since
            {
                continue;
            }
            if filter.only.as_ref().is_some_and(|o| !o.contains(&id)) {
                continue;
            }
            let mut v = Q::read(&views, row);
            f(id, &mut v);
            if write_back {
                Q::write_back(&v, &mut views, row);
            }
        }
    }
    Ok(())
}

impl World {
    /// A typed query with read-only elements (`&T`) over the committed or
    /// current state. Running it with a `&mut` element is an error.
    pub fn query_typed<Q: QueryData>(&self) -> TypedQuery<'_, Q> {
        TypedQuery { world: WorldRef::Read(self), filter: QueryFilter::default(), error: None, _q: PhantomData }
    }

    /// A typed query inside the open transaction: `&mut` elements write
    /// back into the transaction.
    pub fn query_typed_mut<Q: QueryData>(&mut self) -> TypedQuery<'_, Q> {
        let error = if self.in_transaction() { None } else { Some(Error::NoTransaction) };
        TypedQuery { world: WorldRef::Write(self), filter: QueryFilter::default(), error, _q: PhantomData }
    }
}
