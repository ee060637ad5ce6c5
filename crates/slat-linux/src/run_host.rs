//! [`RunHost`]: this process's real memory as the host of a whole simulated VM run.
//!
//! Where [`LocalMemory`](crate::memory::LocalMemory) answers the MMU over backings somebody else
//! owns, a `RunHost` owns everything a run needs and gives it back when dropped: the memslots'
//! [`Backing`]s (dropped first), a private tmpfs mount for shmem slots, and hugetlb pool
//! reservations (shrunk back last).
//!
//! The kernel tells its own MMU notifiers about every mapping change; it tells this process
//! nothing. So a `RunHost` brackets the changes it makes on purpose ([`RunHost::change`]:
//! `mprotect`, `MADV_DONTNEED`, `MADV_COLLAPSE`) with `invalidate_range_start` / `_end` over the
//! whole huge blocks they touch (as `split_huge_pmd` does), and it watches the changes the kernel
//! makes on its own while faulting a page in (a write to the huge zero page splits or replaces
//! it): [`fault_in`](HostMemory::fault_in) compares the host mapping of the page's block before
//! and after, and queues the block for [`RunHost::sync`] when anything but the page itself
//! changed. Changes the kernel makes later on its own schedule (khugepaged, compaction) are not
//! seen; an audit of the MMU against [`HostMemory::lookup`] finds them.
//!
//! ```no_run
//! use slat_linux::backing::ThpAdvice;
//! use slat_linux::pool::TmpfsHuge;
//! use slat_linux::run_host::{RunHost, RunHostConfig, SlotBacking, SlotRequest};
//! use slat_mmu::{HostMemory, Hva};
//!
//! let slots = [SlotRequest { id: 0, backing: SlotBacking::Anonymous { thp: ThpAdvice::Hugepage }, len: 8 << 20, read_only: false }];
//! let host = RunHost::new(&RunHostConfig { tmpfs_huge: TmpfsHuge::Never, hugetlb_2m: 0, hugetlb_1g: 0 }, &slots)?;
//! let hva = host.slot_hva(0).unwrap();
//! let page = host.fault_in(Hva(hva), true).unwrap(); // a 2M host leaf where the kernel placed a THP
//! println!("{:?}", page.size);
//! # Ok::<(), slat_linux::run_host::RunHostError>(())
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use rustix::mm::Advice;
use slat_mmu::{HostError, HostMemory, HostPage, Hva, MmuNotifier, Pfn};
use slat_pt::PageSize;

use crate::backing::{Backing, HugetlbSize, Placement, ThpAdvice};
use crate::error::Error;
use crate::pagemap::Pagemap;
use crate::pool::{HugetlbReservation, TmpfsHuge, TmpfsMount};
use crate::scan::{self, Categories, PageRegion};

const PAGE: u64 = 4096;
const SIZE_2M: u64 = 2 << 20;
/// Every slot's mapping starts on a 1 GiB boundary (as the simulated host places them), so a
/// memslot's `hva_offset` alone decides its congruence.
const SLOT_ALIGN: u64 = 1 << 30;

/// How a memslot's memory is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotBacking {
    /// Private anonymous memory with THP advice.
    Anonymous {
        /// `MADV_HUGEPAGE` / `MADV_NOHUGEPAGE` / none.
        thp: ThpAdvice,
    },
    /// A shared file on the run's private tmpfs (mounted with [`RunHostConfig::tmpfs_huge`]).
    Tmpfs {
        /// THP advice (`huge=advise` follows `MADV_HUGEPAGE`).
        thp: ThpAdvice,
    },
    /// `memfd_create(MFD_HUGETLB)` of one page size, from the pool.
    Hugetlb {
        /// The page size.
        size: HugetlbSize,
    },
}

impl SlotBacking {
    /// The backing in the words of `smaps` and VMM configuration.
    pub fn describe(&self, tmpfs_huge: TmpfsHuge) -> String {
        let advice = |thp: ThpAdvice| match thp {
            ThpAdvice::None => "",
            ThpAdvice::Hugepage => " + MADV_HUGEPAGE",
            ThpAdvice::NoHugepage => " + MADV_NOHUGEPAGE",
        };
        match *self {
            SlotBacking::Anonymous { thp } => format!("anonymous{}", advice(thp)),
            SlotBacking::Tmpfs { thp } => format!("tmpfs huge={} file{}", tmpfs_huge.name(), advice(thp)),
            SlotBacking::Hugetlb { size } => format!("memfd MFD_HUGETLB {}", size.name()),
        }
    }
}

