//! `/proc/PID/smaps`, typed: one [`Vma`] per mapping with its sizes, THP and hugetlb counters and
//! `VmFlags`.
//!
//! What the numbers mean (checked on this project's 6.18 host, see the tests):
//! * `AnonHugePages`, `ShmemPmdMapped`, `FilePmdMapped` count **PMD-mapped** memory only; a
//!   PTE-mapped THP (after a 4K `mprotect`) or an mTHP is not counted.
//! * hugetlb memory is absent from `Rss`: it is in `Shared_Hugetlb` + `Private_Hugetlb` (whose
//!   split does not follow MAP_SHARED/MAP_PRIVATE), sized by `KernelPageSize`.
//! * `THPeligible` is policy, not state: `MADV_COLLAPSE` gives PMDs with `THPeligible: 0`.
//! * VMAs merge and split, so a VMA is never a guest RAM block by itself.
//!
//! ```
//! let text = "7f0000000000-7f0000400000 rw-p 00000000 00:00 0 \n\
//! Size:               4096 kB\nKernelPageSize:        4 kB\nRss:                4096 kB\n\
//! AnonHugePages:      4096 kB\nTHPeligible:    1\nVmFlags: rd wr mr mw me ac hg \n";
//! let vmas = slat_linux::smaps::parse(text).unwrap();
//! assert_eq!(vmas[0].anon_huge_pages, 4 << 20);
//! assert!(vmas[0].vm_flags.contains(slat_linux::smaps::VmFlag::Hugepage));
//! ```

use std::fmt;

use crate::error::{Error, Result};

/// One two-letter `VmFlags` code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum VmFlag {
    /// `rd` readable.
    Read,
    /// `wr` writable.
    Write,
    /// `ex` executable.
    Exec,
    /// `sh` shared.
    Shared,
    /// `mr` may read.
    MayRead,
    /// `mw` may write.
    MayWrite,
    /// `me` may execute.
    MayExec,
    /// `ms` may share.
    MayShare,
    /// `gd` stack grows down.
    GrowsDown,
    /// `pf` PFN map (`VM_PFNMAP`).
    PfnMap,
    /// `lo` locked.
    Locked,
    /// `io` memory-mapped I/O.
    Io,
    /// `sr` sequential read advised.
    SeqRead,
    /// `rr` random read advised.
    RandRead,
    /// `dc` do not copy on fork (`MADV_DONTFORK`): QEMU marks guest RAM with it.
    DontCopy,
    /// `de` do not expand on mremap.
    DontExpand,
    /// `ac` accountable.
    Account,
    /// `nr` swap space not reserved.
    NoReserve,
    /// `ht` hugetlb (`VM_HUGETLB`).
    Hugetlb,
    /// `sf` synchronous page faults (DAX `MAP_SYNC`).
    Sync,
    /// `ar` architecture-specific.
    Arch,
    /// `wf` wipe on fork.
    WipeOnFork,
    /// `dd` do not dump.
    DontDump,
    /// `sd` soft-dirty.
    SoftDirty,
    /// `mm` mixed map (DAX, device memory).
    MixedMap,
    /// `hg` `MADV_HUGEPAGE`.
    Hugepage,
    /// `nh` `MADV_NOHUGEPAGE`.
    NoHugepage,
    /// `mg` KSM mergeable.
    Mergeable,
    /// `um` userfaultfd missing tracking.
    UffdMissing,
    /// `uw` userfaultfd write-protect tracking.
    UffdWp,
    /// `ui` userfaultfd minor-fault tracking.
    UffdMinor,
    /// `ss` shadow stack.
    ShadowStack,
    /// `sl` sealed.
    Sealed,
    /// `lf` lock on fault.
    LockOnFault,
    /// `bt` arm64 BTI guarded.
    Bti,
    /// `mt` arm64 MTE tags.
    Mte,
    /// `gu` guard regions installed.
    Guard,
}

