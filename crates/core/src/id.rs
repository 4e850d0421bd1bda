//! Entity ids: 64 bits, `generation << 32 | index`.
//!
//! Why generational: a slot index is reused after its entity is deleted, but
//! with a higher generation, so a stale id never silently names a new entity.
//! Generations start at 1, so the id `0` is never a live entity and serves as
//! "no reference" in foreign-key fields. A slot whose generation would wrap is
//! retired for good.

use std::fmt;

/// A 64-bit generational entity id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct EntityId(pub u64);

impl EntityId {
    /// The null id, never a live entity.
    pub const NULL: EntityId = EntityId(0);

    pub fn new(index: u32, generation: u32) -> EntityId {
        EntityId((u64::from(generation) << 32) | u64::from(index))
    }
    pub fn index(self) -> u32 {
        self.0 as u32
    }
    pub fn generation(self) -> u32 {
        (self.0 >> 32) as u32
    }
    pub fn is_null(self) -> bool {
        self.0 == 0
    }
}

/// One id format everywhere: `Debug`, `Display` and JSON all show the
/// 64-bit number (`index()` and `generation()` take it apart).
impl fmt::Debug for EntityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for EntityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// JSON (and every serde format) shows the same 64-bit number.
impl serde::Serialize for EntityId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_index_and_generation() {
        let id = EntityId::new(7, 3);
        assert_eq!(id.index(), 7);
        assert_eq!(id.generation(), 3);
        assert_eq!(id.0, (3 << 32) | 7);
        assert!(!id.is_null());
        assert!(EntityId::NULL.is_null());
    }
}