/// One memslot's mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotRequest {
    /// Memslot id.
    pub id: u32,
    /// How the memory is made.
    pub backing: SlotBacking,
    /// Bytes to map (a whole number of the backing's pages).
    pub len: u64,
    /// Map it read-only (`PROT_READ`), as for a read-only memslot.
    pub read_only: bool,
}

/// What a run host sets up around its slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunHostConfig {
    /// The `huge=` option of the run's private tmpfs (used when a slot is [`SlotBacking::Tmpfs`]).
    pub tmpfs_huge: TmpfsHuge,
    /// 2 MiB pages to add to the hugetlb pool for the run.
    pub hugetlb_2m: u64,
    /// 1 GiB pages to add to the hugetlb pool for the run.
    pub hugetlb_1g: u64,
}

/// What could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum RunHostError {
    /// The hugetlb pool could not be grown.
    #[error("cannot add {pages} pages of {} to the hugetlb pool: {source}", .size.name())]
    Pool {
        /// Page size.
        size: HugetlbSize,
        /// Pages wanted.
        pages: u64,
        /// Why.
        source: Error,
    },
    /// The private tmpfs could not be mounted.
    #[error("cannot mount a private tmpfs with huge={}: {source}", .huge.name())]
    Tmpfs {
        /// The option.
        huge: TmpfsHuge,
        /// Why.
        source: Error,
    },
    /// A slot's memory could not be mapped.
    #[error("memslot {id}: cannot map {len:#x} bytes ({what}): {source}")]
    Slot {
        /// Memslot id.
        id: u32,
        /// Bytes.
        len: u64,
        /// The backing in words.
        what: String,
        /// Why.
        source: Error,
    },
    /// `/proc/self/pagemap` or `PAGEMAP_SCAN` is not available.
    #[error("{0}")]
    Host(Error),
}

/// A host change a run asks for on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostChange {
    /// `mprotect(2)`: no access, read-only, or read-write.
    Protect(Protection),
    /// `madvise(MADV_DONTNEED)`: the pages go; a THP in the range loses its PMD.
    DontNeed,
    /// `madvise(MADV_COLLAPSE)`: every 2 MiB block inside the range becomes a THP if it can.
    Collapse,
}

/// Protections of [`HostChange::Protect`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protection {
    /// `PROT_NONE`.
    None,
    /// `PROT_READ`.
    Read,
    /// `PROT_READ | PROT_WRITE`.
    ReadWrite,
}

/// What a [`HostChange`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChangeReport {
    /// Ranges given to `invalidate_range_start` / `_end`.
    pub invalidated: Vec<(u64, u64)>,
    /// 4 KiB pages in the range asked for.
    pub pages: u64,
    /// 2 MiB-mapped bytes in the widened range before and after (`PAGEMAP_SCAN`).
    pub huge_bytes: (u64, u64),
}

/// Bytes of a range by host leaf size (see [`RunHost::split`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LeafSplit {
    /// Present bytes mapped by PTEs.
    pub bytes_4k: u64,
    /// Present bytes mapped by 2 MiB leaves.
    pub bytes_2m: u64,
    /// Present bytes mapped by 1 GiB leaves.
    pub bytes_1g: u64,
    /// Present bytes on the (huge) zero page.
    pub bytes_zero: u64,
    /// Bytes not present.
    pub bytes_absent: u64,
}

#[derive(Debug)]
struct Slot {
    id: u32,
    backing: Backing,
    what: String,
}

/// Counters of a [`RunHost`].
#[derive(Debug, Default)]
struct Counters {
    fault_ins: AtomicU64,
    invalidations: AtomicU64,
    kernel_changes: AtomicU64,
}

