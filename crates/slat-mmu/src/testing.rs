//! Small in-crate doubles for tests, examples and benchmarks: [`FakeHost`], a host whose
//! mappings are set by hand; [`InstantHost`], a host that answers every fault at once from a
//! linear map (for benchmarks of the MMU's own cost); and [`RecordingTlb`], a TLB that records
//! every flush. A TLB with nothing to do is [`slat_pt::NoTlb`]. The realistic host lives in
//! `slat-sim`, the real one in `slat-linux`.

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;

use slat_pt::{FlushRange, Hva, PageSize, Pfn, PAGE_SIZE};

use crate::host::{BackingKind, HostError, HostMemory, HostPage};
use crate::tlb::{CacheMaintenance, Tlb};

#[derive(Debug, Clone, Copy)]
struct HostLeaf {
    pfn: u64,
    size: PageSize,
    writable: bool,
    kind: BackingKind,
}

/// Hook run inside [`HostMemory::fault_in`], to interleave events with a fault in tests.
pub type FaultHook = Box<dyn FnMut(u64) + Send>;

/// A host whose mappings tests set directly. Mutating methods do not notify the MMU: tests call
/// `invalidate_range_start` / `end` around them, which is exactly the contract a host follows.
#[derive(Default)]
pub struct FakeHost {
    leaves: spin::Mutex<BTreeMap<u64, HostLeaf>>,
    dirty: spin::Mutex<BTreeSet<u64>>,
    accessed: spin::Mutex<BTreeSet<u64>>,
    hook: spin::Mutex<Option<FaultHook>>,
    poisoned: spin::Mutex<BTreeSet<u64>>,
}

impl FakeHost {
    /// An empty host.
    pub fn new() -> Self {
        Self::default()
    }

    /// Map `len` bytes at `hva` to physical `pa` with host leaves of `size` (anonymous memory,
    /// THP-backed when `size` is 2M, hugetlbfs when 1G).
    pub fn map_range(&self, hva: u64, len: u64, pa: u64, size: PageSize, writable: bool) {
        let kind = match size {
            PageSize::Size4K | PageSize::Size2M => BackingKind::Anonymous,
            PageSize::Size1G => BackingKind::Hugetlbfs,
        };
        self.map_kind(hva, len, pa, size, writable, kind);
    }

    /// [`map_range`](Self::map_range) with an explicit backing kind.
    pub fn map_kind(&self, hva: u64, len: u64, pa: u64, size: PageSize, writable: bool, kind: BackingKind) {
        assert!(size.is_aligned(hva) && size.is_aligned(pa) && size.is_aligned(len), "FakeHost: misaligned map");
        let mut l = self.leaves.lock();
        let mut off = 0;
        while off < len {
            l.insert(hva + off, HostLeaf { pfn: (pa + off) / PAGE_SIZE, size, writable, kind });
            off += size.bytes();
        }
    }

