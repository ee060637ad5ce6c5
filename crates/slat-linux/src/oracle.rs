//! The real kernel's KVM as the oracle of slat-mmu (feature `kvm`).
//!
//! An [`Oracle`] runs a [`MicroVm`] and, beside it, a [`slat_mmu::Mmu`] over
//! [`LocalMemory`] on the same two backings, with the same memslots. After each guest
//! [`Sweep`], the MMU is driven with the faults the guest took: the code page's fetch once, then
//! every touched gfn with the sweep's access kind. Its leaf counts are then comparable with KVM's
//! `pages_4k/2m/1g`, and with dirty logging on, its dirty log with `KVM_GET_DIRTY_LOG`.
//!
//! What models the shadow MMU (PVM here: `tdp_mmu=N`):
//!
//! * leaves are at most the guest's own page size: the MMU's policy cap is 4 KiB when the guest
//!   maps its data with 4 KiB pages (slat-mmu has no per-gfn guest page size, so the cap is
//!   global; the system memslot, mapped by the guest with a 2 MiB page, is 4 KiB anyway);
//! * no 1 GiB leaves (`pdpe1gb` is absent from `KVM_GET_SUPPORTED_CPUID`): `max_leaf` 2 MiB;
//! * the guest's page-table gfns are write-tracked ([`slat_mmu::Mmu::write_track`]), as
//!   `account_shadowed` does when KVM shadows them;
//! * dirty logging write-protects and a write drops the huge leaf for one 4 KiB leaf
//!   ([`DirtyLogMode::WriteProtect`]: the shadow MMU has no eager split,
//!   `kvm_mmu_slot_try_split_huge_pages` returns early without the TDP MMU); turning it off zaps
//!   collapsible 4 KiB leaves (`kvm_mmu_zap_collapsible_sptes`: [`RecoveryPolicy::Zap`]).
//!
//! The oracle drives slat only with the faults the CPU would take: a touched gfn whose slat leaf
//! already allows the access (a page written since the last re-protection, every page of an
//! initially-set dirty log before its first clear) is skipped, as the guest's access never
//! leaves the guest in KVM either.
//!
//! One choice is KVM's own and not an MMU rule: **PTE prefetch.** When the shadow MMU installs a
//! 4 KiB leaf in a *direct* shadow page (the guest maps the gfn with a 2 MiB page that the host or
//! the memslot keeps at 4 KiB), `direct_pte_prefetch` → `__direct_pte_prefetch` →
//! `direct_pte_prefetch_many` (arch/x86/kvm/mmu/mmu.c) also maps the other pages of the
//! 8-aligned group (`PTE_PREFETCH_NUM`) whose host pages are present, unless the memslot is
//! dirty-logged. The oracle reproduces it ([`Oracle::set_model_prefetch`], on by default) by
//! faulting those neighbours in slat as reads; `tests/kvm_oracle.rs` pins it.

use slat_mmu::testing::RecordingTlb;
use slat_mmu::{
    DirtyLogMode, Explanation, FaultError, FaultOutcome, Gfn, Gpa, HarvestMode, Hva, MemslotSpec, Mmu, MmuConfig,
    Parts, RecoveryPolicy,
};
use slat_pt::format::Ept4;
use slat_pt::{Access, PageSize, Perms, SimFrameAllocator};

use crate::backing::{Backing, HugetlbSize, Placement, ThpAdvice};
use crate::error::{Error, Result};
use crate::memory::LocalMemory;
use crate::pool::{
    HugetlbReservation, HugetlbfsMount, ShmemEnabled, ShmemEnabledGuard, TempFile, TmpfsHuge, TmpfsMount,
};
use crate::vmm::{
    DirtyLogProtect, GuestAccess, GuestPageSize, MicroVm, RunReport, Sweep, VmStats, CODE_GFN, DATA_GPA, DATA_SLOT,
    SYSTEM_BYTES, SYSTEM_SLOT,
};

/// `PTE_PREFETCH_NUM` in arch/x86/kvm/mmu/mmu.c.
pub const PTE_PREFETCH_NUM: u64 = 8;

/// Leaves per size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct LeafCounts {
    /// 4 KiB leaves.
    pub pages_4k: u64,
    /// 2 MiB leaves.
    pub pages_2m: u64,
    /// 1 GiB leaves.
    pub pages_1g: u64,
}

