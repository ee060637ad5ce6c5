//! "Host" memory for the guest: a [`HostMemory`] over the hypervisor's own RAM that hands out
//! 4 KiB pages (from a pool, scattered), 2 MiB chunks ("THP") and one 1 GiB chunk
//! ("hugetlbfs 1G"), so that slat meets every leaf size.
//!
//! Host virtual addresses (hva) are numbers in three windows, one per backing; the host
//! physical address behind each is identity mapped in the hypervisor, so [`BareHost::ptr`] can
//! read and write what the guest sees.

use alloc::collections::BTreeMap;
use core::sync::atomic::{AtomicU64, Ordering};

use slat_mmu::{BackingKind, HostError, HostMemory, HostPage, Hva, Pfn};
use slat_pt::{PageSize, PAGE_SIZE};

/// hva window of 4 KiB-backed memory.
pub const HVA_4K: u64 = 0x10_0000_0000;
/// hva window of 2 MiB-backed memory.
pub const HVA_2M: u64 = 0x20_0000_0000;
/// hva window of 1 GiB-backed memory.
pub const HVA_1G: u64 = 0x40_0000_0000;

/// Where the host's memory lives in physical memory.
#[derive(Debug, Clone, Copy)]
pub struct HostLayout {
    /// Pool of 4 KiB pages (base, bytes).
    pub pool_4k: (u64, u64),
    /// 2 MiB-aligned region handed out as 2 MiB chunks (base, bytes).
    pub thp: (u64, u64),
    /// A 1 GiB-aligned GiB.
    pub giga: u64,
}

struct Small {
    /// hva page -> hpa page.
    map: BTreeMap<u64, u64>,
    /// Next unused pool page (handed out from the top, so the mapping is scattered and
    /// reversed relative to the hva order).
    next: u64,
}

/// The host memory manager of the bare-metal hypervisors.
pub struct BareHost {
    layout: HostLayout,
    small: spin::Mutex<Small>,
    dirty_marks: AtomicU64,
    accessed_marks: AtomicU64,
    /// Spin iterations every `fault_in` of the 2 MiB window takes (0: none).
    slow_fault_in: AtomicU64,
}

impl BareHost {
    /// A host over `layout`.
    pub fn new(layout: HostLayout) -> Self {
        let top = layout.pool_4k.0 + layout.pool_4k.1;
        BareHost {
            layout,
            small: spin::Mutex::new(Small { map: BTreeMap::new(), next: top }),
            dirty_marks: AtomicU64::new(0),
            accessed_marks: AtomicU64::new(0),
            slow_fault_in: AtomicU64::new(0),
        }
    }

    /// Host physical address behind `hva`, faulting nothing in.
    pub fn hpa(&self, hva: u64) -> Option<u64> {
        self.lookup(Hva(hva)).map(|p| p.pfn.hpa() + (hva & (PAGE_SIZE - 1)))
    }

    /// Pointer to the 32-bit word at `hva` (faulting the host page in).
    pub fn ptr(&self, hva: u64) -> *mut u32 {
        let p = self.fault_in(Hva(hva), true).expect("hva inside a host window");
        (p.pfn.hpa() + (hva & (PAGE_SIZE - 1))) as *mut u32
    }

    /// Read the word at `hva`.
    pub fn read(&self, hva: u64) -> u32 {
        // SAFETY: `ptr` is an identity-mapped, 4-byte aligned host address owned by this host.
        unsafe { core::ptr::read_volatile(self.ptr(hva)) }
    }

    /// Write the word at `hva`.
    pub fn write(&self, hva: u64, v: u32) {
        // SAFETY: as for `read`.
        unsafe { core::ptr::write_volatile(self.ptr(hva), v) }
    }

    /// Migrate the 4 KiB page at `hva` (in the 4 KiB window) to a fresh pool page, copying its
    /// contents, as page migration or compaction would. The caller brackets this with the MMU's
    /// `invalidate_range_start` / `invalidate_range_end`. Returns (old hpa, new hpa).
    pub fn migrate_4k(&self, hva: u64) -> Option<(u64, u64)> {
        let page = hva & !(PAGE_SIZE - 1);
        let mut s = self.small.lock();
        let old = *s.map.get(&page)?;
        let new = Self::take_page(&mut s, self.layout.pool_4k.0)?;
        // SAFETY: both pages are identity-mapped pool pages owned by this host, distinct.
        unsafe { core::ptr::copy_nonoverlapping(old as *const u8, new as *mut u8, PAGE_SIZE as usize) };
        s.map.insert(page, new);
        Some((old, new))
    }

