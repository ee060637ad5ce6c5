//! # slat-linux: slat on a real Linux host
//!
//! * [`backing`]: guest memory the way VMMs make it (anonymous + `MADV_HUGEPAGE`, memfd with and
//!   without `MFD_HUGETLB`, tmpfs `huge=`, hugetlbfs, regular files), placed aligned or skewed.
//! * [`pool`]: hugetlb pool reservations and private mounts that restore what they changed.
//! * [`smaps`], [`scan`], [`pagemap`]: typed readers of `/proc/PID/smaps`, the read-only
//!   `PAGEMAP_SCAN` ioctl, and `/proc/PID/pagemap` + `/proc/kpageflags`.
//! * [`hostmap`]: the host mapping size of every present page of a process, as extents.
//! * [`memory`]: [`slat_mmu::HostMemory`] over real memory: [`memory::LocalMemory`] (this
//!   process, faults pages in) and [`memory::ProcessSnapshot`] (any process, read-only).
//! * [`policy`]: the THP policy in force for a mapping.
//! * [`qemu`], [`kvm`]: guest RAM and its guest-physical layout from QEMU's monitor; KVM's own
//!   page counts.
//! * [`inspect`]: the engine of `slat inspect`.
//! * [`run_host`]: this process's real memory as the host of a whole scenario run (`slat run`
//!   with `host.kind = "linux"`): backings, pools and mounts owned and restored, host changes
//!   bracketed by the MMU notifier.
//! * `vmm` (feature `kvm`): a micro-VMM on the real kernel's KVM, the oracle slat-mmu is checked
//!   against; `oracle` (feature `kvm`): slat-mmu beside it on the same memory.
#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod backing;
pub mod error;
pub mod hostmap;
pub mod inspect;
pub mod kvm;
pub mod memory;
#[cfg(feature = "kvm")]
pub mod oracle;
pub mod pagemap;
pub mod policy;
pub mod pool;
pub mod qemu;
pub mod run_host;
pub mod scan;
pub mod smaps;
#[cfg(feature = "kvm")]
pub mod vmm;

pub use error::{Error, Result};
