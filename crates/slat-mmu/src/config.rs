//! MMU policy: leaf-size limits, dirty-logging mode, recovery policy, NX workaround.

use slat_pt::PageSize;

/// How huge leaves are handled while a memslot is dirty-logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirtyLogMode {
    /// Write-protect every leaf; a write to a huge leaf drops it and maps only the written 4 KiB
    /// page (old x86 "lazily drop large spte", arm64 without eager split).
    WriteProtect,
    /// Write-protect every leaf; a write to a huge leaf replaces it with a fully populated table
    /// of write-protected 4 KiB leaves and makes the written one writable (x86 TDP MMU since 2022).
    SplitOnFault,
    /// Split every huge leaf down to 4 KiB when logging starts, at most `chunk_tables` new
    /// page-table pages per lock hold, then write-protect.
    EagerSplit {
        /// Page-table pages allocated per step before the lock is dropped.
        chunk_tables: u64,
    },
    /// Hardware dirty bits (EPT A/D, arm64 DBM, RISC-V D; PML-style): 4 KiB leaves stay
    /// writable with their dirty state cleared, huge leaves are write-protected (and split on the
    /// first write); harvests read the dirty bits.
    HardwareDirty,
}

/// How the dirty log is harvested.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HarvestMode {
    /// `get_dirty_log` returns the bitmap, clears it and re-protects the pages it reported.
    GetAndClear,
    /// `get_dirty_log` only reads; `clear_dirty_log` clears 64-page-aligned masks and
    /// re-protects only what it clears. With `initially_set`, the bitmap starts all ones and
    /// nothing is protected until the first clear.
    ManualClear {
        /// Start with every page reported dirty and defer all protection to the first clear.
        initially_set: bool,
    },
}

/// How huge leaves come back when dirty logging stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryPolicy {
    /// Zap the small leaves of every block that could be huge; the next faults rebuild huge
    /// leaves (the 2015 lazy-collapse design).
    Zap,
    /// Build the huge leaf directly from the host mapping when the host maps the whole block huge
    /// and congruent; one flush per memslot.
    InPlace,
}

/// NX huge-page workaround (iTLB multihit): executable memory gets 4 KiB leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct NxPolicy {
    /// Each recovery pass zaps `ceil(tracked / recovery_ratio)` split blocks (KVM default 60).
    pub recovery_ratio: u32,
}

/// Per-vCPU dirty rings (KVM's `KVM_CAP_DIRTY_LOG_RING`), kept beside the dirty bitmap.
///
/// A write fault that makes a page of a logged memslot writable records `(slot id, page
/// offset)` in the faulting vCPU's ring (and, as always, in the slot's bitmap). When a ring holds
/// `soft_limit` records the vCPU must exit (`KVM_EXIT_DIRTY_RING_FULL`): the hypervisor checks
/// [`Mmu::dirty_ring_soft_full`](crate::Mmu::dirty_ring_soft_full) before entering the guest and
/// calls [`Mmu::harvest_dirty_ring`](crate::Mmu::harvest_dirty_ring). The `entries -
/// soft_limit` records above the soft limit are the reserve for writes made before that exit; a
/// write fault finding the ring completely full is refused with
/// [`FaultOutcome::Retry`](crate::FaultOutcome::Retry).
///
/// The ring only sees writes that fault, so it cannot be combined with
/// [`DirtyLogMode::HardwareDirty`] (4 KiB leaves stay writable) or with
/// `HarvestMode::ManualClear { initially_set: true }` (nothing is protected until the first
/// clear); [`Mmu::new`](crate::Mmu::new) refuses both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct DirtyRingConfig {
    /// Records per ring (a power of two, as KVM requires).
    pub entries: u32,
    /// Records at which the vCPU must exit for a harvest (`1..=entries`; KVM keeps a reserve of
    /// 64 entries below `entries`).
    pub soft_limit: u32,
    /// vCPU ids `0..max_vcpus` may fault with a ring; rings are created on first use.
    pub max_vcpus: u32,
}

impl Default for DirtyRingConfig {
    /// 4096 records, soft limit 4096 - 64 (KVM's reserve), 64 vCPUs.
    fn default() -> Self {
        DirtyRingConfig { entries: 4096, soft_limit: 4096 - 64, max_vcpus: 64 }
    }
}