const CODES: [(&str, VmFlag); 37] = [
    ("rd", VmFlag::Read),
    ("wr", VmFlag::Write),
    ("ex", VmFlag::Exec),
    ("sh", VmFlag::Shared),
    ("mr", VmFlag::MayRead),
    ("mw", VmFlag::MayWrite),
    ("me", VmFlag::MayExec),
    ("ms", VmFlag::MayShare),
    ("gd", VmFlag::GrowsDown),
    ("pf", VmFlag::PfnMap),
    ("lo", VmFlag::Locked),
    ("io", VmFlag::Io),
    ("sr", VmFlag::SeqRead),
    ("rr", VmFlag::RandRead),
    ("dc", VmFlag::DontCopy),
    ("de", VmFlag::DontExpand),
    ("ac", VmFlag::Account),
    ("nr", VmFlag::NoReserve),
    ("ht", VmFlag::Hugetlb),
    ("sf", VmFlag::Sync),
    ("ar", VmFlag::Arch),
    ("wf", VmFlag::WipeOnFork),
    ("dd", VmFlag::DontDump),
    ("sd", VmFlag::SoftDirty),
    ("mm", VmFlag::MixedMap),
    ("hg", VmFlag::Hugepage),
    ("nh", VmFlag::NoHugepage),
    ("mg", VmFlag::Mergeable),
    ("um", VmFlag::UffdMissing),
    ("uw", VmFlag::UffdWp),
    ("ui", VmFlag::UffdMinor),
    ("ss", VmFlag::ShadowStack),
    ("sl", VmFlag::Sealed),
    ("lf", VmFlag::LockOnFault),
    ("bt", VmFlag::Bti),
    ("mt", VmFlag::Mte),
    ("gu", VmFlag::Guard),
];

impl VmFlag {
    /// The two-letter code.
    pub fn code(self) -> &'static str {
        CODES.iter().find(|(_, f)| *f == self).map_or("??", |(c, _)| c)
    }

    /// The flag for a code.
    pub fn from_code(code: &str) -> Option<Self> {
        CODES.iter().find(|(c, _)| *c == code).map(|(_, f)| *f)
    }
}

/// The `VmFlags` line: known flags as a set, unknown codes kept verbatim (newer kernels add codes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmFlags {
    bits: u64,
    /// Codes this parser does not know.
    pub unknown: Vec<String>,
}

impl VmFlags {
    /// Parse the codes after `VmFlags:`.
    pub fn parse(s: &str) -> Self {
        let mut f = VmFlags::default();
        for code in s.split_whitespace() {
            match VmFlag::from_code(code) {
                Some(v) => f.bits |= 1 << v as u8,
                None => f.unknown.push(code.to_string()),
            }
        }
        f
    }

    /// Whether `flag` is set.
    pub fn contains(&self, flag: VmFlag) -> bool {
        self.bits & (1 << flag as u8) != 0
    }

    /// The set flags in kernel order.
    pub fn iter(&self) -> impl Iterator<Item = VmFlag> + '_ {
        CODES.iter().map(|(_, f)| *f).filter(|f| self.contains(*f))
    }
}

impl fmt::Display for VmFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        for flag in self.iter() {
            write!(f, "{sep}{}", flag.code())?;
            sep = " ";
        }
        for u in &self.unknown {
            write!(f, "{sep}{u}")?;
            sep = " ";
        }
        Ok(())
    }
}

/// One mapping from `/proc/PID/smaps`. Sizes are in bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Vma {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// The `rwxp`/`rwxs` permission string.
    pub perms: String,
    /// File offset of `start` (bytes).
    pub offset: u64,
    /// Device `major:minor` of the file (0:0 for anonymous memory).
    pub dev: (u32, u32),
    /// Inode (0 for anonymous memory).
    pub inode: u64,
    /// Path or pseudo-name (`[heap]`, `/memfd:NAME (deleted)`), empty for anonymous memory.
    pub path: String,
    /// `Size`.
    pub size: u64,
    /// `KernelPageSize`: the hugetlb page size for hugetlb VMAs, 4 KiB otherwise (THP never changes it).
    pub kernel_page_size: u64,
    /// `MMUPageSize`.
    pub mmu_page_size: u64,
    /// `Rss` (excludes hugetlb).
    pub rss: u64,
    /// `Anonymous`.
    pub anonymous: u64,
    /// `AnonHugePages`: PMD-mapped anonymous THP.
    pub anon_huge_pages: u64,
    /// `ShmemPmdMapped`: PMD-mapped shmem THP.
    pub shmem_pmd_mapped: u64,
    /// `FilePmdMapped`: PMD-mapped page-cache folios.
    pub file_pmd_mapped: u64,
    /// `Shared_Hugetlb`.
    pub shared_hugetlb: u64,
    /// `Private_Hugetlb`.
    pub private_hugetlb: u64,
    /// `Swap`.
    pub swap: u64,
    /// `Locked`.
    pub locked: u64,
    /// `THPeligible` (absent on old kernels). Policy, not state.
    pub thp_eligible: Option<bool>,
    /// `VmFlags`.
    pub vm_flags: VmFlags,
}

