//! Simulated hardware: guest page tables, per-vCPU TLBs and 2D walks over the real stage-2 tables.
//!
//! [`Hardware::access`] performs one guest memory access on one vCPU: a TLB lookup (first-level
//! arrays per page size, then the shared STLB), and on a miss a two-dimensional walk of the
//! guest tables ([`GuestTables`]) where every guest table read and the final data address are
//! translated by walking the real stage-2 [`PageTable`] (which sets its accessed/dirty state as
//! hardware does). The result is a hit, a walk with its reference count, a stage-2 fault on a
//! specific gpa (the caller runs the MMU's fault handler and retries) or a guest fault.
//!
//! The MMU flushes through [`SimTlb`] (from [`Hardware::tlb_handle`]), which implements
//! [`slat_mmu::Tlb`] and reaches every vCPU. In checked mode ([`HwConfig::checked`]) every hit
//! and every walk is compared with the current stage-2 tables, so a translation that survived a
//! flush it should not have is reported as a [`Violation`].
//!
//! ```
//! use slat_pt::format::Ept4;
//! use slat_pt::{Access, FlushBatch, Gpa, LeafAttrs, Mapping, PageSize, PageTable, Perms, SimFrameAllocator};
//! use slat_sim::hw::{AccessOutcome, GuestPaging, GuestRegion, GuestTables, Hardware, HwConfig};
//!
//! // Guest: 2 MiB of 4 KiB pages at gva 0x1000_0000 -> gpa 0; its tables at gpa 1 GiB.
//! let region = GuestRegion::new(0x1000_0000, 2 << 20, PageSize::Size4K, 0);
//! let guest = GuestTables::new(GuestPaging::FourLevel, 0x4000_0000, [region]).unwrap();
//! let mut hw = Hardware::new(HwConfig::checked(), 1, guest).unwrap();
//!
//! // Stage 2: map data and guest tables with 2 MiB leaves.
//! let frames = SimFrameAllocator::new(0x100_0000_0000, 16 << 20);
//! let mut s2 = PageTable::<Ept4, _>::new(&frames).unwrap();
//! let mut batch = FlushBatch::new();
//! for (gpa, hpa) in [(0, 0x8000_0000u64), (0x4000_0000, 0x9000_0000)] {
//!     let m = Mapping { pa: hpa, size: PageSize::Size2M, attrs: LeafAttrs::ram(Perms::RW) };
//!     s2.map(Gpa(gpa), 2 << 20, &m, &mut batch, &hw.tlb_handle()).unwrap();
//! }
//! slat_mmu::tlb::apply(&hw.tlb_handle(), &batch);
//!
//! // First access walks: 4 guest levels x (3 stage-2 refs + 1) + 3 = 19 references.
//! let out = hw.access(0, 0x1000_1234, Access::Read, &s2).unwrap();
//! assert!(matches!(out, AccessOutcome::Walked(w) if w.refs == 19 && w.hpa == 0x8000_1234));
//! // Second access hits.
//! assert!(matches!(hw.access(0, 0x1000_1238, Access::Read, &s2).unwrap(), AccessOutcome::Hit { .. }));
//! assert_eq!(hw.stats().isolation_violations, 0);
//! ```

mod check;
mod config;
mod flush;
mod guest;
mod stats;
mod tlb;
mod walk;
mod walk_cache;

use std::sync::Arc;

use slat_pt::{Access, Format, FrameAllocator, Gpa, HwWalk, PageSize, PageTable, Perms, Translation, WalkFault};

/// The stage-2 tables as the hardware model sees them: a bare [`PageTable`], or an MMU's
/// [`TablesView`](slat_mmu::TablesView).
pub trait Stage2 {
    /// Whether the format's hardware sets dirty state (`Format::HW_DIRTY`).
    const HW_DIRTY: bool;
    /// The CPU's stage-2 walk for `access` at `gpa` (sets accessed / dirty state as hardware does).
    fn hw_walk(&self, gpa: u64, access: Access) -> HwWalk;
    /// The current leaf translating `gpa`.
    fn translate(&self, gpa: u64) -> Option<Translation>;
}

impl<F: Format, A: FrameAllocator> Stage2 for PageTable<F, A> {
    const HW_DIRTY: bool = F::HW_DIRTY;
    fn hw_walk(&self, gpa: u64, access: Access) -> HwWalk {
        PageTable::hw_walk(self, Gpa(gpa), access)
    }
    fn translate(&self, gpa: u64) -> Option<Translation> {
        PageTable::translate(self, Gpa(gpa))
    }
}

