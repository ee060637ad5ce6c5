//! Hardware configuration: TLB array geometry, walk caches and checking.

use serde::{Deserialize, Serialize};

use super::HwError;

/// Geometry of one set-associative TLB array.
///
/// `entries == 0` disables the array. Otherwise `ways` must divide `entries` and the number of
/// sets (`entries / ways`) must be a power of two (sets are indexed by the low bits of the
/// virtual page number, as in hardware). A fully associative array has `ways == entries`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlbArrayConfig {
    /// Total entries.
    pub entries: usize,
    /// Entries per set.
    pub ways: usize,
}

impl TlbArrayConfig {
    /// An array of `entries` entries in sets of `ways`.
    pub const fn new(entries: usize, ways: usize) -> Self {
        TlbArrayConfig { entries, ways }
    }

    /// A fully associative array of `entries` entries.
    pub const fn fully_associative(entries: usize) -> Self {
        TlbArrayConfig { entries, ways: entries }
    }

    /// A disabled (zero-entry) array.
    pub const fn disabled() -> Self {
        TlbArrayConfig { entries: 0, ways: 0 }
    }

    /// Number of sets (0 when disabled).
    pub const fn sets(&self) -> usize {
        if self.entries == 0 || self.ways == 0 {
            0
        } else {
            self.entries / self.ways
        }
    }

    /// Check the geometry; `array` names it in the error.
    pub fn validate(&self, array: &'static str) -> Result<(), HwError> {
        if self.entries == 0 {
            return Ok(());
        }
        let bad = self.ways == 0 || self.entries % self.ways != 0 || !self.sets().is_power_of_two();
        if bad {
            return Err(HwError::InvalidTlbArray { array, entries: self.entries, ways: self.ways });
        }
        Ok(())
    }
}

/// Configuration of the simulated hardware.
///
/// The default is a current x86 server core (Skylake-SP class): split first-level data TLBs per
/// page size, a second-level TLB (STLB) shared by 4 KiB and 2 MiB translations, and a separate
/// 1 GiB STLB array; walk caches off; checking off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HwConfig {
    /// First-level TLB for 4 KiB translations (default 64 entries, 4-way).
    pub l1_4k: TlbArrayConfig,
    /// First-level TLB for 2 MiB translations (default 32 entries, 4-way).
    pub l1_2m: TlbArrayConfig,
    /// First-level TLB for 1 GiB translations (default 8 entries, fully associative).
    pub l1_1g: TlbArrayConfig,
    /// Second-level TLB shared by 4 KiB and 2 MiB translations (default 1536 entries, 12-way).
    pub stlb: TlbArrayConfig,
    /// Second-level TLB for 1 GiB translations (default 16 entries, 4-way).
    pub stlb_1g: TlbArrayConfig,
    /// Enable the walk caches: the guest paging-structure caches and the nested TLB.
    pub walk_caches: bool,
    /// Entries of the guest paging-structure caches, fully associative, by the guest level
    /// whose entry they cache: `[PDE (level 1), PDPTE (level 2), PML4E (level 3), PML5E (level 4)]`.
    /// Each entry maps a gva prefix to the next guest table and that table's host address.
    pub psc_entries: [usize; 4],
    /// Entries of the nested TLB (fully associative): gpa -> hpa translations of guest
    /// page-table pages, at the stage-2 leaf size.
    pub nested_tlb_entries: usize,
    /// Verify every TLB hit and every walk against the current stage-2 tables and record
    /// isolation violations (slower; on in tests).
    pub checked: bool,
    /// Violations kept with full details (all are counted).
    pub max_violation_details: usize,
}

impl Default for HwConfig {
    fn default() -> Self {
        HwConfig {
            l1_4k: TlbArrayConfig::new(64, 4),
            l1_2m: TlbArrayConfig::new(32, 4),
            l1_1g: TlbArrayConfig::fully_associative(8),
            stlb: TlbArrayConfig::new(1536, 12),
            stlb_1g: TlbArrayConfig::new(16, 4),
            walk_caches: false,
            psc_entries: [32, 4, 2, 2],
            nested_tlb_entries: 32,
            checked: false,
            max_violation_details: 16,
        }
    }
}

impl HwConfig {
    /// The default configuration with checking on.
    pub fn checked() -> Self {
        HwConfig { checked: true, ..Default::default() }
    }

    /// The same configuration with the walk caches on or off.
    pub fn with_walk_caches(self, on: bool) -> Self {
        HwConfig { walk_caches: on, ..self }
    }

    /// Check every array's geometry.
    pub fn validate(&self) -> Result<(), HwError> {
        self.l1_4k.validate("l1_4k")?;
        self.l1_2m.validate("l1_2m")?;
        self.l1_1g.validate("l1_1g")?;
        self.stlb.validate("stlb")?;
        self.stlb_1g.validate("stlb_1g")?;
        Ok(())
    }
}