impl Vma {
    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Whether the VMA is empty (never for a kernel VMA).
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }

    /// Whether it is hugetlb memory (`ht`).
    pub fn is_hugetlb(&self) -> bool {
        self.vm_flags.contains(VmFlag::Hugetlb)
    }

    /// hugetlb bytes mapped (hugetlb is not in `Rss`).
    pub fn hugetlb_bytes(&self) -> u64 {
        self.shared_hugetlb + self.private_hugetlb
    }

    /// Bytes mapped by PMD-sized THP leaves, whatever the backing.
    pub fn pmd_mapped_bytes(&self) -> u64 {
        self.anon_huge_pages + self.shmem_pmd_mapped + self.file_pmd_mapped
    }

    /// Whether the mapping is shared (`s` in the permissions).
    pub fn is_shared(&self) -> bool {
        self.perms.as_bytes().get(3) == Some(&b's')
    }

    /// Whether it maps a file or a shmem object (a non-zero inode).
    pub fn has_file(&self) -> bool {
        self.inode != 0
    }

    /// `(start - offset) mod align`: for a file or shmem mapping, a PMD is possible only where
    /// this is zero for the PMD size.
    pub fn file_skew(&self, align: u64) -> u64 {
        self.start.wrapping_sub(self.offset) % align
    }
}

fn kb(path: &str, line: &str, v: &str) -> Result<u64> {
    let mut it = v.split_whitespace();
    let n: u64 = it
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| Error::Parse { path: path.into(), detail: format!("bad number in {line:?}") })?;
    match it.next() {
        Some("kB") => Ok(n * 1024),
        None => Ok(n),
        Some(u) => Err(Error::Parse { path: path.into(), detail: format!("unknown unit {u:?} in {line:?}") }),
    }
}

fn hex(path: &str, s: &str, line: &str) -> Result<u64> {
    u64::from_str_radix(s, 16)
        .map_err(|_| Error::Parse { path: path.into(), detail: format!("bad hex {s:?} in {line:?}") })
}

/// Parse a maps header line (`start-end perms offset dev inode [path]`).
pub fn parse_header(line: &str) -> Result<Vma> {
    let p = "maps line";
    let bad = || Error::Parse { path: p.into(), detail: format!("malformed mapping line {line:?}") };
    let mut rest = line;
    let mut field = || -> Result<&str> {
        let t = rest.trim_start();
        let n = t.find(' ').unwrap_or(t.len());
        let (f, r) = t.split_at(n);
        rest = r;
        if f.is_empty() {
            Err(bad())
        } else {
            Ok(f)
        }
    };
    let range = field()?;
    let perms = field()?.to_string();
    let offset = field()?;
    let dev = field()?;
    let inode = field()?;
    let (s, e) = range.split_once('-').ok_or_else(bad)?;
    let (ma, mi) = dev.split_once(':').ok_or_else(bad)?;
    Ok(Vma {
        start: hex(p, s, line)?,
        end: hex(p, e, line)?,
        perms,
        offset: hex(p, offset, line)?,
        dev: (u32::from_str_radix(ma, 16).map_err(|_| bad())?, u32::from_str_radix(mi, 16).map_err(|_| bad())?),
        inode: inode.parse().map_err(|_| bad())?,
        path: rest.trim().to_string(),
        ..Vma::default()
    })
}

