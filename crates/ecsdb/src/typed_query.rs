//! The typed query as the database API hands it out: the engine's
//! [`ecsdb_core::TypedQuery`] with this crate's error type, so systems
//! compose with [`crate::Database::write`] and `?`.

use ecsdb_core::component::Component;
use ecsdb_core::{EntityId, QueryData};

use crate::error::Result;

/// A typed query over a transaction or a read view; see
/// [`crate::Transaction::query`].
#[derive(Debug)]
pub struct TypedQuery<'w, Q: QueryData>(pub(crate) ecsdb_core::TypedQuery<'w, Q>);

impl<'w, Q: QueryData> TypedQuery<'w, Q> {
    /// Only entities that also have component `T`.
    #[must_use]
    pub fn with<T: Component>(self) -> Self {
        TypedQuery(self.0.with::<T>())
    }

    /// Only entities without component `T`.
    #[must_use]
    pub fn without<T: Component>(self) -> Self {
        TypedQuery(self.0.without::<T>())
    }

    /// Only entities changed by a commit after sequence `seq` (per entity;
    /// see [`ecsdb_core::TypedQuery::changed_since`]).
    #[must_use]
    pub fn changed_since(self, seq: u64) -> Self {
        TypedQuery(self.0.changed_since(seq))
    }

    /// Only entities whose position `field` (`"table.field"`) is within
    /// `radius` of `point` (through its spatial index when it has one).
    #[must_use]
    pub fn near(self, field: &str, point: &[f64], radius: f64) -> Self {
        TypedQuery(self.0.near(field, point, radius))
    }

    /// Only the `k` entities whose position `field` is nearest `point`.
    #[must_use]
    pub fn nearest(self, field: &str, point: &[f64], k: usize) -> Self {
        TypedQuery(self.0.nearest(field, point, k))
    }

    /// Run `f` on every matching entity; `&mut` elements are written back.
    pub fn for_each(self, f: impl FnMut(EntityId, Q::Items<'_>)) -> Result<()> {
        Ok(self.0.for_each(f)?)
    }

    /// Matching entities and copies of their components, as an iterator
    /// (read views; in a transaction use [`TypedQuery::for_each`]).
    // Fallible: binding the components to the schema can fail.
    #[allow(clippy::iter_not_returning_iterator)]
    pub fn iter(self) -> Result<ecsdb_core::system::QueryIter<'w, Q>> {
        Ok(self.0.iter()?)
    }

    /// Number of matching entities.
    pub fn count(self) -> Result<usize> {
        Ok(self.0.count()?)
    }

    /// Matching entities with copies of their components.
    pub fn collect(self) -> Result<Vec<(EntityId, Q::Values)>>
    where
        Q::Values: Clone,
    {
        Ok(self.0.collect()?)
    }
}