impl<F: Format, A: FrameAllocator> Stage2 for slat_mmu::TablesView<'_, F, A> {
    const HW_DIRTY: bool = F::HW_DIRTY;
    fn hw_walk(&self, gpa: u64, access: Access) -> HwWalk {
        slat_mmu::TablesView::hw_walk(self, slat_mmu::Gpa(gpa), access)
    }
    fn translate(&self, gpa: u64) -> Option<Translation> {
        slat_mmu::TablesView::translate(self, slat_mmu::Gpa(gpa))
    }
}

pub use check::{Violation, ViolationKind, WalkChecker, WalkRecord};
pub use config::{HwConfig, TlbArrayConfig};
pub use flush::SimTlb;
pub use guest::{GuestPaging, GuestRegion, GuestTables, GuestTranslation, GUEST_PTE_BYTES};
pub use stats::HwStats;
pub use tlb::{CachedTranslation, TlbLevel};

use check::ViolationLog;
use flush::FlushLog;
use tlb::{flags, needed_flags, Entry, TlbHit, VcpuTlb};
use walk::{WalkEnd, Walker};
use walk_cache::WalkCaches;

/// Errors of the hardware model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HwError {
    /// A TLB array's geometry is impossible.
    #[error("TLB array {array}: {entries} entries in {ways}-way sets is not a power-of-two number of sets")]
    InvalidTlbArray {
        /// Which array.
        array: &'static str,
        /// Configured entries.
        entries: usize,
        /// Configured ways.
        ways: usize,
    },
    /// The hardware needs at least one vCPU.
    #[error("at least one vCPU is needed")]
    NoVcpus,
    /// An access named a vCPU that does not exist.
    #[error("vCPU {vcpu} does not exist ({vcpus} vCPUs)")]
    NoSuchVcpu {
        /// The vCPU asked for.
        vcpu: usize,
        /// vCPUs configured.
        vcpus: usize,
    },
    /// A guest region is empty or not aligned to its page size.
    #[error("guest region gva {gva:#x} len {len:#x} -> gpa {gpa:#x} is empty or not aligned to {page_size}")]
    RegionMisaligned {
        /// Region gva.
        gva: u64,
        /// Region length.
        len: u64,
        /// Region gpa.
        gpa: u64,
        /// Its guest page size.
        page_size: PageSize,
    },
    /// A guest region lies outside the gva space (or its gpa range overflows).
    #[error("guest region gva {gva:#x} len {len:#x} exceeds the {gva_bits}-bit gva space")]
    RegionOutOfRange {
        /// Region gva.
        gva: u64,
        /// Region length.
        len: u64,
        /// Width of the gva space.
        gva_bits: u32,
    },
    /// Two guest regions overlap.
    #[error("guest regions at gva {first:#x} and {second:#x} overlap")]
    RegionOverlap {
        /// gva of the first region.
        first: u64,
        /// gva of the region overlapping it.
        second: u64,
    },
    /// The guest table area is not 4 KiB aligned or does not fit the address space.
    #[error("guest table area at gpa {gpa:#x} is misaligned or too large")]
    TableAreaMisaligned {
        /// Its gpa.
        gpa: u64,
    },
}

/// A fault raised by stage 2 during an access: the caller handles it (the MMU's fault path) and
/// retries the access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stage2Fault {
    /// The accessed gva.
    pub gva: u64,
    /// The gpa stage 2 could not translate: a guest table entry, or the data address.
    pub gpa: u64,
    /// The access to report: [`Access::Read`] for a guest table read, the data access otherwise.
    pub access: Access,
    /// Why stage 2 faulted.
    pub fault: WalkFault,
    /// Whether `gpa` is a guest page-table entry (rather than the data).
    pub on_guest_table: bool,
    /// Memory references made before the fault.
    pub refs: u32,
}

/// Result of one guest access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessOutcome {
    /// A TLB hit: no memory references for translation.
    Hit {
        /// hpa of the accessed byte.
        hpa: u64,
        /// Which TLB level hit.
        level: TlbLevel,
    },
    /// A TLB miss resolved by a 2D walk; the translation is now cached.
    Walked(WalkRecord),
    /// Stage 2 faulted during the walk.
    Stage2Fault(Stage2Fault),
    /// The guest's own tables do not map the gva (a guest page fault, not the MMU's business).
    GuestFault {
        /// The gva.
        gva: u64,
        /// Memory references made before the fault.
        refs: u32,
    },
}

impl AccessOutcome {
    /// hpa of the accessed byte, when the access completed.
    pub fn hpa(&self) -> Option<u64> {
        match self {
            AccessOutcome::Hit { hpa, .. } => Some(*hpa),
            AccessOutcome::Walked(w) => Some(w.hpa),
            _ => None,
        }
    }

