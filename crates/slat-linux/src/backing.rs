//! Guest-memory backings made the way VMMs make them.
//!
//! A [`Backing`] owns one mapping of this process: anonymous memory (with or without
//! `MADV_HUGEPAGE`), a memfd (shmem, or hugetlb with `MFD_HUGETLB`), or a file on tmpfs, hugetlbfs
//! or a regular file system. Where it lands is chosen explicitly ([`Placement`]): 2M- or
//! 1G-aligned like a careful VMM, or a fixed distance past a boundary like QEMU's memfd RAM,
//! which is the common way shmem THP is lost. The mapping is released on drop.
//!
//! ```no_run
//! use slat_linux::backing::{Backing, Placement, ThpAdvice};
//! // 64 MiB of anonymous memory, 2M-aligned, MADV_HUGEPAGE, every page touched.
//! let b = Backing::anonymous(64 << 20, ThpAdvice::Hugepage, Placement::aligned(2 << 20))?;
//! b.populate_write()?;
//! assert_eq!(b.hva() % (2 << 20), 0);
//! # Ok::<(), slat_linux::Error>(())
//! ```

use std::ffi::c_void;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;

use rustix::fs::{MemfdFlags, OFlags};
use rustix::mm::{Advice, MapFlags, ProtFlags};
use slat_mmu::BackingKind;
use slat_pt::PageSize;

use crate::error::{Error, Result};

/// tmpfs `statfs` magic.
pub const TMPFS_MAGIC: i64 = 0x0102_1994;
/// hugetlbfs `statfs` magic.
pub const HUGETLBFS_MAGIC: i64 = 0x9584_58f6;

/// A hugetlb page size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum HugetlbSize {
    /// 2 MiB pages.
    #[serde(rename = "2M")]
    Size2M,
    /// 1 GiB pages.
    #[serde(rename = "1G")]
    Size1G,
}

impl HugetlbSize {
    /// Bytes per page.
    pub const fn bytes(self) -> u64 {
        match self {
            HugetlbSize::Size2M => 2 << 20,
            HugetlbSize::Size1G => 1 << 30,
        }
    }

    /// Short name (`2M`, `1G`).
    pub const fn name(self) -> &'static str {
        match self {
            HugetlbSize::Size2M => "2M",
            HugetlbSize::Size1G => "1G",
        }
    }

    /// The page size as a stage-2 leaf size.
    pub const fn page_size(self) -> PageSize {
        match self {
            HugetlbSize::Size2M => PageSize::Size2M,
            HugetlbSize::Size1G => PageSize::Size1G,
        }
    }

    /// The size for a `KernelPageSize` in bytes (`None` for 4K or unknown sizes).
    pub const fn from_bytes(bytes: u64) -> Option<Self> {
        match bytes {
            0x20_0000 => Some(HugetlbSize::Size2M),
            0x4000_0000 => Some(HugetlbSize::Size1G),
            _ => None,
        }
    }

    /// The sysfs directory of this size's pool.
    pub fn sysfs_dir(self) -> PathBuf {
        PathBuf::from(format!("/sys/kernel/mm/hugepages/hugepages-{}kB", self.bytes() >> 10))
    }

    fn memfd_flags(self) -> MemfdFlags {
        match self {
            HugetlbSize::Size2M => MemfdFlags::HUGETLB | MemfdFlags::HUGE_2MB,
            HugetlbSize::Size1G => MemfdFlags::HUGETLB | MemfdFlags::HUGE_1GB,
        }
    }
}

/// Whether to advise THP on the mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThpAdvice {
    /// No advice: the system THP policy decides.
    None,
    /// `MADV_HUGEPAGE` (VmFlags `hg`), as QEMU, Cloud Hypervisor and Firecracker's THP mode do.
    Hugepage,
    /// `MADV_NOHUGEPAGE` (VmFlags `nh`).
    NoHugepage,
}

/// Where a mapping is placed: `skew` bytes past an `align`-aligned address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// Alignment of the boundary (a power of two, at least 4 KiB).
    pub align: u64,
    /// Distance past the boundary (a multiple of 4 KiB, below `align`).
    pub skew: u64,
}

impl Placement {
    /// Start exactly on an `align` boundary.
    pub const fn aligned(align: u64) -> Self {
        Placement { align, skew: 0 }
    }