    /// Make every `fault_in` in the 2 MiB window spin `iterations` times first, as a host whose
    /// page fault-in is slow (so two vCPUs' faults on one block overlap even when the emulator's
    /// threads are time-sliced on a loaded machine).
    pub fn set_slow_fault_in(&self, iterations: u64) {
        self.slow_fault_in.store(iterations, Ordering::Relaxed);
    }

    /// Host `mark_dirty` calls seen (in pages).
    pub fn dirty_marks(&self) -> u64 {
        self.dirty_marks.load(Ordering::Relaxed)
    }

    fn take_page(s: &mut Small, floor: u64) -> Option<u64> {
        if s.next - PAGE_SIZE < floor {
            return None;
        }
        s.next -= PAGE_SIZE;
        // SAFETY: a fresh pool page, identity mapped, owned by this host.
        unsafe { core::ptr::write_bytes(s.next as *mut u8, 0, PAGE_SIZE as usize) };
        Some(s.next)
    }

    fn window(&self, hva: u64) -> Option<(PageSize, u64)> {
        let l = &self.layout;
        if (HVA_4K..HVA_4K + l.pool_4k.1).contains(&hva) {
            Some((PageSize::Size4K, 0))
        } else if (HVA_2M..HVA_2M + l.thp.1).contains(&hva) {
            Some((PageSize::Size2M, l.thp.0 + (hva - HVA_2M)))
        } else if (HVA_1G..HVA_1G + PageSize::Size1G.bytes()).contains(&hva) {
            Some((PageSize::Size1G, l.giga + (hva - HVA_1G)))
        } else {
            None
        }
    }

    fn page(size: PageSize, hpa: u64) -> HostPage {
        let kind = match size {
            PageSize::Size4K | PageSize::Size2M => BackingKind::Anonymous,
            PageSize::Size1G => BackingKind::Hugetlbfs,
        };
        HostPage::new(Pfn(hpa / PAGE_SIZE), size, true, kind)
    }
}

impl HostMemory for BareHost {
    fn fault_in(&self, hva: Hva, _write: bool) -> Result<HostPage, HostError> {
        let hva = hva.0;
        match self.window(hva) {
            Some((PageSize::Size4K, _)) => {
                let page = hva & !(PAGE_SIZE - 1);
                let mut s = self.small.lock();
                let hpa = match s.map.get(&page) {
                    Some(&p) => p,
                    None => {
                        let p = Self::take_page(&mut s, self.layout.pool_4k.0)
                            .ok_or(HostError::OutOfMemory { hva: Hva(hva), kind: BackingKind::Anonymous })?;
                        s.map.insert(page, p);
                        p
                    }
                };
                Ok(Self::page(PageSize::Size4K, hpa))
            }
            Some((size, hpa)) => {
                if size == PageSize::Size2M {
                    for _ in 0..self.slow_fault_in.load(Ordering::Relaxed) {
                        core::hint::spin_loop();
                    }
                }
                Ok(Self::page(size, hpa & !(PAGE_SIZE - 1)))
            }
            None => Err(HostError::NotMapped { hva: Hva(hva) }),
        }
    }

    fn lookup(&self, hva: Hva) -> Option<HostPage> {
        let hva = hva.0;
        match self.window(hva)? {
            (PageSize::Size4K, _) => {
                let hpa = *self.small.lock().map.get(&(hva & !(PAGE_SIZE - 1)))?;
                Some(Self::page(PageSize::Size4K, hpa))
            }
            (size, hpa) => Some(Self::page(size, hpa & !(PAGE_SIZE - 1))),
        }
    }

    fn mark_dirty(&self, _pfn: Pfn, pages: u64) {
        self.dirty_marks.fetch_add(pages, Ordering::Relaxed);
    }

    fn mark_accessed(&self, _pfn: Pfn, pages: u64) {
        self.accessed_marks.fetch_add(pages, Ordering::Relaxed);
    }
}

impl BareHost {
    /// Copy `bytes` to `hva` (inside one host page), faulting the page in.
    pub fn write_bytes(&self, hva: u64, bytes: &[u8]) {
        let p = self.ptr(hva) as *mut u8;
        debug_assert!((hva & (PAGE_SIZE - 1)) + bytes.len() as u64 <= PAGE_SIZE);
        // SAFETY: `p` is an identity-mapped host page owned by this host; the copy stays inside it.
        unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len()) };
    }
}