/// This process's memory as the host of a run. See the [module docs](self).
#[derive(Debug)]
pub struct RunHost {
    // Field order is drop order: mappings go before the mount and the pool reservations.
    slots: Vec<Slot>,
    tmpfs: Option<TmpfsMount>,
    pools: Vec<HugetlbReservation>,
    config: RunHostConfig,
    pagemap: Pagemap,
    pfns: bool,
    /// Protection changed by [`HostChange::Protect`] (and read-only slots): `(start, end, prot)`,
    /// latest last.
    protections: Mutex<Vec<(u64, u64, Protection)>>,
    /// Blocks the kernel changed while faulting pages in, not yet given to the MMU.
    pending: Mutex<Vec<(u64, u64)>>,
    /// Per slot, per page: the host mapping last seen (see [`page_word`]).
    known: Vec<Mutex<Vec<u64>>>,
    /// When every slot was last compared with the kernel's mappings.
    last_resync: Mutex<std::time::Instant>,
    counters: Counters,
}

/// A page's host mapping as one word: pfn (or stand-in) above bit 3, then zero, huge, present.
fn page_word(pfn: u64, categories: Categories) -> u64 {
    if !categories.contains(Categories::PRESENT) {
        return 0;
    }
    (pfn << 3)
        | (u64::from(categories.contains(Categories::PFNZERO)) << 2)
        | (u64::from(categories.contains(Categories::HUGE)) << 1)
        | 1
}

/// How often [`RunHost::sync`] compares every slot with the kernel's mappings, at most.
const RESYNC_EVERY: std::time::Duration = std::time::Duration::from_millis(10);

impl RunHost {
    /// Grow the pools, mount the tmpfs (if any slot needs it) and map every slot, in order.
    /// On error, everything done so far is undone.
    pub fn new(config: &RunHostConfig, slots: &[SlotRequest]) -> Result<Self, RunHostError> {
        let pagemap = Pagemap::open(0).map_err(RunHostError::Host)?;
        if !scan::supported() {
            return Err(RunHostError::Host(Error::Unsupported {
                what: "PAGEMAP_SCAN (Linux 6.7+), needed to read host leaf sizes".into(),
            }));
        }
        let mut pools = Vec::new();
        for (size, pages) in [(HugetlbSize::Size2M, config.hugetlb_2m), (HugetlbSize::Size1G, config.hugetlb_1g)] {
            if pages > 0 {
                let r = HugetlbReservation::reserve(size, pages).map_err(|source| RunHostError::Pool {
                    size,
                    pages,
                    source,
                })?;
                pools.push(r);
            }
        }
        let tmpfs_bytes: u64 =
            slots.iter().filter(|s| matches!(s.backing, SlotBacking::Tmpfs { .. })).map(|s| s.len).sum();
        let tmpfs = if tmpfs_bytes > 0 {
            let size = tmpfs_bytes.next_multiple_of(SIZE_2M) + SIZE_2M;
            Some(
                TmpfsMount::new(config.tmpfs_huge, size)
                    .map_err(|source| RunHostError::Tmpfs { huge: config.tmpfs_huge, source })?,
            )
        } else {
            None
        };
        let mut host = RunHost {
            slots: Vec::new(),
            tmpfs,
            pools,
            config: *config,
            pagemap,
            pfns: rustix::process::geteuid().is_root(),
            protections: Mutex::new(Vec::new()),
            pending: Mutex::new(Vec::new()),
            known: Vec::new(),
            last_resync: Mutex::new(std::time::Instant::now()),
            counters: Counters::default(),
        };
        for req in slots {
            let what = req.backing.describe(config.tmpfs_huge);
            let fail = |source| RunHostError::Slot { id: req.id, len: req.len, what: what.clone(), source };
            let placement = Placement::aligned(SLOT_ALIGN);
            let backing = match req.backing {
                SlotBacking::Anonymous { thp } => Backing::anonymous(req.len, thp, placement),
                SlotBacking::Tmpfs { thp } => {
                    let dir = host.tmpfs.as_ref().expect("mounted above when a slot needs it").path();
                    Backing::file(dir.join(format!("memslot-{}", req.id)), 0, req.len, thp, placement)
                }
                SlotBacking::Hugetlb { size } => Backing::memfd(req.len, Some(size), ThpAdvice::None, placement),
            }
            .map_err(fail)?;
            if req.read_only {
                backing.mprotect(0, req.len, true).map_err(fail)?;
                host.protections.get_mut().unwrap().push((backing.hva(), backing.hva() + req.len, Protection::Read));
            }
            host.known.push(Mutex::new(vec![0; (req.len / PAGE) as usize]));
            host.slots.push(Slot { id: req.id, backing, what });
        }
        Ok(host)
    }

