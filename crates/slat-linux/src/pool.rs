//! Host settings a test or an operator changes for a while, restored afterwards: hugetlb pool
//! reservations, private tmpfs and hugetlbfs mounts, a debugfs mount.
//!
//! Every helper returns a guard whose `Drop` undoes exactly what it changed: a pool grown by
//! `n` pages shrinks back to the size it had (reservations made at the same time by other
//! guards of this process are counted together, and the last one restores); a mount made by
//! the guard is unmounted and its directory removed.
//!
//! ```no_run
//! use slat_linux::backing::HugetlbSize;
//! use slat_linux::pool::{HugetlbReservation, TmpfsHuge, TmpfsMount};
//! let pool = HugetlbReservation::reserve(HugetlbSize::Size2M, 32)?; // 64 MiB of 2M pages
//! let tmpfs = TmpfsMount::new(TmpfsHuge::Always, 256 << 20)?;
//! println!("{} free 2M pages; tmpfs at {}", pool.pages(), tmpfs.path().display());
//! # Ok::<(), slat_linux::Error>(())
//! ```

use std::ffi::CString;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use rustix::mount::{MountFlags, UnmountFlags};

use crate::backing::HugetlbSize;
use crate::error::{Error, Result};

fn read_u64(path: &Path) -> Result<u64> {
    let s = fs::read_to_string(path).map_err(|e| Error::io(format!("read {}", path.display()), e))?;
    s.trim()
        .parse()
        .map_err(|_| Error::Parse { path: path.display().to_string(), detail: format!("not a number: {s:?}") })
}

fn write_u64(path: &Path, v: u64) -> Result<()> {
    fs::write(path, format!("{v}\n")).map_err(|e| Error::io(format!("write {v} to {}", path.display()), e))
}

/// The state of one hugetlb pool size (`/sys/kernel/mm/hugepages/hugepages-<kB>kB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PoolState {
    /// `nr_hugepages`: persistent pages in the pool.
    pub total: u64,
    /// `free_hugepages`.
    pub free: u64,
    /// `resv_hugepages`: promised to mappings but not yet faulted.
    pub reserved: u64,
    /// `surplus_hugepages`.
    pub surplus: u64,
}

impl PoolState {
    /// Read the pool of `size`.
    pub fn read(size: HugetlbSize) -> Result<Self> {
        let d = size.sysfs_dir();
        if !d.exists() {
            return Err(Error::Unsupported { what: format!("hugetlb page size {} ({})", size.name(), d.display()) });
        }
        Ok(PoolState {
            total: read_u64(&d.join("nr_hugepages"))?,
            free: read_u64(&d.join("free_hugepages"))?,
            reserved: read_u64(&d.join("resv_hugepages"))?,
            surplus: read_u64(&d.join("surplus_hugepages"))?,
        })
    }

    /// Pages free and not promised to any mapping.
    pub fn available(&self) -> u64 {
        self.free.saturating_sub(self.reserved)
    }
}

/// Per size: the `nr_hugepages` before this process's first live reservation, and the pages
/// the live reservations added.
static POOLS: Mutex<[Option<(u64, u64)>; 2]> = Mutex::new([None, None]);

fn pool_index(size: HugetlbSize) -> usize {
    match size {
        HugetlbSize::Size2M => 0,
        HugetlbSize::Size1G => 1,
    }
}

/// A guard holding `pages` more hugetlb pages of one size in the pool than there were; the pool
/// goes back to its earlier `nr_hugepages` when the last guard of this process is dropped.
#[derive(Debug)]
pub struct HugetlbReservation {
    size: HugetlbSize,
    pages: u64,
}

impl HugetlbReservation {
    /// Grow the pool of `size` so that `pages` more pages are available than before (the
    /// kernel may grant fewer, especially 1G pages at run time: then the change is undone and
    /// [`Error::PoolShort`] says how many it granted). Needs root.
    pub fn reserve(size: HugetlbSize, pages: u64) -> Result<Self> {
        let mut pools = POOLS.lock().unwrap_or_else(|p| p.into_inner());
        let nr = size.sysfs_dir().join("nr_hugepages");
        let before = PoolState::read(size)?;
        let slot = &mut pools[pool_index(size)];
        let (orig, added) = slot.unwrap_or((before.total, 0));
        let want = before.total + pages;
        write_u64(&nr, want)?;
        let after = PoolState::read(size)?;
        if after.total < want {
            let granted = after.available().saturating_sub(before.available());
            write_u64(&nr, before.total)?;
            return Err(Error::PoolShort { size: size.name(), wanted: pages, granted });
        }
        *slot = Some((orig, added + pages));
        Ok(HugetlbReservation { size, pages })
    }

    /// The page size.
    pub fn size(&self) -> HugetlbSize {
        self.size
    }

    /// The pages this guard added.
    pub fn pages(&self) -> u64 {
        self.pages
    }
}