    /// Start `skew` bytes past an `align` boundary (QEMU's memfd RAM sits 4K off 2M, for example).
    pub const fn skewed(align: u64, skew: u64) -> Self {
        Placement { align, skew }
    }
}

/// Where the memory of a [`Backing`] comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Private anonymous memory.
    Anonymous,
    /// A new memfd (`memfd_create`), shmem or hugetlb.
    Memfd {
        /// `MFD_HUGETLB` with this page size, or plain shmem.
        hugetlb: Option<HugetlbSize>,
    },
    /// A file (created and sized when missing or short): tmpfs, hugetlbfs or a regular file system.
    File {
        /// The path.
        path: PathBuf,
        /// Offset in the file of the mapping's first byte.
        offset: u64,
    },
}

/// How to map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapOptions {
    /// Where the mapping starts.
    pub placement: Placement,
    /// `MAP_SHARED` (files and memfds; anonymous memory is always private).
    pub shared: bool,
    /// THP advice applied after mapping.
    pub thp: ThpAdvice,
}

impl Default for MapOptions {
    fn default() -> Self {
        MapOptions { placement: Placement::aligned(2 << 20), shared: true, thp: ThpAdvice::None }
    }
}

/// One mapping of this process that backs guest memory.
#[derive(Debug)]
pub struct Backing {
    ptr: NonNull<c_void>,
    len: usize,
    kind: BackingKind,
    hugetlb: Option<HugetlbSize>,
    file_offset: u64,
    fd: Option<OwnedFd>,
}

// SAFETY: a Backing is an owned mapping like a Box<[u8]>; it exposes only its address and
// length and never hands out references into the memory, so moving or sharing it across threads
// is sound.
unsafe impl Send for Backing {}
// SAFETY: see `Send`: no method reads or writes the memory through `&self` except the kernel
// (madvise), which does its own synchronisation.
unsafe impl Sync for Backing {}

impl Backing {
    /// Private anonymous memory of `len` bytes, with THP advice, at `placement`.
    pub fn anonymous(len: u64, thp: ThpAdvice, placement: Placement) -> Result<Self> {
        Self::map(Source::Anonymous, len, MapOptions { placement, shared: false, thp })
    }

    /// A new memfd of `len` bytes, shared-mapped at `placement`; `hugetlb` adds `MFD_HUGETLB`.
    pub fn memfd(len: u64, hugetlb: Option<HugetlbSize>, thp: ThpAdvice, placement: Placement) -> Result<Self> {
        Self::map(Source::Memfd { hugetlb }, len, MapOptions { placement, shared: true, thp })
    }

    /// `len` bytes of the file at `path` from `offset`, shared-mapped at `placement`.
    pub fn file(path: impl AsRef<Path>, offset: u64, len: u64, thp: ThpAdvice, placement: Placement) -> Result<Self> {
        let source = Source::File { path: path.as_ref().to_path_buf(), offset };
        Self::map(source, len, MapOptions { placement, shared: true, thp })
    }

