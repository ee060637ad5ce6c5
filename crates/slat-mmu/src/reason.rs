//! Why a gfn is not mapped huge: one enum of reasons, sets of them, and the explanation of a
//! leaf-size decision.

use core::fmt;

use slat_pt::{Gfn, PageSize};

use crate::host::HostPage;

/// One reason a leaf is smaller than 1 GiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum WhyNotHuge {
    /// The format or the CPU does not support leaves of that size.
    FormatLimit = 0,
    /// A policy cap configured on the MMU.
    PolicyCap,
    /// The memslot is dirty-logged: leaves are 4 KiB while logging.
    DirtyLogging,
    /// NX huge-page workaround: executable memory is mapped with 4 KiB leaves.
    NxHugePage,
    /// The aligned block around the gfn crosses the memslot boundary (partial head or tail).
    CrossesSlot,
    /// gfn and hva are not congruent modulo the size, so no huge host block lines up.
    Misaligned,
    /// A gfn in the block is write-tracked.
    WriteTracking,
    /// The block has mixed memory attributes.
    MixedAttributes,
    /// The host maps the address with a 4 KiB PTE (THP off, no huge folio, or a PTE-mapped THP).
    HostMapsSmall,
    /// The host maps the address with a 2 MiB leaf; a 1 GiB leaf needs a 1 GiB host leaf.
    HostLeaf2M,
    /// PFN-mapped (MMIO) memory that the host maps small.
    PfnMap,
    /// Nothing forbids a larger leaf now; the small leaves are left from an earlier state and
    /// not yet recovered.
    Unrecovered,
}

impl WhyNotHuge {
    /// Number of reasons.
    pub const COUNT: usize = 12;

    /// Every reason, in precedence order (the first present one is the "primary" reason).
    pub const ALL: [WhyNotHuge; Self::COUNT] = [
        WhyNotHuge::FormatLimit,
        WhyNotHuge::PolicyCap,
        WhyNotHuge::DirtyLogging,
        WhyNotHuge::NxHugePage,
        WhyNotHuge::CrossesSlot,
        WhyNotHuge::Misaligned,
        WhyNotHuge::WriteTracking,
        WhyNotHuge::MixedAttributes,
        WhyNotHuge::HostMapsSmall,
        WhyNotHuge::HostLeaf2M,
        WhyNotHuge::PfnMap,
        WhyNotHuge::Unrecovered,
    ];

    /// Stable machine name (used in JSON and scenario files).
    pub const fn name(self) -> &'static str {
        match self {
            WhyNotHuge::FormatLimit => "format-limit",
            WhyNotHuge::PolicyCap => "policy-cap",
            WhyNotHuge::DirtyLogging => "dirty-logging",
            WhyNotHuge::NxHugePage => "nx-huge-page",
            WhyNotHuge::CrossesSlot => "crosses-slot",
            WhyNotHuge::Misaligned => "misaligned",
            WhyNotHuge::WriteTracking => "write-tracking",
            WhyNotHuge::MixedAttributes => "mixed-attributes",
            WhyNotHuge::HostMapsSmall => "host-maps-small",
            WhyNotHuge::HostLeaf2M => "host-leaf-2m",
            WhyNotHuge::PfnMap => "pfn-map",
            WhyNotHuge::Unrecovered => "unrecovered",
        }
    }

    /// One-line human description.
    pub const fn describe(self) -> &'static str {
        match self {
            WhyNotHuge::FormatLimit => "format or CPU does not support the size",
            WhyNotHuge::PolicyCap => "capped by MMU policy",
            WhyNotHuge::DirtyLogging => "memslot is dirty-logged",
            WhyNotHuge::NxHugePage => "NX huge-page workaround (executable memory)",
            WhyNotHuge::CrossesSlot => "block crosses the memslot boundary",
            WhyNotHuge::Misaligned => "gfn and hva not congruent modulo the size",
            WhyNotHuge::WriteTracking => "a gfn in the block is write-tracked",
            WhyNotHuge::MixedAttributes => "block has mixed memory attributes",
            WhyNotHuge::HostMapsSmall => "host maps it with 4K PTEs",
            WhyNotHuge::HostLeaf2M => "host leaf is 2M (1G wanted)",
            WhyNotHuge::PfnMap => "PFN-mapped memory mapped small by the host",
            WhyNotHuge::Unrecovered => "eligible, small leaves not yet recovered",
        }
    }

    /// Parse a [`name`](Self::name).
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.name() == s)
    }
}

