//! A pretend hypervisor embedding slat-mmu: everything an embedder writes, and nothing more.
//!
//! A real hypervisor implements four things for the MMU and names them in one [`Platform`]:
//! 1. **Frames** ([`FrameAllocator`]): where page-table pages come from. Here, an arena of
//!    memory set aside at start-up; "host-physical" addresses are arena offsets.
//! 2. **Host** ([`HostMemory`]): host virtual address to host page, as the host kernel maps it.
//!    Here, one 64 MiB guest-RAM region the pretend kernel backs with 2 MiB pages.
//! 3. **TLB** ([`Tlb`]): INVEPT / TLBI / HFENCE.GVMA, plus arm64 cache maintenance. Here, counters.
//! 4. **Lock**: any `lock_api::RawRwLock` (the default spins and needs no `std`).
//!
//! Then the vCPU loop hands every stage-2 fault (EPT violation) to [`Mmu::handle_fault`], the
//! host memory manager calls the [`MmuNotifier`] around every change of its mappings, and the
//! VMM drives dirty logging for live migration.
//!
//! Run it: `cargo run -p slat-mmu --example pretend_hypervisor`.

use std::collections::BTreeSet;
use std::error::Error;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use slat_mmu::{
    BackingKind, CacheMaintenance, DefaultRawLock, DirtyLogMode, FaultOutcome, Gfn, Gpa, HostError, HostMemory,
    HostPage, Hva, MemslotSpec, Mmu, MmuConfig, MmuNotifier, Pfn, Platform, Tlb,
};
use slat_pt::format::Ept4;
use slat_pt::{Access, FlushRange, Frame, FrameAllocator, PageSize};

const PAGE: u64 = 4096;
const MIB: u64 = 1 << 20;

/// Page-table frames: `frames` 4 KiB frames set aside at start-up. Frame `i` has the pretend
/// host-physical address `ARENA_PA + i * 4 KiB`.
struct Arena {
    mem: Box<[AtomicU64]>,
    free: Mutex<Vec<usize>>,
    live: AtomicUsize,
}

const ARENA_PA: u64 = 0x10_0000_0000;

impl Arena {
    fn new(frames: usize) -> Self {
        Arena {
            mem: (0..frames * 512).map(|_| AtomicU64::new(0)).collect(),
            free: Mutex::new((0..frames).rev().collect()),
            live: AtomicUsize::new(0),
        }
    }
}

impl FrameAllocator for Arena {
    fn alloc_zeroed(&self, count: usize) -> Option<Frame> {
        // EPT tables are single frames (arm64 concatenated roots would ask for more).
        if count != 1 {
            return None;
        }
        let i = self.free.lock().ok()?.pop()?;
        for e in &self.mem[i * 512..(i + 1) * 512] {
            e.store(0, Ordering::Relaxed);
        }
        self.live.fetch_add(1, Ordering::Relaxed);
        Some(Frame { pa: ARENA_PA + i as u64 * PAGE, ptr: NonNull::from(&self.mem[i * 512]) })
    }

    unsafe fn free(&self, pa: u64, count: usize) {
        debug_assert_eq!(count, 1);
        self.free.lock().unwrap().push(((pa - ARENA_PA) / PAGE) as usize);
        self.live.fetch_sub(1, Ordering::Relaxed);
    }

    fn frame_ptr(&self, pa: u64) -> NonNull<AtomicU64> {
        NonNull::from(&self.mem[((pa - ARENA_PA) / PAGE) as usize * 512])
    }

    fn live_frames(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }
}

/// Guest RAM as the pretend host kernel maps it: `len` bytes at `hva`, backed by 2 MiB pages
/// at host-physical `pa`; it remembers which host pages the guest dirtied (what the kernel's
/// page flags would say).
struct GuestRam {
    hva: u64,
    len: u64,
    pa: u64,
    dirty: Mutex<BTreeSet<u64>>,
}

impl HostMemory for GuestRam {
    fn fault_in(&self, hva: Hva, _write: bool) -> Result<HostPage, HostError> {
        self.lookup(hva).ok_or(HostError::NotMapped { hva })
    }

    fn lookup(&self, hva: Hva) -> Option<HostPage> {
        let off = hva.0.checked_sub(self.hva).filter(|&o| o < self.len)?;
        Some(HostPage::new(Pfn::of_hpa(self.pa + off), PageSize::Size2M, true, BackingKind::Hugetlbfs))
    }