impl Drop for HugetlbReservation {
    fn drop(&mut self) {
        let mut pools = POOLS.lock().unwrap_or_else(|p| p.into_inner());
        let slot = &mut pools[pool_index(self.size)];
        if let Some((orig, added)) = *slot {
            let left = added.saturating_sub(self.pages);
            let nr = self.size.sysfs_dir().join("nr_hugepages");
            let target = if left == 0 {
                *slot = None;
                orig
            } else {
                *slot = Some((orig, left));
                read_u64(&nr).map_or(orig + left, |cur| cur.saturating_sub(self.pages).max(orig))
            };
            let _ = write_u64(&nr, target);
        }
    }
}

static MOUNT_SEQ: AtomicU64 = AtomicU64::new(0);

fn fresh_dir(prefix: &str) -> Result<PathBuf> {
    let n = MOUNT_SEQ.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("slat-{prefix}-{}-{n}", std::process::id()));
    fs::create_dir_all(&dir).map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    Ok(dir)
}

/// A file system this process mounted on a fresh directory; unmounted and removed on drop.
#[derive(Debug)]
struct OwnedMount {
    dir: PathBuf,
}

impl OwnedMount {
    fn new(prefix: &str, fstype: &str, data: &str) -> Result<Self> {
        let dir = fresh_dir(prefix)?;
        let data_c = CString::new(data).map_err(|_| Error::Invalid(format!("mount options {data:?} contain NUL")))?;
        if let Err(e) =
            rustix::mount::mount(fstype, &dir, fstype, MountFlags::NOSUID | MountFlags::NODEV, data_c.as_c_str())
        {
            let _ = fs::remove_dir(&dir);
            return Err(Error::io(format!("mount -t {fstype} -o {data} on {}", dir.display()), e));
        }
        Ok(OwnedMount { dir })
    }
}

impl Drop for OwnedMount {
    fn drop(&mut self) {
        if rustix::mount::unmount(&self.dir, UnmountFlags::empty()).is_err() {
            let _ = rustix::mount::unmount(&self.dir, UnmountFlags::DETACH);
        }
        let _ = fs::remove_dir(&self.dir);
    }
}

/// tmpfs `huge=` mount option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TmpfsHuge {
    /// `huge=never`.
    Never,
    /// `huge=always`.
    Always,
    /// `huge=within_size`.
    WithinSize,
    /// `huge=advise`.
    Advise,
}

impl TmpfsHuge {
    /// The option value.
    pub const fn name(self) -> &'static str {
        match self {
            TmpfsHuge::Never => "never",
            TmpfsHuge::Always => "always",
            TmpfsHuge::WithinSize => "within_size",
            TmpfsHuge::Advise => "advise",
        }
    }
}

/// A private tmpfs mount with a `huge=` option (root).
#[derive(Debug)]
pub struct TmpfsMount {
    mount: OwnedMount,
}

impl TmpfsMount {
    /// Mount a tmpfs of at most `size` bytes with `huge=`.
    pub fn new(huge: TmpfsHuge, size: u64) -> Result<Self> {
        let data = format!("huge={},size={size},mode=0700", huge.name());
        Ok(TmpfsMount { mount: OwnedMount::new("tmpfs", "tmpfs", &data)? })
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.mount.dir
    }
}

/// A private hugetlbfs mount of one page size (root).
#[derive(Debug)]
pub struct HugetlbfsMount {
    mount: OwnedMount,
    size: HugetlbSize,
}

impl HugetlbfsMount {
    /// Mount hugetlbfs with `pagesize=`.
    pub fn new(size: HugetlbSize) -> Result<Self> {
        let data = format!("pagesize={},mode=0700", size.name());
        Ok(HugetlbfsMount { mount: OwnedMount::new("hugetlbfs", "hugetlbfs", &data)?, size })
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.mount.dir
    }

    /// The page size.
    pub fn size(&self) -> HugetlbSize {
        self.size
    }
}

/// The debugfs mount point the kernel documents.
pub const DEBUGFS: &str = "/sys/kernel/debug";

/// Whether debugfs is mounted at [`DEBUGFS`].
pub fn debugfs_mounted() -> bool {
    fs::read_to_string("/proc/self/mounts")
        .map(|m| m.lines().any(|l| l.split(' ').nth(1) == Some(DEBUGFS) && l.split(' ').nth(2) == Some("debugfs")))
        .unwrap_or(false)
}

/// Mount debugfs at [`DEBUGFS`] if it is not mounted. Returns `true` when this call mounted it
/// (the caller should say so; debugfs is left mounted, as `mount -t debugfs` would).
pub fn ensure_debugfs() -> Result<bool> {
    if debugfs_mounted() {
        return Ok(false);
    }
    rustix::mount::mount("debugfs", DEBUGFS, "debugfs", MountFlags::empty(), None)
        .map_err(|e| Error::io(format!("mount -t debugfs none {DEBUGFS}"), e))?;
    Ok(true)
}
