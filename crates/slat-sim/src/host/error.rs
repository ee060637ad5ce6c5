//! Errors of host operations (`mmap` and events) on bad input.

use slat_mmu::BackingKind;
use slat_pt::{PageSize, PtError};

/// Why an `mmap` or a host event was refused. Nothing has changed when one is returned, except
/// for [`HostOpError::PageTable`], after which the part done so far stays done.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HostOpError {
    /// An address or length is not a multiple of the alignment the operation needs.
    #[error("{what} {value:#x} is not a multiple of {align:#x}")]
    Misaligned {
        /// Which value ("hva", "len", "offset", "file offset", "pa").
        what: &'static str,
        /// The value.
        value: u64,
        /// Required alignment.
        align: u64,
    },
    /// A zero-length range.
    #[error("empty range at {hva:#x}")]
    EmptyRange {
        /// Start of the range.
        hva: u64,
    },
    /// No VMA covers this address of the range.
    #[error("no VMA covers host address {hva:#x}")]
    NotMapped {
        /// The first uncovered address.
        hva: u64,
    },
    /// The mapping would not fit the 48-bit host address space, the DAX device or the physical
    /// address space.
    #[error("range {start:#x}..{end:#x} does not fit the {space} address space")]
    NoSpace {
        /// Start of the range.
        start: u64,
        /// End of the range (saturated on overflow).
        end: u64,
        /// "host virtual", "DAX device" or "physical".
        space: &'static str,
    },
    /// A fixed mapping overlaps an existing VMA.
    #[error("fixed mapping at {hva:#x} overlaps an existing VMA")]
    Overlap {
        /// The requested address.
        hva: u64,
    },
    /// The operation does not apply to memory of this kind.
    #[error("{operation} is not supported on {} memory (at {hva:#x})", kind.name())]
    Unsupported {
        /// The operation.
        operation: &'static str,
        /// Backing kind of the VMA.
        kind: BackingKind,
        /// An address of the VMA in the range.
        hva: u64,
    },
    /// A page size not valid for this backing (hugetlbfs needs 2M or 1G).
    #[error("page size {size} is not valid for {}", kind.name())]
    PageSize {
        /// The size.
        size: PageSize,
        /// The backing kind.
        kind: BackingKind,
    },
    /// A fraction outside `0..=1`.
    #[error("fraction {value} is outside 0..=1")]
    Fraction {
        /// The value.
        value: f64,
    },
    /// The host page tables ran out of frames.
    #[error("host page tables: {0}")]
    PageTable(#[from] PtError),
}
