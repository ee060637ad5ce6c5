//! Memory attributes of a memslot: the memory type per gfn range, and the mixed-attribute
//! marks of the huge blocks a range touches.

use alloc::vec::Vec;
use core::sync::atomic::Ordering;

use lock_api::RawRwLock;
use slat_pt::MemType;

use super::lpage::MIXED;
use super::Memslot;

impl<R: RawRwLock> Memslot<R> {
    /// Memory type of `gfn` (write-back unless set otherwise).
    pub fn mem_type(&self, gfn: u64) -> MemType {
        if !self.has_attrs.load(Ordering::Acquire) {
            return MemType::WriteBack;
        }
        let a = self.attrs.lock();
        match a.range(..=gfn).next_back() {
            Some((_, &(end, mt))) if gfn < end => mt,
            _ => MemType::WriteBack,
        }
    }

    /// Set the memory type of `npages` from `gfn`; recomputes the mixed marks of every huge
    /// block the range touches.
    pub(crate) fn set_mem_type(&self, gfn: u64, npages: u64, mt: MemType) {
        let end = gfn + npages;
        self.has_attrs.store(true, Ordering::Release);
        {
            let mut a = self.attrs.lock();
            // Cut existing ranges at gfn and end, drop what lies inside, insert the new range.
            let overlapping: Vec<(u64, (u64, MemType))> =
                a.range(..end).filter(|(_, (e, _))| *e > gfn).map(|(s, v)| (*s, *v)).collect();
            for (s, (e, m)) in overlapping {
                a.remove(&s);
                if s < gfn {
                    a.insert(s, (gfn, m));
                }
                if e > end {
                    a.insert(end, (e, m));
                }
            }
            if mt != MemType::WriteBack {
                a.insert(gfn, (end, mt));
            }
        }
        for l in &self.lpage {
            let pages = l.size.pages();
            let first = gfn / pages;
            let last = (end - 1) / pages;
            for b in first..=last {
                let start = (b * pages).max(self.base_gfn);
                let stop = ((b + 1) * pages).min(self.end_gfn());
                let mixed = !self.uniform(start, stop);
                if let Some(w) = l.disallow.get(self.block_index(b * pages, l.size)) {
                    // AcqRel: as for write tracking (crate docs, "Atomic orderings").
                    if mixed {
                        w.fetch_or(MIXED, Ordering::AcqRel);
                    } else {
                        w.fetch_and(!MIXED, Ordering::AcqRel);
                    }
                }
            }
        }
    }

    fn uniform(&self, start: u64, stop: u64) -> bool {
        let first = self.mem_type(start);
        let a = self.attrs.lock();
        // Any range boundary strictly inside (start, stop) means a change of type.
        let boundary_inside = a.range(..stop).any(|(s, (e, _))| (*s > start && *s < stop) || (*e > start && *e < stop));
        drop(a);
        !boundary_inside || {
            // Boundaries may separate equal types; check page by page only in that rare case.
            (start..stop).all(|g| self.mem_type(g) == first)
        }
    }
}
