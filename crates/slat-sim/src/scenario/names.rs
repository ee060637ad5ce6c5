//! The named values of the scenario language (`thp = "madvise"`, `backing = "shmem"`, ...):
//! one enum per field, each with its spelling in scenario files and the list of accepted
//! spellings for error messages.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use slat_pt::PageSize;

/// `"a", "b", "c"`: names quoted and comma-separated, for "expected one of" messages.
pub(crate) fn quoted_list<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = String::new();
    for (i, n) in names.into_iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push('"');
        out.push_str(n);
        out.push('"');
    }
    out
}

macro_rules! names {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The spelling in scenario files.
            pub const fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            /// Parse a spelling from a scenario file.
            pub fn from_name(s: &str) -> Option<Self> {
                match s {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }

            /// The accepted spellings, quoted and comma-separated (for error messages).
            pub fn accepted() -> String {
                quoted_list([$($text),+])
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl Visitor<'_> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        write!(f, "one of {}", $name::accepted())
                    }
                    fn visit_str<E: de::Error>(self, s: &str) -> Result<$name, E> {
                        $name::from_name(s)
                            .ok_or_else(|| E::custom(format_args!("expected one of {}", $name::accepted())))
                    }
                }
                d.deserialize_str(V)
            }
        }
    };
}

names! {
    /// The stage-2 page-table format of the VM (`[vm] format`).
    pub enum Format {
        /// Intel EPT with 4-level tables (48-bit guest-physical space).
        Ept4 = "ept4",
        /// Intel EPT with 5-level tables (57-bit guest-physical space).
        Ept5 = "ept5",
        /// AMD NPT, the x86-64 long-mode format (48-bit guest-physical space here).
        Npt = "npt",
        /// arm64 stage-2, 4 KiB granule, walk starting at level 0 (48-bit IPA).
        Arm64L0 = "arm64-l0",
        /// arm64 stage-2, 4 KiB granule, walk starting at level 1 with concatenated root tables
        /// (40-bit IPA).
        Arm64L1 = "arm64-l1",
        /// RISC-V G-stage Sv39x4 (41-bit guest-physical space).
        Sv39x4 = "sv39x4",
        /// RISC-V G-stage Sv48x4 (50-bit guest-physical space).
        Sv48x4 = "sv48x4",
    }
}

impl Format {
    /// Width of the guest-physical address space the format translates.
    pub const fn gpa_bits(self) -> u32 {
        match self {
            Format::Ept4 | Format::Npt | Format::Arm64L0 => 48,
            Format::Ept5 => 57,
            Format::Arm64L1 => 40,
            Format::Sv39x4 => 41,
            Format::Sv48x4 => 50,
        }
    }
}

names! {
    /// Host anonymous THP policy (`/sys/kernel/mm/transparent_hugepage/enabled`).
    pub enum Thp {
        /// No THP.
        Never = "never",
        /// THP only in VMAs with `MADV_HUGEPAGE`.
        Madvise = "madvise",
        /// THP wherever a 2 MiB block fits the VMA.
        Always = "always",
    }
}

names! {
    /// Host shmem/tmpfs huge policy (`shmem_enabled`, or tmpfs `huge=`).
    pub enum ShmemHuge {
        /// No huge folios (Linux's default).
        Never = "never",
        /// Huge folios for every aligned 2 MiB block of the file.
        Always = "always",
        /// Huge folios where the whole 2 MiB block lies within the file size.
        WithinSize = "within_size",
        /// Huge folios only in VMAs with `MADV_HUGEPAGE`.
        Advise = "advise",
    }
}

names! {
    /// What backs a memslot on the host (`[[memslot]] backing`).
    pub enum Backing {
        /// Private anonymous memory; THP per `host.thp` and the slot's `madvise_hugepage`.
        Anonymous = "anonymous",
        /// Private anonymous memory with `MADV_HUGEPAGE` applied (as `anonymous` with
        /// `madvise_hugepage = true`).
        AnonymousThp = "anonymous-thp",
        /// A memfd / tmpfs file mapped shared; huge folios per `host.shmem_huge`.
        Shmem = "shmem",
        /// hugetlbfs with 2 MiB pages from the `host.hugetlb_2m` pool.
        Hugetlbfs2M = "hugetlbfs-2m",
        /// hugetlbfs with 1 GiB pages from the `host.hugetlb_1g` pool.
        Hugetlbfs1G = "hugetlbfs-1g",
        /// A regular file in the page cache, folios up to `host.page_cache_max_order`.
        PageCache = "page-cache",
        /// Device DAX memory (`host.dax_size`, mapped with leaves up to `host.dax_align`).
        Dax = "dax",
        /// `VM_PFNMAP` memory such as a device BAR (MMIO).
        PfnMap = "pfnmap",
    }
}