impl From<&VmStats> for LeafCounts {
    fn from(s: &VmStats) -> Self {
        LeafCounts { pages_4k: s.pages_4k, pages_2m: s.pages_2m, pages_1g: s.pages_1g }
    }
}

impl std::fmt::Display for LeafCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "4K {} 2M {} 1G {}", self.pages_4k, self.pages_2m, self.pages_1g)
    }
}

/// How the data memslot is backed on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostBacking {
    /// Anonymous memory with `MADV_HUGEPAGE` (THP).
    AnonThp,
    /// Anonymous memory with `MADV_NOHUGEPAGE` (4 KiB).
    Anon4k,
    /// A memfd (shmem; huge only as `shmem_enabled` allows).
    Memfd,
    /// A memfd with `MFD_HUGETLB | MFD_HUGE_2MB` (pool grown for the run, then restored).
    MemfdHugetlb2m,
    /// A file on a private hugetlbfs mount with 2 MiB pages (pool grown, then restored).
    Hugetlbfs2m,
    /// A memfd with `MFD_HUGETLB | MFD_HUGE_1GB` (pool grown for the run, then restored; the
    /// kernel often cannot find a free 1 GiB at run time).
    MemfdHugetlb1g,
    /// A file on a private tmpfs mount with `huge=always`.
    TmpfsHuge,
    /// A file on a private hugetlbfs mount with 1 GiB pages (pool grown, then restored; often
    /// refused at run time, see [`crate::pool::GiganticBlockers`]).
    Hugetlbfs1g,
    /// A memfd with `MADV_HUGEPAGE` while `shmem_enabled` is `advise` (set for the run, then
    /// restored): the shmem THP of seed 002.
    MemfdShmemAdvise,
    /// A file on a private tmpfs mount with `huge=within_size` (the file is sized before it is
    /// mapped, so every block lies within `i_size`).
    TmpfsWithinSize,
    /// A file on a private tmpfs mount with `huge=advise`, mapped with `MADV_HUGEPAGE`.
    TmpfsAdvise,
    /// A file on the file system of the temporary directory (ext4 here): page cache, huge only
    /// where the kernel put a PMD-sized folio and mapped it with a PMD.
    RegularFile,
    /// As [`HostBacking::RegularFile`], mapped with `MADV_HUGEPAGE` (`do_sync_mmap_readahead`
    /// then asks for PMD-order folios).
    RegularFileHugepage,
}

impl HostBacking {
    /// Every backing, in the order reports list them.
    pub const ALL: [HostBacking; 13] = [
        HostBacking::AnonThp,
        HostBacking::Anon4k,
        HostBacking::Memfd,
        HostBacking::MemfdHugetlb2m,
        HostBacking::Hugetlbfs2m,
        HostBacking::MemfdHugetlb1g,
        HostBacking::TmpfsHuge,
        HostBacking::Hugetlbfs1g,
        HostBacking::MemfdShmemAdvise,
        HostBacking::TmpfsWithinSize,
        HostBacking::TmpfsAdvise,
        HostBacking::RegularFile,
        HostBacking::RegularFileHugepage,
    ];

