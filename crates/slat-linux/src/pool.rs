//! Host settings a test or an operator changes for a while, restored afterwards: hugetlb pool
//! reservations, the shmem THP knob, private tmpfs and hugetlbfs mounts, a debugfs mount.
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

/// Whether this process already dropped caches and compacted memory for a 1G reservation.
static COMPACTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

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
    /// [`Error::PoolShort`] says how many it granted; [`GiganticBlockers`] says why). For 1G
    /// pages a short grant is retried after dropping clean caches and compacting memory
    /// (`/proc/sys/vm/drop_caches`, `compact_memory`: actions, nothing to restore), the first
    /// time in a process only. Needs root.
    pub fn reserve(size: HugetlbSize, pages: u64) -> Result<Self> {
        let mut pools = POOLS.lock().unwrap_or_else(|p| p.into_inner());
        let nr = size.sysfs_dir().join("nr_hugepages");
        let before = PoolState::read(size)?;
        let slot = &mut pools[pool_index(size)];
        let (orig, added) = slot.unwrap_or((before.total, 0));
        let want = before.total + pages;
        write_u64(&nr, want)?;
        let mut after = PoolState::read(size)?;
        if after.total < want && size == HugetlbSize::Size1G && !COMPACTED.swap(true, Ordering::Relaxed) {
            // Gigantic pages need a whole free GiB: drop clean caches, compact, try once more
            // (once per process: dropping every clean cache is felt by everything on the host).
            let _ = fs::write("/proc/sys/vm/drop_caches", "3\n");
            let _ = fs::write("/proc/sys/vm/compact_memory", "1\n");
            write_u64(&nr, want)?;
            after = PoolState::read(size)?;
        }
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

/// The shmem THP knob: `/sys/kernel/mm/transparent_hugepage/shmem_enabled`.
pub const SHMEM_ENABLED: &str = "/sys/kernel/mm/transparent_hugepage/shmem_enabled";

/// A value of [`SHMEM_ENABLED`], the THP policy of memfds, SysV shm and shared anonymous
/// memory (other tmpfs mounts follow their own `huge=` option).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ShmemEnabled {
    /// `always`: every suitably aligned range gets a huge page.
    Always,
    /// `within_size`: huge pages only inside `i_size`.
    WithinSize,
    /// `advise`: huge pages only where the mapping has `MADV_HUGEPAGE`.
    Advise,
    /// `never`.
    Never,
    /// `deny`: never, and overrides tmpfs `huge=` options.
    Deny,
    /// `force`: always, and overrides tmpfs `huge=` options.
    Force,
}

impl ShmemEnabled {
    /// Every value, in the kernel's order.
    pub const ALL: [ShmemEnabled; 6] = [
        ShmemEnabled::Always,
        ShmemEnabled::WithinSize,
        ShmemEnabled::Advise,
        ShmemEnabled::Never,
        ShmemEnabled::Deny,
        ShmemEnabled::Force,
    ];

    /// The value as the kernel spells it.
    pub const fn name(self) -> &'static str {
        match self {
            ShmemEnabled::Always => "always",
            ShmemEnabled::WithinSize => "within_size",
            ShmemEnabled::Advise => "advise",
            ShmemEnabled::Never => "never",
            ShmemEnabled::Deny => "deny",
            ShmemEnabled::Force => "force",
        }
    }

    /// The selected value of a `shmem_enabled` file's contents (`always within_size [advise] ...`).
    pub fn parse(contents: &str) -> Option<Self> {
        let sel = contents.split_whitespace().find(|w| w.starts_with('['))?.trim_matches(['[', ']']);
        Self::ALL.into_iter().find(|v| v.name() == sel)
    }

    /// The value in force now.
    pub fn read() -> Result<Self> {
        let s = fs::read_to_string(SHMEM_ENABLED).map_err(|e| Error::io(format!("read {SHMEM_ENABLED}"), e))?;
        Self::parse(&s)
            .ok_or_else(|| Error::Parse { path: SHMEM_ENABLED.into(), detail: format!("no [selected] value in {s:?}") })
    }
}

/// Serialises the [`ShmemEnabledGuard`]s of this process: one knob, one owner at a time.
static SHMEM_KNOB: Mutex<()> = Mutex::new(());

/// A guard that sets [`SHMEM_ENABLED`] and puts the earlier value back on drop (also when a
/// test panics and unwinds). Guards of one process take turns: a second `set` waits for the
/// first guard to drop.
#[derive(Debug)]
pub struct ShmemEnabledGuard {
    previous: ShmemEnabled,
    changed: bool,
    _turn: std::sync::MutexGuard<'static, ()>,
}

impl ShmemEnabledGuard {
    /// Set the knob to `value` (root).
    pub fn set(value: ShmemEnabled) -> Result<Self> {
        let turn = SHMEM_KNOB.lock().unwrap_or_else(|p| p.into_inner());
        let previous = ShmemEnabled::read()?;
        fs::write(SHMEM_ENABLED, value.name())
            .map_err(|e| Error::io(format!("write {} to {SHMEM_ENABLED}", value.name()), e))?;
        Ok(ShmemEnabledGuard { previous, changed: true, _turn: turn })
    }

    /// Hold the knob as it is (no root needed): other guards of this process wait until this
    /// one drops, so a test that depends on the value sees no change.
    pub fn keep() -> Result<Self> {
        let turn = SHMEM_KNOB.lock().unwrap_or_else(|p| p.into_inner());
        Ok(ShmemEnabledGuard { previous: ShmemEnabled::read()?, changed: false, _turn: turn })
    }

