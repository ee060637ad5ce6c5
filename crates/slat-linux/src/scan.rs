//! `PAGEMAP_SCAN` (Linux 6.7+), read-only: which pages of a range are present, and which are
//! mapped by a huge leaf.
//!
//! The ioctl is only ever called with `flags = 0`: the write-protect flags
//! (`PM_SCAN_WP_MATCHING`, `PM_SCAN_CHECK_WPASYNC`) change the page tables and split huge
//! mappings, so this module has no way to pass them.
//!
//! Reading the answer:
//! * [`Categories::HUGE`] is set for a PMD-mapped THP and for **any** hugetlb page (2M and 1G
//!   alike: take the size from smaps `KernelPageSize`), never for a PTE-mapped large folio.
//! * The huge zero page is `PRESENT | HUGE | PFNZERO` while smaps counts it nowhere (`Rss` 0).
//! * Adjacent pages with the same categories are merged into one region, so one region can be
//!   many THPs; count them from bytes.
//! * `WRITTEN` is set everywhere unless the range uses uffd-wp async mode: it carries no
//!   information here and is not asked for.

use std::os::fd::AsFd;

use rustix::ioctl::{opcode, Ioctl, IoctlOutput, Opcode};

use crate::error::{Error, Result};

/// Page categories of `PAGEMAP_SCAN` (`PAGE_IS_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Categories(pub u64);

impl Categories {
    /// `PAGE_IS_FILE`: file-backed or shared anonymous.
    pub const FILE: Categories = Categories(1 << 2);
    /// `PAGE_IS_PRESENT`.
    pub const PRESENT: Categories = Categories(1 << 3);
    /// `PAGE_IS_SWAPPED`.
    pub const SWAPPED: Categories = Categories(1 << 4);
    /// `PAGE_IS_PFNZERO`: the (huge) zero page.
    pub const PFNZERO: Categories = Categories(1 << 5);
    /// `PAGE_IS_HUGE`: PMD-mapped THP or hugetlb.
    pub const HUGE: Categories = Categories(1 << 6);

    /// Whether every category of `other` is set.
    pub const fn contains(self, other: Categories) -> bool {
        self.0 & other.0 == other.0
    }

    /// Union.
    pub const fn union(self, other: Categories) -> Categories {
        Categories(self.0 | other.0)
    }
}

/// One region of pages with the same categories (`struct page_region`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PageRegion {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// The categories (of those asked for).
    pub categories: Categories,
}

impl PageRegion {
    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Whether the region is empty.
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
}

/// `struct pm_scan_arg`.
#[repr(C)]
#[derive(Debug, Default)]
struct PmScanArg {
    size: u64,
    flags: u64,
    start: u64,
    end: u64,
    walk_end: u64,
    vec: u64,
    vec_len: u64,
    max_pages: u64,
    category_inverted: u64,
    category_mask: u64,
    category_anyof_mask: u64,
    return_mask: u64,
}

const PAGEMAP_SCAN: Opcode = opcode::read_write::<PmScanArg>(b'f', 16);

/// The `PAGEMAP_SCAN` call; its output is the number of regions filled.
struct ScanCall<'a>(&'a mut PmScanArg);

// SAFETY: the opcode is `_IOWR('f', 16, struct pm_scan_arg)`, the pointer is to a live
// `PmScanArg` laid out as the kernel's struct, and the return value is the region count.
unsafe impl Ioctl for ScanCall<'_> {
    type Output = usize;
    const IS_MUTATING: bool = true;

    fn opcode(&self) -> Opcode {
        PAGEMAP_SCAN
    }

    fn as_ptr(&mut self) -> *mut std::ffi::c_void {
        (self.0 as *mut PmScanArg).cast()
    }

    unsafe fn output_from_ptr(out: IoctlOutput, _: *mut std::ffi::c_void) -> rustix::io::Result<usize> {
        Ok(out.max(0) as usize)
    }
}

/// The categories asked for: present or swapped pages, reporting HUGE, FILE, PFNZERO.
const ANYOF: u64 = Categories::PRESENT.0 | Categories::SWAPPED.0;
const RETURN: u64 =
    Categories::PRESENT.0 | Categories::SWAPPED.0 | Categories::HUGE.0 | Categories::FILE.0 | Categories::PFNZERO.0;

/// Scan `[start, end)` of the process whose `/proc/PID/pagemap` is open as `pagemap`; returns
/// the present or swapped regions (absent pages are not listed). Loops on `walk_end` until the
/// whole range is covered. [`Error::Unsupported`] when the kernel has no `PAGEMAP_SCAN`.
pub fn scan(pagemap: impl AsFd, start: u64, end: u64) -> Result<Vec<PageRegion>> {
    let mut out: Vec<PageRegion> = Vec::new();
    let mut buf = vec![PageRegion::default(); 4096];
    let mut at = start;
    while at < end {
        let mut arg = PmScanArg {
            size: std::mem::size_of::<PmScanArg>() as u64,
            flags: 0, // read-only: never PM_SCAN_WP_MATCHING / PM_SCAN_CHECK_WPASYNC
            start: at,
            end,
            vec: buf.as_mut_ptr() as u64,
            vec_len: buf.len() as u64,
            category_anyof_mask: ANYOF,
            return_mask: RETURN,
            ..PmScanArg::default()
        };
        // SAFETY: `arg` is the kernel's `struct pm_scan_arg` (12 u64, size set), `vec` points to
        // `vec_len` writable `page_region`s that live until the call returns, and flags is 0, so
        // the kernel only reads the page tables and writes into `arg` and `buf`.
        let r = unsafe { rustix::ioctl::ioctl(pagemap.as_fd(), ScanCall(&mut arg)) };
        let filled = match r {
            Ok(n) => n.min(buf.len()),
            Err(e) => {
                return Err(match e {
                    rustix::io::Errno::NOTTY | rustix::io::Errno::INVAL if out.is_empty() && at == start => {
                        Error::Unsupported { what: format!("PAGEMAP_SCAN ioctl ({e})") }
                    }
                    e => Error::io(format!("PAGEMAP_SCAN {at:#x}..{end:#x}"), e),
                })
            }
        };
        for r in &buf[..filled] {
            // When the buffer fills inside a page table, the kernel can restart the next call
            // before the end of regions it already returned: keep only what is new.
            let mut r = *r;
            if let Some(l) = out.last() {
                r.start = r.start.max(l.end);
            }
            if r.start >= r.end {
                continue;
            }
            match out.last_mut() {
                Some(l) if l.end == r.start && l.categories == r.categories => l.end = r.end,
                _ => out.push(r),
            }
        }
        if arg.walk_end <= at {
            return Err(Error::io(
                format!("PAGEMAP_SCAN made no progress at {at:#x}"),
                std::io::Error::from(std::io::ErrorKind::Other),
            ));
        }
        at = arg.walk_end;
    }
    Ok(out)
}

/// Whether the kernel offers `PAGEMAP_SCAN` (probed on this process's own pagemap).
pub fn supported() -> bool {
    let Ok(f) = std::fs::File::open("/proc/self/pagemap") else { return false };
    let probe = 0u64;
    let a = &probe as *const u64 as u64 & !4095;
    !matches!(scan(&f, a, a + 4096), Err(Error::Unsupported { .. }))
}