    /// The host virtual address of slot `id`'s mapping.
    pub fn slot_hva(&self, id: u32) -> Option<u64> {
        self.slots.iter().find(|s| s.id == id).map(|s| s.backing.hva())
    }

    /// Slot `id`'s backing in words (`anonymous + MADV_HUGEPAGE`).
    pub fn slot_backing(&self, id: u32) -> Option<&str> {
        self.slots.iter().find(|s| s.id == id).map(|s| s.what.as_str())
    }

    /// Bytes of slot `id`'s mapping.
    pub fn slot_len(&self, id: u32) -> Option<u64> {
        self.slots.iter().find(|s| s.id == id).map(|s| s.backing.len())
    }

    /// What smaps says of the VMAs overlapping slot `id`'s mapping: `(PMD-mapped THP bytes,
    /// hugetlb bytes)` (`AnonHugePages + ShmemPmdMapped + FilePmdMapped`, `*_Hugetlb`).
    ///
    /// # Errors
    /// `/proc/self/smaps` could not be read.
    pub fn slot_smaps(&self, id: u32) -> Result<Option<(u64, u64)>, Error> {
        let Some(slot) = self.slots.iter().find(|s| s.id == id) else { return Ok(None) };
        let (lo, hi) = (slot.backing.hva(), slot.backing.hva() + slot.backing.len());
        let vmas = crate::smaps::read(0)?;
        let over = vmas.iter().filter(|v| v.start < hi && v.end > lo);
        Ok(Some(over.fold((0, 0), |(p, h), v| (p + v.pmd_mapped_bytes(), h + v.hugetlb_bytes()))))
    }

    /// The configuration.
    pub fn config(&self) -> &RunHostConfig {
        &self.config
    }

    /// Pool pages this host added: `(2M, 1G)`.
    pub fn reserved(&self) -> (u64, u64) {
        let of = |size| self.pools.iter().filter(|p| p.size() == size).map(|p| p.pages()).sum();
        (of(HugetlbSize::Size2M), of(HugetlbSize::Size1G))
    }

    fn slot_of(&self, hva: u64) -> Option<&Slot> {
        self.slots.iter().find(|s| s.backing.contains(hva))
    }

    fn index_of(&self, slot: &Slot) -> usize {
        self.slots.iter().position(|s| std::ptr::eq(s, slot)).expect("a slot of this host")
    }

    /// The host mapping of every page of `[start, end)` as [`page_word`]s.
    fn snapshot(&self, start: u64, end: u64) -> Vec<u64> {
        let pages = ((end - start) / PAGE) as usize;
        let mut cats = vec![Categories(0); pages];
        for r in self.regions(start, end) {
            for p in ((r.start.max(start) - start) / PAGE)..((r.end.min(end) - start) / PAGE) {
                cats[p as usize] = r.categories;
            }
        }
        let pfns = if self.pfns { self.pagemap.read(start, pages).ok() } else { None };
        (0..pages)
            .map(|i| {
                let hva = start + i as u64 * PAGE;
                let pfn = pfns.as_ref().and_then(|v| v.get(i)).and_then(|e| e.pfn()).filter(|&p| p != 0);
                page_word(pfn.unwrap_or(hva >> 12), cats[i])
            })
            .collect()
    }

    /// Take the present host mapping of `[start, end)` of `slot` as seen (the MMU was told).
    fn remember(&self, slot: &Slot, start: u64, end: u64) {
        let now = self.snapshot(start, end);
        let first = ((start - slot.backing.hva()) / PAGE) as usize;
        let mut known = self.known[self.index_of(slot)].lock().unwrap_or_else(|e| e.into_inner());
        known[first..first + now.len()].copy_from_slice(&now);
    }