    /// The value the knob had before, restored on drop.
    pub fn previous(&self) -> ShmemEnabled {
        self.previous
    }
}

impl Drop for ShmemEnabledGuard {
    fn drop(&mut self) {
        if self.changed {
            let _ = fs::write(SHMEM_ENABLED, self.previous.name());
        }
    }
}

/// Why the kernel may not find a free 1 GiB page at run time: per 1 GiB-aligned range of
/// physical memory, the pages no compaction can move.
///
/// A run-time gigantic page comes from `alloc_contig_pages` (mm/page_alloc.c), which looks for
/// a naturally aligned PFN range whose pages are all free or movable (`pfn_range_valid_contig`
/// rejects reserved pages and non-LRU compound pages; `alloc_contig_range` then fails on slab
/// and page-table pages, which `isolate_migratepages_range` cannot move). A single slab page in
/// every GiB is enough to refuse every 1 GiB page while most of memory is free.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct GiganticBlockers {
    /// 1 GiB-aligned ranges examined (holes included).
    pub ranges: u64,
    /// Ranges without RAM (`KPF_NOPAGE` throughout, or no flag on any page: the PCI hole).
    pub holes: u64,
    /// Ranges with no reserved, slab or page-table page: candidates for a gigantic page.
    pub candidates: u64,
    /// Per range with memory: (first PFN, reserved pages, slab pages, page-table pages, free pages).
    pub per_range: Vec<(u64, u64, u64, u64, u64)>,
}

impl GiganticBlockers {
    /// Scan `/proc/kpageflags` (root; about a second per 24 GiB).
    pub fn scan() -> Result<Self> {
        const PAGES: u64 = 1 << 18; // 1 GiB of 4 KiB pages
        const SLAB: u32 = 7;
        const BUDDY: u32 = 10;
        const NOPAGE: u32 = 20;
        const PGTABLE: u32 = 26;
        const RESERVED: u32 = 32;
        let kpf = crate::pagemap::KpageFlags::open()?;
        let mut out = GiganticBlockers::default();
        for range in 0.. {
            let Ok(flags) = kpf.read(range * PAGES, PAGES as usize) else { break };
            out.ranges += 1;
            let count = |bit: u32| flags.iter().filter(|f| f.0 >> bit & 1 == 1).count() as u64;
            // A hole: no struct page (`KPF_NOPAGE`), or not one flag on any page of the GiB
            // (the PCI hole below 4 GiB: memmap present, no memory behind it).
            if count(NOPAGE) == PAGES || flags.iter().all(|f| f.0 == 0) {
                out.holes += 1;
                continue;
            }
            let (reserved, slab, pgtable, free) = (count(RESERVED), count(SLAB), count(PGTABLE), count(BUDDY));
            if reserved + slab + pgtable == 0 {
                out.candidates += 1;
            }
            out.per_range.push((range * PAGES, reserved, slab, pgtable, free));
        }
        Ok(out)
    }
}

impl std::fmt::Display for GiganticBlockers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let with = self.per_range.len() as u64;
        write!(
            f,
            "{} of {with} 1 GiB-aligned ranges of RAM hold no unmovable page ({} holes skipped)",
            self.candidates, self.holes
        )?;
        let blocked: Vec<String> = self
            .per_range
            .iter()
            .filter(|r| r.1 + r.2 + r.3 > 0)
            .map(|&(pfn, res, slab, pt, free)| {
                format!("GiB {}: {res} reserved, {slab} slab, {pt} page-table, {free} free", pfn >> 18)
            })
            .collect();
        if !blocked.is_empty() {
            let shown = blocked.iter().take(6).cloned().collect::<Vec<_>>().join("; ");
            write!(f, "; unmovable pages per GiB: {shown}{}", if blocked.len() > 6 { "; ..." } else { "" })?;
        }
        Ok(())
    }
}

static MOUNT_SEQ: AtomicU64 = AtomicU64::new(0);

fn fresh_dir(prefix: &str) -> Result<PathBuf> {
    let n = MOUNT_SEQ.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("slat-{prefix}-{}-{n}", std::process::id()));
    fs::create_dir_all(&dir).map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    Ok(dir)
}

/// A file this process created in the temporary directory (`TMPDIR`, else `/tmp`); removed on
/// drop with its directory.
#[derive(Debug)]
pub struct TempFile {
    dir: PathBuf,
    path: PathBuf,
}

impl TempFile {
    /// A fresh directory with a (not yet created) file `name` in it.
    pub fn new(name: &str) -> Result<Self> {
        let dir = fresh_dir("file")?;
        Ok(TempFile { path: dir.join(name), dir })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
        let _ = fs::remove_dir(&self.dir);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shmem_enabled_selection() {
        assert_eq!(ShmemEnabled::parse("always within_size advise [never] deny force\n"), Some(ShmemEnabled::Never));
        assert_eq!(ShmemEnabled::parse("always [within_size] advise never deny force"), Some(ShmemEnabled::WithinSize));
        assert_eq!(ShmemEnabled::parse("[advise]"), Some(ShmemEnabled::Advise));
        assert_eq!(ShmemEnabled::parse("always advise never"), None, "nothing selected");
        assert_eq!(ShmemEnabled::parse("[sometimes]"), None, "unknown value");
        for v in ShmemEnabled::ALL {
            assert_eq!(ShmemEnabled::parse(&format!("[{}]", v.name())), Some(v));
        }
    }
}