impl Backing {
    /// The backing kind as the MMU sees it.
    pub const fn kind(self) -> slat_mmu::BackingKind {
        match self {
            Backing::Anonymous | Backing::AnonymousThp => slat_mmu::BackingKind::Anonymous,
            Backing::Shmem => slat_mmu::BackingKind::Shmem,
            Backing::Hugetlbfs2M | Backing::Hugetlbfs1G => slat_mmu::BackingKind::Hugetlbfs,
            Backing::PageCache => slat_mmu::BackingKind::PageCache,
            Backing::Dax => slat_mmu::BackingKind::Dax,
            Backing::PfnMap => slat_mmu::BackingKind::PfnMap,
        }
    }

    /// The hugetlbfs page size a slot of this backing must be a multiple of, if any.
    pub const fn hugetlb_page(self) -> Option<PageSize> {
        match self {
            Backing::Hugetlbfs2M => Some(PageSize::Size2M),
            Backing::Hugetlbfs1G => Some(PageSize::Size1G),
            _ => None,
        }
    }
}

names! {
    /// How the MMU handles huge leaves while a memslot is dirty-logged (`policy.dirty_log`).
    pub enum DirtyLog {
        /// Write-protect; a write to a huge leaf drops it and maps the written 4 KiB page.
        WriteProtect = "write-protect",
        /// Write-protect; a write to a huge leaf splits it into a full table of 4 KiB leaves.
        SplitOnFault = "split-on-fault",
        /// Split every huge leaf when logging starts, `policy.eager_split_chunk` table pages
        /// per step.
        EagerSplit = "eager-split",
        /// Hardware dirty bits (EPT A/D, DBM; PML-style) instead of write protection for 4 KiB
        /// leaves.
        HardwareDirty = "hardware-dirty",
    }
}

names! {
    /// How the dirty log is harvested (`policy.harvest`).
    pub enum Harvest {
        /// Get the bitmap, clear it and re-protect what it reported.
        GetAndClear = "get-and-clear",
        /// Get only; `clear-log` events clear 64-page-aligned ranges and re-protect them.
        ManualClear = "manual-clear",
    }
}

names! {
    /// How huge leaves come back when dirty logging stops (`policy.recover`).
    pub enum Recover {
        /// Zap collapsible runs of small leaves; faults rebuild huge leaves (2015 lazy collapse).
        Zap = "zap",
        /// Build huge leaves in place where the host maps the block huge; one flush per memslot.
        InPlace = "in-place",
    }
}

names! {
    /// The address pattern of a workload phase (`[[phase]] kind`).
    pub enum PhaseKind {
        /// Sequential sweep (`step`).
        Sequential = "sequential",
        /// Uniformly random cache lines.
        Uniform = "uniform",
        /// Zipf hot set (`s`, `hot_set`).
        Zipf = "zipf",
        /// Column walk (`stride`, `step`).
        Strided = "strided",
        /// Replay of a valgrind lackey trace (`trace`).
        Trace = "trace",
    }
}

