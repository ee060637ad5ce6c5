//! The TOML schema: the tables and keys of a scenario file, as serde types.
//!
//! `[host]`, `[vm]`, `[[memslot]]` and `[policy]` deserialise straight into the public model;
//! `[[phase]]`, `[[event]]` and `[expect]` deserialise into raw forms that validation turns into
//! [`Phase`](super::Phase), [`Event`](super::Event) and [`Check`](super::Check).

use serde::Deserialize;
use slat_mmu::{DirtyLogMode, HarvestMode, MmuConfig, NxPolicy, RecoveryPolicy};
use slat_pt::PageSize;

use super::bytes::Bytes;
use super::names::{
    page_size, Attribute, Backing, DirtyLog, EventKind, Format, Harvest, HostKind, OnSigbus, PhaseKind, Prot, Recover,
    ShmemHuge, Thp,
};

/// The whole file, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawScenario {
    pub name: String,
    pub description: String,
    pub seed: u64,
    pub host: Host,
    #[serde(default)]
    pub vm: Vm,
    #[serde(default)]
    pub memslot: Vec<Memslot>,
    #[serde(default)]
    pub policy: Policy,
    #[serde(default)]
    pub phase: Vec<RawPhase>,
    #[serde(default)]
    pub event: Vec<RawEvent>,
    #[serde(default)]
    pub expect: Option<toml::Table>,
}

/// `[host]`: the simulated host.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Host {
    /// Which host the run uses (default `"simulated"`; `"linux"`: this machine's kernel).
    #[serde(default = "default_host_kind")]
    pub kind: HostKind,
    /// Host RAM (`memory = "16G"`), a non-zero multiple of 4 KiB.
    pub memory: Bytes,
    /// Fraction 0..=1 of the free 2 MiB blocks broken up by a pinned 4 KiB page at startup, so
    /// THP and 2 MiB allocations can fail there (default 0).
    #[serde(default)]
    pub fragmentation: f64,
    /// Fraction 0..=1 of the 1 GiB blocks still whole after that broken up too (default 0).
    #[serde(default)]
    pub fragmentation_1g: f64,
    /// Anonymous THP policy (default `"madvise"`).
    #[serde(default = "default_thp")]
    pub thp: Thp,
    /// shmem/tmpfs huge policy (default `"never"`, as Linux).
    #[serde(default = "default_shmem_huge")]
    pub shmem_huge: ShmemHuge,
    /// 2 MiB hugetlb pages reserved at boot (default 0).
    #[serde(default)]
    pub hugetlb_2m: u64,
    /// 1 GiB hugetlb pages reserved at boot (default 0).
    #[serde(default)]
    pub hugetlb_1g: u64,
    /// Size of the DAX device `dax` memslots are carved from (default 0: none).
    #[serde(default)]
    pub dax_size: Bytes,
    /// The DAX device's alignment: the largest host leaf it maps with (default `"2M"`).
    #[serde(default = "default_dax_align", with = "page_size")]
    pub dax_align: PageSize,
    /// Largest page-cache folio order for `page-cache` memslots (0 = 4 KiB only, 9 = 2 MiB;
    /// default 9).
    #[serde(default = "default_page_cache_order")]
    pub page_cache_max_order: u8,
    /// khugepaged `max_ptes_none` (default 511, Linux's).
    #[serde(default = "default_max_ptes_none")]
    pub khugepaged_max_ptes_none: u32,
}

fn default_host_kind() -> HostKind {
    HostKind::Simulated
}
fn default_thp() -> Thp {
    Thp::Madvise
}
fn default_shmem_huge() -> ShmemHuge {
    ShmemHuge::Never
}
fn default_dax_align() -> PageSize {
    PageSize::Size2M
}
fn default_page_cache_order() -> u8 {
    9
}
fn default_max_ptes_none() -> u32 {
    511
}

/// `[vm]`: the guest.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vm {
    /// Stage-2 page-table format (default `"ept4"`).
    #[serde(default = "default_format")]
    pub format: Format,
    /// Number of vCPUs (default 1).
    #[serde(default = "default_vcpus")]
    pub vcpus: u32,
    /// The guest's own page tables: regions of guest-virtual memory, each mapped linearly onto
    /// guest-physical memory with one guest page size. Empty (the default): every memslot is
    /// mapped at gva = gpa with 4 KiB guest pages.
    #[serde(default)]
    pub guest_pages: Vec<GuestPages>,
    /// TLB geometry overrides; unset keys keep the hardware model's defaults.
    #[serde(default)]
    pub tlb: Tlb,
    /// What the VMM does when a hugetlbfs fault finds the pool empty (default `"stop"`).
    #[serde(default = "default_on_sigbus")]
    pub on_sigbus: OnSigbus,
}

fn default_on_sigbus() -> OnSigbus {
    OnSigbus::Stop
}

fn default_format() -> Format {
    Format::Ept4
}
fn default_vcpus() -> u32 {
    1
}

