//! The two-dimensional walk on a TLB miss.
//!
//! The guest tables have n levels, stage 2 has m. Every guest table entry the walk reads sits at
//! a gpa, which stage 2 must translate first (an m-reference walk of the real stage-2 tables
//! through [`PageTable::hw_walk`], which also sets their accessed state), and then costs one
//! reference itself; the final data gpa needs one more stage-2 walk. Without walk caches that is
//! `n * (m + 1) + m = (n + 1)(m + 1) - 1` references: 24 for 4 x 4, 19 with 2 MiB stage-2 leaves
//! (m = 3), 15 when the guest page is 2 MiB as well (n = 3), 35 for 5 x 5. A guest table read
//! is a stage-2 *read*; the final access has the guest's access kind (a write sets the stage-2
//! dirty state). A stage-2 fault anywhere ends the walk and is reported with its gpa.
//!
//! With walk caches (per vCPU), a paging-structure-cache hit starts the walk lower down with the
//! table's host address known, and a nested-TLB hit translates a guest table page for free.

use slat_pt::size::{table_index, ENTRIES_PER_TABLE};
use slat_pt::{Access, PageSize, Translation, WalkFault};

use super::check::{Violation, ViolationKind, ViolationLog};
use super::guest::{GuestTables, GUEST_PTE_BYTES};
use super::walk_cache::{Stage2Leaf, TablePointer, WalkCaches};
use super::Stage2;

/// How a walk ended.
#[derive(Debug, Clone, Copy)]
pub(crate) enum WalkEnd {
    /// The gva translates: guest leaf of `guest_size` to `gpa`, then stage 2 (`stage2.pa` is the
    /// hpa of the accessed byte).
    Translated { gpa: u64, guest_size: PageSize, stage2: Translation },
    /// Stage 2 could not translate `gpa` for `access`.
    Stage2Fault { gpa: u64, access: Access, fault: WalkFault, on_guest_table: bool },
    /// The guest tables do not map the gva.
    GuestFault,
}

/// A finished walk and what it cost.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Walk {
    pub end: WalkEnd,
    pub refs: u32,
    pub psc_hits: u32,
    pub nested_hits: u32,
}

/// Everything a walk needs besides the address.
pub(crate) struct Walker<'a, S: Stage2 + ?Sized> {
    pub guest: &'a GuestTables,
    pub stage2: &'a S,
    pub caches: Option<&'a mut WalkCaches>,
    /// Verify walk-cache entries against the current stage-2 tables.
    pub checked: bool,
    pub violations: &'a mut ViolationLog,
    pub vcpu: usize,
}

impl<S: Stage2 + ?Sized> Walker<'_, S> {
    /// Walk `gva` for `access`.
    pub(crate) fn walk(&mut self, gva: u64, access: Access) -> Walk {
        let mut w = Walk { end: WalkEnd::GuestFault, refs: 0, psc_hits: 0, nested_hits: 0 };
        let region = self.guest.region_of(gva).copied();
        let leaf_level = region.map(|r| r.page_size.level());

        let mut level = self.guest.levels() - 1;
        let mut table_gpa = self.guest.root_gpa();
        let mut known_leaf: Option<Stage2Leaf> = None;
        if let Some(c) = self.caches.as_deref_mut() {
            // The lowest cached level skips the most; only levels above the leaf hold pointers.
            let lowest = leaf_level.map_or(1, |l| l + 1);
            for l in lowest..level + 1 {
                if let Some(p) = c.psc_lookup(l, gva) {
                    w.psc_hits += 1;
                    level = l - 1;
                    table_gpa = p.table_gpa;
                    known_leaf = Some(p.leaf);
                    break;
                }
            }
        }

        // The level whose entry pointed to the current table (for the paging-structure cache).
        let mut pointer_level: Option<u8> = None;
        loop {
            let entry_gpa = table_gpa + table_index(gva, level, ENTRIES_PER_TABLE) as u64 * GUEST_PTE_BYTES;
            let leaf = match known_leaf.take() {
                Some(l) => {
                    self.check_cached(gva, entry_gpa, &l);
                    l
                }
                None => match self.translate_table(gva, entry_gpa, &mut w) {
                    Ok(l) => l,
                    Err(fault) => {
                        w.end =
                            WalkEnd::Stage2Fault { gpa: entry_gpa, access: Access::Read, fault, on_guest_table: true };
                        return w;
                    }
                },
            };
            if let (Some(pl), Some(c)) = (pointer_level.take(), self.caches.as_deref_mut()) {
                c.psc_insert(pl, gva, TablePointer { table_gpa, leaf });
            }
            w.refs += 1; // the guest entry itself
            if Some(level) == leaf_level {
                break;
            }
            match level.checked_sub(1).and_then(|l| self.guest.table_gpa(l, gva)) {
                Some(next) => {
                    pointer_level = Some(level);
                    table_gpa = next;
                    level -= 1;
                }
                None => {
                    w.end = WalkEnd::GuestFault;
                    return w;
                }
            }
        }

        // `leaf_level` was `Some`, so `region` is too.
        let Some(r) = region else { return w };
        let gpa = r.gpa + (gva - r.gva);
        let hw = self.stage2.hw_walk(gpa, access);
        w.refs += hw.refs;
        w.end = match hw.result {
            Ok(t) => WalkEnd::Translated { gpa, guest_size: r.page_size, stage2: t },
            Err(fault) => WalkEnd::Stage2Fault { gpa, access, fault, on_guest_table: false },
        };
        w
    }

    /// The stage-2 leaf translating the guest table entry at `entry_gpa`: from the nested TLB,
    /// or by a stage-2 read walk.
    fn translate_table(&mut self, gva: u64, entry_gpa: u64, w: &mut Walk) -> Result<Stage2Leaf, WalkFault> {
        if let Some(l) = self.caches.as_deref_mut().and_then(|c| c.nested_lookup(entry_gpa)) {
            w.nested_hits += 1;
            self.check_cached(gva, entry_gpa, &l);
            return Ok(l);
        }
        let hw = self.stage2.hw_walk(entry_gpa, Access::Read);
        w.refs += hw.refs;
        let t = hw.result?;
        let base = t.size.align_down(entry_gpa);
        let leaf = Stage2Leaf { gpa: base, hpa: t.pa - (entry_gpa - base), size: t.size };
        if let Some(c) = self.caches.as_deref_mut() {
            c.nested_insert(leaf);
        }
        Ok(leaf)
    }

    /// In checked mode, compare a walk-cache translation of a guest table entry with stage 2.
    fn check_cached(&mut self, gva: u64, entry_gpa: u64, leaf: &Stage2Leaf) {
        if !self.checked {
            return;
        }
        let cached_hpa = leaf.hpa_of(entry_gpa);
        let current_hpa = self.stage2.translate(entry_gpa).map(|t| t.pa);
        if current_hpa != Some(cached_hpa) {
            self.violations.record(Violation {
                vcpu: self.vcpu,
                gva,
                gpa: entry_gpa,
                cached_hpa,
                current_hpa,
                access: Access::Read,
                kind: ViolationKind::StaleWalkCache,
            });
        }
    }
}