names! {
    /// What an `[[event]]` does (`kind`).
    pub enum EventKind {
        /// Start dirty logging (`slot`, or every slot).
        DirtyLogOn = "dirty-log-on",
        /// Stop dirty logging and recover huge leaves (`slot`, or every slot).
        DirtyLogOff = "dirty-log-off",
        /// Harvest the dirty log (`slot`, or every logged slot).
        Harvest = "harvest",
        /// Clear part of the dirty log in manual-clear mode (`slot`, `offset`, `len`; 64-page
        /// aligned).
        ClearLog = "clear-log",
        /// Run one NX huge-page recovery pass (recovering `1 / policy.nx_recovery_ratio` of the
        /// split blocks; no parameters).
        RecoverNx = "recover-nx",
        /// Add a memslot declared with `at_boot = false` (`slot`).
        MemslotAdd = "memslot-add",
        /// Delete a memslot (`slot`).
        MemslotDelete = "memslot-delete",
        /// Move a memslot to another guest-physical address (`slot`, `gpa`).
        MemslotMove = "memslot-move",
        /// Set memory attributes of a range (`slot`, `offset`, `len`, `attribute`).
        SetAttributes = "set-attributes",
        /// Start or stop write tracking of a range (`slot`, `offset`, `len`, `enable`).
        WriteTrack = "write-track",
        /// Host: unmap part of a slot's host mapping (`slot`, `offset`, `len`).
        Munmap = "munmap",
        /// Host: change the protection of part of a slot's host mapping (`slot`, `offset`,
        /// `len`, `prot`).
        Mprotect = "mprotect",
        /// Host: `MADV_DONTNEED` part of a slot (`slot`, `offset`, `len`).
        MadviseDontneed = "madvise-dontneed",
        /// Host: one khugepaged pass (`slot`, `offset`, `len`; default every slot).
        Khugepaged = "khugepaged",
        /// Host: `MADV_COLLAPSE` a range (`slot`, `offset`, `len`).
        MadviseCollapse = "madvise-collapse",
        /// Host: migrate the pages of a range to other frames (`slot`, `offset`, `len`).
        Migrate = "migrate",
        /// Host: run memory compaction (no parameters).
        Compact = "compact",
        /// Host: KSM merges a fraction of the 4 KiB pages of a range (`slot`, `offset`, `len`,
        /// `ratio`).
        KsmMerge = "ksm-merge",
        /// Guest balloon takes `amount` bytes from a range, in `unit` pieces (`slot`, `offset`,
        /// `len`, `amount`, `unit`).
        BalloonInflate = "balloon-inflate",
        /// Guest balloon gives back `amount` bytes (`slot`, `amount`).
        BalloonDeflate = "balloon-deflate",
        /// Host: a second process maps part of a shmem slot with 4 KiB PTEs (`slot`, `offset`,
        /// `len`).
        SharePteMap = "share-pte-map",
        /// Host: reclaim ages a range, test-and-clearing accessed bits (`slot`, `offset`, `len`;
        /// default every slot).
        ReclaimAge = "reclaim-age",
        /// Host: set the hugetlb pool of `unit` pages ("2M" or "1G") to `amount` bytes
        /// (`nr_hugepages`). As in Linux, shrinking releases free pages only: pages backing
        /// guest memory stay, so the pool never drops below what is in use. A hugetlbfs fault
        /// that then finds the pool empty is a SIGBUS to the VMM (see `vm.on_sigbus`).
        HugetlbResize = "hugetlb-resize",
    }
}

names! {
    /// What the VMM does when a hugetlbfs fault finds its pool empty (`vm.on_sigbus`): Linux
    /// fails the fault with `VM_FAULT_SIGBUS`, KVM's fault returns `-EFAULT` and `KVM_RUN`
    /// exits to the VMM (a VMM touching the page itself gets SIGBUS).
    pub enum OnSigbus {
        /// The VMM gives up, as QEMU does ("kvm run failed Bad address"): the run stops with an
        /// error naming the memslot, the address and the pool.
        Stop = "stop",
        /// The VMM survives the exit: the access is dropped (counted in `sigbus_exits`) and the
        /// run goes on; a later fault retries the page (e.g. after the pool grows again).
        Continue = "continue",
    }
}

names! {
    /// Which host a scenario runs on (`host.kind`).
    pub enum HostKind {
        /// The simulated host the `[host]` table describes (deterministic).
        Simulated = "simulated",
        /// This machine's real Linux kernel: memslots are real mappings of the `slat` process,
        /// faulted in and changed by the kernel, their host page sizes read back with
        /// `PAGEMAP_SCAN` (needs root; sizes bounded by `--max-real-memory`).
        Linux = "linux",
    }
}

names! {
    /// Host protection for `mprotect` events (`prot`).
    pub enum Prot {
        /// `PROT_NONE`.
        None = "none",
        /// `PROT_READ`.
        Read = "read",
        /// `PROT_READ | PROT_WRITE`.
        ReadWrite = "read-write",
    }
}

names! {
    /// Memory attribute for `set-attributes` events (`attribute`).
    pub enum Attribute {
        /// Private (guest_memfd-backed, confidential) memory.
        Private = "private",
        /// Shared memory.
        Shared = "shared",
    }
}

