//! The host mapping size of every present page of a process, as sorted [`Extent`]s.
//!
//! Built per VMA from `PAGEMAP_SCAN` (the kernel's page-table walk: `HUGE` = PMD-mapped THP or
//! hugetlb, sized by the VMA's `KernelPageSize`), or, where the kernel has no `PAGEMAP_SCAN`,
//! from pagemap presence plus the VMA's page size: then THP positions are unknown and only
//! smaps' per-VMA PMD totals say how much is huge ([`MapSource::Smaps`]).

use slat_mmu::{BackingKind, Hva};
use slat_pt::PageSize;

use crate::error::{Error, Result};
use crate::pagemap::Pagemap;
use crate::scan::{self, Categories};
use crate::smaps::{VmFlag, Vma};

/// A run of present pages mapped alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// Host leaf size mapping every page of the run.
    pub size: PageSize,
    /// What backs it.
    pub kind: BackingKind,
    /// The zero page (read-faulted anonymous memory): present but never written.
    pub zero: bool,
    /// The VMA allows writes.
    pub writable: bool,
}

/// Where the extents came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MapSource {
    /// `PAGEMAP_SCAN`: exact per page.
    PagemapScan,
    /// No `PAGEMAP_SCAN`: pagemap presence and smaps; THP placement unknown (counted as 4K).
    Smaps,
}

/// Bytes of a range by host leaf size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Split {
    /// Present bytes mapped by 4 KiB PTEs.
    pub bytes_4k: u64,
    /// Present bytes mapped by 2 MiB leaves.
    pub bytes_2m: u64,
    /// Present bytes mapped by 1 GiB leaves.
    pub bytes_1g: u64,
    /// Of the present bytes, those on the (huge) zero page.
    pub bytes_zero: u64,
    /// Bytes not present (never touched, swapped or discarded).
    pub bytes_absent: u64,
}

impl Split {
    /// Present bytes.
    pub fn present(&self) -> u64 {
        self.bytes_4k + self.bytes_2m + self.bytes_1g
    }
}

/// The backing kind of a VMA, given the type of the file system its file lives on (from
/// mountinfo; `None` for the kernel's internal mounts: memfd, SysV shm, shared anonymous).
pub fn classify(vma: &Vma, fstype: Option<&str>) -> BackingKind {
    if vma.is_hugetlb() {
        return BackingKind::Hugetlbfs;
    }
    if vma.vm_flags.contains(VmFlag::PfnMap) {
        return BackingKind::PfnMap;
    }
    if !vma.has_file() {
        return if vma.is_shared() { BackingKind::Shmem } else { BackingKind::Anonymous };
    }
    match fstype {
        Some("tmpfs") | Some("shm") => BackingKind::Shmem,
        Some("hugetlbfs") => BackingKind::Hugetlbfs,
        Some("devdax") => BackingKind::Dax,
        Some(_) if vma.vm_flags.contains(VmFlag::MixedMap) => BackingKind::Dax,
        Some(_) => BackingKind::PageCache,
        // Internal shmem mount: memfd, /dev/zero shared, SysV.
        None => BackingKind::Shmem,
    }
}

/// Host extents of a process.
#[derive(Debug, Clone)]
pub struct HostMap {
    extents: Vec<Extent>,
    source: MapSource,
}

impl HostMap {
    /// Read the extents of `vmas` (with their kinds) clipped to `[start, end)`, from the open
    /// `pagemap` of their process. `force_smaps` uses the fallback even when `PAGEMAP_SCAN` works.
    pub fn read(
        pagemap: &Pagemap,
        vmas: &[(Vma, BackingKind)],
        start: u64,
        end: u64,
        force_smaps: bool,
    ) -> Result<Self> {
        Self::read_ranges(pagemap, vmas, &[(start, end)], force_smaps)
    }

    /// The extents of process `pid` (0 = this process) over `ranges`: reads its smaps and
    /// mountinfo, classifies every VMA and walks its page tables. For an MMU over another
    /// process's memory: `ProcessSnapshot::new(HostMap::of_process(pid, &ranges, false)?, None)`.
    pub fn of_process(pid: i32, ranges: &[(u64, u64)], force_smaps: bool) -> Result<Self> {
        let vmas = crate::smaps::read(pid)?;
        let mounts = crate::policy::mounts_of(if pid == 0 { std::process::id() as i32 } else { pid });
        let kinds: Vec<(Vma, BackingKind)> = vmas
            .into_iter()
            .map(|v| {
                let fs = crate::policy::mount_of(&mounts, &v).map(|m| m.fstype.clone());
                let k = classify(&v, fs.as_deref());
                (v, k)
            })
            .collect();
        Self::read_ranges(&Pagemap::open(pid)?, &kinds, ranges, force_smaps)
    }