    /// Compare `[start, end)` of `slot` (block aligned) with what was last seen, remember the
    /// new state, and queue every block where a page seen present before changed (except the
    /// page at `except`, which the caller is changing on purpose).
    fn refresh(&self, slot: &Slot, start: u64, end: u64, except: Option<u64>) {
        let now = self.snapshot(start, end);
        let base = slot.backing.hva();
        let block = Self::block(&slot.backing);
        let mut known = self.known[self.index_of(slot)].lock().unwrap_or_else(|e| e.into_inner());
        let first = ((start - base) / PAGE) as usize;
        let mut changed = Vec::new();
        for (i, &word) in now.iter().enumerate() {
            let hva = start + i as u64 * PAGE;
            let old = known[first + i];
            if old & 1 == 1 && old != word && Some(hva) != except {
                let b = (hva - base) / block * block + base;
                if changed.last() != Some(&b) {
                    changed.push(b);
                }
            }
            known[first + i] = word;
        }
        drop(known);
        let hi = base + slot.backing.len();
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        for b in &changed {
            self.counters.kernel_changes.fetch_add(1, Ordering::Relaxed);
            pending.push((*b, (b + block).min(hi)));
        }
    }

    /// The huge-block size a slot's mappings can change in.
    fn block(b: &Backing) -> u64 {
        b.hugetlb().map_or(SIZE_2M, HugetlbSize::bytes)
    }

    fn protection(&self, hva: u64) -> Protection {
        let p = self.protections.lock().unwrap_or_else(|e| e.into_inner());
        p.iter().rev().find(|(s, e, _)| hva >= *s && hva < *e).map_or(Protection::ReadWrite, |(_, _, p)| *p)
    }

    fn regions(&self, start: u64, end: u64) -> Vec<PageRegion> {
        scan::scan(self.pagemap.file(), start, end).unwrap_or_default()
    }

    fn page(&self, slot: &Slot, hva: u64) -> Option<HostPage> {
        let page = hva & !(PAGE - 1);
        let regions = self.regions(page, page + PAGE);
        let r = regions.first().filter(|r| r.categories.contains(Categories::PRESENT))?;
        let size = if r.categories.contains(Categories::HUGE) {
            slot.backing.hugetlb().map_or(PageSize::Size2M, HugetlbSize::page_size)
        } else {
            PageSize::Size4K
        };
        let zero = r.categories.contains(Categories::PFNZERO);
        let pfn = self
            .pfns
            .then(|| self.pagemap.entry(hva).ok().and_then(|e| e.pfn()))
            .flatten()
            .filter(|&p| p != 0)
            .unwrap_or(hva >> 12);
        let writable = !zero && self.protection(hva) == Protection::ReadWrite;
        Some(HostPage::new(Pfn(pfn), size, writable, slot.backing.kind()))
    }