    /// The name used on the command line.
    pub const fn name(self) -> &'static str {
        match self {
            HostBacking::AnonThp => "anon-thp",
            HostBacking::Anon4k => "anon-4k",
            HostBacking::Memfd => "memfd",
            HostBacking::MemfdHugetlb2m => "memfd-hugetlb-2m",
            HostBacking::Hugetlbfs2m => "hugetlbfs-2m",
            HostBacking::MemfdHugetlb1g => "memfd-hugetlb-1g",
            HostBacking::TmpfsHuge => "tmpfs-huge",
            HostBacking::Hugetlbfs1g => "hugetlbfs-1g",
            HostBacking::MemfdShmemAdvise => "memfd-shmem-advise",
            HostBacking::TmpfsWithinSize => "tmpfs-within-size",
            HostBacking::TmpfsAdvise => "tmpfs-advise",
            HostBacking::RegularFile => "regular-file",
            HostBacking::RegularFileHugepage => "regular-file-hugepage",
        }
    }

    /// The backing named `s`.
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|b| b.name() == s)
    }

    /// Whether making it needs root (pools, mounts).
    pub const fn needs_root(self) -> bool {
        matches!(
            self,
            HostBacking::MemfdHugetlb2m
                | HostBacking::Hugetlbfs2m
                | HostBacking::MemfdHugetlb1g
                | HostBacking::Hugetlbfs1g
                | HostBacking::TmpfsHuge
                | HostBacking::MemfdShmemAdvise
                | HostBacking::TmpfsWithinSize
                | HostBacking::TmpfsAdvise
        )
    }

    /// Map `len` bytes, `skew` bytes past a 2M boundary (a multiple of 4 KiB; hugetlb refuses
    /// anything but 0), every page written.
    pub fn make(self, len: u64, skew: u64) -> Result<HostMemorySetup> {
        let placement = Placement::skewed(2 << 20, skew);
        let mut setup = HostMemorySetup::default();
        let pages_2m = len.div_ceil(2 << 20);
        let backing = match self {
            HostBacking::AnonThp => Backing::anonymous(len, ThpAdvice::Hugepage, placement)?,
            HostBacking::Anon4k => Backing::anonymous(len, ThpAdvice::NoHugepage, placement)?,
            HostBacking::Memfd => Backing::memfd(len, None, ThpAdvice::None, placement)?,
            HostBacking::MemfdHugetlb2m => {
                setup.pool = Some(HugetlbReservation::reserve(HugetlbSize::Size2M, pages_2m)?);
                Backing::memfd(len, Some(HugetlbSize::Size2M), ThpAdvice::None, placement)?
            }
            HostBacking::MemfdHugetlb1g => {
                setup.pool = Some(HugetlbReservation::reserve(HugetlbSize::Size1G, len.div_ceil(1 << 30))?);
                Backing::memfd(len, Some(HugetlbSize::Size1G), ThpAdvice::None, placement)?
            }
            HostBacking::Hugetlbfs2m => {
                setup.pool = Some(HugetlbReservation::reserve(HugetlbSize::Size2M, pages_2m)?);
                let m = setup.hugetlbfs.insert(HugetlbfsMount::new(HugetlbSize::Size2M)?);
                Backing::file(m.path().join("guest-ram"), 0, len, ThpAdvice::None, placement)?
            }
            HostBacking::Hugetlbfs1g => {
                setup.pool = Some(HugetlbReservation::reserve(HugetlbSize::Size1G, len.div_ceil(1 << 30))?);
                let m = setup.hugetlbfs.insert(HugetlbfsMount::new(HugetlbSize::Size1G)?);
                Backing::file(m.path().join("guest-ram"), 0, len, ThpAdvice::None, placement)?
            }
            HostBacking::TmpfsHuge => {
                let m = setup.tmpfs.insert(TmpfsMount::new(TmpfsHuge::Always, len + (4 << 20))?);
                Backing::file(m.path().join("guest-ram"), 0, len, ThpAdvice::None, placement)?
            }
            HostBacking::MemfdShmemAdvise => {
                setup.knob = Some(ShmemEnabledGuard::set(ShmemEnabled::Advise)?);
                Backing::memfd(len, None, ThpAdvice::Hugepage, placement)?
            }
            HostBacking::TmpfsWithinSize => {
                let m = setup.tmpfs.insert(TmpfsMount::new(TmpfsHuge::WithinSize, len + (4 << 20))?);
                Backing::file(m.path().join("guest-ram"), 0, len, ThpAdvice::None, placement)?
            }
            HostBacking::TmpfsAdvise => {
                let m = setup.tmpfs.insert(TmpfsMount::new(TmpfsHuge::Advise, len + (4 << 20))?);
                Backing::file(m.path().join("guest-ram"), 0, len, ThpAdvice::Hugepage, placement)?
            }
            HostBacking::RegularFile | HostBacking::RegularFileHugepage => {
                let advice = if self == HostBacking::RegularFile { ThpAdvice::None } else { ThpAdvice::Hugepage };
                let file = setup.file.insert(TempFile::new("guest-ram")?);
                let b = Backing::file(file.path(), 0, len, advice, placement)?;
                if b.kind() != slat_mmu::BackingKind::PageCache {
                    return Err(Error::Unsupported {
                        what: format!(
                            "a regular-file backing: {} is on tmpfs or hugetlbfs (set TMPDIR to a disk file system)",
                            file.path().display()
                        ),
                    });
                }
                b
            }
        };
        backing.populate_write()?;
        setup.backing = Some(backing);
        Ok(setup)
    }
}