/// MMU configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct MmuConfig {
    /// Largest leaf the CPU supports (e.g. 2M on CPUs without 1 GiB EPT pages).
    pub max_leaf: PageSize,
    /// Largest leaf the policy allows (`None`: no cap).
    pub cap: Option<PageSize>,
    /// Huge-page handling while dirty logging.
    pub dirty_log: DirtyLogMode,
    /// Harvest protocol.
    pub harvest: HarvestMode,
    /// Recovery when logging stops.
    pub recovery: RecoveryPolicy,
    /// NX huge-page workaround (`None`: off).
    pub nx: Option<NxPolicy>,
    /// Blocks recovered per lock hold before the lock is dropped (forward progress for faults).
    pub recovery_batch: u64,
    /// Per-vCPU dirty rings beside the bitmap (`None`: bitmap only).
    pub dirty_ring: Option<DirtyRingConfig>,
    /// The CPU logs the gfns whose dirty bit it sets (Intel PML: a page-modification log the
    /// hypervisor drains on its full exit and before every harvest, passing the entries to
    /// [`Mmu::record_hardware_dirty`](crate::Mmu::record_hardware_dirty)). With
    /// [`DirtyLogMode::HardwareDirty`], harvests then no longer scan every leaf of the slot for
    /// dirty bits: they re-arm only the pages they report, so their cost follows the dirty set,
    /// not the slot size. Needs `HardwareDirty`.
    pub hardware_log: bool,
}

impl Default for MmuConfig {
    fn default() -> Self {
        MmuConfig {
            max_leaf: PageSize::Size1G,
            cap: None,
            dirty_log: DirtyLogMode::SplitOnFault,
            harvest: HarvestMode::GetAndClear,
            recovery: RecoveryPolicy::InPlace,
            nx: None,
            recovery_batch: 4096,
            dirty_ring: None,
            hardware_log: false,
        }
    }
}

impl NxPolicy {
    /// Recover one in `recovery_ratio` of the NX-split huge pages per recovery pass.
    pub const fn new(recovery_ratio: u32) -> Self {
        NxPolicy { recovery_ratio }
    }
}

impl DirtyRingConfig {
    /// Rings of `entries` entries (a power of two), soft-full at `soft_limit`, for vCPUs
    /// `0..max_vcpus`.
    pub const fn new(entries: u32, soft_limit: u32, max_vcpus: u32) -> Self {
        DirtyRingConfig { entries, soft_limit, max_vcpus }
    }
}

/// Builders: `MmuConfig::default().with_dirty_log(..).with_nx(..)`. Every field stays public for
/// reading; [`Mmu::new`](crate::Mmu::new) checks the combination.
///
/// ```
/// use slat_mmu::{DirtyLogMode, MmuConfig, NxPolicy};
/// let c = MmuConfig::default()
///     .with_dirty_log(DirtyLogMode::EagerSplit { chunk_tables: 64 })
///     .with_nx(Some(NxPolicy::new(60)));
/// assert_eq!(c.nx, Some(NxPolicy::new(60)));
/// ```
impl MmuConfig {
    /// With [`max_leaf`](Self::max_leaf).
    pub const fn with_max_leaf(self, max_leaf: PageSize) -> Self {
        MmuConfig { max_leaf, ..self }
    }
    /// With [`cap`](Self::cap).
    pub const fn with_cap(self, cap: Option<PageSize>) -> Self {
        MmuConfig { cap, ..self }
    }
    /// With [`dirty_log`](Self::dirty_log).
    pub const fn with_dirty_log(self, dirty_log: DirtyLogMode) -> Self {
        MmuConfig { dirty_log, ..self }
    }
    /// With [`harvest`](Self::harvest).
    pub const fn with_harvest(self, harvest: HarvestMode) -> Self {
        MmuConfig { harvest, ..self }
    }
    /// With [`recovery`](Self::recovery).
    pub const fn with_recovery(self, recovery: RecoveryPolicy) -> Self {
        MmuConfig { recovery, ..self }
    }
    /// With [`nx`](Self::nx).
    pub const fn with_nx(self, nx: Option<NxPolicy>) -> Self {
        MmuConfig { nx, ..self }
    }
    /// With [`recovery_batch`](Self::recovery_batch).
    pub const fn with_recovery_batch(self, recovery_batch: u64) -> Self {
        MmuConfig { recovery_batch, ..self }
    }
    /// With [`dirty_ring`](Self::dirty_ring).
    pub const fn with_dirty_ring(self, dirty_ring: Option<DirtyRingConfig>) -> Self {
        MmuConfig { dirty_ring, ..self }
    }
    /// With [`hardware_log`](Self::hardware_log).
    pub const fn with_hardware_log(self, hardware_log: bool) -> Self {
        MmuConfig { hardware_log, ..self }
    }
}