/// Parse the text of a `smaps` file.
pub fn parse(text: &str) -> Result<Vec<Vma>> {
    let p = "smaps";
    let mut out: Vec<Vma> = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        let Some((key, value)) = line.split_once(':').filter(|(k, _)| !k.contains(' ') && !k.contains('-')) else {
            out.push(parse_header(line)?);
            continue;
        };
        let vma = out
            .last_mut()
            .ok_or_else(|| Error::Parse { path: p.into(), detail: format!("field before any mapping: {line:?}") })?;
        match key {
            "Size" => vma.size = kb(p, line, value)?,
            "KernelPageSize" => vma.kernel_page_size = kb(p, line, value)?,
            "MMUPageSize" => vma.mmu_page_size = kb(p, line, value)?,
            "Rss" => vma.rss = kb(p, line, value)?,
            "Anonymous" => vma.anonymous = kb(p, line, value)?,
            "AnonHugePages" => vma.anon_huge_pages = kb(p, line, value)?,
            "ShmemPmdMapped" => vma.shmem_pmd_mapped = kb(p, line, value)?,
            "FilePmdMapped" => vma.file_pmd_mapped = kb(p, line, value)?,
            "Shared_Hugetlb" => vma.shared_hugetlb = kb(p, line, value)?,
            "Private_Hugetlb" => vma.private_hugetlb = kb(p, line, value)?,
            "Swap" => vma.swap = kb(p, line, value)?,
            "Locked" => vma.locked = kb(p, line, value)?,
            "THPeligible" => vma.thp_eligible = Some(value.trim() == "1"),
            "VmFlags" => vma.vm_flags = VmFlags::parse(value),
            _ => {}
        }
    }
    Ok(out)
}

/// Read and parse `/proc/PID/smaps` (`pid` 0 = this process), with clear errors for a missing
/// process or a permission problem.
pub fn read(pid: i32) -> Result<Vec<Vma>> {
    let path = if pid == 0 { "/proc/self/smaps".to_string() } else { format!("/proc/{pid}/smaps") };
    let text = std::fs::read_to_string(&path).map_err(|e| Error::proc_file(pid, "read the memory map", &path, e))?;
    parse(&text).map_err(|e| match e {
        Error::Parse { detail, .. } => Error::Parse { path, detail },
        e => e,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 1 GiB hugetlbfs mapping as this project's 6.18 host prints it (trimmed of zero lines).
    const HUGETLB_1G: &str =
        "7f4300000000-7f4340000000 rw-s 00000000 00:29 29329                      /tmp/mnt/huge1g/g (deleted)
Size:            1048576 kB
KernelPageSize:  1048576 kB
MMUPageSize:     1048576 kB
Rss:                   0 kB
AnonHugePages:         0 kB
ShmemPmdMapped:        0 kB
FilePmdMapped:         0 kB
Shared_Hugetlb:  1048576 kB
Private_Hugetlb:       0 kB
THPeligible:    0
VmFlags: rd wr sh mr mw me ms de ht
7ffd1c5f3000-7ffd1c614000 rw-p 00000000 00:00 0                          [stack]
Size:                132 kB
KernelPageSize:        4 kB
Rss:                  16 kB
THPeligible:    0
VmFlags: rd wr mr mw me gd ac zz
";

    #[test]
    fn hugetlb_is_sized_by_kernel_page_size_and_absent_from_rss() {
        let v = parse(HUGETLB_1G).unwrap();
        assert_eq!(v.len(), 2);
        let h = &v[0];
        assert_eq!((h.start, h.end, h.dev, h.inode), (0x7f43_0000_0000, 0x7f43_4000_0000, (0, 0x29), 29329));
        assert_eq!(h.path, "/tmp/mnt/huge1g/g (deleted)");
        assert!(h.is_hugetlb() && h.is_shared() && h.has_file());
        assert_eq!((h.kernel_page_size, h.rss, h.hugetlb_bytes()), (1 << 30, 0, 1 << 30));
        assert_eq!(h.thp_eligible, Some(false));
        assert_eq!(h.vm_flags.to_string(), "rd wr sh mr mw me ms de ht");
        let s = &v[1];
        assert_eq!(s.path, "[stack]");
        assert!(s.vm_flags.contains(VmFlag::GrowsDown));
        assert_eq!(s.vm_flags.unknown, vec!["zz".to_string()], "unknown codes are kept");
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        assert!(parse("Size: 4 kB\n").is_err());
        assert!(parse("zzzz-1000 rw-p 0 00:00 0\n").is_err());
        assert!(parse("1000-2000 rw-p 0 00:00 0\nRss: x kB\n").is_err());
        assert_eq!(VmFlag::from_code("hg"), Some(VmFlag::Hugepage));
        assert_eq!(VmFlag::Hugepage.code(), "hg");
    }
}
