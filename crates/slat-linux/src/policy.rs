//! The THP policy in force for a mapping: system settings, per-size settings, the shmem and
//! tmpfs mount settings, the VMA's `hg`/`nh` flags and the process's `PR_SET_THP_DISABLE`.
//!
//! This is what *may* be huge; what *is* huge comes from the page tables ([`crate::hostmap`]).
//! smaps `THPeligible` folds the same inputs but is policy too (`MADV_COLLAPSE` gives PMDs with
//! `THPeligible: 0`), so the report shows both and never takes one for the other.

use std::fs;

use slat_mmu::BackingKind;

use crate::smaps::{VmFlag, Vma};

const THP: &str = "/sys/kernel/mm/transparent_hugepage";

/// The bracketed choice of a sysfs selector (`always [madvise] never` -> `madvise`).
pub fn selected(text: &str) -> Option<String> {
    let s = text.find('[')?;
    let e = text[s..].find(']')? + s;
    Some(text[s + 1..e].to_string())
}

fn read_selected(path: &str) -> Option<String> {
    fs::read_to_string(path).ok().and_then(|t| selected(&t))
}

/// System-wide THP settings.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct SystemThp {
    /// `enabled`: always / madvise / never.
    pub enabled: Option<String>,
    /// `defrag`.
    pub defrag: Option<String>,
    /// `shmem_enabled` (memfd, SysV shm, shared anonymous: the internal mount).
    pub shmem_enabled: Option<String>,
    /// `hugepages-2048kB/enabled` (6.8+): `inherit` follows `enabled`.
    pub pmd_enabled: Option<String>,
    /// `hugepages-2048kB/shmem_enabled` (6.11+).
    pub pmd_shmem_enabled: Option<String>,
    /// `use_zero_page`.
    pub use_zero_page: Option<bool>,
    /// `kvm.nx_huge_pages` (`N`, `Y`, `force`, `off`, `auto`), when KVM is loaded.
    pub kvm_nx_huge_pages: Option<String>,
}

impl SystemThp {
    /// Read the host's settings.
    pub fn read() -> Self {
        SystemThp {
            enabled: read_selected(&format!("{THP}/enabled")),
            defrag: read_selected(&format!("{THP}/defrag")),
            shmem_enabled: read_selected(&format!("{THP}/shmem_enabled")),
            pmd_enabled: read_selected(&format!("{THP}/hugepages-2048kB/enabled")),
            pmd_shmem_enabled: read_selected(&format!("{THP}/hugepages-2048kB/shmem_enabled")),
            use_zero_page: fs::read_to_string(format!("{THP}/use_zero_page")).ok().map(|s| s.trim() == "1"),
            kvm_nx_huge_pages: fs::read_to_string("/sys/module/kvm/parameters/nx_huge_pages")
                .ok()
                .map(|s| s.trim().to_string()),
        }
    }

    /// The anonymous PMD-size THP mode in force (the per-size value unless `inherit`).
    pub fn anon_mode(&self) -> Option<&str> {
        match self.pmd_enabled.as_deref() {
            Some("inherit") | None => self.enabled.as_deref(),
            Some(m) => Some(m),
        }
    }

    /// The internal shmem mount's PMD-size mode in force.
    pub fn shmem_mode(&self) -> Option<&str> {
        match self.pmd_shmem_enabled.as_deref() {
            Some("inherit") | None => self.shmem_enabled.as_deref(),
            Some(m) => Some(m),
        }
    }
}

/// One mount from `/proc/PID/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Device `major:minor`.
    pub dev: (u32, u32),
    /// Mount point.
    pub mount_point: String,
    /// File system type.
    pub fstype: String,
    /// Super-block options (`huge=always`, `pagesize=2M`, ...).
    pub super_options: String,
}

impl Mount {
    /// A super option's value (`huge`, `pagesize`).
    pub fn option(&self, key: &str) -> Option<&str> {
        self.super_options.split(',').find_map(|kv| kv.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
    }
}

/// Parse `mountinfo` text.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let pre: Vec<&str> = pre.split(' ').collect();
            let post: Vec<&str> = post.split(' ').collect();
            let (ma, mi) = pre.get(2)?.split_once(':')?;
            Some(Mount {
                dev: (ma.parse().ok()?, mi.parse().ok()?),
                mount_point: pre.get(4)?.to_string(),
                fstype: post.first()?.to_string(),
                super_options: post.get(2).unwrap_or(&"").to_string(),
            })
        })
        .collect()
}

/// The mounts of process `pid`'s mount namespace (empty when unreadable).
pub fn mounts_of(pid: i32) -> Vec<Mount> {
    fs::read_to_string(format!("/proc/{pid}/mountinfo")).map(|t| parse_mountinfo(&t)).unwrap_or_default()
}

