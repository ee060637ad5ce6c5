//! What a scenario may ask of a real host (`host.kind = "linux"`), checked before the run:
//! backings the kernel can give, no simulator-only knob, host events that map to real system
//! calls, and at most [`Limits::real_memory`] bytes of real memory.

use slat_pt::PageSize;

use super::document::{DocPath, Locator};
use super::error::{ErrorKind, ScenarioError};
use super::names::{quoted_list, Backing, EventKind, HostKind};
use super::resources::{human_bytes, Limits};
use super::schema::Memslot;
use super::Scenario;

/// The events a `host.kind = "linux"` run can play: every MMU-side event, and the host events
/// that are real system calls on the slot's own mapping (bracketed by the MMU notifier as the
/// kernel's own notifier would be).
pub const LINUX_EVENTS: &[EventKind] = &[
    EventKind::DirtyLogOn,
    EventKind::DirtyLogOff,
    EventKind::Harvest,
    EventKind::ClearLog,
    EventKind::RecoverNx,
    EventKind::MemslotAdd,
    EventKind::MemslotDelete,
    EventKind::MemslotMove,
    EventKind::SetAttributes,
    EventKind::WriteTrack,
    // mprotect(2).
    EventKind::Mprotect,
    // madvise(MADV_DONTNEED).
    EventKind::MadviseDontneed,
    // madvise(MADV_COLLAPSE).
    EventKind::MadviseCollapse,
    // madvise(MADV_DONTNEED) per chunk, as virtio-balloon in QEMU.
    EventKind::BalloonInflate,
    // Nothing on the host: the pages fault back in on their next access.
    EventKind::BalloonDeflate,
    // The notifier's clear_young over the range, as the kernel's page aging would call it.
    EventKind::ReclaimAge,
];

/// Why the real host cannot play an event kind, and what to use instead.
fn why_not(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Munmap => {
            "the slot's mapping belongs to the run until it ends; use madvise-dontneed to take pages away"
        }
        EventKind::Khugepaged => {
            "the real khugepaged runs on its own schedule and cannot be driven; use madvise-collapse for a collapse now"
        }
        EventKind::Migrate | EventKind::Compact => {
            "the kernel moves pages when it decides to, not on request of this run"
        }
        EventKind::KsmMerge => "KSM merges on its own schedule (and is often off: /sys/kernel/mm/ksm/run)",
        EventKind::SharePteMap => "there is no second process sharing the slot's memory",
        EventKind::HugetlbResize => "a run never shrinks a real hugetlb pool under its own mappings",
        _ => "the simulated host models it, this one cannot make it happen",
    }
}

/// Real memory a memslot maps: the slot plus its `hva_offset`, rounded up to its backing's page
/// size (the same mapping the simulated host makes). The real-memory limit counts hugetlbfs
/// slots through the pool pages reserved for them (`host.hugetlb_2m` / `_1g`).
pub fn real_memory(m: &Memslot) -> u64 {
    let granule = m.backing.hugetlb_page().map_or(PageSize::Size4K.bytes(), PageSize::bytes);
    (m.size.get() + m.hva_offset.get()).next_multiple_of(granule)
}

/// Check a validated scenario against what a real host can do.
pub(crate) fn check(s: &Scenario, limits: &Limits, loc: &Locator<'_>) -> Result<(), ScenarioError> {
    if s.host.kind != HostKind::Linux {
        return Ok(());
    }
    let host = DocPath::root().key("host");
    let invalid = |path: DocPath, message: String| loc.error(&path, ErrorKind::Invalid, message);
    let too_large = |path: DocPath, what: &str, total: u64| {
        loc.error(
            &path,
            ErrorKind::TooLarge,
            format!(
                "a linux-host run maps real memory: {what} need {}, over the limit of {} (raise it with --max-real-memory)",
                human_bytes(total),
                human_bytes(limits.real_memory)
            ),
        )
    };
    // Simulator-only knobs: the real host's state is what it is.
    let knobs = [
        ("fragmentation", s.host.fragmentation != 0.0, "0"),
        ("fragmentation_1g", s.host.fragmentation_1g != 0.0, "0"),
        ("dax_size", s.host.dax_size.get() != 0, "\"0\""),
        ("khugepaged_max_ptes_none", s.host.khugepaged_max_ptes_none != 511, "511"),
    ];
    for (key, set, default) in knobs {
        if set {
            return Err(invalid(
                host.key(key),
                format!("the simulated host's knob; a linux-host run cannot set it on the real kernel (remove it or set it to {default})"),
            ));
        }
    }
    let supported =
        [Backing::Anonymous, Backing::AnonymousThp, Backing::Shmem, Backing::Hugetlbfs2M, Backing::Hugetlbfs1G];
    let mut total = 0u64;
    for (i, m) in s.memslots.iter().enumerate() {
        let slot = DocPath::root().key("memslot").index(i);
        if !supported.contains(&m.backing) {
            return Err(invalid(
                slot.key("backing"),
                format!(
                    "a linux-host run cannot back a memslot with \"{}\" here; it can use {}",
                    m.backing,
                    quoted_list(supported.iter().map(|b| b.name()))
                ),
            ));
        }
        // hugetlbfs slots take their memory from the pools, counted below.
        if m.backing.hugetlb_page().is_none() {
            total += real_memory(m);
        }
        if total > limits.real_memory {
            return Err(too_large(slot.key("size"), "the memslots up to this one", total));
        }
    }
    // The pools are grown by these pages for the run, whether or not the slots use them all.
    for (key, pages, ps) in
        [("hugetlb_2m", s.host.hugetlb_2m, PageSize::Size2M), ("hugetlb_1g", s.host.hugetlb_1g, PageSize::Size1G)]
    {
        total = total.saturating_add(pages.saturating_mul(ps.bytes()));
        if total > limits.real_memory {
            return Err(too_large(host.key(key), "the memslots and the hugetlb pages reserved", total));
        }
    }
    for e in &s.events {
        let kind = e.action.kind();
        if !LINUX_EVENTS.contains(&kind) {
            return Err(invalid(
                DocPath::root().key("event").index(e.index).key("kind"),
                format!(
                    "a linux-host run cannot produce this event: {}; it can play {}",
                    why_not(kind),
                    quoted_list(LINUX_EVENTS.iter().map(|k| k.name()))
                ),
            ));
        }
    }
    Ok(())
}
