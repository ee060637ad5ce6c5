//! Write tracking of a memslot: gfns whose writes the hypervisor must see (KVM's
//! `kvm_write_track_add_gfn`); a tracked gfn disallows huge leaves over its blocks.

use alloc::vec::Vec;
use core::sync::atomic::Ordering;

use lock_api::RawRwLock;

use super::Memslot;

impl<R: RawRwLock> Memslot<R> {
    /// Whether `gfn` is write-tracked.
    pub fn is_write_tracked(&self, gfn: u64) -> bool {
        self.tracked.lock().contains_key(&gfn)
    }

    pub(crate) fn track(&self, gfn: u64, on: bool) -> bool {
        let mut t = self.tracked.lock();
        let changed = if on {
            *t.entry(gfn).or_insert(0) += 1;
            true
        } else if let Some(c) = t.get_mut(&gfn) {
            *c -= 1;
            if *c == 0 {
                t.remove(&gfn);
            }
            true
        } else {
            false
        };
        if changed {
            // AcqRel: see "Atomic orderings" in the crate docs (a fault deciding its leaf size
            // must see the count before the invalidation that follows this ends).
            for l in &self.lpage {
                if let Some(w) = l.disallow.get(self.block_index(gfn, l.size)) {
                    if on {
                        w.fetch_add(1, Ordering::AcqRel);
                    } else {
                        w.fetch_sub(1, Ordering::AcqRel);
                    }
                }
            }
        }
        changed
    }

    /// Write-tracked gfns.
    pub fn tracked_gfns(&self) -> Vec<u64> {
        self.tracked.lock().keys().copied().collect()
    }
}
