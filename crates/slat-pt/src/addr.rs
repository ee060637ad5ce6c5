//! Address newtypes for the public boundary: one type per unit, so a guest frame number is never
//! passed where a guest-physical byte address or a host virtual address is expected.
//!
//! | type | unit | space |
//! |---|---|---|
//! | [`Gpa`] | byte | guest-physical (the input of stage 2) |
//! | [`Gfn`] | 4 KiB frame | guest-physical |
//! | [`Hva`] | byte | host virtual (the VMM's mapping of guest memory) |
//! | [`Pfn`] | 4 KiB frame | host-physical (the output of stage 2) |
//!
//! Each is a transparent `u64` with the raw value in `.0`; conversions between byte addresses and
//! frame numbers are explicit ([`Gpa::gfn`], [`Gfn::gpa`], [`Pfn::hpa`]).
//!
//! ```
//! use slat_pt::{Gfn, Gpa, Hva, Pfn};
//! let gpa = Gpa(0x4012_3456);
//! assert_eq!(gpa.gfn(), Gfn(0x40123));
//! assert_eq!(gpa.gfn().gpa(), Gpa(0x4012_3000));
//! assert_eq!(Gfn(0x40000) + 0x123, Gfn(0x40123));
//! assert_eq!(Gfn(0x40123) - Gfn(0x40000), 0x123);
//! assert_eq!(Hva(0x7f00_0000_0000) + 0x1000, Hva(0x7f00_0000_1000));
//! assert_eq!(Pfn(0x100).hpa(), 0x10_0000);
//! assert_eq!(format!("{gpa}"), "gpa 0x40123456");
//! ```

use core::fmt;
use core::ops::{Add, AddAssign, Sub};

use crate::size::{PAGE_SHIFT, PAGE_SIZE};

macro_rules! address_type {
    ($(#[$doc:meta])* $name:ident, $label:literal, $offset:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        #[repr(transparent)]
        pub struct $name(pub u64);

        impl $name {
            /// The raw value.
            pub const fn get(self) -> u64 {
                self.0
            }

            /// `self + n`, or `None` on overflow.
            pub const fn checked_add(self, n: u64) -> Option<Self> {
                match self.0.checked_add(n) {
                    Some(v) => Some($name(v)),
                    None => None,
                }
            }
        }

        #[doc = concat!("Advances by `n` ", $offset, ".")]
        impl Add<u64> for $name {
            type Output = $name;
            fn add(self, n: u64) -> $name {
                $name(self.0 + n)
            }
        }

        impl AddAssign<u64> for $name {
            fn add_assign(&mut self, n: u64) {
                self.0 += n;
            }
        }

        #[doc = concat!("The distance in ", $offset, ".")]
        impl Sub for $name {
            type Output = u64;
            fn sub(self, other: $name) -> u64 {
                self.0 - other.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($label, "({:#x})"), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($label, " {:#x}"), self.0)
            }
        }

        impl fmt::LowerHex for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::LowerHex::fmt(&self.0, f)
            }
        }
    };
}

address_type!(
    /// A guest-physical byte address: the input of stage-2 translation.
    Gpa, "gpa", "bytes"
);
address_type!(
    /// A guest frame number: a guest-physical address divided by 4 KiB.
    Gfn, "gfn", "4 KiB pages"
);
address_type!(
    /// A host virtual byte address: where the VMM maps guest memory.
    Hva, "hva", "bytes"
);
address_type!(
    /// A host page frame number: a host-physical address divided by 4 KiB.
    Pfn, "pfn", "4 KiB pages"
);

impl Gpa {
    /// The frame holding this address.
    pub const fn gfn(self) -> Gfn {
        Gfn(self.0 >> PAGE_SHIFT)
    }

    /// The byte offset inside its 4 KiB page.
    pub const fn page_offset(self) -> u64 {
        self.0 & (PAGE_SIZE - 1)
    }
}

impl Gfn {
    /// The guest-physical address of the frame's first byte.
    pub const fn gpa(self) -> Gpa {
        Gpa(self.0 << PAGE_SHIFT)
    }
}

impl Hva {
    /// The byte offset inside its 4 KiB page.
    pub const fn page_offset(self) -> u64 {
        self.0 & (PAGE_SIZE - 1)
    }
}

impl Pfn {
    /// The host-physical byte address of the frame's first byte.
    pub const fn hpa(self) -> u64 {
        self.0 << PAGE_SHIFT
    }

    /// The frame holding host-physical address `hpa`.
    pub const fn of_hpa(hpa: u64) -> Pfn {
        Pfn(hpa >> PAGE_SHIFT)
    }
}
