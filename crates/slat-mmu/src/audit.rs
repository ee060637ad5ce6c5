//! Checking the MMU against its contract (I1 isolation, I2 legal huge leaves, I6 accounting),
//! explaining single gfns, and the current why-not-huge picture.

use crate::platform::Platform;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use slat_pt::{Format, FrameAllocator, Gpa, Hva, Leaf, PageSize, Perms};

use crate::config::DirtyLogMode;
use crate::host::HostMemory;
use crate::mmu::Mmu;
use crate::policy::LeafUse;

/// Which invariant a violation breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Invariant {
    /// I1: a leaf maps something other than what the host maps, or wider permissions.
    Isolation,
    /// I2: a huge leaf that the rules do not allow.
    LegalHugeLeaf,
    /// I6: counters differ from a recount, or frames leak.
    Accounting,
}

/// One broken invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Violation {
    /// The invariant.
    pub invariant: Invariant,
    /// Guest-physical address of the offending leaf (0 for global checks).
    pub gpa: u64,
    /// What is wrong.
    pub detail: String,
}

/// The audit failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} invariant violation(s); first: {:?} at gpa {:#x}: {}", .violations.len(), .violations[0].invariant, .violations[0].gpa, .violations[0].detail)]
pub struct AuditError {
    /// Every violation found.
    pub violations: Vec<Violation>,
}

/// What an audit looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct AuditReport {
    /// Leaves checked.
    pub leaves: u64,
    /// Page-table pages counted.
    pub table_pages: u64,
}

impl<F: Format, P: Platform> Mmu<F, P> {
    /// Recount and check I1 (every leaf maps exactly what the host maps, with no wider
    /// permissions), I2 (every huge leaf is legal) and I6 (counters equal a recount; frames are
    /// all accounted for). Call it when no other operation runs.
    ///
    /// # Errors
    /// [`AuditError`] listing every violation found (the report of what was checked is inside it).
    pub fn audit(&self) -> Result<AuditReport, AuditError> {
        let slots = self.slots.read();
        let pt = self.tables.read();
        let mut v: Vec<Violation> = Vec::new();
        let mut bad = |invariant, gpa, detail: String| v.push(Violation { invariant, gpa, detail });

        // I6: accounting.
        let counts = pt.counts();
        let recount = pt.recount();
        if counts != recount {
            bad(Invariant::Accounting, 0, format!("counters {counts:?} != recount {recount:?}"));
        }
        let parked = self.pending_free.lock().len() as u64;
        let live = pt.allocator().live_frames() as u64;
        if live != recount.table_pages + parked {
            bad(
                Invariant::Accounting,
                0,
                format!("allocator holds {live} frames, tables {} + parked {parked}", recount.table_pages),
            );
        }

        // I1 and I2, leaf by leaf.
        let mut leaves = 0;
        let limit = pt.input_limit();
        let mut check = |l: &Leaf| {
            leaves += 1;
            let gfn = l.gpa.gfn().0;
            let pages = l.size.pages();
            let Some(slot) = slots.find_gfn(gfn) else {
                bad(Invariant::Isolation, l.gpa.0, format!("{} leaf outside every memslot", l.size));
                return;
            };
            if gfn + pages > slot.end_gfn() {
                bad(
                    Invariant::LegalHugeLeaf,
                    l.gpa.0,
                    format!("{} leaf crosses the end of memslot {}", l.size, slot.id),
                );
            }
            let hva = slot.hva_of(gfn);
            let Some(host) = self.host.lookup(Hva(hva)) else {
                bad(Invariant::Isolation, l.gpa.0, format!("host no longer maps hva {hva:#x}"));
                return;
            };
            if host.pfn.hpa() != l.pa {
                bad(
                    Invariant::Isolation,
                    l.gpa.0,
                    format!("leaf maps pa {:#x}, host maps hva {hva:#x} to {:#x}", l.pa, host.pfn.hpa()),
                );
            }
            let writable = l.attrs.perms.contains(Perms::WRITE);
            if writable && (slot.readonly || !host.writable) {
                bad(Invariant::Isolation, l.gpa.0, format!("writable leaf over read-only memory (slot {})", slot.id));
            }
            if writable
                && slot.is_logging()
                && self.config.dirty_log != DirtyLogMode::HardwareDirty
                && !slot.is_marked_dirty(gfn)
            {
                bad(
                    Invariant::Isolation,
                    l.gpa.0,
                    "writable leaf in a dirty-logged slot for a page not in the log".into(),
                );
            }
            // The attribute rules (policy.rs): no permission the rules withhold, the memory type
            // they give.
            let rules = self.leaf_attrs(slot, gfn, l.size, &host, LeafUse::Recovery { accessed: false });
            if !rules.perms.contains(l.attrs.perms & (Perms::EXEC | Perms::WRITE)) {
                bad(
                    Invariant::Isolation,
                    l.gpa.0,
                    format!("{} leaf has {:?}, the rules allow {:?}", l.size, l.attrs.perms, rules.perms),
                );
            }
            if l.attrs.mem_type != rules.mem_type {
                bad(
                    Invariant::Isolation,
                    l.gpa.0,
                    format!("{} leaf is {:?}, the rules say {:?}", l.size, l.attrs.mem_type, rules.mem_type),
                );
            }
            if writable && slot.is_write_tracked(gfn) {
                bad(Invariant::Isolation, l.gpa.0, "writable leaf over a write-tracked gfn".into());
            }
            if l.size == PageSize::Size4K {
                return;
            }
            // I2: a huge leaf must be legal now.
            if host.size < l.size {
                bad(Invariant::LegalHugeLeaf, l.gpa.0, format!("{} leaf but host maps {}", l.size, host.size));
            }
            if !slot.congruent(l.size) {
                bad(Invariant::LegalHugeLeaf, l.gpa.0, format!("{} leaf but gfn and hva are not congruent", l.size));
            }
            if l.size > self.config.max_leaf || self.config.cap.is_some_and(|c| l.size > c) {
                bad(Invariant::LegalHugeLeaf, l.gpa.0, format!("{} leaf above the configured limit", l.size));
            }
            // A huge leaf may stay writable in a logged slot only while every page it maps there
            // is already in the log (initially-set mode before the first clear).
            if slot.is_logging()
                && writable
                && (gfn.max(slot.base_gfn)..(gfn + pages).min(slot.end_gfn())).any(|g| !slot.is_marked_dirty(g))
            {
                bad(
                    Invariant::LegalHugeLeaf,
                    l.gpa.0,
                    format!("writable {} leaf in a dirty-logged slot over pages not in the log", l.size),
                );
            }
            if self.config.nx.is_some() && l.attrs.perms.contains(Perms::EXEC) {
                bad(Invariant::LegalHugeLeaf, l.gpa.0, format!("executable {} leaf with the NX workaround on", l.size));
            }
            if slot.disallow_count(gfn, l.size) > 0 {
                bad(Invariant::LegalHugeLeaf, l.gpa.0, format!("{} leaf over a write-tracked gfn", l.size));
            }
            if slot.mixed(gfn, l.size) {
                bad(Invariant::LegalHugeLeaf, l.gpa.0, format!("{} leaf over mixed memory attributes", l.size));
            }
        };
        pt.for_each_leaf(Gpa(0), limit, &mut check);
        if v.is_empty() {
            Ok(AuditReport { leaves, table_pages: recount.table_pages })
        } else {
            Err(AuditError { violations: v })
        }
    }
}