    /// Map `len` bytes from `source` with `opts`.
    pub fn map(source: Source, len: u64, opts: MapOptions) -> Result<Self> {
        let Placement { align, skew } = opts.placement;
        if len == 0 || len % 4096 != 0 {
            return Err(Error::Invalid(format!("backing length {len:#x} is not a positive multiple of 4 KiB")));
        }
        if !align.is_power_of_two() || align < 4096 || skew % 4096 != 0 || skew >= align {
            return Err(Error::Invalid(format!(
                "placement align {align:#x} skew {skew:#x}: align must be a power of two >= 4 KiB and skew a multiple of 4 KiB below it"
            )));
        }
        let (fd, kind, hugetlb, file_offset) = match &source {
            Source::Anonymous => (None, BackingKind::Anonymous, None, 0),
            Source::Memfd { hugetlb } => {
                let flags = MemfdFlags::CLOEXEC | hugetlb.map_or(MemfdFlags::empty(), HugetlbSize::memfd_flags);
                let fd = rustix::fs::memfd_create("slat-guest-ram", flags)
                    .map_err(|e| Error::io(format!("memfd_create (hugetlb {hugetlb:?})"), e))?;
                rustix::fs::ftruncate(&fd, len).map_err(|e| Error::io("ftruncate memfd", e))?;
                let kind = if hugetlb.is_some() { BackingKind::Hugetlbfs } else { BackingKind::Shmem };
                (Some(fd), kind, *hugetlb, 0)
            }
            Source::File { path, offset } => {
                let fd = rustix::fs::open(path, OFlags::RDWR | OFlags::CREATE | OFlags::CLOEXEC, 0o600.into())
                    .map_err(|e| Error::io(format!("open {}", path.display()), e))?;
                let st = rustix::fs::fstatfs(&fd).map_err(|e| Error::io(format!("statfs {}", path.display()), e))?;
                let (kind, hugetlb) = match st.f_type as i64 {
                    TMPFS_MAGIC => (BackingKind::Shmem, None),
                    HUGETLBFS_MAGIC => (BackingKind::Hugetlbfs, HugetlbSize::from_bytes(st.f_bsize as u64)),
                    _ => (BackingKind::PageCache, None),
                };
                let size =
                    rustix::fs::fstat(&fd).map_err(|e| Error::io(format!("stat {}", path.display()), e))?.st_size;
                if (size as u64) < offset + len {
                    rustix::fs::ftruncate(&fd, offset + len)
                        .map_err(|e| Error::io(format!("ftruncate {}", path.display()), e))?;
                }
                (Some(fd), kind, hugetlb, *offset)
            }
        };
        if let Some(h) = hugetlb {
            if len % h.bytes() != 0 || skew % h.bytes() != 0 || file_offset % h.bytes() != 0 {
                return Err(Error::Invalid(format!(
                    "hugetlb {}: length {len:#x}, skew {skew:#x} and file offset {file_offset:#x} must be multiples of the page size",
                    h.name()
                )));
            }
        }
        let align = align.max(hugetlb.map_or(4096, HugetlbSize::bytes));
        // Reserve room to place the mapping, then map over part of the reservation and give
        // back the rest.
        let reserve = (len + align + skew) as usize;
        // SAFETY: a fresh PROT_NONE anonymous reservation at an address of the kernel's choosing
        // touches no existing mapping.
        let base = unsafe {
            rustix::mm::mmap_anonymous(
                std::ptr::null_mut(),
                reserve,
                ProtFlags::empty(),
                MapFlags::PRIVATE | MapFlags::NORESERVE,
            )
        }
        .map_err(|e| Error::io(format!("reserve {reserve:#x} bytes of address space"), e))?;
        let start = (base as u64).next_multiple_of(align) + skew;
        let target = start as *mut c_void;
        let prot = ProtFlags::READ | ProtFlags::WRITE;
        // SAFETY: [start, start + len) lies inside the reservation made above: start - base <
        // align + skew and reserve = len + align + skew. This function owns the reservation, so
        // MAP_FIXED replaces only our own PROT_NONE pages.
        let mapped = unsafe {
            match &fd {
                None => rustix::mm::mmap_anonymous(target, len as usize, prot, MapFlags::PRIVATE | MapFlags::FIXED),
                Some(fd) => {
                    let share = if opts.shared { MapFlags::SHARED } else { MapFlags::PRIVATE };
                    rustix::mm::mmap(target, len as usize, prot, share | MapFlags::FIXED, fd.as_fd(), file_offset)
                }
            }
        };
        // Give back the unused head and tail of the reservation (and on failure, all of it).
        let release = |from: u64, to: u64| {
            if to > from {
                // SAFETY: [from, to) is part of our own reservation and holds no mapping anyone
                // else uses.
                let _ = unsafe { rustix::mm::munmap(from as *mut c_void, (to - from) as usize) };
            }
        };
        let end_reserve = base as u64 + reserve as u64;
        if let Err(e) = mapped {
            release(base as u64, end_reserve);
            return Err(Error::io(format!("mmap {len:#x} bytes of {} at {start:#x}", kind.name()), e));
        }
        release(base as u64, start);
        release(start + len, end_reserve);
        let backing = Backing {
            ptr: NonNull::new(target).expect("mmap never returns address 0 for a non-zero reservation"),
            len: len as usize,
            kind,
            hugetlb,
            file_offset,
            fd,
        };
        let advice = match opts.thp {
            ThpAdvice::None => None,
            ThpAdvice::Hugepage => Some(Advice::LinuxHugepage),
            ThpAdvice::NoHugepage => Some(Advice::LinuxNoHugepage),
        };
        if let Some(a) = advice {
            backing.madvise(0, len, a)?;
        }
        Ok(backing)
    }