impl Default for Vm {
    fn default() -> Self {
        Vm {
            format: default_format(),
            vcpus: default_vcpus(),
            guest_pages: Vec::new(),
            tlb: Tlb::default(),
            on_sigbus: default_on_sigbus(),
        }
    }
}

/// `[[vm.guest_pages]]`: one region of the guest's page tables.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestPages {
    /// First guest virtual address (aligned to `size`).
    pub gva: Bytes,
    /// Guest physical address `gva` maps to (aligned to `size`; default: `gva`).
    #[serde(default)]
    pub gpa: Option<Bytes>,
    /// Length (a non-zero multiple of `size`).
    pub len: Bytes,
    /// Guest page size: `"4K"`, `"2M"` or `"1G"`.
    #[serde(with = "page_size")]
    pub size: PageSize,
}

impl GuestPages {
    /// The guest physical address of `gva`.
    pub fn gpa(&self) -> u64 {
        self.gpa.unwrap_or(self.gva).get()
    }
}

/// `[vm.tlb]`: TLB overrides. Each array is `{ entries = N, ways = W }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tlb {
    /// First-level TLB for 4 KiB translations.
    #[serde(default)]
    pub l1_4k: Option<TlbArray>,
    /// First-level TLB for 2 MiB translations.
    #[serde(default)]
    pub l1_2m: Option<TlbArray>,
    /// First-level TLB for 1 GiB translations.
    #[serde(default)]
    pub l1_1g: Option<TlbArray>,
    /// Second-level TLB shared by 4 KiB and 2 MiB translations.
    #[serde(default)]
    pub stlb: Option<TlbArray>,
    /// Second-level TLB for 1 GiB translations.
    #[serde(default)]
    pub stlb_1g: Option<TlbArray>,
    /// Paging-structure caches and the nested TLB on or off.
    #[serde(default)]
    pub walk_caches: Option<bool>,
}

/// Geometry of one TLB array.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlbArray {
    /// Total entries (0 disables the array).
    pub entries: u32,
    /// Entries per set (`ways == entries`: fully associative); must divide `entries` into a
    /// power-of-two number of sets.
    pub ways: u32,
}

/// `[[memslot]]`: a guest-physical range backed by host memory.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Memslot {
    /// Slot id, unique.
    pub id: u32,
    /// First guest physical address (4 KiB aligned).
    pub gpa: Bytes,
    /// Size (a non-zero multiple of 4 KiB; of the page size for hugetlbfs; of `host.dax_align`
    /// for DAX).
    pub size: Bytes,
    /// What backs it on the host.
    pub backing: Backing,
    /// Offset added to a naturally aligned (1 GiB) host address to get the slot's host address:
    /// 0 keeps gpa and hva congruent; 4096 makes every huge leaf impossible (default 0; a
    /// multiple of 4 KiB below 1 GiB).
    #[serde(default)]
    pub hva_offset: Bytes,
    /// Guest writes are refused (default false).
    #[serde(default)]
    pub readonly: bool,
    /// The VMM applies `MADV_HUGEPAGE` to the mapping (default false).
    #[serde(default)]
    pub madvise_hugepage: bool,
    /// The slot exists from boot (default true); `false` means a `memslot-add` event adds it.
    #[serde(default = "default_true")]
    pub at_boot: bool,
}

fn default_true() -> bool {
    true
}

impl Memslot {
    /// One past the last guest physical address.
    pub fn gpa_end(&self) -> u64 {
        self.gpa.get().saturating_add(self.size.get())
    }
}

/// `[policy]`: the MMU's huge-page policy.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Huge leaves while dirty logging (default `"split-on-fault"`).
    #[serde(default = "default_dirty_log")]
    pub dirty_log: DirtyLog,
    /// Page-table pages allocated per step by eager splitting (default 64).
    #[serde(default = "default_eager_split_chunk")]
    pub eager_split_chunk: u64,
    /// Harvest protocol (default `"get-and-clear"`).
    #[serde(default = "default_harvest")]
    pub harvest: Harvest,
    /// Manual-clear only: start with every page reported dirty and defer protection to the
    /// first clear (KVM_DIRTY_LOG_INITIALLY_SET; default false).
    #[serde(default)]
    pub initially_set: bool,
    /// Recovery when logging stops (default `"in-place"`).
    #[serde(default = "default_recover")]
    pub recover: Recover,
    /// NX huge-page workaround on (default false).
    #[serde(default)]
    pub nx_huge_pages: bool,
    /// NX recovery: each pass recovers 1/ratio of the split blocks (default 60, as KVM; 0 turns
    /// recovery off).
    #[serde(default = "default_nx_recovery_ratio")]
    pub nx_recovery_ratio: u32,
    /// Largest leaf the CPU supports (default `"1G"`).
    #[serde(default = "default_max_leaf", with = "page_size")]
    pub max_leaf: PageSize,
    /// Largest leaf the policy allows, below the CPU limit (default none).
    #[serde(default, deserialize_with = "page_size::option")]
    pub cap: Option<PageSize>,
}