impl fmt::Display for WhyNotHuge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of [`WhyNotHuge`] reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct ReasonSet(u16);

impl ReasonSet {
    /// The empty set.
    pub const EMPTY: ReasonSet = ReasonSet(0);

    /// Add a reason.
    #[inline]
    pub fn insert(&mut self, r: WhyNotHuge) {
        self.0 |= 1 << r as u8;
    }

    /// Remove a reason.
    #[inline]
    pub fn remove(&mut self, r: WhyNotHuge) {
        self.0 &= !(1 << r as u8);
    }

    /// The set without `r`.
    #[inline]
    pub fn without(self, r: WhyNotHuge) -> ReasonSet {
        let mut s = self;
        s.remove(r);
        s
    }

    /// Whether `r` is in the set.
    pub fn contains(self, r: WhyNotHuge) -> bool {
        self.0 & (1 << r as u8) != 0
    }

    /// Whether the set is empty.
    #[inline]
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The first reason in precedence order.
    pub fn primary(self) -> Option<WhyNotHuge> {
        self.iter().next()
    }

    /// Reasons in precedence order.
    pub fn iter(self) -> impl Iterator<Item = WhyNotHuge> {
        WhyNotHuge::ALL.into_iter().filter(move |r| self.contains(*r))
    }
}

/// A leaf-size decision: the size, and for each larger size the reasons that forbid it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Largest size allowed.
    pub size: PageSize,
    /// Why not 1 GiB (empty when 1 GiB is allowed).
    pub not_1g: ReasonSet,
    /// Why not 2 MiB (empty when 2 MiB or more is allowed).
    pub not_2m: ReasonSet,
}

impl Decision {
    /// The size the rules would allow if `r` did not apply (for example the leaf an exec fault
    /// would get without the NX workaround).
    pub fn size_without(&self, r: WhyNotHuge) -> PageSize {
        if self.not_1g.without(r).is_empty() {
            PageSize::Size1G
        } else if self.not_2m.without(r).is_empty() {
            PageSize::Size2M
        } else {
            PageSize::Size4K
        }
    }

    /// The reason that decided the final step down (the primary reason the leaf is not one size
    /// larger), if the size is below 1 GiB.
    pub fn primary(&self) -> Option<WhyNotHuge> {
        match self.size {
            PageSize::Size1G => None,
            PageSize::Size2M => self.not_1g.primary(),
            PageSize::Size4K => self.not_2m.primary(),
        }
    }
}

/// The answer to "why is this gfn mapped at this size?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Explanation {
    /// The gfn asked about.
    pub gfn: Gfn,
    /// Memslot containing it, if any.
    pub slot: Option<u32>,
    /// Size of the stage-2 leaf mapping it now, if mapped.
    pub mapped: Option<PageSize>,
    /// What the rules allow now, with the reasons for each step down.
    pub decision: Decision,
    /// The host's current mapping of the gfn's hva, if any.
    pub host: Option<HostPage>,
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "gfn {:#x}", self.gfn)?;
        let Some(slot) = self.slot else { return write!(f, ": no memslot (MMIO)") };
        write!(f, " (slot {slot}): ")?;
        match self.mapped {
            Some(s) => write!(f, "mapped {s}")?,
            None => write!(f, "not mapped")?,
        }
        write!(f, ", allowed {}", self.decision.size)?;
        if let Some(h) = self.host {
            write!(f, " (host {} {} leaf)", h.kind.name(), h.size)?;
        }
        let mut sep = "; not 1G:";
        for r in self.decision.not_1g.iter() {
            write!(f, "{sep} {}", r.describe())?;
            sep = ",";
        }
        let mut sep = "; not 2M:";
        for r in self.decision.not_2m.iter() {
            write!(f, "{sep} {}", r.describe())?;
            sep = ",";
        }
        if let Some(m) = self.mapped {
            if m < self.decision.size {
                write!(f, "; {}", WhyNotHuge::Unrecovered.describe())?;
            }
        }
        Ok(())
    }
}
