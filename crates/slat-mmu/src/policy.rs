//! Every leaf-size and attribute rule, in one place: [`decide`](Mmu::decide) (how large may the
//! leaf at a gfn be, and why not larger) and [`leaf_attrs`](Mmu::leaf_attrs) (what permissions,
//! memory type and software bits it gets). The fault path, in-place recovery, `explain` and the
//! audit all ask these two; nothing else encodes a rule.

use crate::platform::Platform;
use slat_pt::{Format, LeafAttrs, MemType, PageSize, Perms, RefaultRule, SwBits, WidenOnly};

use crate::config::DirtyLogMode;
use crate::host::{BackingKind, HostPage};
use crate::memslot::Memslot;
use crate::mmu::Mmu;
use crate::reason::{Decision, ReasonSet, WhyNotHuge};

/// Software bit of a leaf: the host maps the page writable, so the MMU may grant write without
/// asking the host again. With this bit and without [`Perms::WRITE`] the leaf is
/// write-protected by the MMU itself (dirty logging, write tracking).
pub(crate) const HOST_WRITABLE: SwBits = SwBits::SW0;

/// Software bit of a leaf: write was withheld for dirty logging; a write fault grants it and
/// logs the page.
pub(crate) const DIRTY_LOG_WP: SwBits = SwBits::SW1;

/// How a fault merges with a leaf of the same output already in place (slat-pt's
/// [`RefaultRule`]): widen only (keep the leaf's permissions and accessed/dirty state, never
/// lose a dirty bit), and a leaf that ends up writable is no longer write-protected for dirty
/// logging.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Refault;

impl RefaultRule for Refault {
    #[inline]
    fn merge(&self, was: &LeafAttrs, want: &LeafAttrs) -> LeafAttrs {
        let mut a = WidenOnly.merge(was, want);
        if a.perms.contains(Perms::WRITE) {
            a.sw.remove(DIRTY_LOG_WP);
        }
        a
    }
}

/// Who builds a leaf, for [`Mmu::leaf_attrs`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LeafUse {
    /// A guest fault: `write` access; `tracked`: the gfn is write-tracked.
    Fault {
        /// The access is a write.
        write: bool,
        /// The gfn is write-tracked (never writable).
        tracked: bool,
    },
    /// In-place recovery of a huge leaf from small ones; `accessed`: any of them was.
    Recovery {
        /// Any small leaf had its accessed flag set.
        accessed: bool,
    },
}

impl<F: Format, P: Platform> Mmu<F, P> {
    /// Largest leaf allowed for `gfn` of `slot` given the host mapping, with the reasons for
    /// each step below 1 GiB. `exec`: the access is an instruction fetch.
    #[inline(always)]
    pub(crate) fn decide(&self, slot: &Memslot<P::Lock>, gfn: u64, host: Option<&HostPage>, exec: bool) -> Decision {
        let mut not = [ReasonSet::EMPTY; 2];
        let nx_on = self.config.nx.is_some();
        for (i, size) in [(0, PageSize::Size2M), (1, PageSize::Size1G)] {
            let r = &mut not[i];
            if size > self.config.max_leaf || !F::leaf_allowed(size.level()) {
                r.insert(WhyNotHuge::FormatLimit);
            }
            if self.config.cap.is_some_and(|c| size > c) {
                r.insert(WhyNotHuge::PolicyCap);
            }
            if slot.is_logging() {
                r.insert(WhyNotHuge::DirtyLogging);
            }
            if nx_on && (exec || self.nx.lock().contains(gfn, size)) {
                r.insert(WhyNotHuge::NxHugePage);
            }
            if !slot.block_inside(gfn, size) {
                r.insert(WhyNotHuge::CrossesSlot);
            }
            if !slot.congruent(size) {
                r.insert(WhyNotHuge::Misaligned);
            }
            if slot.block_inside(gfn, size) {
                if slot.disallow_count(gfn, size) > 0 {
                    r.insert(WhyNotHuge::WriteTracking);
                }
                if slot.mixed(gfn, size) {
                    r.insert(WhyNotHuge::MixedAttributes);
                }
            }
            match host {
                None => r.insert(WhyNotHuge::HostMapsSmall),
                Some(h) if h.size < size => r.insert(if h.kind == BackingKind::PfnMap {
                    WhyNotHuge::PfnMap
                } else if h.size == PageSize::Size4K {
                    WhyNotHuge::HostMapsSmall
                } else {
                    WhyNotHuge::HostLeaf2M
                }),
                Some(_) => {}
            }
        }
        // Whatever forbids 2M forbids 1G.
        for r in not[0].iter() {
            not[1].insert(r);
        }
        let size = if not[1].is_empty() {
            PageSize::Size1G
        } else if not[0].is_empty() {
            PageSize::Size2M
        } else {
            PageSize::Size4K
        };
        Decision { size, not_1g: not[1], not_2m: not[0] }
    }

    /// Attributes of a `size` leaf at `gfn` of `slot` over `host`, for `usage`.
    ///
    /// * Write: only where the host and the slot allow it and the gfn is not write-tracked; on a
    ///   fault in a dirty-logged slot only for a write (or with hardware dirty bits), so the
    ///   first write to each page faults and is logged. A writable leaf the logging withholds
    ///   write from carries `DIRTY_LOG_WP`; every host-writable leaf carries `HOST_WRITABLE`.
    /// * Exec: not on huge leaves with the NX workaround; not on uncached memory where the format
    ///   forbids it (arm64).
    /// * Memory type: the host's when the host maps the memory uncached (device memory is never
    ///   made cacheable), otherwise the slot's attribute for the gfn.
    #[inline(always)]
    pub(crate) fn leaf_attrs(
        &self,
        slot: &Memslot<P::Lock>,
        gfn: u64,
        size: PageSize,
        host: &HostPage,
        usage: LeafUse,
    ) -> LeafAttrs {
        let mem_type = if host.is_cacheable() { slot.mem_type(gfn) } else { host.mem_type };
        let (writable_ok, grant_write, accessed, dirty) = match usage {
            LeafUse::Fault { write, tracked } => {
                let logging = slot.is_logging();
                let hw_dirty = self.config.dirty_log == DirtyLogMode::HardwareDirty && F::HW_DIRTY;
                let ok = host.writable && !slot.readonly && !tracked;
                let grant = ok && (write || !logging || hw_dirty);
                (ok, grant, true, write && grant)
            }
            LeafUse::Recovery { accessed } => {
                let ok = host.writable && !slot.readonly;
                (ok, ok, accessed, false)
            }
        };
        let mut perms = Perms::READ | Perms::EXEC;
        if self.config.nx.is_some() && size > PageSize::Size4K {
            perms.remove(Perms::EXEC);
        }
        if !F::EXEC_UNCACHED && !matches!(mem_type, MemType::WriteBack | MemType::WriteThrough) {
            perms.remove(Perms::EXEC);
        }
        if grant_write {
            perms.insert(Perms::WRITE);
        }
        let mut sw = SwBits::empty();
        if writable_ok {
            sw.insert(HOST_WRITABLE);
            if !grant_write {
                sw.insert(DIRTY_LOG_WP);
            }
        }
        LeafAttrs { perms, mem_type, accessed, dirty, sw }
    }
}