    /// Give the MMU the invalidations of blocks the kernel changed on its own (see the
    /// [module docs](self)): those seen while faulting pages in, and, when `thorough` or at most
    /// every 10 ms, those found by comparing every slot with the kernel's mappings (khugepaged,
    /// compaction). Call after every fault the MMU handled, and thoroughly before an audit.
    pub fn sync(&self, notifier: &dyn MmuNotifier, thorough: bool) {
        let due = {
            let mut last = self.last_resync.lock().unwrap_or_else(|e| e.into_inner());
            let due = thorough || last.elapsed() >= RESYNC_EVERY;
            if due {
                *last = std::time::Instant::now();
            }
            due
        };
        if due {
            for slot in &self.slots {
                self.refresh(slot, slot.backing.hva(), slot.backing.hva() + slot.backing.len(), None);
            }
        }
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        for (start, end) in pending {
            notifier.invalidate_range_start(Hva(start), Hva(end));
            notifier.invalidate_range_end(Hva(start), Hva(end));
            self.counters.invalidations.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether every change the kernel made while faulting has been given to the MMU.
    pub fn synced(&self) -> bool {
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).is_empty()
    }

    /// `[hva, hva + len)` widened to whole huge blocks of its slot, clipped to the slot.
    fn widen(slot: &Slot, hva: u64, len: u64) -> (u64, u64) {
        let block = Self::block(&slot.backing);
        let (lo, hi) = (slot.backing.hva(), slot.backing.hva() + slot.backing.len());
        ((hva / block * block).max(lo), (hva + len).next_multiple_of(block).min(hi))
    }

    fn slot_range(&self, hva: u64, len: u64) -> Result<&Slot, String> {
        let slot = self.slot_of(hva).ok_or_else(|| format!("host address {hva:#x} is in no memslot mapping"))?;
        if hva % PAGE != 0 || len % PAGE != 0 || len == 0 || hva + len > slot.backing.hva() + slot.backing.len() {
            return Err(format!("range {hva:#x}+{len:#x} is not whole pages inside memslot {}'s mapping", slot.id));
        }
        Ok(slot)
    }

    /// Make `change` to `[hva, hva + len)` (inside one slot), between `invalidate_range_start`
    /// and `invalidate_range_end` of the whole huge blocks it touches.
    ///
    /// # Errors
    /// The range is not inside one slot, or the system call failed (its errno in words).
    pub fn change(
        &self,
        hva: u64,
        len: u64,
        change: HostChange,
        notifier: &dyn MmuNotifier,
    ) -> Result<ChangeReport, String> {
        let slot = self.slot_range(hva, len)?;
        let (start, end) = Self::widen(slot, hva, len);
        let huge = |h: &Self| h.split(start, end).bytes_2m;
        let before = huge(self);
        let offset = hva - slot.backing.hva();
        notifier.invalidate_range_start(Hva(start), Hva(end));
        let r = match change {
            HostChange::Protect(p) => {
                let r = protect(&slot.backing, offset, len, p);
                if r.is_ok() {
                    self.protections.lock().unwrap_or_else(|e| e.into_inner()).push((hva, hva + len, p));
                }
                r
            }
            HostChange::DontNeed => slot.backing.discard(offset, len).map_err(|e| e.to_string()),
            HostChange::Collapse => collapse(hva, len),
        };
        notifier.invalidate_range_end(Hva(start), Hva(end));
        self.counters.invalidations.fetch_add(1, Ordering::Relaxed);
        self.remember(slot, start, end);
        // MADV_COLLAPSE fails with EAGAIN/EINVAL for blocks it could not collapse; what it did
        // collapse stays, and the report says how much is huge.
        if let Err(e) = r {
            if change != HostChange::Collapse {
                return Err(e);
            }
        }
        Ok(ChangeReport { invalidated: vec![(start, end)], pages: len / PAGE, huge_bytes: (before, huge(self)) })
    }

    /// Clear the MMU's accessed state over `[hva, hva + len)` as the kernel's page aging would
    /// (`clear_young`); returns whether anything was young. The kernel's own LRU is not touched.
    pub fn age(&self, hva: u64, len: u64, notifier: &dyn MmuNotifier) -> Result<bool, String> {
        self.slot_range(hva, len)?;
        Ok(notifier.clear_young(Hva(hva), Hva(hva + len)))
    }

    /// `[start, end)` by host leaf size, from `PAGEMAP_SCAN` (`HUGE` sized by the slot's backing).
    pub fn split(&self, start: u64, end: u64) -> LeafSplit {
        let mut s = LeafSplit::default();
        let mut present = 0;
        for r in self.regions(start, end) {
            let (a, b) = (r.start.max(start), r.end.min(end));
            if b <= a || !r.categories.contains(Categories::PRESENT) {
                continue;
            }
            let bytes = b - a;
            present += bytes;
            if r.categories.contains(Categories::PFNZERO) {
                s.bytes_zero += bytes;
            }
            let hugetlb = self.slot_of(a).and_then(|sl| sl.backing.hugetlb());
            match (r.categories.contains(Categories::HUGE), hugetlb) {
                (true, Some(HugetlbSize::Size1G)) => s.bytes_1g += bytes,
                (true, _) => s.bytes_2m += bytes,
                (false, _) => s.bytes_4k += bytes,
            }
        }
        s.bytes_absent = (end - start) - present;
        s
    }

    /// Host leaves mapping the slots now: `[4K, 2M, 1G]` (the huge zero page included).
    pub fn leaves(&self) -> [u64; 3] {
        let mut out = [0; 3];
        for slot in &self.slots {
            let s = self.split(slot.backing.hva(), slot.backing.hva() + slot.backing.len());
            out[0] += s.bytes_4k / PAGE;
            out[1] += s.bytes_2m / SIZE_2M;
            out[2] += s.bytes_1g / (1 << 30);
        }
        out
    }

    /// `(pages faulted in, invalidations given to the MMU, kernel changes seen while faulting)`.
    pub fn counters(&self) -> (u64, u64, u64) {
        let c = &self.counters;
        (
            c.fault_ins.load(Ordering::Relaxed),
            c.invalidations.load(Ordering::Relaxed),
            c.kernel_changes.load(Ordering::Relaxed),
        )
    }

    /// Check what the run relies on: every kernel change seen while faulting was given to the
    /// MMU, and hugetlb slots are mapped only by their own page size (hugetlb never splits).
    ///
    /// # Errors
    /// The first thing that does not hold.
    pub fn audit(&self) -> Result<(), String> {
        if !self.synced() {
            return Err("the kernel changed host mappings the MMU has not been told about".into());
        }
        for slot in &self.slots {
            let Some(h) = slot.backing.hugetlb() else { continue };
            let s = self.split(slot.backing.hva(), slot.backing.hva() + slot.backing.len());
            let small = if h == HugetlbSize::Size1G { s.bytes_4k + s.bytes_2m } else { s.bytes_4k + s.bytes_1g };
            if small > 0 {
                return Err(format!(
                    "memslot {}: {small:#x} bytes of its hugetlb {} mapping are not {}-mapped",
                    slot.id,
                    h.name(),
                    h.name()
                ));
            }
        }
        Ok(())
    }
}

/// `madvise(MADV_COLLAPSE)` (Linux 6.1+; not in rustix).
fn collapse(hva: u64, len: u64) -> Result<(), String> {
    // SAFETY: the range lies inside a slot's mapping (checked by `slot_range`), which
    // this host owns and never references from Rust; MADV_COLLAPSE keeps the contents.
    let r = unsafe { libc::madvise(hva as *mut libc::c_void, len as usize, libc::MADV_COLLAPSE) };
    if r == 0 {
        Ok(())
    } else {
        Err(format!("madvise(MADV_COLLAPSE) {hva:#x}+{len:#x}: {}", std::io::Error::last_os_error()))
    }
}

fn protect(b: &Backing, offset: u64, len: u64, p: Protection) -> Result<(), String> {
    match p {
        Protection::Read => b.mprotect(offset, len, true).map_err(|e| e.to_string()),
        Protection::ReadWrite => b.mprotect(offset, len, false).map_err(|e| e.to_string()),
        Protection::None => {
            let at = (b.hva() + offset) as *mut std::ffi::c_void;
            // SAFETY: the range lies inside `b`'s mapping (checked by `slot_range`), which this
            // host owns and never references from Rust, so no Rust reference can see it change.
            unsafe { rustix::mm::mprotect(at, len as usize, rustix::mm::MprotectFlags::empty()) }
                .map_err(|e| format!("mprotect(PROT_NONE) {:#x}+{len:#x}: {e}", b.hva() + offset))
        }
    }
}

impl HostMemory for RunHost {
    fn fault_in(&self, hva: Hva, write: bool) -> Result<HostPage, HostError> {
        let hva = hva.0;
        let slot = self.slot_of(hva).ok_or(HostError::NotMapped { hva: Hva(hva) })?;
        match self.protection(hva) {
            Protection::None => return Err(HostError::NotMapped { hva: Hva(hva) }),
            Protection::Read if write => return Err(HostError::ReadOnly { hva: Hva(hva) }),
            _ => {}
        }
        let b = &slot.backing;
        let unit = b.hugetlb().map_or(PAGE, HugetlbSize::bytes);
        let off = (hva - b.hva()) & !(unit - 1);
        let advice = if write { Advice::LinuxPopulateWrite } else { Advice::LinuxPopulateRead };
        self.counters.fault_ins.fetch_add(1, Ordering::Relaxed);
        b.madvise(off, unit, advice).map_err(|e| match e {
            Error::Io { ref source, .. } if source.raw_os_error() == Some(12) => {
                HostError::OutOfMemory { hva: Hva(hva), kind: b.kind() }
            }
            _ => HostError::Again { hva: Hva(hva) },
        })?;
        // Whatever else the kernel changed in the page's huge block (a write to the huge zero
        // page splits or replaces it) is queued for `sync`.
        let (start, end) = Self::widen(slot, hva & !(PAGE - 1), PAGE);
        self.refresh(slot, start, end, Some(hva & !(PAGE - 1)));
        self.page(slot, hva).ok_or(HostError::Again { hva: Hva(hva) })
    }