fn default_dirty_log() -> DirtyLog {
    DirtyLog::SplitOnFault
}
fn default_eager_split_chunk() -> u64 {
    64
}
fn default_harvest() -> Harvest {
    Harvest::GetAndClear
}
fn default_recover() -> Recover {
    Recover::InPlace
}
fn default_nx_recovery_ratio() -> u32 {
    60
}
fn default_max_leaf() -> PageSize {
    PageSize::Size1G
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            dirty_log: default_dirty_log(),
            eager_split_chunk: default_eager_split_chunk(),
            harvest: default_harvest(),
            initially_set: false,
            recover: default_recover(),
            nx_huge_pages: false,
            nx_recovery_ratio: default_nx_recovery_ratio(),
            max_leaf: default_max_leaf(),
            cap: None,
        }
    }
}

impl Policy {
    /// The MMU configuration this policy asks for (fields the scenario does not set keep
    /// `MmuConfig::default()`).
    pub fn mmu_config(&self) -> MmuConfig {
        let dirty_log = match self.dirty_log {
            DirtyLog::WriteProtect => DirtyLogMode::WriteProtect,
            DirtyLog::SplitOnFault => DirtyLogMode::SplitOnFault,
            DirtyLog::EagerSplit => DirtyLogMode::EagerSplit { chunk_tables: self.eager_split_chunk },
            DirtyLog::HardwareDirty => DirtyLogMode::HardwareDirty,
        };
        let harvest = match self.harvest {
            Harvest::GetAndClear => HarvestMode::GetAndClear,
            Harvest::ManualClear => HarvestMode::ManualClear { initially_set: self.initially_set },
        };
        let recovery = match self.recover {
            Recover::Zap => RecoveryPolicy::Zap,
            Recover::InPlace => RecoveryPolicy::InPlace,
        };
        MmuConfig::default()
            .with_max_leaf(self.max_leaf)
            .with_cap(self.cap)
            .with_dirty_log(dirty_log)
            .with_harvest(harvest)
            .with_recovery(recovery)
            .with_nx(self.nx_huge_pages.then_some(NxPolicy::new(self.nx_recovery_ratio)))
    }

    /// The largest leaf allowed at all: `max_leaf`, lowered by `cap`.
    pub fn largest_leaf(&self) -> PageSize {
        match self.cap {
            Some(c) if c < self.max_leaf => c,
            _ => self.max_leaf,
        }
    }
}

/// `[[phase]]` before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPhase {
    pub name: String,
    /// Optional when `trace` is given.
    #[serde(default)]
    pub kind: Option<PhaseKind>,
    pub accesses: u64,
    pub gva: Bytes,
    pub len: Bytes,
    #[serde(default)]
    pub write_ratio: f64,
    #[serde(default)]
    pub exec_ratio: f64,
    #[serde(default)]
    pub code_gva: Option<Bytes>,
    #[serde(default)]
    pub code_len: Option<Bytes>,
    #[serde(default)]
    pub vcpus: Option<u32>,
    #[serde(default)]
    pub quantum: Option<u32>,
    #[serde(default)]
    pub step: Option<Bytes>,
    #[serde(default)]
    pub stride: Option<Bytes>,
    #[serde(default)]
    pub s: Option<f64>,
    #[serde(default)]
    pub hot_set: Option<Bytes>,
    #[serde(default)]
    pub trace: Option<String>,
}

/// `[[event]]` before validation: every parameter optional, checked per kind.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEvent {
    pub phase: String,
    #[serde(default)]
    pub at: u64,
    pub kind: EventKind,
    #[serde(default)]
    pub slot: Option<u32>,
    #[serde(default)]
    pub offset: Option<Bytes>,
    #[serde(default)]
    pub len: Option<Bytes>,
    #[serde(default)]
    pub gpa: Option<Bytes>,
    #[serde(default)]
    pub prot: Option<Prot>,
    #[serde(default)]
    pub attribute: Option<Attribute>,
    #[serde(default)]
    pub enable: Option<bool>,
    #[serde(default)]
    pub ratio: Option<f64>,
    #[serde(default)]
    pub amount: Option<Bytes>,
    #[serde(default, deserialize_with = "page_size::option")]
    pub unit: Option<PageSize>,
}

impl RawEvent {
    /// The parameters present, by name.
    pub(crate) fn present_params(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        let mut add = |name, present: bool| {
            if present {
                v.push(name);
            }
        };
        add("slot", self.slot.is_some());
        add("offset", self.offset.is_some());
        add("len", self.len.is_some());
        add("gpa", self.gpa.is_some());
        add("prot", self.prot.is_some());
        add("attribute", self.attribute.is_some());
        add("enable", self.enable.is_some());
        add("ratio", self.ratio.is_some());
        add("amount", self.amount.is_some());
        add("unit", self.unit.is_some());
        v
    }
}