/// A data backing with the pool reservation, mount, knob or file it needs; dropping it unmaps
/// the memory, then unmounts, restores the pool and the knob, and removes the file.
#[derive(Debug, Default)]
pub struct HostMemorySetup {
    backing: Option<Backing>,
    tmpfs: Option<TmpfsMount>,
    hugetlbfs: Option<HugetlbfsMount>,
    pool: Option<HugetlbReservation>,
    knob: Option<ShmemEnabledGuard>,
    file: Option<TempFile>,
}

impl HostMemorySetup {
    /// The data memory.
    pub fn backing(&self) -> &Backing {
        self.backing.as_ref().expect("set by HostBacking::make")
    }
}

impl Drop for HostMemorySetup {
    fn drop(&mut self) {
        self.backing.take();
        self.tmpfs.take();
        self.hugetlbfs.take();
        self.pool.take();
        self.knob.take();
        self.file.take();
    }
}

/// slat-mmu as the oracle drives it.
pub type OracleMmu<'a> = Mmu<Ept4, Parts<SimFrameAllocator, LocalMemory<'a>, RecordingTlb>>;

/// A micro-VM and slat-mmu on the same memory.
#[derive(Debug)]
pub struct Oracle<'a> {
    vm: MicroVm<'a>,
    mmu: OracleMmu<'a>,
    code_faulted: bool,
    model_prefetch: bool,
    logging: bool,
}

fn mmu_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("slat-mmu {what}: {e}"))
}

impl<'a> Oracle<'a> {
    /// A VM over `system` (from [`crate::vmm::system_backing`]) and `data`, and slat-mmu with
    /// the same memslots, configured as the shadow MMU behaves (see the module docs).
    pub fn new(system: &'a Backing, data: &'a Backing, guest_pages: GuestPageSize) -> Result<Self> {
        Self::with_protect(system, data, guest_pages, DirtyLogProtect::GetClears)
    }

    /// As [`Oracle::new`], with the dirty log harvested per `protect` in both: KVM's
    /// `KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2` mode and the matching [`HarvestMode`] in slat
    /// ([`DirtyLogProtect::Manual`] is `ManualClear { initially_set: false }`).
    pub fn with_protect(
        system: &'a Backing,
        data: &'a Backing,
        guest_pages: GuestPageSize,
        protect: DirtyLogProtect,
    ) -> Result<Self> {
        let mut vm = MicroVm::new(system, data, guest_pages)?;
        if protect != DirtyLogProtect::GetClears {
            vm.set_dirty_log_protect(protect)?;
        }
        let harvest = match protect {
            DirtyLogProtect::GetClears => HarvestMode::GetAndClear,
            DirtyLogProtect::Manual => HarvestMode::ManualClear { initially_set: false },
            DirtyLogProtect::ManualInitiallySet => HarvestMode::ManualClear { initially_set: true },
        };
        let host = LocalMemory::new(vec![system, data])?;
        let config = MmuConfig::default()
            .with_max_leaf(PageSize::Size2M)
            .with_cap((guest_pages == GuestPageSize::Size4K).then_some(PageSize::Size4K))
            .with_dirty_log(DirtyLogMode::WriteProtect)
            .with_harvest(harvest)
            .with_recovery(RecoveryPolicy::Zap);
        let mmu = OracleMmu::new(config, SimFrameAllocator::new(1 << 40, 16 << 20), host, RecordingTlb::default())
            .map_err(|e| mmu_err("new", e))?;
        let slot = |id, base_gfn, b: &Backing| MemslotSpec {
            id,
            base_gfn,
            npages: b.len() >> 12,
            hva: Hva(b.hva()),
            readonly: false,
            log_dirty: false,
        };
        mmu.add_memslot(slot(SYSTEM_SLOT, Gfn(0), system)).map_err(|e| mmu_err("add system memslot", e))?;
        mmu.add_memslot(slot(DATA_SLOT, Gfn(DATA_GPA >> 12), data)).map_err(|e| mmu_err("add data memslot", e))?;
        for &gfn in vm.page_table_gfns() {
            mmu.write_track(Gfn(gfn)).map_err(|e| mmu_err("write_track", e))?;
        }
        Ok(Oracle { vm, mmu, code_faulted: false, model_prefetch: true, logging: false })
    }

    /// Whether slat's side reproduces KVM's PTE prefetch (module docs); on by default.
    pub fn set_model_prefetch(&mut self, on: bool) {
        self.model_prefetch = on;
    }