    fn lookup(&self, hva: Hva) -> Option<HostPage> {
        let hva = hva.0;
        let slot = self.slot_of(hva)?;
        if self.protection(hva) == Protection::None {
            return None;
        }
        self.page(slot, hva)
    }

    /// The kernel tracks the dirtiness of this process's pages itself; nothing to record.
    fn mark_dirty(&self, _pfn: Pfn, _pages: u64) {}

    /// The kernel ages this process's pages itself; nothing to record.
    fn mark_accessed(&self, _pfn: Pfn, _pages: u64) {}
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use slat_mmu::{HostMemory, Hva, MmuNotifier};
    use slat_pt::PageSize;

    use super::*;

    /// Records the ranges invalidated.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<(u64, u64)>>);

    impl MmuNotifier for Recorder {
        fn invalidate_range_start(&self, start: Hva, end: Hva) {
            self.0.lock().unwrap().push((start.0, end.0));
        }
        fn invalidate_range_end(&self, _: Hva, _: Hva) {}
        fn clear_young(&self, _: Hva, _: Hva) -> bool {
            false
        }
        fn test_young(&self, _: Hva, _: Hva) -> bool {
            false
        }
    }

    fn thp_available() -> bool {
        let mode = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
        scan::supported() && !mode.contains("[never]")
    }