    /// Remove every host leaf overlapping `hva..hva+len` (whole leaves).
    pub fn unmap_range(&self, hva: u64, len: u64) {
        let mut l = self.leaves.lock();
        let keys: Vec<u64> = l
            .range(hva.saturating_sub(PageSize::Size1G.bytes())..hva + len)
            .filter(|(k, v)| **k + v.size.bytes() > hva)
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            l.remove(&k);
        }
    }

    /// Split the host leaf containing `hva` into 4 KiB leaves with the same pfns.
    pub fn split(&self, hva: u64) {
        let mut l = self.leaves.lock();
        let Some((&k, &leaf)) = l.range(..=hva).next_back() else { return };
        if k + leaf.size.bytes() <= hva || leaf.size == PageSize::Size4K {
            return;
        }
        l.remove(&k);
        for i in 0..leaf.size.pages() {
            l.insert(k + i * PAGE_SIZE, HostLeaf { pfn: leaf.pfn + i, size: PageSize::Size4K, ..leaf });
        }
    }

    /// Mark the host page at `hva` poisoned (a memory failure): `fault_in` reports
    /// [`HostError::HwPoison`] for it from now on, as `get_user_pages` with `FOLL_HWPOISON`.
    pub fn poison(&self, hva: u64) {
        self.poisoned.lock().insert(hva & !(PAGE_SIZE - 1));
    }

    /// Run `hook(hva)` at the start of every `fault_in` (until replaced with `None`).
    pub fn set_fault_hook(&self, hook: Option<FaultHook>) {
        *self.hook.lock() = hook;
    }

    /// Whether the guest dirtied pfn.
    pub fn is_dirty(&self, pfn: u64) -> bool {
        self.dirty.lock().contains(&pfn)
    }

    /// Number of dirty pfns.
    pub fn dirty_count(&self) -> usize {
        self.dirty.lock().len()
    }

    fn find(&self, hva: u64) -> Option<HostPage> {
        let l = self.leaves.lock();
        let (&k, leaf) = l.range(..=hva).next_back()?;
        (hva < k + leaf.size.bytes())
            .then(|| HostPage::new(Pfn(leaf.pfn + (hva - k) / PAGE_SIZE), leaf.size, leaf.writable, leaf.kind))
    }
}

impl HostMemory for FakeHost {
    fn fault_in(&self, hva: Hva, write: bool) -> Result<HostPage, HostError> {
        let hva = hva.0;
        let hook = self.hook.lock().take();
        if let Some(mut h) = hook {
            h(hva);
            let mut slot = self.hook.lock();
            if slot.is_none() {
                *slot = Some(h);
            }
        }
        let p = self.find(hva).ok_or(HostError::NotMapped { hva: Hva(hva) })?;
        if self.poisoned.lock().contains(&(hva & !(PAGE_SIZE - 1))) {
            return Err(HostError::HwPoison { hva: Hva(hva), size: p.size });
        }
        if write && !p.writable {
            return Err(HostError::ReadOnly { hva: Hva(hva) });
        }
        Ok(p)
    }

    fn lookup(&self, hva: Hva) -> Option<HostPage> {
        self.find(hva.0)
    }

    fn mark_dirty(&self, pfn: Pfn, pages: u64) {
        let pfn = pfn.0;
        self.dirty.lock().extend(pfn..pfn + pages);
    }

    fn mark_accessed(&self, pfn: Pfn, pages: u64) {
        let pfn = pfn.0;
        let mut a = self.accessed.lock();
        if pages <= 512 {
            a.extend(pfn..pfn + pages);
        } else {
            a.insert(pfn);
        }
    }
}

/// One flush the TLB received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// A range flush.
    Range(FlushRange),
    /// A full flush.
    All,
}

/// A cache-maintenance operation the TLB was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOp {
    /// Clean the data cache to PoC for `pa .. pa + len`.
    CleanDcache {
        /// Host-physical start.
        pa: u64,
        /// Bytes.
        len: u64,
    },
    /// Invalidate the instruction cache for `pa .. pa + len`.
    InvalidateIcache {
        /// Host-physical start.
        pa: u64,
        /// Bytes.
        len: u64,
    },
}

/// A host that answers at once, without state: `hva` maps to `base_pfn + (hva - base_hva) / 4K`,
/// writable anonymous memory, with a host leaf of `size` (or of the size set for the range the
/// address falls in by [`with_size_from`](Self::with_size_from)). For benchmarks that measure
/// the MMU and not the host.
///
/// ```
/// use slat_mmu::testing::InstantHost;
/// use slat_mmu::{HostMemory, Hva, Pfn};
/// use slat_pt::PageSize;
/// let host = InstantHost::new(Hva(0x7f00_0000_0000), Pfn(1 << 28), PageSize::Size2M)
///     .with_size_from(Hva(0x7f00_4000_0000), PageSize::Size4K);
/// let p = host.fault_in(Hva(0x7f00_0020_3000), true).unwrap();
/// assert_eq!((p.pfn, p.size), (Pfn((1 << 28) + 0x203), PageSize::Size2M));
/// assert_eq!(host.lookup(Hva(0x7f00_4000_0000)).unwrap().size, PageSize::Size4K);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct InstantHost {
    base_hva: Hva,
    base_pfn: Pfn,
    size: PageSize,
    from: Option<(Hva, PageSize)>,
}