    /// The VM.
    pub fn vm(&self) -> &MicroVm<'a> {
        &self.vm
    }

    /// slat's MMU.
    pub fn mmu(&self) -> &OracleMmu<'a> {
        &self.mmu
    }

    /// Run `sweep` in the guest, then drive slat with the faults it took.
    pub fn run(&mut self, sweep: Sweep) -> Result<RunReport> {
        let report = self.vm.run(sweep)?;
        if !self.code_faulted {
            self.fault(CODE_GFN << 12, Access::Exec, GuestPageSize::Size2M, false)?;
            self.code_faulted = true;
        }
        let access = match sweep.access {
            GuestAccess::Read => Access::Read,
            GuestAccess::Write => Access::Write,
        };
        let gp = self.vm.guest_pages();
        for off in sweep.offsets() {
            self.fault(DATA_GPA + off, access, gp, self.logging)?;
        }
        Ok(report)
    }

    fn fault(&self, gpa: u64, access: Access, guest_page: GuestPageSize, logging: bool) -> Result<()> {
        // The hardware faults only where the leaf does not allow the access: a write to a leaf
        // that is still writable (a page not yet re-protected, every page of an initially-set
        // log before its first clear) reaches no MMU, in KVM or in slat.
        if self.permits(gpa >> 12, access) {
            return Ok(());
        }
        let size = self.fault_once(gpa, access)?;
        // KVM's __direct_pte_prefetch: a 4K leaf under a guest 2M page (a direct shadow page),
        // memslot not dirty-logged: the rest of the 8-aligned group, where the host page is present.
        if self.model_prefetch && size == Some(PageSize::Size4K) && guest_page == GuestPageSize::Size2M && !logging {
            let first = (gpa >> 12) & !(PTE_PREFETCH_NUM - 1);
            for gfn in first..first + PTE_PREFETCH_NUM {
                if gfn == gpa >> 12 || self.mapped(gfn).is_some() {
                    continue;
                }
                let hva = self.hva_of(gfn);
                if hva.is_some_and(|h| slat_mmu::HostMemory::lookup(self.mmu.host(), Hva(h)).is_some()) {
                    self.fault_once(gfn << 12, Access::Read)?;
                }
            }
        }
        Ok(())
    }

    fn fault_once(&self, gpa: u64, access: Access) -> Result<Option<PageSize>> {
        for _ in 0..16 {
            match self.mmu.handle_fault(Gpa(gpa), access) {
                Ok(FaultOutcome::Mapped { size, .. }) => return Ok(Some(size)),
                Ok(FaultOutcome::WriteTracked) => return Ok(self.mapped(gpa >> 12)),
                Ok(FaultOutcome::Retry) => continue,
                Err(e @ FaultError::NoMemslot { .. }) => return Err(mmu_err("fault", e)),
                Err(e) => return Err(mmu_err(&format!("fault at gpa {gpa:#x}"), e)),
            }
        }
        Err(Error::Invalid(format!("slat-mmu kept asking to retry the fault at gpa {gpa:#x}")))
    }

    fn hva_of(&self, gfn: u64) -> Option<u64> {
        let (sys, data) = (self.vm.system(), self.vm.data());
        if gfn < SYSTEM_BYTES >> 12 {
            Some(sys.hva() + (gfn << 12))
        } else if gfn >= DATA_GPA >> 12 && gfn < (DATA_GPA + data.len()) >> 12 {
            Some(data.hva() + (gfn << 12) - DATA_GPA)
        } else {
            None
        }
    }

    /// Whether slat's leaf mapping `gfn` allows `access` (the CPU would not fault).
    fn permits(&self, gfn: u64, access: Access) -> bool {
        let need = match access {
            Access::Read => Perms::READ,
            Access::Write => Perms::WRITE,
            Access::Exec => Perms::EXEC,
        };
        self.mmu.with_tables(|pt| pt.leaves(Gpa(gfn << 12), 4096).first().is_some_and(|l| l.attrs.perms.contains(need)))
    }

    /// The size of slat's leaf mapping `gfn`, if any.
    pub fn mapped(&self, gfn: u64) -> Option<PageSize> {
        self.mmu.with_tables(|pt| pt.leaves(Gpa(gfn << 12), 4096).first().map(|l| l.size))
    }

    /// KVM's leaf counts (the whole VM).
    pub fn kvm_counts(&self) -> Result<LeafCounts> {
        Ok(LeafCounts::from(&self.vm.stats()?))
    }

    /// slat's leaf counts (both memslots).
    pub fn slat_counts(&self) -> LeafCounts {
        let s = self.mmu.stats();
        LeafCounts { pages_4k: s.pages_4k, pages_2m: s.pages_2m, pages_1g: s.pages_1g }
    }

    /// slat's leaves of `size` as (gfn, size), in address order, both memslots.
    pub fn slat_leaves(&self, size: PageSize) -> Vec<u64> {
        let mut out = Vec::new();
        self.mmu.with_tables(|pt| {
            for (base, len) in [(0, SYSTEM_BYTES), (DATA_GPA, self.vm.data().len())] {
                pt.for_each_leaf(Gpa(base), len, |l| {
                    if l.size == size {
                        out.push(l.gpa.gfn().0)
                    }
                })
            }
        });
        out
    }

    /// slat's explanation for every data gfn mapped below 2 MiB (one per 2 MiB block: the
    /// first such gfn of each block).
    pub fn explain_small(&self) -> Vec<Explanation> {
        let mut seen = std::collections::BTreeSet::new();
        self.slat_leaves(PageSize::Size4K)
            .into_iter()
            .filter(|&g| seen.insert(g >> 9))
            .map(|g| self.mmu.explain(Gfn(g)))
            .collect()
    }

    /// Turn dirty logging of the data memslot on or off in both.
    pub fn set_dirty_logging(&mut self, on: bool) -> Result<()> {
        self.vm.set_dirty_logging(on)?;
        self.mmu.set_dirty_logging(DATA_SLOT, on).map_err(|e| mmu_err("set_dirty_logging", e))?;
        self.logging = on;
        Ok(())
    }

    /// Clear the bits of `mask` from page `first_page` (a multiple of 64) of the data memslot's
    /// dirty log in both (`KVM_CLEAR_DIRTY_LOG`; slat's `clear_dirty_log`); returns the pages
    /// slat cleared. Needs a manual-protect mode ([`Oracle::with_protect`]).
    pub fn clear_dirty_log(&self, first_page: u64, mask: &[u64]) -> Result<u64> {
        self.vm.clear_dirty_log(first_page, mask)?;
        self.mmu.clear_dirty_log(DATA_SLOT, first_page, mask).map_err(|e| mmu_err("clear_dirty_log", e))
    }

    /// Harvest the data memslot's dirty log in both: (KVM's bitmap, slat's bitmap).
    pub fn harvest(&self) -> Result<(Vec<u64>, Vec<u64>)> {
        let kvm = self.vm.dirty_log()?;
        let slat = self.mmu.get_dirty_log(DATA_SLOT).map_err(|e| mmu_err("get_dirty_log", e))?;
        Ok((kvm, slat))
    }

    /// Compare leaf counts: `Ok` when equal, else a report of both sides per size and slat's
    /// first leaves of each size (KVM gives counts only).
    pub fn compare_counts(&self, what: &str) -> Result<LeafCounts, String> {
        let kvm = self.kvm_counts().map_err(|e| e.to_string())?;
        let slat = self.slat_counts();
        if kvm == slat {
            return Ok(kvm);
        }
        let mut s = format!("{what}: leaf counts differ\n  KVM : {kvm}\n  slat: {slat}\n");
        for (size, k, v) in [
            (PageSize::Size4K, kvm.pages_4k, slat.pages_4k),
            (PageSize::Size2M, kvm.pages_2m, slat.pages_2m),
            (PageSize::Size1G, kvm.pages_1g, slat.pages_1g),
        ] {
            if k != v {
                let first: Vec<String> = self.slat_leaves(size).iter().take(16).map(|g| format!("{g:#x}")).collect();
                s += &format!("  {size}: KVM {k} slat {v}; slat's first {size} leaves at gfns {}\n", first.join(" "));
            }
        }
        for e in self.explain_small().iter().take(4) {
            s += &format!("  slat: {e}\n");
        }
        Err(s)
    }
}