    /// As [`read`](Self::read), over several disjoint ranges.
    pub fn read_ranges(
        pagemap: &Pagemap,
        vmas: &[(Vma, BackingKind)],
        ranges: &[(u64, u64)],
        force_smaps: bool,
    ) -> Result<Self> {
        let mut ranges = ranges.to_vec();
        ranges.sort_unstable();
        let mut map = HostMap {
            extents: Vec::new(),
            source: if force_smaps { MapSource::Smaps } else { MapSource::PagemapScan },
        };
        for &(start, end) in &ranges {
            for (vma, kind) in vmas {
                let (s, e) = (vma.start.max(start), vma.end.min(end));
                if s < e {
                    map.read_vma(pagemap, vma, *kind, s, e)?;
                }
            }
        }
        Ok(map)
    }

    fn push(&mut self, x: Extent) {
        match self.extents.last_mut() {
            Some(l)
                if l.end == x.start
                    && l.size == x.size
                    && l.zero == x.zero
                    && l.kind == x.kind
                    && l.writable == x.writable =>
            {
                l.end = x.end
            }
            _ => self.extents.push(x),
        }
    }

    fn read_vma(&mut self, pagemap: &Pagemap, vma: &Vma, kind: BackingKind, s: u64, e: u64) -> Result<()> {
        let huge_size = match (vma.is_hugetlb(), vma.kernel_page_size) {
            (true, 0x4000_0000) => PageSize::Size1G,
            _ => PageSize::Size2M,
        };
        let writable = vma.perms.as_bytes().get(1) == Some(&b'w');
        let ext = |start, end, size, zero| Extent { start, end, size, kind, zero, writable };
        if self.source == MapSource::PagemapScan {
            match scan::scan(pagemap.file(), s, e) {
                Ok(regions) => {
                    for r in regions.iter().filter(|r| r.categories.contains(Categories::PRESENT)) {
                        let size = if r.categories.contains(Categories::HUGE) { huge_size } else { PageSize::Size4K };
                        self.push(ext(r.start, r.end, size, r.categories.contains(Categories::PFNZERO)));
                    }
                    return Ok(());
                }
                Err(Error::Unsupported { .. }) => self.source = MapSource::Smaps,
                Err(e) => return Err(e),
            }
        }
        // Fallback: presence from pagemap, size from the VMA's page size (THP placement unknown).
        let size = if vma.is_hugetlb() { huge_size } else { PageSize::Size4K };
        const CHUNK: u64 = 1 << 30;
        let mut at = s;
        while at < e {
            let n = ((e - at).min(CHUNK) / 4096) as usize;
            let entries = pagemap.read(at, n)?;
            for (i, en) in entries.iter().enumerate() {
                if en.present() {
                    let a = at + i as u64 * 4096;
                    self.push(ext(a, a + 4096, size, false));
                }
            }
            at += n as u64 * 4096;
        }
        Ok(())
    }

    /// Where the sizes came from.
    pub fn source(&self) -> MapSource {
        self.source
    }

    /// All extents, sorted by address.
    pub fn extents(&self) -> &[Extent] {
        &self.extents
    }

    /// The extent holding `hva`, if the page is present.
    pub fn lookup(&self, hva: Hva) -> Option<&Extent> {
        let hva = hva.0;
        let i = self.extents.partition_point(|e| e.end <= hva);
        self.extents.get(i).filter(|e| e.start <= hva)
    }

    /// Bytes of `[start, end)` by host leaf size.
    pub fn split(&self, start: u64, end: u64) -> Split {
        let mut s = Split::default();
        let i = self.extents.partition_point(|e| e.end <= start);
        let mut present = 0;
        for e in self.extents[i..].iter().take_while(|e| e.start < end) {
            let n = e.end.min(end) - e.start.max(start);
            present += n;
            match e.size {
                PageSize::Size4K => s.bytes_4k += n,
                PageSize::Size2M => s.bytes_2m += n,
                PageSize::Size1G => s.bytes_1g += n,
            }
            if e.zero {
                s.bytes_zero += n;
            }
        }
        s.bytes_absent = (end - start) - present;
        s
    }

    /// The host leaf size of `[start, end)` if every page is present, not the zero page, and
    /// mapped with that one size (extents may differ in other ways, such as permissions).
    pub fn uniform_size(&self, start: u64, end: u64) -> Option<PageSize> {
        let i = self.extents.partition_point(|e| e.end <= start);
        let mut at = start;
        let mut size = None;
        for e in self.extents[i..].iter().take_while(|e| e.start < end) {
            if e.start > at || e.zero || size.is_some_and(|s| s != e.size) {
                return None;
            }
            size = Some(e.size);
            at = e.end;
        }
        size.filter(|_| at >= end)
    }

    /// The runs of `[start, end)` mapped by leaves of `size`, merged.
    pub fn ranges_of(&self, start: u64, end: u64, size: PageSize) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        let i = self.extents.partition_point(|e| e.end <= start);
        for e in self.extents[i..].iter().take_while(|e| e.start < end).filter(|e| e.size == size && !e.zero) {
            let (s, t) = (e.start.max(start), e.end.min(end));
            match out.last_mut() {
                Some(l) if l.1 == s => l.1 = t,
                _ => out.push((s, t)),
            }
        }
        out
    }
}
