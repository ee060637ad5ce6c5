//! Timed events: MMU operations (dirty logging, memslot changes, attributes) and host events
//! (munmap, khugepaged, KSM, balloon, ...), each at a point of the workload.

use slat_pt::PageSize;

use super::error::Location;
use super::names::{Attribute, EventKind, Prot};

/// A byte range inside a memslot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SlotRange {
    /// Memslot id.
    pub slot: u32,
    /// Offset from the start of the slot (4 KiB aligned).
    pub offset: u64,
    /// Length (a non-zero multiple of 4 KiB).
    pub len: u64,
}

/// What an event does, with its parameters.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Start dirty logging on one slot, or on every present slot.
    DirtyLogOn {
        /// The slot (`None`: every slot).
        slot: Option<u32>,
    },
    /// Stop dirty logging (and recover huge leaves per `policy.recover`).
    DirtyLogOff {
        /// The slot (`None`: every slot).
        slot: Option<u32>,
    },
    /// Harvest the dirty log.
    Harvest {
        /// The slot (`None`: every logged slot).
        slot: Option<u32>,
    },
    /// Clear a 64-page-aligned range of the dirty log (manual-clear mode).
    ClearLog(SlotRange),
    /// One NX huge-page recovery pass.
    RecoverNx,
    /// Add a memslot declared with `at_boot = false`.
    MemslotAdd {
        /// The slot.
        slot: u32,
    },
    /// Delete a memslot.
    MemslotDelete {
        /// The slot.
        slot: u32,
    },
    /// Move a memslot to a new guest physical address.
    MemslotMove {
        /// The slot.
        slot: u32,
        /// The new first guest physical address.
        gpa: u64,
    },
    /// Set the memory attribute of a range.
    SetAttributes {
        /// The range.
        range: SlotRange,
        /// The attribute.
        attribute: Attribute,
    },
    /// Start or stop write tracking of a range.
    WriteTrack {
        /// The range.
        range: SlotRange,
        /// Start (`true`) or stop tracking.
        enable: bool,
    },
    /// Host: munmap a range of the slot's host mapping.
    Munmap(SlotRange),
    /// Host: mprotect a range.
    Mprotect {
        /// The range.
        range: SlotRange,
        /// The new protection.
        prot: Prot,
    },
    /// Host: `MADV_DONTNEED` a range.
    MadviseDontneed(SlotRange),
    /// Host: one khugepaged pass over a range (`None`: over every slot).
    Khugepaged(Option<SlotRange>),
    /// Host: `MADV_COLLAPSE` a range.
    MadviseCollapse(SlotRange),
    /// Host: migrate the pages of a range.
    Migrate(SlotRange),
    /// Host: memory compaction.
    Compact,
    /// Host: KSM merges `ratio` of the 4 KiB pages of a range.
    KsmMerge {
        /// The range.
        range: SlotRange,
        /// Fraction 0..=1 of the range's pages that find an identical page.
        ratio: f64,
    },
    /// Guest balloon takes `amount` bytes out of a range, `unit` at a time, at pseudo-random
    /// places chosen from the scenario seed.
    BalloonInflate {
        /// Where the ballooned pages come from.
        range: SlotRange,
        /// Bytes (a multiple of `unit`, at most the range length).
        amount: u64,
        /// Granule of the balloon (4 KiB for classic virtio-balloon, 2 MiB for free page
        /// reporting at pageblock order).
        unit: PageSize,
    },
    /// Guest balloon gives memory back.
    BalloonDeflate {
        /// The slot.
        slot: u32,
        /// Bytes to give back (`None`: everything inflated in the slot).
        amount: Option<u64>,
    },
    /// Host: a second process maps a range of a shmem (or page-cache) slot with 4 KiB PTEs.
    SharePteMap(SlotRange),
    /// Host: reclaim ages a range (`None`: every slot).
    ReclaimAge(Option<SlotRange>),
    /// Host: set the hugetlb pool of `unit` pages to `pages` pages (`nr_hugepages`).
    HugetlbResize {
        /// 2M or 1G.
        unit: PageSize,
        /// The new pool size in pages.
        pages: u64,
    },
}

impl Action {
    /// The event kind.
    pub fn kind(&self) -> EventKind {
        match self {
            Action::DirtyLogOn { .. } => EventKind::DirtyLogOn,
            Action::DirtyLogOff { .. } => EventKind::DirtyLogOff,
            Action::Harvest { .. } => EventKind::Harvest,
            Action::ClearLog(_) => EventKind::ClearLog,
            Action::RecoverNx => EventKind::RecoverNx,
            Action::MemslotAdd { .. } => EventKind::MemslotAdd,
            Action::MemslotDelete { .. } => EventKind::MemslotDelete,
            Action::MemslotMove { .. } => EventKind::MemslotMove,
            Action::SetAttributes { .. } => EventKind::SetAttributes,
            Action::WriteTrack { .. } => EventKind::WriteTrack,
            Action::Munmap(_) => EventKind::Munmap,
            Action::Mprotect { .. } => EventKind::Mprotect,
            Action::MadviseDontneed(_) => EventKind::MadviseDontneed,
            Action::Khugepaged(_) => EventKind::Khugepaged,
            Action::MadviseCollapse(_) => EventKind::MadviseCollapse,
            Action::Migrate(_) => EventKind::Migrate,
            Action::Compact => EventKind::Compact,
            Action::KsmMerge { .. } => EventKind::KsmMerge,
            Action::BalloonInflate { .. } => EventKind::BalloonInflate,
            Action::BalloonDeflate { .. } => EventKind::BalloonDeflate,
            Action::SharePteMap(_) => EventKind::SharePteMap,
            Action::ReclaimAge(_) => EventKind::ReclaimAge,
            Action::HugetlbResize { .. } => EventKind::HugetlbResize,
        }
    }

    /// The memslot the event concerns, if it names one.
    pub fn slot(&self) -> Option<u32> {
        match self {
            Action::DirtyLogOn { slot } | Action::DirtyLogOff { slot } | Action::Harvest { slot } => *slot,
            Action::MemslotAdd { slot }
            | Action::MemslotDelete { slot }
            | Action::MemslotMove { slot, .. }
            | Action::BalloonDeflate { slot, .. } => Some(*slot),
            Action::ClearLog(r)
            | Action::Munmap(r)
            | Action::MadviseDontneed(r)
            | Action::MadviseCollapse(r)
            | Action::Migrate(r)
            | Action::SharePteMap(r)
            | Action::SetAttributes { range: r, .. }
            | Action::WriteTrack { range: r, .. }
            | Action::Mprotect { range: r, .. }
            | Action::KsmMerge { range: r, .. }
            | Action::BalloonInflate { range: r, .. } => Some(r.slot),
            Action::Khugepaged(r) | Action::ReclaimAge(r) => r.map(|r| r.slot),
            Action::RecoverNx | Action::Compact | Action::HugetlbResize { .. } => None,
        }
    }
}

/// An event at a point of the workload.
///
/// Events fire before the access they are placed at, in order of that access count; events at
/// the same count fire phase by phase (those at the end of a phase before those at the start of
/// the next), then in file order.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Index of the phase it belongs to.
    pub phase: usize,
    /// Accesses into that phase before the event happens (0: before the phase's first access;
    /// the phase's length: after its last).
    pub at: u64,
    /// The same point as an absolute access count from the start of the run.
    pub access: u64,
    /// What happens.
    pub action: Action,
    /// Its position among the file's `[[event]]` tables (`event[3]`).
    pub index: usize,
    /// Where it is written, for reports.
    pub location: Location,
}