/// Compare two dirty bitmaps of the data memslot: `Ok(dirty pages)` when equal, else the first
/// gfns that differ on each side.
pub fn compare_dirty(kvm: &[u64], slat: &[u64]) -> Result<u64, String> {
    let bits = |b: &[u64]| -> Vec<u64> {
        b.iter()
            .enumerate()
            .flat_map(|(w, &word)| (0..64).filter(move |i| word >> i & 1 == 1).map(move |i| w as u64 * 64 + i))
            .collect()
    };
    let (k, s) = (bits(kvm), bits(slat));
    if k == s {
        return Ok(k.len() as u64);
    }
    let gfn = |p: &u64| format!("{:#x}", (DATA_GPA >> 12) + p);
    let only_k: Vec<String> = k.iter().filter(|p| !s.contains(p)).take(16).map(gfn).collect();
    let only_s: Vec<String> = s.iter().filter(|p| !k.contains(p)).take(16).map(gfn).collect();
    Err(format!(
        "dirty logs differ: KVM {} pages, slat {} pages\n  only KVM: {}\n  only slat: {}",
        k.len(),
        s.len(),
        only_k.join(" "),
        only_s.join(" ")
    ))
}

/// What [`probe`] measured: KVM's leaves beside slat's for one backing.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProbeReport {
    /// The data memslot's backing.
    pub backing: HostBacking,
    /// Its size in bytes.
    pub bytes: u64,
    /// Bytes past a 2 MiB boundary of the hva (gpa is 1 GiB).
    pub hva_skew: u64,
    /// The guest's page size.
    pub guest_pages: GuestPageSize,
    /// The guest's sweep.
    pub sweep: Sweep,
    /// KVM's leaves (whole VM: data memslot and the 2 MiB of page tables and code).
    pub kvm: LeafCounts,
    /// slat's prediction for the same faults.
    pub slat: LeafCounts,
    /// KVM's leaves that are its PTE prefetch, not faults (included in `slat` as KVM does).
    pub prefetched: u64,
    /// Leaves of the system memslot (page tables and code), in both counts.
    pub system_4k: u64,
    /// The vCPU's costs.
    pub run: RunReport,
    /// slat's reasons for data pages below 2 MiB: one line per 2 MiB block (first gfn).
    pub reasons: Vec<String>,
    /// slat's why-not-huge totals for the data memslot (pages not in 1 GiB leaves, by primary
    /// reason): `(reason, pages)`.
    pub why_totals: Vec<(String, u64)>,
    /// The dirty-logging phase, when one was asked for.
    pub dirty: Option<DirtyProbe>,
}

