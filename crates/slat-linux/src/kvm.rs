//! KVM's own page counts for another process's VMs.
//!
//! KVM rejects ioctls on a VM fd from a foreign process (EIO: it checks `kvm->mm`), so they are
//! read from debugfs (`/sys/kernel/debug/kvm/<pid>-<vmfd>/pages_{4k,2m,1g}`, root; mounted here
//! when missing, and the caller says so) or from the VMM's own API ([`crate::qemu::Qmp::kvm_pages`]).
//! `pages_*` are per-VM totals of stage-2 leaves, with no per-memslot split; under shadow
//! paging they also follow the guest's own page sizes.

use std::fs;

use crate::error::Result;
use crate::pool;

/// KVM's leaf counts of one VM.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KvmPages {
    /// Where they came from (`debugfs kvm/PID-FD`, `QMP query-stats`).
    pub source: String,
    /// Leaves of 4 KiB.
    pub pages_4k: u64,
    /// Leaves of 2 MiB.
    pub pages_2m: u64,
    /// Leaves of 1 GiB.
    pub pages_1g: u64,
}

/// The fds of `pid` that are KVM VMs (`anon_inode:kvm-vm`).
pub fn vm_fds(pid: i32) -> Vec<u32> {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) else { return Vec::new() };
    let mut fds: Vec<u32> = dir
        .filter_map(|e| e.ok())
        .filter(|e| fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy() == "anon_inode:kvm-vm"))
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    fds.sort_unstable();
    fds
}

/// What reading KVM's stats from debugfs found.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct DebugfsRead {
    /// Counts per VM fd.
    pub vms: Vec<KvmPages>,
    /// This call mounted debugfs.
    pub mounted_debugfs: bool,
    /// Why nothing could be read, when so.
    pub note: Option<String>,
}

/// Read `pages_*` of every KVM VM of `pid` from debugfs, mounting it when needed (root).
pub fn read_debugfs(pid: i32) -> Result<DebugfsRead> {
    let fds = vm_fds(pid);
    let mut out = DebugfsRead::default();
    if fds.is_empty() {
        out.note = Some("the process holds no KVM VM fd (not a KVM guest, e.g. TCG, or fds unreadable)".into());
        return Ok(out);
    }
    if !pool::debugfs_mounted() {
        match pool::ensure_debugfs() {
            Ok(m) => out.mounted_debugfs = m,
            Err(e) => {
                out.note = Some(format!("debugfs is not mounted and mounting it failed: {e}"));
                return Ok(out);
            }
        }
    }
    for fd in fds {
        let dir = format!("{}/kvm/{pid}-{fd}", pool::DEBUGFS);
        let get = |n: &str| fs::read_to_string(format!("{dir}/{n}")).ok().and_then(|s| s.trim().parse().ok());
        match (get("pages_4k"), get("pages_2m"), get("pages_1g")) {
            (Some(a), Some(b), Some(c)) => out.vms.push(KvmPages {
                source: format!("debugfs kvm/{pid}-{fd}"),
                pages_4k: a,
                pages_2m: b,
                pages_1g: c,
            }),
            _ => out.note = Some(format!("{dir}/pages_* unreadable (not root, or no per-VM debugfs)")),
        }
    }
    Ok(out)
}