    /// Memory references spent on translation (0 for a hit).
    pub fn refs(&self) -> u32 {
        match self {
            AccessOutcome::Hit { .. } => 0,
            AccessOutcome::Walked(w) => w.refs,
            AccessOutcome::Stage2Fault(f) => f.refs,
            AccessOutcome::GuestFault { refs, .. } => *refs,
        }
    }
}

/// Counters kept by the hardware itself (flush request counts live in the shared log).
#[derive(Debug, Default, Clone, Copy)]
struct Counters {
    accesses: u64,
    l1_hits: u64,
    stlb_hits: u64,
    misses: u64,
    walk_refs: u64,
    stage2_faults: u64,
    guest_faults: u64,
    psc_hits: u64,
    nested_tlb_hits: u64,
    entries_invalidated: u64,
    walk_cache_invalidated: u64,
}

/// One vCPU's translation hardware.
#[derive(Debug, Clone)]
struct Vcpu {
    tlb: VcpuTlb,
    walk_caches: Option<WalkCaches>,
}

/// The simulated translation hardware of a VM: one TLB (and optional walk caches) per vCPU,
/// the guest's page tables, and the 2D walker.
pub struct Hardware {
    config: HwConfig,
    guest: GuestTables,
    vcpus: Vec<Vcpu>,
    flushes: Arc<FlushLog>,
    counters: Counters,
    violations: ViolationLog,
    checker: Option<WalkChecker>,
}

impl core::fmt::Debug for Hardware {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Hardware")
            .field("config", &self.config)
            .field("vcpus", &self.vcpus.len())
            .field("counters", &self.counters)
            .field("walk_checker", &self.checker.is_some())
            .finish_non_exhaustive()
    }
}