impl ProbeReport {
    /// Whether KVM and slat agree leaf for leaf (and, with a dirty-logging phase, at every
    /// round of it).
    pub fn agree(&self) -> bool {
        self.kvm == self.slat && self.dirty.as_ref().is_none_or(DirtyProbe::agree)
    }
}

/// One step of a dirty-logging probe: the dirty pages each side reports (a harvest: with
/// [`DirtyLogProtect::GetClears`] it also clears) and the leaves after it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DirtyRound {
    /// What happened before the harvest.
    pub step: String,
    /// Pages in KVM's dirty bitmap.
    pub kvm_dirty: u64,
    /// Pages in slat's dirty bitmap.
    pub slat_dirty: u64,
    /// Where the bitmaps differ (first gfns on each side), when they do.
    pub difference: Option<String>,
    /// KVM's leaves after the step.
    pub kvm: LeafCounts,
    /// slat's leaves after the step.
    pub slat: LeafCounts,
}

impl DirtyRound {
    /// Same bitmap, same leaves.
    pub fn agree(&self) -> bool {
        self.difference.is_none() && self.kvm == self.slat
    }
}

/// The dirty-logging phase of a probe: logging on, partial rewrites and harvests (with manual
/// protect, a `KVM_CLEAR_DIRTY_LOG` of the first quarter), logging off and a full rewrite.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DirtyProbe {
    /// How the log was harvested.
    pub protect: DirtyLogProtect,
    /// The steps, in order.
    pub rounds: Vec<DirtyRound>,
    /// Leaves after logging off (collapsible small leaves zapped): (KVM, slat).
    pub logging_off: (LeafCounts, LeafCounts),
    /// Leaves after the sweep ran again with logging off: (KVM, slat).
    pub rewritten: (LeafCounts, LeafCounts),
}

impl DirtyProbe {
    /// Every round and both leaf comparisons agree.
    pub fn agree(&self) -> bool {
        self.rounds.iter().all(DirtyRound::agree)
            && self.logging_off.0 == self.logging_off.1
            && self.rewritten.0 == self.rewritten.1
    }
}

