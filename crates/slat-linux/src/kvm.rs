//! KVM's own page counts for another process's VMs.
//!
//! KVM rejects ioctls on a VM fd from a foreign process (EIO: it checks `kvm->mm`), so they are
//! read from debugfs (`/sys/kernel/debug/kvm/<pid>-<vmfd>/pages_{4k,2m,1g}`, root; mounted here
//! when missing, and the caller says so), from the VMM's own API ([`crate::qemu::Qmp::kvm_pages`]),
//! or from a stats fd the VMM keeps open, taken with `pidfd_getfd` ([`read_held_stats`]).
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

/// KVM binary statistics (`KVM_GET_STATS_FD` layout): `(name, value)` of every single-value stat.
///
/// The file starts with `struct kvm_stats_header` (flags, name_size, num_desc, id_offset,
/// desc_offset, data_offset: six u32); each descriptor is flags u32, exponent i16, size u16,
/// offset u32, bucket_size u32, then `name_size` bytes of name; values are u64 at
/// `data_offset + offset`. Histograms (`size > 1`) are skipped.
pub fn parse_stats(file: &std::fs::File) -> Result<Vec<(String, u64)>> {
    use std::os::unix::fs::FileExt;
    let read = |off: u64, len: usize| -> Result<Vec<u8>> {
        let mut b = vec![0u8; len];
        file.read_exact_at(&mut b, off).map_err(|e| crate::Error::io(format!("read KVM stats at {off}"), e))?;
        Ok(b)
    };
    let u32_at = |b: &[u8], i: usize| u32::from_ne_bytes(b[i..i + 4].try_into().unwrap());
    let h = read(0, 24)?;
    let (name_size, num_desc, desc_offset, data_offset) =
        (u32_at(&h, 4) as usize, u32_at(&h, 8) as usize, u32_at(&h, 16) as u64, u32_at(&h, 20) as u64);
    if name_size == 0 || name_size > 4096 || num_desc > 65536 {
        return Err(crate::Error::Parse {
            path: "KVM stats fd".into(),
            detail: format!("implausible header: name_size {name_size}, {num_desc} descriptors"),
        });
    }
    let stride = 16 + name_size;
    let descs = read(desc_offset, stride * num_desc)?;
    let mut out = Vec::new();
    for d in descs.chunks_exact(stride) {
        let size = u16::from_ne_bytes(d[6..8].try_into().unwrap());
        let offset = u32_at(d, 8) as u64;
        let name = String::from_utf8_lossy(&d[16..]).trim_end_matches('\0').to_string();
        if size == 1 {
            let v = read(data_offset + offset, 8)?;
            out.push((name, u64::from_ne_bytes(v[..8].try_into().unwrap())));
        }
    }
    Ok(out)
}

/// The fds of `pid` that are KVM VM statistics (`anon_inode:kvm-vm-stats`), which a VMM may keep
/// open after `KVM_GET_STATS_FD`.
pub fn stats_fds(pid: i32) -> Vec<u32> {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) else { return Vec::new() };
    let mut fds: Vec<u32> = dir
        .filter_map(|e| e.ok())
        .filter(|e| fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy() == "anon_inode:kvm-vm-stats"))
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    fds.sort_unstable();
    fds
}

/// `pages_*` from every VM stats fd `pid` holds, taken with `pidfd_getfd` (ptrace-attach rights:
/// root, in practice). Unlike a VM fd, a stats fd reads fine from another process.
pub fn read_held_stats(pid: i32) -> Result<Vec<KvmPages>> {
    let fds = stats_fds(pid);
    if fds.is_empty() {
        return Ok(Vec::new());
    }
    let p = rustix::process::Pid::from_raw(pid).ok_or(crate::Error::NoSuchProcess { pid })?;
    let pidfd = rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty())
        .map_err(|e| crate::Error::proc_file(pid, "open a pidfd", &format!("pid {pid}"), e.into()))?;
    let mut out = Vec::new();
    for fd in fds {
        let stolen = rustix::process::pidfd_getfd(&pidfd, fd as i32, rustix::process::PidfdGetfdFlags::empty())
            .map_err(|e| {
                crate::Error::proc_file(pid, "take a KVM stats fd (pidfd_getfd)", &format!("fd {fd}"), e.into())
            })?;
        let stats = parse_stats(&std::fs::File::from(stolen))?;
        let get = |n: &str| stats.iter().find(|(k, _)| k == n).map(|(_, v)| *v);
        if let (Some(a), Some(b), Some(c)) = (get("pages_4k"), get("pages_2m"), get("pages_1g")) {
            out.push(KvmPages {
                source: format!("stats fd {fd} (pidfd_getfd)"),
                pages_4k: a,
                pages_2m: b,
                pages_1g: c,
            });
        }
    }
    Ok(out)
}