/// The mount holding a VMA's file (by device), if any (the internal shmem mount is not listed).
pub fn mount_of<'a>(mounts: &'a [Mount], vma: &Vma) -> Option<&'a Mount> {
    if !vma.has_file() {
        return None;
    }
    mounts.iter().find(|m| m.dev == vma.dev)
}

/// `THP_enabled` from `/proc/PID/status`: `Some(false)` when the process set `PR_SET_THP_DISABLE`.
pub fn process_thp_enabled(pid: i32) -> Option<bool> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find_map(|l| l.strip_prefix("THP_enabled:")).map(|v| v.trim() == "1")
}

/// The THP policy for one mapping, in words.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ThpPolicy {
    /// Whether the policy lets the kernel allocate PMD-size THP here (hugetlb: not applicable,
    /// `None`).
    pub allows_thp: Option<bool>,
    /// The settings that decided it, in words.
    pub because: String,
    /// smaps `THPeligible` (policy as the kernel folds it; not state).
    pub thp_eligible: Option<bool>,
}

/// Evaluate the policy for `vma` of `kind` (with its mount, the system settings and the
/// process's `THP_enabled`).
pub fn thp_policy(
    vma: &Vma,
    kind: BackingKind,
    mount: Option<&Mount>,
    sys: &SystemThp,
    process_thp: Option<bool>,
) -> ThpPolicy {
    let hg = vma.vm_flags.contains(VmFlag::Hugepage);
    let nh = vma.vm_flags.contains(VmFlag::NoHugepage);
    let flags = format!("VmFlags {}{}", if hg { "hg" } else { "no hg" }, if nh { ", nh" } else { "" });
    let p = |allows: Option<bool>, because: String| ThpPolicy {
        allows_thp: allows,
        because,
        thp_eligible: vma.thp_eligible,
    };
    if process_thp == Some(false) && kind != BackingKind::Hugetlbfs {
        return p(Some(false), "the process set PR_SET_THP_DISABLE (THP_enabled: 0)".into());
    }
    if nh && kind != BackingKind::Hugetlbfs {
        return p(Some(false), "MADV_NOHUGEPAGE on the mapping (VmFlags nh)".into());
    }
    match kind {
        BackingKind::Hugetlbfs => {
            p(None, format!("hugetlb pages of {} KiB: THP policy does not apply", vma.kernel_page_size >> 10))
        }
        BackingKind::Anonymous => {
            let mode = sys.anon_mode().unwrap_or("unknown");
            let allows = match mode {
                "always" => true,
                "madvise" => hg,
                _ => false,
            };
            p(
                Some(allows),
                format!(
                    "anonymous THP enabled={mode} (2048kB: {}), {flags}",
                    sys.pmd_enabled.as_deref().unwrap_or("-")
                ),
            )
        }
        BackingKind::Shmem => match mount.filter(|m| m.fstype == "tmpfs") {
            Some(m) => {
                let huge = m.option("huge").unwrap_or("never");
                let deny = matches!(sys.shmem_enabled.as_deref(), Some("deny"));
                let force = matches!(sys.shmem_enabled.as_deref(), Some("force"));
                let allows = !deny && (force || matches!(huge, "always" | "within_size") || (huge == "advise" && hg));
                p(
                    Some(allows),
                    format!(
                        "tmpfs {} mounted huge={huge} (shmem_enabled={}), {flags}",
                        m.mount_point,
                        sys.shmem_enabled.as_deref().unwrap_or("-")
                    ),
                )
            }
            None => {
                let mode = sys.shmem_mode().unwrap_or("unknown");
                let allows = match mode {
                    "always" | "within_size" | "force" => true,
                    "advise" => hg,
                    _ => false,
                };
                p(Some(allows), format!("internal shmem mount (memfd/shared anonymous): shmem_enabled={mode}, {flags}"))
            }
        },
        BackingKind::PageCache => p(
            Some(hg || sys.anon_mode() == Some("always")),
            format!("page cache: large folios depend on the file system; PMD mapping needs a PMD-size folio, {flags}"),
        ),
        BackingKind::Dax => p(Some(true), "DAX: PMD/PUD mappings from the device".into()),
        BackingKind::PfnMap => p(Some(false), "PFN map (device memory)".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_and_mountinfo() {
        assert_eq!(selected("always [madvise] never\n").as_deref(), Some("madvise"));
        assert_eq!(selected("always within_size advise [never] deny force").as_deref(), Some("never"));
        assert_eq!(selected("nothing"), None);
        // A line of this host's mountinfo for a private huge tmpfs.
        let m = parse_mountinfo(
            "613 29 0:95 / /tmp/slat-tmpfs-1-0 rw,nosuid,nodev,relatime - tmpfs tmpfs rw,size=65536k,mode=700,huge=always\n",
        );
        assert_eq!(m.len(), 1);
        assert_eq!((m[0].dev, m[0].fstype.as_str(), m[0].option("huge")), ((0, 95), "tmpfs", Some("always")));
        assert_eq!(m[0].option("size"), Some("65536k"));
    }
}