    fn mark_dirty(&self, pfn: Pfn, pages: u64) {
        self.dirty.lock().unwrap().extend((0..pages).map(|i| pfn.0 + i));
    }

    fn mark_accessed(&self, _pfn: Pfn, _pages: u64) {}
}

/// The TLB: a real x86 hypervisor would run INVEPT (single-context) here.
#[derive(Default)]
struct Invept {
    ranges: AtomicU64,
    all: AtomicU64,
}

impl Tlb for Invept {
    fn flush_range(&self, _range: &FlushRange) {
        self.ranges.fetch_add(1, Ordering::Relaxed);
    }
    fn flush_all(&self) {
        self.all.fetch_add(1, Ordering::Relaxed);
    }
    fn cache_maintenance(&self) -> CacheMaintenance {
        CacheMaintenance::NOT_NEEDED // x86: coherent caches
    }
    fn clean_dcache(&self, _pa: u64, _len: u64) {}
    fn invalidate_icache(&self, _pa: u64, _len: u64) {}
}

/// The pretend hypervisor's parts, named once.
struct PretendHv;

impl Platform for PretendHv {
    type Frames = Arena;
    type Host = GuestRam;
    type Tlb = Invept;
    type Lock = DefaultRawLock;
}

fn main() -> Result<(), Box<dyn Error>> {
    let ram = GuestRam { hva: 0x7f00_0000_0000, len: 64 * MIB, pa: 0x2_0000_0000, dirty: Mutex::default() };
    let config = MmuConfig::default().with_dirty_log(DirtyLogMode::SplitOnFault);
    let mmu = Mmu::<Ept4, PretendHv>::new(config, Arena::new(256), ram, Invept::default())?;
    println!("EPTP root table at {:#x}", mmu.root_pa());

    // The VMM's KVM_SET_USER_MEMORY_REGION: guest-physical 1 GiB.. is the 64 MiB at the hva.
    mmu.add_memslot(MemslotSpec {
        id: 0,
        base_gfn: Gpa(1 << 30).gfn(),
        npages: (64 * MIB) / PAGE,
        hva: Hva(0x7f00_0000_0000),
        readonly: false,
        log_dirty: false,
    })?;

    // The vCPU loop: the guest touches its RAM, every EPT violation goes to the MMU.
    for i in 0..8 {
        let gpa = Gpa((1 << 30) + i * 2 * MIB + 0x123);
        match mmu.handle_fault(gpa, Access::Write)? {
            FaultOutcome::Mapped { size, .. } => println!("EPT violation at {gpa}: mapped a {size} leaf"),
            FaultOutcome::Retry => println!("EPT violation at {gpa}: the host was changing it, retry"),
            other => println!("EPT violation at {gpa}: {other:?}"),
        }
    }
    let s = mmu.stats();
    assert_eq!((s.pages_4k, s.pages_2m), (0, 8));

    // Live migration: dirty logging write-protects the slot; the next write splits its 2 MiB
    // leaf and logs exactly one 4 KiB page.
    mmu.set_dirty_logging(0, true)?;
    mmu.handle_fault(Gpa((1 << 30) + 5 * PAGE), Access::Write)?;
    let bitmap = mmu.get_dirty_log(0)?;
    let dirty: Vec<u64> =
        (0..bitmap.len() as u64 * 64).filter(|&p| bitmap[(p / 64) as usize] & (1 << (p % 64)) != 0).collect();
    println!("dirty pages after one write: {dirty:?}");
    assert_eq!(dirty, [5]);
    println!("{}", mmu.explain(Gfn(((1 << 30) >> 12) + 5)));
    mmu.set_dirty_logging(0, false)?;

    // The host kernel migrates the second 2 MiB page: it calls the notifier around the change.
    let (start, end) = (Hva(0x7f00_0000_0000 + 2 * MIB), Hva(0x7f00_0000_0000 + 4 * MIB));
    mmu.invalidate_range_start(start, end);
    mmu.invalidate_range_end(start, end);
    println!(
        "after the host's invalidation: {} 2M leaves; INVEPT ranges {}, all {}",
        mmu.stats().pages_2m,
        mmu.tlb().ranges.load(Ordering::Relaxed),
        mmu.tlb().all.load(Ordering::Relaxed)
    );
    println!("host pages the guest dirtied: {}", mmu.host().dirty.lock().unwrap().len());

    // Every invariant of DESIGN.md, recounted from the tables.
    let report = mmu.audit().map_err(|e| format!("audit: {:?}", e.violations))?;
    println!("audit: {report:?}");
    Ok(())
}
