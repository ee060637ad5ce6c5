//! The set of memslots: validation, lookup by gfn and by host range.

use alloc::vec::Vec;

use lock_api::RawRwLock;
use slat_pt::{Gfn, PAGE_SIZE};

use super::{Memslot, MemslotError, MemslotSpec};

/// The set of memslots, sorted by gfn.
pub(crate) struct Memslots<R: RawRwLock> {
    slots: Vec<alloc::sync::Arc<Memslot<R>>>,
}

impl<R: RawRwLock> Default for Memslots<R> {
    fn default() -> Self {
        Memslots { slots: Vec::new() }
    }
}

impl<R: RawRwLock> Memslots<R> {
    pub(crate) fn validate(&self, spec: &MemslotSpec, input_bits: u32) -> Result<(), MemslotError> {
        let id = spec.id;
        let (base_gfn, hva) = (spec.base_gfn.0, spec.hva.0);
        if spec.npages == 0 {
            return Err(MemslotError::Empty { id });
        }
        if hva % PAGE_SIZE != 0 {
            return Err(MemslotError::MisalignedHva { id, hva: spec.hva });
        }
        let limit = 1u64 << (input_bits - 12);
        if base_gfn.checked_add(spec.npages).is_none_or(|e| e > limit) {
            return Err(MemslotError::TooLarge { id, base_gfn: spec.base_gfn, npages: spec.npages, bits: input_bits });
        }
        if spec.npages.checked_mul(PAGE_SIZE).and_then(|b| hva.checked_add(b)).is_none() {
            return Err(MemslotError::HvaOverflow { id, hva: spec.hva, npages: spec.npages });
        }
        if self.slots.iter().any(|s| s.id == id) {
            return Err(MemslotError::Exists { id });
        }
        let end_gfn = base_gfn + spec.npages;
        if let Some(o) = self.slots.iter().find(|s| s.base_gfn < end_gfn && base_gfn < s.end_gfn()) {
            return Err(MemslotError::Overlap { id, base_gfn: spec.base_gfn, end_gfn: Gfn(end_gfn), other: o.id });
        }
        Ok(())
    }

    /// Validate moving slot `spec.id` to `spec.base_gfn` (the slot itself is not an overlap).
    pub(crate) fn validate_move(&self, spec: &MemslotSpec, input_bits: u32) -> Result<(), MemslotError> {
        let others = Memslots { slots: self.slots.iter().filter(|s| s.id != spec.id).cloned().collect() };
        others.validate(spec, input_bits)
    }

    pub(crate) fn insert(&mut self, slot: alloc::sync::Arc<Memslot<R>>) {
        let pos = self.slots.partition_point(|s| s.base_gfn < slot.base_gfn);
        self.slots.insert(pos, slot);
    }

    pub(crate) fn remove(&mut self, id: u32) -> Option<alloc::sync::Arc<Memslot<R>>> {
        let pos = self.slots.iter().position(|s| s.id == id)?;
        Some(self.slots.remove(pos))
    }

    pub(crate) fn find_gfn(&self, gfn: u64) -> Option<&alloc::sync::Arc<Memslot<R>>> {
        let i = self.slots.partition_point(|s| s.base_gfn <= gfn);
        let s = self.slots.get(i.checked_sub(1)?)?;
        s.contains(gfn).then_some(s)
    }

    pub(crate) fn get(&self, id: u32) -> Option<&alloc::sync::Arc<Memslot<R>>> {
        self.slots.iter().find(|s| s.id == id)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &alloc::sync::Arc<Memslot<R>>> {
        self.slots.iter()
    }

    /// Slots intersecting the host range, with the gfn range each maps of it.
    pub(crate) fn hva_to_gfns(&self, start: u64, end: u64) -> Vec<(alloc::sync::Arc<Memslot<R>>, u64, u64)> {
        self.slots
            .iter()
            .filter_map(|s| {
                let (hs, he) = s.hva_range();
                let (a, b) = (start.max(hs), end.min(he));
                (a < b).then(|| {
                    let g0 = s.base_gfn + (a - hs) / PAGE_SIZE;
                    let g1 = s.base_gfn + (b - hs).div_ceil(PAGE_SIZE);
                    (s.clone(), g0, g1)
                })
            })
            .collect()
    }
}