fn dirty_round(o: &Oracle<'_>, step: &str) -> Result<DirtyRound> {
    let (kvm, slat) = o.harvest()?;
    let ones = |b: &[u64]| b.iter().map(|w| u64::from(w.count_ones())).sum::<u64>();
    Ok(DirtyRound {
        step: step.to_string(),
        kvm_dirty: ones(&kvm),
        slat_dirty: ones(&slat),
        difference: compare_dirty(&kvm, &slat).err(),
        kvm: o.kvm_counts()?,
        slat: o.slat_counts(),
    })
}

fn dirty_phase(o: &mut Oracle<'_>, protect: DirtyLogProtect, sweep: Sweep, bytes: u64) -> Result<DirtyProbe> {
    let mut rounds = Vec::new();
    o.set_dirty_logging(true)?;
    rounds.push(dirty_round(o, "logging on")?);
    let half = Sweep { offset: 0, len: bytes / 2, stride: 64 << 10, access: GuestAccess::Write };
    o.run(half)?;
    rounds.push(dirty_round(o, "guest wrote every 16th page of the first half")?);
    if protect != DirtyLogProtect::GetClears {
        let quarter = ((bytes >> 12) / 4) & !63;
        let cleared = o.clear_dirty_log(0, &vec![u64::MAX; (quarter / 64) as usize])?;
        rounds.push(dirty_round(o, &format!("KVM_CLEAR_DIRTY_LOG of the first quarter ({cleared} bits cleared)"))?);
    }
    o.run(Sweep { stride: 32 << 10, ..half })?;
    rounds.push(dirty_round(o, "guest wrote every 8th page of the first half")?);
    o.set_dirty_logging(false)?;
    let logging_off = (o.kvm_counts()?, o.slat_counts());
    o.run(sweep)?;
    let rewritten = (o.kvm_counts()?, o.slat_counts());
    Ok(DirtyProbe { protect, rounds, logging_off, rewritten })
}

/// Run the micro-VM on `backing` (`bytes`, hva `skew` past 2 MiB) with `guest_pages`, sweep it
/// once, and report KVM's leaves beside slat's prediction and reasons. With `dirty_log`, then
/// log the data memslot's dirty pages harvested that way ([`DirtyProbe`]).
pub fn probe(
    backing: HostBacking,
    bytes: u64,
    skew: u64,
    guest_pages: GuestPageSize,
    sweep: Sweep,
    dirty_log: Option<DirtyLogProtect>,
) -> Result<ProbeReport> {
    crate::vmm::open_kvm()?;
    let setup = backing.make(bytes, skew)?;
    let system = crate::vmm::system_backing()?;
    let mut o = Oracle::new(&system, setup.backing(), guest_pages)?;
    o.set_model_prefetch(false);
    let run = o.run(sweep)?;
    let without = o.slat_counts();
    // Now with KVM's prefetch: a fresh pair (prefetch changes what later faults find).
    drop(o);
    let mut o =
        Oracle::with_protect(&system, setup.backing(), guest_pages, dirty_log.unwrap_or(DirtyLogProtect::GetClears))?;
    o.run(sweep)?;
    let slat = o.slat_counts();
    let kvm = o.kvm_counts()?;
    let system_4k = o.slat_leaves(PageSize::Size4K).iter().filter(|&&g| g < SYSTEM_BYTES >> 12).count() as u64;
    let reasons = o.explain_small().iter().filter(|e| e.gfn >= Gfn(DATA_GPA >> 12)).map(|e| e.to_string()).collect();
    let report = o.mmu().why_not_huge();
    let why_totals = report
        .by_slot
        .iter()
        .filter(|(id, _)| *id == DATA_SLOT)
        .flat_map(|(_, pages)| {
            slat_mmu::WhyNotHuge::ALL
                .into_iter()
                .filter(|r| pages[*r as usize] > 0)
                .map(|r| (r.name().to_string(), pages[r as usize]))
        })
        .collect();
    let dirty = match dirty_log {
        Some(protect) => Some(dirty_phase(&mut o, protect, sweep, bytes)?),
        None => None,
    };
    Ok(ProbeReport {
        backing,
        bytes,
        hva_skew: skew,
        guest_pages,
        sweep,
        kvm,
        slat,
        prefetched: slat.pages_4k.saturating_sub(without.pages_4k),
        system_4k,
        run,
        reasons,
        why_totals,
        dirty,
    })
}
