//! The entity index: which slots are alive, their generations, and where each
//! live entity's row is (archetype, row).

use crate::archetype::ArchetypeId;
use crate::id::EntityId;

#[derive(Debug, Clone, Copy)]
pub(crate) struct Slot {
    pub generation: u32,
    pub alive: bool,
    pub archetype: ArchetypeId,
    pub row: u32,
}

/// Bytes one slot of the entity table takes.
pub const SLOT_BYTES: usize = std::mem::size_of::<Slot>();

/// Generation a slot is retired at: it will never be handed out again.
const RETIRED: u32 = u32::MAX;

/// Allocation and location of entities.
#[derive(Debug, Clone, Default)]
pub struct Entities {
    slots: Vec<Slot>,
    /// Candidate free slot indexes; entries whose slot is alive again (after
    /// an explicit-id insert or a rollback) are skipped lazily on allocation.
    free: Vec<u32>,
    alive: usize,
}

impl Entities {
    pub fn len(&self) -> usize {
        self.alive
    }

    pub fn is_empty(&self) -> bool {
        self.alive == 0
    }

    /// Number of slots ever used (the largest index + 1).
    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    pub(crate) fn slot(&self, id: EntityId) -> Option<&Slot> {
        self.slots.get(id.index() as usize).filter(|s| s.alive && s.generation == id.generation())
    }

    pub(crate) fn slot_mut(&mut self, id: EntityId) -> Option<&mut Slot> {
        self.slots.get_mut(id.index() as usize).filter(|s| s.alive && s.generation == id.generation())
    }

    pub fn contains(&self, id: EntityId) -> bool {
        self.slot(id).is_some()
    }

    /// Allocate a fresh id. Returns `None` when the 32-bit index space is full.
    pub(crate) fn alloc(&mut self) -> Option<EntityId> {
        while let Some(i) = self.free.pop() {
            // Stale entries (a slot revived or taken back by a rollback) are skipped.
            let Some(s) = self.slots.get_mut(i as usize) else { continue };
            if !s.alive && s.generation != RETIRED {
                s.alive = true;
                self.alive += 1;
                return Some(EntityId::new(i, s.generation));
            }
        }
        let i = u32::try_from(self.slots.len()).ok().filter(|&i| i < u32::MAX)?;
        self.slots.push(Slot { generation: 1, alive: true, archetype: 0, row: 0 });
        self.alive += 1;
        Some(EntityId::new(i, 1))
    }

    /// Allocate a specific id (import, replay). Fails if the slot is alive or
    /// the id's generation is older than the slot's (the id was deleted).
    pub(crate) fn alloc_at(&mut self, id: EntityId) -> Result<(), String> {
        if id.generation() == 0 || id.generation() == RETIRED {
            return Err(format!("entity id {id} has an invalid generation"));
        }
        let i = id.index() as usize;
        if i >= u32::MAX as usize {
            return Err(format!("entity id {id} has an invalid index"));
        }
        while self.slots.len() <= i {
            let n = self.slots.len() as u32;
            self.slots.push(Slot { generation: 1, alive: false, archetype: 0, row: 0 });
            if n as usize != i {
                self.free.push(n);
            }
        }
        let s = &mut self.slots[i];
        if id.generation() < s.generation {
            return Err(format!(
                "entity id {id} was deleted before (slot {} is at generation {}); ids are never reused",
                id.index(),
                s.generation
            ));
        }
        if s.alive {
            return Err(format!("entity {id} already exists"));
        }
        s.generation = id.generation();
        s.alive = true;
        self.alive += 1;
        Ok(())
    }

    /// Free a live id: its slot's generation moves on, so the id is dead for good.
    pub(crate) fn free(&mut self, id: EntityId) {
        let i = id.index();
        if let Some(s) = self.slot_mut(id) {
            s.alive = false;
            s.generation = s.generation.saturating_add(1);
            let retired = s.generation == RETIRED;
            self.alive -= 1;
            if !retired {
                self.free.push(i);
            }
        }
    }

