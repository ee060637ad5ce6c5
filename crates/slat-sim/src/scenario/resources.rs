//! Resource bounds: what a scenario will cost the simulator, estimated before it runs, and the
//! limits a run must stay within.
//!
//! The estimate is an upper bound built from the scenario alone, so that a scenario that would
//! not fit fails at once with one line naming the field to blame, the estimate and the limit,
//! instead of an allocation abort minutes into the run:
//!
//! ```text
//! big.toml:24: vm.tlb.stlb.entries = 2147483648: the TLBs would need about 80 GiB (1 vCPU × 2,147,485,240 entries × 40 bytes); the limit is 16 GiB (raise it with --max-memory)
//! ```
//!
//! The parts of the estimate:
//! - TLBs: every vCPU has its own arrays, [`TLB_ENTRY_BYTES`] per entry.
//! - Guest memory mapped with 4 KiB pages (stage-2 leaves, host page tables and folios, TLB
//!   bookkeeping): [`BYTES_PER_4K_PAGE`] each. A run maps at most one 4 KiB page per access, or
//!   a whole 2 MiB block per access when something may split huge mappings later (dirty
//!   logging, host events on ranges, the NX workaround), and never more than its memslots hold.
//! - Guest memory mapped huge: [`BYTES_PER_2M_BLOCK`] per 2 MiB block, at most one block per
//!   access.

use super::document::{DocPath, Locator};
use super::error::{ErrorKind, ScenarioError};
use super::event::Action;
use super::schema::TlbArray;
use super::Scenario;
use crate::hw::{HwConfig, TlbArrayConfig};

/// Simulator memory per guest 4 KiB page mapped with a 4 KiB leaf: an upper bound of the
/// measured peak, 53 bytes when the host maps the page with 4 KiB too (folio record 18, object
/// index 8, host and stage-2 page tables 8 each, page flags 1, audit scratch), 12 bytes when the
/// host backs it with a huge page. Measured with `cargo bench -p slat-sim --bench memory`, which
/// counts the heap of whole runs at two guest sizes.
pub const BYTES_PER_4K_PAGE: u64 = 64;
/// Simulator memory per 2 MiB block mapped with one huge leaf (measured).
pub const BYTES_PER_2M_BLOCK: u64 = 1024;
/// Simulator memory per TLB entry of one vCPU.
pub const TLB_ENTRY_BYTES: u64 = 40;
/// Memory of the simulator itself before any guest memory (code, buffers, the report).
pub const BASE_BYTES: u64 = 16 << 20;

/// Limits a run must stay within.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Simulator memory (bytes).
    pub memory: u64,
    /// Guest accesses in the whole run.
    pub accesses: u64,
    /// Timed events (each one audits the whole VM).
    pub events: usize,
    /// Real memory a `host.kind = "linux"` run may map (bytes).
    pub real_memory: u64,
}

impl Limits {
    /// No limit at all.
    pub const NONE: Limits = Limits { memory: u64::MAX, accesses: u64::MAX, events: usize::MAX, real_memory: u64::MAX };
    /// Default access limit: about four minutes of simulation at full speed.
    pub const DEFAULT_ACCESSES: u64 = 1 << 32;
    /// Default event limit.
    pub const DEFAULT_EVENTS: usize = 10_000;
    /// Default real-memory limit of a `host.kind = "linux"` run: 1 GiB (room for one 1 GiB
    /// hugetlb page).
    pub const DEFAULT_REAL_MEMORY: u64 = 1 << 30;

    /// The default limits with `memory` bytes of memory.
    pub const fn with_memory(memory: u64) -> Limits {
        Limits {
            memory,
            accesses: Self::DEFAULT_ACCESSES,
            events: Self::DEFAULT_EVENTS,
            real_memory: Self::DEFAULT_REAL_MEMORY,
        }
    }
}

/// One part of a memory estimate, and the field that drives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryPart {
    /// The dotted path of the field to change to make this part smaller.
    pub field: String,
    /// Bytes.
    pub bytes: u64,
    /// How it was computed, in words (`4 vCPUs × 1,696 entries × 40 bytes`).
    pub how: String,
    /// What it is (`the TLBs`, `guest memory mapped with 4 KiB pages`).
    pub what: &'static str,
}

/// What a scenario is estimated to cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Estimate {
    /// Memory, by part.
    pub parts: Vec<MemoryPart>,
    /// Guest accesses.
    pub accesses: u64,
    /// Timed events.
    pub events: usize,
}

