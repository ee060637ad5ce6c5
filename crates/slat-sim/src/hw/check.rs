//! Isolation checking: what a walk produced, what a violation is, and where violations go.
//!
//! In checked mode every TLB hit is compared with the current stage-2 tables
//! (`PageTable::translate` of the cached gpa must give the cached hpa and allow the access), and
//! so is every walk, including each walk-cache entry it used. A TLB entry that survived a flush
//! that should have removed it shows up here. An optional external [`WalkChecker`] sees every
//! completed walk (the engine checks I1 against the host with it).

use slat_pt::{Access, PageSize};

/// A completed 2D walk: what it translated and what it cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalkRecord {
    /// vCPU that walked.
    pub vcpu: usize,
    /// The accessed gva.
    pub gva: u64,
    /// Its gpa (guest translation).
    pub gpa: u64,
    /// Its hpa (stage-2 translation of `gpa`).
    pub hpa: u64,
    /// The access.
    pub access: Access,
    /// Guest page size.
    pub guest_size: PageSize,
    /// Stage-2 leaf size.
    pub stage2_size: PageSize,
    /// Size cached in the TLB: min(guest, stage-2).
    pub cached_size: PageSize,
    /// Memory references of the walk.
    pub refs: u32,
}

/// An external check run on every completed walk; an `Err` is recorded as a violation.
pub type WalkChecker = Box<dyn FnMut(&WalkRecord) -> Result<(), String> + Send>;

/// What was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViolationKind {
    /// Stage 2 no longer maps the gpa, but a cached translation still did.
    Unmapped,
    /// Stage 2 maps the gpa to another hpa than the cached one.
    WrongHpa,
    /// The cached translation allowed an access the current stage-2 leaf forbids.
    StalePermission,
    /// A write went through a cached dirty translation while the stage-2 leaf is clean: the
    /// hardware dirty state would miss it (a dirty-logging hazard, counted apart from
    /// isolation violations).
    StaleDirty,
    /// A walk-cache entry (paging-structure cache or nested TLB) translated a guest table page
    /// to another hpa than stage 2 does now (`gpa` is the guest table entry).
    StaleWalkCache,
    /// The external walk checker rejected a walk.
    External(String),
}

/// One detected violation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// vCPU whose access found it.
    pub vcpu: usize,
    /// The accessed gva.
    pub gva: u64,
    /// The gpa concerned (data, or a guest table entry for [`ViolationKind::StaleWalkCache`]).
    pub gpa: u64,
    /// The hpa the cached (or walked) translation gave.
    pub cached_hpa: u64,
    /// What stage 2 translates `gpa` to now (`None`: not mapped).
    pub current_hpa: Option<u64>,
    /// The access.
    pub access: Access,
    /// What was wrong.
    pub kind: ViolationKind,
}

/// Violation counters and the first few details.
#[derive(Debug, Default)]
pub(crate) struct ViolationLog {
    pub isolation: u64,
    pub dirty: u64,
    pub details: Vec<Violation>,
    pub max_details: usize,
}

impl ViolationLog {
    pub(crate) fn new(max_details: usize) -> Self {
        ViolationLog { max_details, ..Default::default() }
    }

    pub(crate) fn record(&mut self, v: Violation) {
        if v.kind == ViolationKind::StaleDirty {
            self.dirty += 1;
        } else {
            self.isolation += 1;
        }
        if self.details.len() < self.max_details {
            self.details.push(v);
        }
    }
}