impl Hardware {
    /// Hardware for `vcpus` vCPUs running a guest with page tables `guest`.
    pub fn new(config: HwConfig, vcpus: usize, guest: GuestTables) -> Result<Self, HwError> {
        config.validate()?;
        if vcpus == 0 {
            return Err(HwError::NoVcpus);
        }
        let vcpu =
            Vcpu { tlb: VcpuTlb::new(&config), walk_caches: config.walk_caches.then(|| WalkCaches::new(&config)) };
        Ok(Hardware {
            violations: ViolationLog::new(config.max_violation_details),
            vcpus: vec![vcpu; vcpus],
            config,
            guest,
            flushes: Arc::default(),
            counters: Counters::default(),
            checker: None,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &HwConfig {
        &self.config
    }

    /// The guest's page tables.
    pub fn guest(&self) -> &GuestTables {
        &self.guest
    }

    /// Number of vCPUs.
    pub fn vcpus(&self) -> usize {
        self.vcpus.len()
    }

    /// Model a CPU that needs `cache` maintenance before stage-2 leaves are installed (arm64
    /// without FEAT_S2FWB / FEAT_DIC); the operations are counted in [`HwStats`].
    pub fn set_cache_maintenance(&self, cache: slat_mmu::CacheMaintenance) {
        self.flushes.set_cache_maintenance(cache);
    }

    /// A handle for the MMU: implements [`slat_mmu::Tlb`] over every vCPU's TLB.
    pub fn tlb_handle(&self) -> SimTlb {
        SimTlb::new(Arc::clone(&self.flushes))
    }

    /// Install (or remove) an external check run on every completed walk.
    pub fn set_walk_checker(&mut self, checker: Option<WalkChecker>) {
        self.checker = checker;
    }

    /// Perform one guest access of `kind` at `gva` on `vcpu`, translating through `stage2`.
    ///
    /// On a stage-2 fault nothing is cached; the caller resolves it and calls again.
    #[inline]
    pub fn access<S: Stage2 + ?Sized>(
        &mut self,
        vcpu: usize,
        gva: u64,
        kind: Access,
        stage2: &S,
    ) -> Result<AccessOutcome, HwError> {
        if self.flushes.is_pending() {
            self.apply_flushes();
        }
        let vcpus = self.vcpus.len();
        let cpu = self.vcpus.get_mut(vcpu).ok_or(HwError::NoSuchVcpu { vcpu, vcpus })?;
        self.counters.accesses += 1;
        if let Some(hit) = cpu.tlb.lookup(gva) {
            let need = needed_flags(kind);
            if hit.entry.flags & need == need {
                match hit.level {
                    TlbLevel::L1 => self.counters.l1_hits += 1,
                    TlbLevel::Stlb => self.counters.stlb_hits += 1,
                }
                let hpa = hit.entry.hpa + (gva & (hit.size.bytes() - 1));
                if self.config.checked {
                    self.check_hit(vcpu, gva, kind, &hit, stage2);
                }
                return Ok(AccessOutcome::Hit { hpa, level: hit.level });
            }
        }
        self.counters.misses += 1;
        Ok(self.walk_and_fill(vcpu, gva, kind, stage2))
    }

    /// The miss path: walk, count, check, cache.
    #[inline(never)]
    fn walk_and_fill<S: Stage2 + ?Sized>(&mut self, vcpu: usize, gva: u64, kind: Access, stage2: &S) -> AccessOutcome {
        let cpu = &mut self.vcpus[vcpu];
        let w = Walker {
            guest: &self.guest,
            stage2,
            caches: cpu.walk_caches.as_mut(),
            checked: self.config.checked,
            violations: &mut self.violations,
            vcpu,
        }
        .walk(gva, kind);
        let c = &mut self.counters;
        c.walk_refs += w.refs as u64;
        c.psc_hits += w.psc_hits as u64;
        c.nested_tlb_hits += w.nested_hits as u64;
        let (gpa, guest_size, t) = match w.end {
            WalkEnd::Translated { gpa, guest_size, stage2 } => (gpa, guest_size, stage2),
            WalkEnd::Stage2Fault { gpa, access, fault, on_guest_table } => {
                c.stage2_faults += 1;
                return AccessOutcome::Stage2Fault(Stage2Fault {
                    gva,
                    gpa,
                    access,
                    fault,
                    on_guest_table,
                    refs: w.refs,
                });
            }
            WalkEnd::GuestFault => {
                c.guest_faults += 1;
                return AccessOutcome::GuestFault { gva, refs: w.refs };
            }
        };

        let size = guest_size.min(t.size);
        let off = gva & (size.bytes() - 1);
        let mut fl = 0;
        for (p, f) in [(Perms::READ, flags::READ), (Perms::WRITE, flags::WRITE), (Perms::EXEC, flags::EXEC)] {
            if t.attrs.perms.contains(p) {
                fl |= f;
            }
        }
        if kind == Access::Write || t.attrs.dirty || !S::HW_DIRTY {
            fl |= flags::DIRTY;
        }
        let entry = Entry {
            hpa: t.pa - off,
            gpa: gpa - off,
            stage2_gpa: t.size.align_down(gpa),
            stage2_size: t.size,
            flags: fl,
        };
        cpu.tlb.fill(gva, size, entry);

        let record = WalkRecord {
            vcpu,
            gva,
            gpa,
            hpa: t.pa,
            access: kind,
            guest_size,
            stage2_size: t.size,
            cached_size: size,
            refs: w.refs,
        };
        if self.config.checked {
            let current_hpa = stage2.translate(gpa).map(|t| t.pa);
            if current_hpa != Some(t.pa) {
                self.violations.record(Violation {
                    vcpu,
                    gva,
                    gpa,
                    cached_hpa: t.pa,
                    current_hpa,
                    access: kind,
                    kind: if current_hpa.is_none() { ViolationKind::Unmapped } else { ViolationKind::WrongHpa },
                });
            }
        }
        if let Some(check) = self.checker.as_mut() {
            if let Err(msg) = check(&record) {
                self.violations.record(Violation {
                    vcpu,
                    gva,
                    gpa,
                    cached_hpa: t.pa,
                    current_hpa: Some(t.pa),
                    access: kind,
                    kind: ViolationKind::External(msg),
                });
            }
        }
        AccessOutcome::Walked(record)
    }

    /// Checked mode: compare a hit with the current stage-2 tables.
    #[inline(never)]
    fn check_hit<S: Stage2 + ?Sized>(&mut self, vcpu: usize, gva: u64, kind: Access, hit: &TlbHit, stage2: &S) {
        let off = gva & (hit.size.bytes() - 1);
        let gpa = hit.entry.gpa + off;
        let cached_hpa = hit.entry.hpa + off;
        let current = stage2.translate(gpa);
        let kind_found = match current {
            None => Some(ViolationKind::Unmapped),
            Some(t) if t.pa != cached_hpa => Some(ViolationKind::WrongHpa),
            Some(t) if !t.attrs.perms.contains(perm_of(kind)) => Some(ViolationKind::StalePermission),
            Some(t) if kind == Access::Write && S::HW_DIRTY && !t.attrs.dirty => Some(ViolationKind::StaleDirty),
            Some(_) => None,
        };
        if let Some(k) = kind_found {
            self.violations.record(Violation {
                vcpu,
                gva,
                gpa,
                cached_hpa,
                current_hpa: current.map(|t| t.pa),
                access: kind,
                kind: k,
            });
        }
    }

    /// Apply every flush the MMU has requested to every vCPU's TLB and walk caches. Every
    /// access and inspection does this first; call it directly only to settle the counters.
    pub fn apply_flushes(&mut self) {
        if !self.flushes.is_pending() {
            return;
        }
        let mut p = self.flushes.take();
        let (mut tlb_n, mut wc_n) = (0, 0);
        if p.all {
            for cpu in &mut self.vcpus {
                tlb_n += cpu.tlb.clear();
                wc_n += cpu.walk_caches.as_mut().map_or(0, WalkCaches::clear);
            }
        } else if !p.ranges.is_empty() {
            p.normalise();
            for cpu in &mut self.vcpus {
                tlb_n += cpu
                    .tlb
                    .invalidate(|e| p.overlaps(e.stage2_gpa, e.stage2_gpa.saturating_add(e.stage2_size.bytes())));
                if let Some(wc) = cpu.walk_caches.as_mut() {
                    for &(s, e) in &p.ranges {
                        wc_n += wc.invalidate(s, e);
                    }
                }
            }
        }
        self.counters.entries_invalidated += tlb_n;
        self.counters.walk_cache_invalidated += wc_n;
    }

    /// A snapshot of the counters (pending flushes applied first).
    pub fn stats(&mut self) -> HwStats {
        self.apply_flushes();
        let c = &self.counters;
        let (range_flushes, full_flushes) = self.flushes.counts();
        let (dcache_cleans, icache_invalidations) = self.flushes.cache_ops();
        HwStats {
            accesses: c.accesses,
            l1_hits: c.l1_hits,
            stlb_hits: c.stlb_hits,
            misses: c.misses,
            walks: c.misses,
            walk_refs: c.walk_refs,
            stage2_faults: c.stage2_faults,
            guest_faults: c.guest_faults,
            psc_hits: c.psc_hits,
            nested_tlb_hits: c.nested_tlb_hits,
            range_flushes,
            full_flushes,
            dcache_cleans,
            icache_invalidations,
            entries_invalidated: c.entries_invalidated,
            walk_cache_invalidated: c.walk_cache_invalidated,
            isolation_violations: self.violations.isolation,
            dirty_violations: self.violations.dirty,
        }
    }

    /// Zero the hardware's own counters (flush request counts and violations are kept).
    pub fn reset_counters(&mut self) {
        self.apply_flushes();
        self.counters = Counters::default();
    }

    /// The first violations found (up to [`HwConfig::max_violation_details`]); the counts are
    /// in [`stats`](Self::stats).
    pub fn violations(&self) -> &[Violation] {
        &self.violations.details
    }

    /// Visit every translation cached in `vcpu`'s TLB (first level first; an entry may appear
    /// in both levels). Pending flushes are applied first.
    pub fn for_each_cached(&mut self, vcpu: usize, f: impl FnMut(CachedTranslation)) -> Result<(), HwError> {
        self.apply_flushes();
        let vcpus = self.vcpus.len();
        let cpu = self.vcpus.get(vcpu).ok_or(HwError::NoSuchVcpu { vcpu, vcpus })?;
        cpu.tlb.for_each(f);
        Ok(())
    }

    /// Valid entries in `vcpu`'s TLB arrays (pending flushes applied first).
    pub fn tlb_occupancy(&mut self, vcpu: usize) -> Result<usize, HwError> {
        self.apply_flushes();
        let vcpus = self.vcpus.len();
        self.vcpus.get(vcpu).map(|c| c.tlb.occupancy()).ok_or(HwError::NoSuchVcpu { vcpu, vcpus })
    }

    /// Empty one vCPU's TLB and walk caches, as a guest-initiated full flush (e.g. a CR3 write
    /// without PCIDs) does. Not counted as an MMU flush.
    pub fn flush_vcpu(&mut self, vcpu: usize) -> Result<(), HwError> {
        self.apply_flushes();
        let vcpus = self.vcpus.len();
        let cpu = self.vcpus.get_mut(vcpu).ok_or(HwError::NoSuchVcpu { vcpu, vcpus })?;
        cpu.tlb.clear();
        if let Some(wc) = cpu.walk_caches.as_mut() {
            wc.clear();
        }
        Ok(())
    }
}

/// The stage-2 permission an access needs.
fn perm_of(kind: Access) -> Perms {
    match kind {
        Access::Read => Perms::READ,
        Access::Write => Perms::WRITE,
        Access::Exec => Perms::EXEC,
    }
}