impl Estimate {
    /// Total memory (bytes), including [`BASE_BYTES`].
    pub fn memory(&self) -> u64 {
        self.parts.iter().fold(BASE_BYTES, |a, p| a.saturating_add(p.bytes))
    }

    /// The largest part.
    pub fn largest(&self) -> Option<&MemoryPart> {
        self.parts.iter().max_by_key(|p| p.bytes)
    }
}

/// Whether an event may split huge mappings into 4 KiB ones over a whole range.
fn splits(a: &Action) -> bool {
    matches!(
        a,
        Action::DirtyLogOn { .. }
            | Action::Munmap(_)
            | Action::Mprotect { .. }
            | Action::MadviseDontneed(_)
            | Action::Migrate(_)
            | Action::KsmMerge { .. }
            | Action::BalloonInflate { .. }
            | Action::SharePteMap(_)
            | Action::SetAttributes { .. }
            | Action::WriteTrack { .. }
    )
}

/// `1234567` as `1,234,567`.
pub(crate) fn grouped(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `17179869184` as `16 GiB`, `1536` as `1.5 KiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 7] = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} bytes")
    } else if v >= 100.0 || v.fract() < 0.05 {
        format!("{v:.0} {}", UNITS[u])
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn tlb_array(a: &Option<TlbArray>, default: TlbArrayConfig) -> TlbArrayConfig {
    a.as_ref().map_or(default, |a| TlbArrayConfig { entries: a.entries as usize, ways: a.ways as usize })
}

impl Scenario {
    /// The hardware model's configuration: the defaults with `vm.tlb`'s overrides.
    pub fn hw_config(&self) -> HwConfig {
        let d = HwConfig::default();
        let t = &self.vm.tlb;
        HwConfig {
            l1_4k: tlb_array(&t.l1_4k, d.l1_4k),
            l1_2m: tlb_array(&t.l1_2m, d.l1_2m),
            l1_1g: tlb_array(&t.l1_1g, d.l1_1g),
            stlb: tlb_array(&t.stlb, d.stlb),
            stlb_1g: tlb_array(&t.stlb_1g, d.stlb_1g),
            walk_caches: t.walk_caches.unwrap_or(d.walk_caches),
            ..d
        }
    }

    /// An upper bound of what the run will cost (see the [module docs](self)).
    pub fn estimate(&self) -> Estimate {
        let mut parts = Vec::new();
        // TLBs, per vCPU.
        let hw = self.hw_config();
        let arrays = [
            ("l1_4k", hw.l1_4k.entries),
            ("l1_2m", hw.l1_2m.entries),
            ("l1_1g", hw.l1_1g.entries),
            ("stlb", hw.stlb.entries),
            ("stlb_1g", hw.stlb_1g.entries),
        ];
        let entries: u64 = arrays.iter().map(|(_, e)| *e as u64).sum::<u64>()
            + hw.psc_entries.iter().map(|&e| e as u64).sum::<u64>()
            + hw.nested_tlb_entries as u64;
        let vcpus = self.vm.vcpus.max(1) as u64;
        let biggest = arrays.iter().max_by_key(|(_, e)| *e).map(|(n, _)| *n).unwrap_or("stlb");
        let set_by_file = match biggest {
            "l1_4k" => self.vm.tlb.l1_4k.is_some(),
            "l1_2m" => self.vm.tlb.l1_2m.is_some(),
            "l1_1g" => self.vm.tlb.l1_1g.is_some(),
            "stlb" => self.vm.tlb.stlb.is_some(),
            _ => self.vm.tlb.stlb_1g.is_some(),
        };
        let tlb_bytes = vcpus.saturating_mul(entries).saturating_mul(TLB_ENTRY_BYTES);
        parts.push(MemoryPart {
            field: if set_by_file && entries > 4096 { format!("vm.tlb.{biggest}.entries") } else { "vm.vcpus".into() },
            bytes: tlb_bytes,
            how: format!(
                "{} vCPU{} × {} entries × {TLB_ENTRY_BYTES} bytes",
                grouped(vcpus),
                if vcpus == 1 { "" } else { "s" },
                grouped(entries)
            ),
            what: "the TLBs",
        });

        // Guest memory.
        let accesses = self.total_accesses();
        let slot_pages: u64 = self.memslots.iter().map(|m| m.size.0 / 4096).sum();
        let may_split = self.policy.nx_huge_pages || self.events.iter().any(|e| splits(&e.action));
        let per_access = if may_split { 512 } else { 1 };
        let pages_4k = slot_pages.min(accesses.saturating_mul(per_access));
        let busiest = self.phases.iter().enumerate().max_by_key(|(_, p)| p.spec.accesses).map(|(i, _)| i);
        let largest_slot = self.memslots.iter().enumerate().max_by_key(|(_, m)| m.size.0).map(|(i, _)| i);
        let field = match (busiest, largest_slot) {
            (Some(p), Some(_)) if accesses.saturating_mul(per_access) < slot_pages => format!("phase[{p}].accesses"),
            (_, Some(s)) => format!("memslot[{s}].size"),
            (Some(p), None) => format!("phase[{p}].accesses"),
            (None, None) => "memslot".into(),
        };
        let how = if pages_4k == slot_pages {
            format!("{} pages of memslots × {BYTES_PER_4K_PAGE} bytes", grouped(pages_4k))
        } else if may_split {
            format!("{} accesses × 512 pages × {BYTES_PER_4K_PAGE} bytes", grouped(accesses))
        } else {
            format!("{} accesses × {BYTES_PER_4K_PAGE} bytes", grouped(accesses))
        };
        parts.push(MemoryPart {
            field: field.clone(),
            bytes: pages_4k.saturating_mul(BYTES_PER_4K_PAGE),
            how,
            what: "guest memory mapped with 4 KiB pages",
        });
        let blocks = (slot_pages / 512).min(accesses);
        parts.push(MemoryPart {
            field,
            bytes: blocks.saturating_mul(BYTES_PER_2M_BLOCK),
            how: format!("{} blocks × {BYTES_PER_2M_BLOCK} bytes", grouped(blocks)),
            what: "guest memory mapped with 2 MiB pages",
        });
        Estimate { parts, accesses, events: self.events.len() }
    }
}

/// Rough simulation speed, for time estimates in messages.
const ACCESSES_PER_SECOND: u64 = 10_000_000;

fn duration(seconds: u64) -> String {
    match seconds {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 2 * 86400 => format!("{} h", s / 3600),
        s if s < 2 * 365 * 86400 => format!("{} days", s / 86400),
        s => format!("{} years", grouped(s / (365 * 86400))),
    }
}

/// Check the number of events before validation (which costs time per event).
pub(crate) fn check_events(count: usize, limits: &Limits, loc: &Locator<'_>) -> Result<(), ScenarioError> {
    if count <= limits.events {
        return Ok(());
    }
    let path = DocPath::root().key("event").index(limits.events);
    Err(loc
        .error(
            &path,
            ErrorKind::TooLarge,
            format!(
                "{} events; the limit is {} (each event audits the whole VM; raise it with --max-events)",
                grouped(count as u64),
                grouped(limits.events as u64)
            ),
        )
        .without_value())
}

/// Check a validated scenario's estimate against `limits`.
pub(crate) fn check(scenario: &Scenario, limits: &Limits, loc: &Locator<'_>) -> Result<(), ScenarioError> {
    let est = scenario.estimate();
    if est.accesses > limits.accesses {
        let busiest = scenario.phases.iter().enumerate().max_by_key(|(_, p)| p.spec.accesses).map_or(0, |(i, _)| i);
        let path = DocPath::root().key("phase").index(busiest).key("accesses");
        return Err(loc.error(
            &path,
            ErrorKind::TooLarge,
            format!(
                "the run would make {} guest accesses (about {} at {} M accesses/s); the limit is {} (raise it with --max-accesses)",
                grouped(est.accesses),
                duration(est.accesses / ACCESSES_PER_SECOND),
                ACCESSES_PER_SECOND / 1_000_000,
                grouped(limits.accesses)
            ),
        ));
    }
    let total = est.memory();
    if total > limits.memory {
        let part = est.largest().expect("an estimate has parts");
        let path = DocPath::parse(&part.field).unwrap_or_else(|_| DocPath::root());
        return Err(loc.error(
            &path,
            ErrorKind::TooLarge,
            format!(
                "the simulation would need about {} ({} would need {}: {}); the limit is {} (raise it with --max-memory)",
                human_bytes(total),
                part.what,
                human_bytes(part.bytes),
                part.how,
                human_bytes(limits.memory)
            ),
        ));
    }
    Ok(())
}