    fn anon_thp(len: u64) -> RunHost {
        let slots = [SlotRequest {
            id: 0,
            backing: SlotBacking::Anonymous { thp: ThpAdvice::Hugepage },
            len,
            read_only: false,
        }];
        RunHost::new(&RunHostConfig { tmpfs_huge: TmpfsHuge::Never, hugetlb_2m: 0, hugetlb_1g: 0 }, &slots).unwrap()
    }

    #[test]
    fn a_4k_dontneed_invalidates_the_whole_thp_and_leaves_it_pte_mapped() {
        if !thp_available() {
            eprintln!("skipping: THP off or no PAGEMAP_SCAN");
            return;
        }
        let host = anon_thp(8 << 20);
        let hva = host.slot_hva(0).unwrap();
        assert_eq!(host.fault_in(Hva(hva + SIZE_2M), true).unwrap().size, PageSize::Size2M);
        let mmu = Recorder::default();
        let r = host.change(hva + SIZE_2M + PAGE, PAGE, HostChange::DontNeed, &mmu).unwrap();
        assert_eq!(r.invalidated, vec![(hva + SIZE_2M, hva + 2 * SIZE_2M)]);
        assert_eq!(*mmu.0.lock().unwrap(), r.invalidated);
        assert_eq!(r.huge_bytes, (SIZE_2M, 0));
        assert_eq!(host.lookup(Hva(hva + SIZE_2M)).unwrap().size, PageSize::Size4K);
        assert!(host.lookup(Hva(hva + SIZE_2M + PAGE)).is_none());
        // The change was told to the MMU as it happened: nothing is left for `sync`.
        host.sync(&mmu, true);
        assert_eq!(mmu.0.lock().unwrap().len(), 1);
        assert!(host.audit().is_ok());
    }

    #[test]
    fn a_write_after_a_read_of_the_huge_zero_page_is_found_and_invalidated() {
        if !thp_available() {
            eprintln!("skipping: THP off or no PAGEMAP_SCAN");
            return;
        }
        let zero = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/use_zero_page").unwrap_or_default();
        let host = anon_thp(4 << 20);
        let hva = host.slot_hva(0).unwrap();
        let read = host.fault_in(Hva(hva), false).unwrap();
        if zero.trim() != "1" || read.writable {
            eprintln!("skipping: no huge zero page for reads here");
            return;
        }
        assert_eq!(read.size, PageSize::Size2M);
        let write = host.fault_in(Hva(hva + PAGE), true).unwrap();
        assert!(write.writable);
        // The kernel replaced (or split) the zero page under the whole block: queued, not lost.
        assert!(!host.synced());
        assert!(host.audit().is_err());
        let mmu = Recorder::default();
        host.sync(&mmu, false);
        assert_eq!(*mmu.0.lock().unwrap(), vec![(hva, hva + SIZE_2M)]);
        assert!(host.synced());
        assert_eq!(host.counters().2, 1);
    }
}