    /// Undo an allocation made in a rolled-back transaction: the id was never
    /// committed, so its slot returns to the free list at the same generation.
    pub(crate) fn unalloc(&mut self, id: EntityId) {
        let i = id.index() as usize;
        let fresh = id.generation() == 1 && i + 1 == self.slots.len();
        if let Some(s) = self.slot_mut(id) {
            s.alive = false;
            self.alive -= 1;
            if !fresh {
                self.free.push(id.index());
                return;
            }
        } else {
            return;
        }
        // A slot this transaction added at the end of the table goes away
        // again, with the never-used slots an explicit id skipped over, so
        // a rolled-back transaction leaves the table as it found it.
        self.slots.pop();
        while let Some(last) = self.slots.last()
            && !last.alive
            && last.generation == 1
            && self.free.last().is_some_and(|&f| f as usize + 1 == self.slots.len())
        {
            self.slots.pop();
            self.free.pop();
        }
    }

    /// Undo a `free` made in a rolled-back transaction.
    pub(crate) fn unfree(&mut self, id: EntityId) {
        if let Some(s) = self.slots.get_mut(id.index() as usize) {
            s.alive = true;
            s.generation = id.generation();
            self.alive += 1;
        }
    }

    /// Iterate live ids in index order.
    pub fn iter(&self) -> impl Iterator<Item = EntityId> + '_ {
        self.slots.iter().enumerate().filter(|(_, s)| s.alive).map(|(i, s)| EntityId::new(i as u32, s.generation))
    }

    /// Smallest generation a new entity in slot `index` may take (import and
    /// snapshot restore need it to keep "never reused").
    pub fn slot_generation(&self, index: u32) -> Option<u32> {
        self.slots.get(index as usize).map(|s| s.generation)
    }

    /// Every slot ever used, in index order: (generation, alive).
    pub fn slots(&self) -> impl Iterator<Item = (u32, bool)> + '_ {
        self.slots.iter().map(|s| (s.generation, s.alive))
    }

    /// Restore a dead slot's generation (snapshot load), so ids deleted
    /// before the snapshot stay dead after it.
    pub(crate) fn set_dead_generation(&mut self, index: u32, generation: u32) {
        while self.slots.len() <= index as usize {
            let n = self.slots.len() as u32;
            self.slots.push(Slot { generation: 1, alive: false, archetype: 0, row: 0 });
            self.free.push(n);
        }
        let s = &mut self.slots[index as usize];
        if !s.alive {
            s.generation = s.generation.max(generation);
        }
    }

    /// Accounted bytes: every slot plus room for it in the free list. A
    /// function of the slots alone, so the same state accounts the same
    /// after a restart (the free list's length depends on history).
    pub fn heap_bytes(&self) -> usize {
        self.slots.len() * (std::mem::size_of::<Slot>() + 4)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deleted_ids_are_never_reused() {
        let mut e = Entities::default();
        let a = e.alloc().unwrap();
        e.free(a);
        let b = e.alloc().unwrap();
        assert_eq!(a.index(), b.index());
        assert_ne!(a, b);
        assert!(!e.contains(a));
        assert!(e.contains(b));
        assert!(e.alloc_at(a).unwrap_err().contains("never reused"));
    }

    #[test]
    fn alloc_at_extends_and_skips() {
        let mut e = Entities::default();
        e.alloc_at(EntityId::new(5, 3)).unwrap();
        assert!(e.alloc_at(EntityId::new(5, 3)).unwrap_err().contains("already exists"));
        let ids: Vec<_> = (0..6).map(|_| e.alloc().unwrap()).collect();
        assert!(ids.iter().all(|id| id.index() != 5 || id.generation() != 3));
        assert_eq!(e.len(), 7);
        assert!(e.alloc_at(EntityId::new(9, 0)).is_err());
    }

    #[test]
    fn unalloc_and_unfree_restore() {
        let mut e = Entities::default();
        let a = e.alloc().unwrap();
        e.free(a);
        e.unfree(a);
        assert!(e.contains(a));
        let b = e.alloc().unwrap();
        e.unalloc(b);
        assert!(!e.contains(b));
        assert_eq!(e.len(), 1);
    }
}