    /// Host virtual address of the first byte.
    pub fn hva(&self) -> u64 {
        self.ptr.as_ptr() as u64
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.len as u64
    }

    /// Whether the mapping is empty (never: construction refuses zero lengths).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// What backs the memory.
    pub fn kind(&self) -> BackingKind {
        self.kind
    }

    /// The hugetlb page size, for hugetlb memory.
    pub fn hugetlb(&self) -> Option<HugetlbSize> {
        self.hugetlb
    }

    /// File offset of the first byte (0 for anonymous memory and memfds).
    pub fn file_offset(&self) -> u64 {
        self.file_offset
    }

    /// The file descriptor of a memfd or file backing.
    pub fn fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.fd.as_ref().map(|f| f.as_fd())
    }

    /// Whether `hva` lies in this backing.
    pub fn contains(&self, hva: u64) -> bool {
        hva >= self.hva() && hva < self.hva() + self.len()
    }

    /// Apply `advice` to `len` bytes from `offset`.
    pub fn madvise(&self, offset: u64, len: u64, advice: Advice) -> Result<()> {
        self.check_range(offset, len)?;
        // SAFETY: the range lies inside this mapping, which we own; the advice values used here
        // (HUGEPAGE/NOHUGEPAGE/POPULATE_*/COLLAPSE) do not discard data.
        unsafe { rustix::mm::madvise(self.ptr.as_ptr().byte_add(offset as usize), len as usize, advice) }
            .map_err(|e| Error::io(format!("madvise({advice:?}) on {:#x}+{len:#x}", self.hva() + offset), e))
    }

    /// Fault every page in for writing (`MADV_POPULATE_WRITE`), as a VMM's prealloc does.
    pub fn populate_write(&self) -> Result<()> {
        self.madvise(0, self.len(), Advice::LinuxPopulateWrite)
    }

    /// Fault every page in for reading (anonymous memory then maps the (huge) zero page).
    pub fn populate_read(&self) -> Result<()> {
        self.madvise(0, self.len(), Advice::LinuxPopulateRead)
    }

    /// Discard `len` bytes from `offset` (`MADV_DONTNEED`, as a balloon or free-page reporting
    /// does): the pages become absent, and a THP in the range loses its PMD mapping.
    pub fn discard(&self, offset: u64, len: u64) -> Result<()> {
        self.check_range(offset, len)?;
        // SAFETY: the range lies inside this mapping, which we own and never reference from
        // Rust; discarding only zeroes (anonymous) or drops (shared) page contents there.
        unsafe { rustix::mm::madvise(self.ptr.as_ptr().byte_add(offset as usize), len as usize, Advice::LinuxDontNeed) }
            .map_err(|e| Error::io(format!("madvise(DONTNEED) on {:#x}+{len:#x}", self.hva() + offset), e))
    }

    /// Change the protection of `len` bytes from `offset` (a 4K `mprotect` inside a THP splits
    /// its PMD mapping, the VMA too).
    pub fn mprotect(&self, offset: u64, len: u64, read_only: bool) -> Result<()> {
        self.check_range(offset, len)?;
        use rustix::mm::MprotectFlags;
        let flags = if read_only { MprotectFlags::READ } else { MprotectFlags::READ | MprotectFlags::WRITE };
        // SAFETY: the range lies inside this mapping, which we own and never reference from Rust,
        // so changing its protection cannot invalidate a Rust reference.
        unsafe { rustix::mm::mprotect(self.ptr.as_ptr().byte_add(offset as usize), len as usize, flags) }
            .map_err(|e| Error::io(format!("mprotect {:#x}+{len:#x}", self.hva() + offset), e))
    }

    fn check_range(&self, offset: u64, len: u64) -> Result<()> {
        if offset % 4096 != 0 || offset.checked_add(len).is_none_or(|e| e > self.len()) {
            return Err(Error::Invalid(format!(
                "range {offset:#x}+{len:#x} is not page aligned inside the {:#x}-byte backing",
                self.len
            )));
        }
        Ok(())
    }
}

impl Drop for Backing {
    fn drop(&mut self) {
        // SAFETY: the mapping was created by `map` and is owned by this value; nothing refers to
        // its memory once the Backing is dropped.
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr(), self.len) };
    }
}