names! {
    /// A statistic an expectation can check (`[expect]` keys): every counter of
    /// `slat_mmu::Stats` under its own name, plus the simulator's host, TLB and checker counts.
    pub enum Metric {
        /// Present 4 KiB stage-2 leaves (KVM `pages_4k`).
        Pages4K = "pages_4k",
        /// Present 2 MiB stage-2 leaves (KVM `pages_2m`).
        Pages2M = "pages_2m",
        /// Present 1 GiB stage-2 leaves (KVM `pages_1g`).
        Pages1G = "pages_1g",
        /// Fraction (0..=1) of mapped guest memory that is mapped by huge stage-2 leaves.
        HugeFraction = "huge_fraction",
        /// Host mappings of guest memory: 2 MiB (PMD) leaves.
        HostPages2M = "host_pages_2m",
        /// Host mappings of guest memory: 1 GiB (PUD) leaves.
        HostPages1G = "host_pages_1g",
        /// Stage-2 faults handled.
        Faults = "faults",
        /// Faults that retried (raced an invalidation).
        Retries = "retries",
        /// Faults that found the translation already there.
        Spurious = "spurious",
        /// Faults outside every memslot (MMIO exits).
        Mmio = "mmio",
        /// Faults that replaced a table by a huge leaf.
        HugeOnFault = "huge_on_fault",
        /// Leaves write-protected for dirty logging.
        WriteProtected = "write_protected",
        /// Huge leaves split on faults.
        Splits = "splits",
        /// Huge leaves split eagerly.
        EagerSplits = "eager_splits",
        /// Huge blocks recovered after dirty logging.
        Recoveries = "recoveries",
        /// Leaves removed by invalidations and zaps.
        ZappedLeaves = "zapped_leaves",
        /// Invalidations that hit a memslot.
        Invalidations = "invalidations",
        /// TLB flushes issued (KVM `remote_tlb_flush`).
        TlbFlushes = "remote_tlb_flush",
        /// Operations that asked for a TLB flush (KVM `remote_tlb_flush_requests`).
        TlbFlushRequests = "remote_tlb_flush_requests",
        /// Range invalidations (and full flushes) sent to the TLB by those flushes.
        TlbFlushRanges = "remote_tlb_flush_ranges",
        /// Huge blocks currently split by the NX workaround (KVM `nx_lpage_splits`).
        NxSplits = "nx_lpage_splits",
        /// NX-split blocks recovered.
        NxRecovered = "nx_recovered",
        /// Dirty pages reported by harvests.
        DirtyPagesHarvested = "dirty_pages_harvested",
        /// Times a vCPU's dirty ring reached its soft limit (`KVM_EXIT_DIRTY_RING_FULL`).
        DirtyRingFull = "dirty_ring_full",
        /// Stage-2 page-table pages.
        TablePages = "table_pages",
        /// TLB misses (all vCPUs).
        TlbMisses = "tlb_misses",
        /// Memory references made by 2D page walks.
        WalkRefs = "walk_refs",
        /// Isolation violations found by the checker (invariant I1/I3: must be 0).
        IsolationViolations = "isolation_violations",
        /// Guest writes missing from the dirty log (invariant I5: must be 0).
        DirtyLost = "dirty_lost",
        /// Failures of the MMU's audit (I1, I2, I6: must be 0).
        AuditFailures = "audit_failures",
    }
}

/// Spelling of a page size in scenario files: `"4K"`, `"2M"`, `"1G"`.
pub fn page_size_name(size: PageSize) -> &'static str {
    match size {
        PageSize::Size4K => "4K",
        PageSize::Size2M => "2M",
        PageSize::Size1G => "1G",
    }
}

/// Parse `"4K"`, `"2M"` or `"1G"`.
pub fn page_size_from_name(s: &str) -> Option<PageSize> {
    PageSize::ALL.into_iter().find(|&p| page_size_name(p) == s)
}

/// The accepted page-size spellings, for error messages.
pub(crate) fn page_sizes_accepted() -> String {
    quoted_list(PageSize::ALL.map(page_size_name))
}

/// Serde adapter for `slat_pt::PageSize` fields written `"4K"`, `"2M"` or `"1G"`.
pub(crate) mod page_size {
    use super::*;

    struct V;

    impl Visitor<'_> for V {
        type Value = PageSize;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "one of {}", page_sizes_accepted())
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<PageSize, E> {
            page_size_from_name(s).ok_or_else(|| E::custom(format_args!("expected one of {}", page_sizes_accepted())))
        }
    }

    /// Deserialize a page size.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PageSize, D::Error> {
        d.deserialize_str(V)
    }

    /// Deserialize an optional page size (use with `#[serde(default)]`).
    pub(crate) fn option<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PageSize>, D::Error> {
        d.deserialize_str(V).map(Some)
    }
}