impl InstantHost {
    /// Map `base_hva..` linearly onto `base_pfn..` with host leaves of `size`.
    pub const fn new(base_hva: Hva, base_pfn: Pfn, size: PageSize) -> Self {
        InstantHost { base_hva, base_pfn, size, from: None }
    }

    /// From `hva` upwards, answer with host leaves of `size` instead.
    pub const fn with_size_from(mut self, hva: Hva, size: PageSize) -> Self {
        self.from = Some((hva, size));
        self
    }
}

impl HostMemory for InstantHost {
    fn fault_in(&self, hva: Hva, _write: bool) -> Result<HostPage, HostError> {
        if hva < self.base_hva {
            return Err(HostError::NotMapped { hva });
        }
        let size = match self.from {
            Some((from, size)) if hva >= from => size,
            _ => self.size,
        };
        let pfn = self.base_pfn + (hva - self.base_hva) / PAGE_SIZE;
        Ok(HostPage::new(pfn, size, true, BackingKind::Anonymous))
    }
    fn lookup(&self, hva: Hva) -> Option<HostPage> {
        self.fault_in(hva, false).ok()
    }
    fn mark_dirty(&self, _: Pfn, _: u64) {}
    fn mark_accessed(&self, _: Pfn, _: u64) {}
}

/// A TLB that records every flush (and every cache-maintenance operation, when built with
/// [`RecordingTlb::with_cache_maintenance`]).
#[derive(Debug, Default)]
pub struct RecordingTlb {
    log: spin::Mutex<Vec<Flush>>,
    cache: CacheMaintenance,
    cmos: spin::Mutex<Vec<CacheOp>>,
}

impl RecordingTlb {
    /// A recording TLB of a CPU that needs `cache` maintenance (arm64 without FWB / DIC).
    pub fn with_cache_maintenance(cache: CacheMaintenance) -> Self {
        RecordingTlb { cache, ..Self::default() }
    }

    /// Every flush so far.
    pub fn flushes(&self) -> Vec<Flush> {
        self.log.lock().clone()
    }

    /// Every cache-maintenance operation so far.
    pub fn cache_ops(&self) -> Vec<CacheOp> {
        self.cmos.lock().clone()
    }

    /// Forget recorded flushes and cache-maintenance operations.
    pub fn clear(&self) {
        self.log.lock().clear();
        self.cmos.lock().clear();
    }

    /// Whether the recorded flushes cover every byte of `gpa..gpa+len`.
    pub fn covered(&self, gpa: u64, len: u64) -> bool {
        let log = self.log.lock();
        if log.iter().any(|f| matches!(f, Flush::All)) {
            return true;
        }
        let mut a = gpa;
        'outer: while a < gpa + len {
            for f in log.iter() {
                if let Flush::Range(r) = f {
                    if a >= r.gpa.0 && a < (r.gpa + r.len).0 {
                        a = (r.gpa + r.len).0;
                        continue 'outer;
                    }
                }
            }
            return false;
        }
        true
    }
}

impl Tlb for RecordingTlb {
    fn flush_range(&self, range: &FlushRange) {
        self.log.lock().push(Flush::Range(*range));
    }
    fn flush_all(&self) {
        self.log.lock().push(Flush::All);
    }
    fn cache_maintenance(&self) -> CacheMaintenance {
        self.cache
    }
    fn clean_dcache(&self, pa: u64, len: u64) {
        self.cmos.lock().push(CacheOp::CleanDcache { pa, len });
    }
    fn invalidate_icache(&self, pa: u64, len: u64) {
        self.cmos.lock().push(CacheOp::InvalidateIcache { pa, len });
    }
}
