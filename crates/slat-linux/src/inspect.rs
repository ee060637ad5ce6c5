//! The engine of `slat inspect`: how a VMM's guest RAM is backed and mapped on this host, what
//! stage 2 could map huge and why not, what KVM mapped, and the one change that would help.
//!
//! Guest RAM comes from QEMU's monitor when the process is QEMU with a QMP socket, from
//! `--range HVA:LEN[@GPA]` for any VMM, or, failing both, from QEMU-style `dc` (DONTFORK)
//! mappings with an assumed congruent layout. The host side is one [`HostMap`] (PAGEMAP_SCAN, or
//! smaps when the kernel lacks it: said so in [`Report::notes`]). The stage-2 side is a real
//! [`slat_mmu::Mmu`] over a read-only [`ProcessSnapshot`] of that memory with one memslot per
//! guest-physical range; every number comes from `Mmu::explain`, so the leaf-size rules live
//! only in slat-mmu. Nothing is faulted in and nothing in the target changes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;

use slat_mmu::testing::RecordingTlb;
use slat_mmu::{BackingKind, Decision, Gfn, Hva, MemslotSpec, Mmu, MmuConfig, Parts};
use slat_pt::format::Ept4;
use slat_pt::{PageSize, SimFrameAllocator};

use crate::error::{Error, Result};
use crate::hostmap::{classify, HostMap, MapSource, Split};
use crate::kvm::{self, KvmPages};
use crate::memory::ProcessSnapshot;
use crate::pagemap::{KpageFlags, Pagemap};
use crate::policy::{self, SystemThp, ThpPolicy};
use crate::qemu::{self, GuestRamBlock, Qmp};
use crate::smaps::{self, VmFlag, Vma};

const M2: u64 = 2 << 20;
const G1: u64 = 1 << 30;

/// `HVA:LEN[@GPA]`: a guest RAM range of any VMM. Numbers are hex with `0x` or decimal, with an
/// optional `K`/`M`/`G` suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct RangeSpec {
    /// Host address.
    pub hva: u64,
    /// Bytes.
    pub len: u64,
    /// Guest-physical address (when unknown, a congruent one is assumed and said so).
    pub gpa: Option<u64>,
}

fn parse_num(s: &str) -> Option<u64> {
    let (num, mult) = match s.as_bytes().last()? {
        b'K' | b'k' => (&s[..s.len() - 1], 1 << 10),
        b'M' | b'm' => (&s[..s.len() - 1], 1 << 20),
        b'G' | b'g' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    let v = match num.strip_prefix("0x").or_else(|| num.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16).ok()?,
        None => num.parse().ok()?,
    };
    v.checked_mul(mult)
}

impl FromStr for RangeSpec {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || format!("range {s:?}: expected HVA:LEN[@GPA], e.g. 0x7f0000000000:1G@0x100000000");
        let (range, gpa) = match s.split_once('@') {
            Some((r, g)) => (r, Some(parse_num(g).ok_or_else(bad)?)),
            None => (s, None),
        };
        let (hva, len) = range.split_once(':').ok_or_else(bad)?;
        let (hva, len) = (parse_num(hva).ok_or_else(bad)?, parse_num(len).ok_or_else(bad)?);
        if hva % 4096 != 0 || len % 4096 != 0 || len == 0 || gpa.is_some_and(|g| g % 4096 != 0) {
            return Err(format!("range {s:?}: HVA, LEN and GPA must be non-zero multiples of 4 KiB"));
        }
        if hva.checked_add(len).is_none_or(|e| e > 1 << 57)
            || gpa.is_some_and(|g| g.checked_add(len).is_none_or(|e| e > 1 << 52))
        {
            return Err(format!("range {s:?}: beyond the address space"));
        }
        Ok(RangeSpec { hva, len, gpa })
    }
}

/// What to inspect and how.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Explicit guest RAM ranges (any VMM); when empty, QEMU's monitor or `dc` mappings are used.
    pub ranges: Vec<RangeSpec>,
    /// The QMP socket (default: from the QEMU command line).
    pub qmp: Option<PathBuf>,
    /// Read host leaf sizes from smaps/pagemap even when `PAGEMAP_SCAN` works.
    pub force_smaps: bool,
    /// Do not read KVM's stats from debugfs (and never mount it).
    pub no_debugfs: bool,
}

/// One guest-physical range of a block: a memslot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct GuestRange {
    /// First guest-physical address.
    pub gpa: u64,
    /// Bytes.
    pub len: u64,
    /// Host address of `gpa`.
    pub hva: u64,
}

/// Alignment of a block's host address and of (address - file offset).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Alignment {
    /// `hva mod 2M`.
    pub hva_mod_2m: u64,
    /// `hva mod 1G`.
    pub hva_mod_1g: u64,
    /// File offset of the block's first byte (0 for anonymous memory).
    pub file_offset: u64,
    /// `(hva - file offset) mod 2M`: non-zero means no PMD is possible anywhere in a file or
    /// shmem mapping.
    pub file_skew_2m: u64,
    /// `(hva - file offset) mod 1G`.
    pub file_skew_1g: u64,
}

/// The stage-2 leaf mix slat-mmu's rules allow over the present pages of a block.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct Stage2Mix {
    /// Bytes that may be mapped by 1 GiB leaves.
    pub bytes_1g: u64,
    /// Bytes that may be mapped by 2 MiB leaves.
    pub bytes_2m: u64,
    /// Bytes that only 4 KiB leaves may map.
    pub bytes_4k: u64,
    /// Bytes not present on the host (no decision until they are faulted in).
    pub bytes_absent: u64,
    /// Of the 4 KiB bytes: why not 2 MiB, by slat-mmu's primary reason.
    pub not_2m: BTreeMap<String, u64>,
    /// Of the 2 MiB bytes: why not 1 GiB, by primary reason.
    pub not_1g: BTreeMap<String, u64>,
}

/// One guest RAM block.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BlockReport {
    /// Name (QEMU RAMBlock, or `range N`).
    pub name: String,
    /// Host address.
    pub hva: u64,
    /// Bytes.
    pub size: u64,
    /// Guest-physical ranges (one memslot each); `gpa_assumed` when made up.
    pub memslots: Vec<GuestRange>,
    /// The guest-physical layout was not known and a congruent one was assumed.
    pub gpa_assumed: bool,
    /// How the block was found.
    pub located_by: String,
    /// Backing kind (slat-mmu's name).
    pub kind: String,
    /// The backing in words (`memfd (shmem)`, `tmpfs file /dev/shm/x`, `hugetlbfs 2M file`).
    pub backing: String,
    /// VmFlags of the mapping at the block's start.
    pub vm_flags: String,
    /// VMAs overlapping the block (VMAs merge and split: this is not a count of blocks).
    pub vmas: usize,
    /// Alignment.
    pub alignment: Alignment,
    /// THP policy in force.
    pub policy: ThpPolicy,
    /// Host leaf sizes of the present bytes.
    pub host: Split,
    /// smaps PMD-mapped bytes (AnonHugePages + ShmemPmdMapped + FilePmdMapped, or hugetlb bytes)
    /// of the VMAs inside the block, for cross-checking.
    pub smaps_huge_bytes: u64,
    /// Of the 4K-mapped bytes, those in 2M blocks that are one THP folio mapped with PTEs
    /// (pagemap + kpageflags; `None` without root).
    pub pte_mapped_thp: Option<u64>,
    /// What slat-mmu's rules allow at stage 2.
    pub stage2: Stage2Mix,
    /// The answer in plain words.
    pub verdict: String,
    /// The change that would make it huge, if one would.
    pub fix: Option<String>,
}

/// KVM's side.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct KvmReport {
    /// Counts per VM (debugfs, QMP).
    pub vms: Vec<KvmPages>,
    /// debugfs was mounted by this inspection.
    pub mounted_debugfs: bool,
    /// Why counts are missing, when they are.
    pub note: Option<String>,
}

/// One hugetlb pool.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HugetlbPool {
    /// Page size (`2M`, `1G`).
    pub size: &'static str,
    /// NUMA node, `None` for the system total.
    pub node: Option<u32>,
    /// Pages in the pool.
    pub total: u64,
    /// Free pages.
    pub free: u64,
}

fn hugetlb_pools() -> Vec<HugetlbPool> {
    use crate::backing::HugetlbSize;
    let mut out = Vec::new();
    for size in [HugetlbSize::Size2M, HugetlbSize::Size1G] {
        let Ok(st) = crate::pool::PoolState::read(size) else { continue };
        out.push(HugetlbPool { size: size.name(), node: None, total: st.total, free: st.free });
        let Ok(nodes) = std::fs::read_dir("/sys/devices/system/node") else { continue };
        let mut nodes: Vec<u32> =
            nodes.filter_map(|e| e.ok()?.file_name().to_str()?.strip_prefix("node")?.parse().ok()).collect();
        nodes.sort_unstable();
        if nodes.len() < 2 {
            continue;
        }
        for n in nodes {
            let d = format!("/sys/devices/system/node/node{n}/hugepages/hugepages-{}kB", size.bytes() >> 10);
            let get = |f: &str| std::fs::read_to_string(format!("{d}/{f}")).ok().and_then(|s| s.trim().parse().ok());
            if let (Some(total), Some(free)) = (get("nr_hugepages"), get("free_hugepages")) {
                out.push(HugetlbPool { size: size.name(), node: Some(n), total, free });
            }
        }
    }
    out
}

/// The whole answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    /// The process.
    pub pid: i32,
    /// Its command name.
    pub comm: String,
    /// QEMU version when read over QMP.
    pub qemu_version: Option<String>,
    /// Where host leaf sizes came from.
    pub host_source: MapSource,
    /// Host THP settings.
    pub system: SystemThp,
    /// `PR_SET_THP_DISABLE` state (`THP_enabled` in status) when readable.
    pub process_thp_enabled: Option<bool>,
    /// hugetlb pools: `(size, node or None for the total, state)`; pools are per NUMA node, and
    /// a VMM bound to one node can fail although the total suffices.
    pub hugetlb_pools: Vec<HugetlbPool>,
    /// Guest RAM blocks.
    pub blocks: Vec<BlockReport>,
    /// KVM's counts.
    pub kvm: KvmReport,
    /// Things the reader must know (fallbacks, assumptions, mounts made).
    pub notes: Vec<String>,
}

/// A block to inspect: host range and its guest-physical ranges.
struct Target {
    name: String,
    hva: u64,
    size: u64,
    /// (gpa, len, offset in block)
    gpa_ranges: Vec<(u64, u64, u64)>,
    gpa_assumed: bool,
    located_by: String,
}

fn targets_from_ranges(ranges: &[RangeSpec]) -> Vec<Target> {
    ranges
        .iter()
        .enumerate()
        .map(|(i, r)| {
            // Unknown gpa: one congruent modulo 1G with the hva, so alignment is not blamed.
            let gpa = r.gpa.unwrap_or(r.hva % G1 + (i as u64 + 1) * (64 * G1));
            Target {
                name: format!("range {i}"),
                hva: r.hva,
                size: r.len,
                gpa_ranges: vec![(gpa, r.len, 0)],
                gpa_assumed: r.gpa.is_none(),
                located_by: "--range".into(),
            }
        })
        .collect()
}

fn targets_from_dc(vmas: &[Vma]) -> Vec<Target> {
    let mut out: Vec<Target> = Vec::new();
    for v in vmas {
        if v.vm_flags.contains(VmFlag::DontCopy) && !v.vm_flags.contains(VmFlag::Exec) && v.len() >= 16 << 20 {
            let i = out.len() as u64;
            out.push(Target {
                name: format!("dc mapping {i}"),
                hva: v.start,
                size: v.len(),
                gpa_ranges: vec![(v.start % G1 + (i + 1) * 64 * G1, v.len(), 0)],
                gpa_assumed: true,
                located_by: "DONTFORK (dc) mapping of 16 MiB or more".into(),
            });
        }
    }
    out
}

fn targets_from_qemu(blocks: Vec<GuestRamBlock>) -> Vec<Target> {
    blocks
        .into_iter()
        .map(|b| Target {
            name: b.name,
            hva: b.hva,
            size: b.size,
            gpa_ranges: b.gpa_ranges,
            gpa_assumed: false,
            located_by: b.located_by,
        })
        .collect()
}

fn comm_of(pid: i32) -> Result<String> {
    let path = format!("/proc/{pid}/comm");
    std::fs::read_to_string(&path)
        .map(|s| s.trim().to_string())
        .map_err(|e| Error::proc_file(pid, "read the command name", &path, e))
}

/// Inspect process `pid`.
pub fn inspect(pid: i32, opts: &Options) -> Result<Report> {
    if pid <= 0 {
        return Err(Error::Invalid(format!("pid {pid} is not a process id")));
    }
    let comm = comm_of(pid)?;
    let vmas = smaps::read(pid)?;
    let pagemap = Pagemap::open(pid)?;
    let mut notes = Vec::new();
    let mut qemu_version = None;
    let mut qmp_conn = None;
    let mut dirty_logging = false;

    let targets = if !opts.ranges.is_empty() {
        targets_from_ranges(&opts.ranges)
    } else {
        let socket = opts.qmp.clone().or_else(|| qemu::is_qemu(pid).then(|| qemu::qmp_socket_of(pid)).flatten());
        match socket {
            Some(sock) => {
                let mut q = Qmp::connect(&sock)?;
                qemu_version = Some(format!("{}.{}.{}", q.version.0, q.version.1, q.version.2));
                let blocks = q.ramblocks()?;
                let ranges = q.ram_ranges()?;
                if blocks.iter().all(|b| b.hva.is_none()) {
                    notes.push(format!(
                        "QEMU {} prints no HVA in `info ramblock`: guest RAM blocks were matched to mappings by size, the dc flag and the backend name",
                        qemu_version.as_deref().unwrap_or("?")
                    ));
                }
                let located = qemu::locate_blocks(&blocks, &ranges, &vmas)?;
                if let Some(st) = q.migration_status() {
                    if matches!(st.as_str(), "setup" | "active" | "pre-switchover" | "device" | "postcopy-active") {
                        dirty_logging = true;
                        notes.push(format!("a migration is running (query-migrate: {st}): KVM dirty-logs guest RAM, so the stage-2 mix counts every memslot as logged"));
                    }
                }
                qmp_conn = Some(q);
                targets_from_qemu(located)
            }
            None => {
                let t = targets_from_dc(&vmas);
                if t.is_empty() {
                    return Err(Error::Invalid(format!(
                        "no guest RAM found in pid {pid} ({comm}): not QEMU with a QMP socket (-qmp unix:PATH) and no DONTFORK mapping of 16 MiB or more; pass --range HVA:LEN[@GPA] (or --qmp SOCKET)"
                    )));
                }
                notes.push("guest RAM guessed from DONTFORK (dc) mappings; the guest-physical layout is unknown, a congruent one is assumed".into());
                t
            }
        }
    };
    if targets.is_empty() {
        return Err(Error::Invalid(format!(
            "pid {pid}: the VMM reports no guest RAM mapped into guest-physical memory"
        )));
    }
    for t in &targets {
        if !vmas.iter().any(|v| v.start <= t.hva && t.hva < v.end) {
            return Err(Error::Invalid(format!("{}: host address {:#x} is not mapped in pid {pid}", t.name, t.hva)));
        }
    }

    // Host side.
    let mounts = policy::mounts_of(pid);
    let kinds: Vec<(Vma, BackingKind)> = vmas
        .iter()
        .map(|v| {
            let fs = policy::mount_of(&mounts, v).map(|m| m.fstype.as_str());
            (v.clone(), classify(v, fs))
        })
        .collect();
    let ranges: Vec<(u64, u64)> = targets.iter().map(|t| (t.hva, t.hva + t.size)).collect();
    let map = HostMap::read_ranges(&pagemap, &kinds, &ranges, opts.force_smaps)?;
    if map.source() == MapSource::Smaps {
        notes.push(if opts.force_smaps {
            "host leaf sizes from pagemap and smaps (--smaps): THP positions are unknown, so THP-backed pages count as 4K; smaps' PMD totals are shown beside them".into()
        } else {
            "this kernel has no PAGEMAP_SCAN (Linux 6.7+): host leaf sizes from pagemap and smaps; THP positions are unknown, so THP-backed pages count as 4K; smaps' PMD totals are shown beside them".into()
        });
    }
    let system = SystemThp::read();
    if matches!(system.kvm_nx_huge_pages.as_deref(), Some("Y") | Some("force")) {
        notes.push("kvm.nx_huge_pages is on: huge leaves the guest executes from are split to 4K (iTLB multihit mitigation); the stage-2 mix assumes data accesses".into());
    }
    let process_thp_enabled = policy::process_thp_enabled(pid);
    // The report never shows frames, so the snapshot answers with stand-in PFNs (no pagemap
    // read per lookup): the leaf-size rules do not depend on them.
    let snapshot = ProcessSnapshot::new(map, None);

    // Stage-2 side: slat-mmu over the snapshot, one memslot per guest-physical range.
    let mmu = Mmu::<Ept4, Parts<_, _, _>>::new(
        MmuConfig::default(),
        SimFrameAllocator::new(1 << 40, 1 << 20),
        snapshot,
        RecordingTlb::default(),
    )
    .map_err(|e| Error::Invalid(format!("MMU: {e}")))?;
    let mut slot_id = 0u32;
    let mut slots_of: Vec<Vec<(u32, MemslotSpec)>> = Vec::new();
    for t in &targets {
        let mut v = Vec::new();
        for &(gpa, len, off) in &t.gpa_ranges {
            let spec = MemslotSpec {
                id: slot_id,
                base_gfn: Gfn(gpa >> 12),
                npages: len >> 12,
                hva: Hva(t.hva + off),
                readonly: false,
                log_dirty: dirty_logging,
            };
            mmu.add_memslot(spec).map_err(|e| Error::Invalid(format!("{}: memslot {gpa:#x}+{len:#x}: {e}", t.name)))?;
            v.push((slot_id, spec));
            slot_id += 1;
        }
        slots_of.push(v);
    }

    let folios =
        if rustix::process::geteuid().is_root() { Pagemap::open(pid).ok().zip(KpageFlags::open().ok()) } else { None };
    let cx = Context {
        kinds: &kinds,
        mounts: &mounts,
        system: &system,
        process_thp: process_thp_enabled,
        folios: folios.as_ref(),
    };
    let mut blocks = Vec::new();
    for (t, slots) in targets.iter().zip(&slots_of) {
        blocks.push(block_report(t, slots, &mmu, &cx));
    }

    // KVM's side.
    let mut kvm_report = KvmReport::default();
    if let Some(q) = qmp_conn.as_mut() {
        if let Some([a, b, c]) = q.kvm_pages() {
            kvm_report.vms.push(KvmPages { source: "QMP query-stats".into(), pages_4k: a, pages_2m: b, pages_1g: c });
        }
    }
    if !opts.no_debugfs && rustix::process::geteuid().is_root() {
        let d = kvm::read_debugfs(pid)?;
        if d.mounted_debugfs {
            notes.push(format!("mounted debugfs on {} to read KVM's statistics (left mounted)", crate::pool::DEBUGFS));
        }
        kvm_report.mounted_debugfs = d.mounted_debugfs;
        kvm_report.vms.extend(d.vms);
        kvm_report.note = d.note;
    } else if kvm_report.vms.is_empty() {
        kvm_report.note = Some(if opts.no_debugfs {
            "debugfs not read (--no-debugfs)".into()
        } else {
            "KVM's per-VM counts need root (debugfs) or the VMM's API (QMP query-stats)".into()
        });
    }
    if rustix::process::geteuid().is_root() {
        match kvm::read_held_stats(pid) {
            Ok(v) => kvm_report.vms.extend(v),
            Err(e) => notes.push(format!("KVM stats fds held by the process could not be read: {e}")),
        }
    }
    if !kvm_report.vms.is_empty() && kvm_report.vms.iter().all(|v| v.pages_4k + v.pages_2m + v.pages_1g == 0) {
        kvm_report.note = Some("KVM has mapped nothing yet: the guest is paused or has not touched its memory".into());
    }
    if kvm_report.vms.is_empty() && kvm::vm_fds(pid).is_empty() {
        kvm_report.note = Some(
            "no KVM VM in this process (TCG or not a KVM VMM): the stage-2 mix is what slat-mmu's rules would allow"
                .into(),
        );
    }

    Ok(Report {
        pid,
        comm,
        qemu_version,
        host_source: mmu.host().map().source(),
        system,
        process_thp_enabled,
        hugetlb_pools: hugetlb_pools(),
        blocks,
        kvm: kvm_report,
        notes,
    })
}

type InspectMmu = Mmu<Ept4, Parts<SimFrameAllocator, ProcessSnapshot, RecordingTlb>>;

/// The stage-2 mix over one memslot: one `Mmu::explain` per 2M gfn block and kind of host
/// page in it (absent pages get no decision).
fn stage2_mix(mmu: &InspectMmu, spec: &MemslotSpec, mix: &mut Stage2Mix) {
    let map = mmu.host().map();
    let (base_gfn, base_hva) = (spec.base_gfn.0, spec.hva.0);
    let end_gfn = base_gfn + spec.npages;
    let mut gfn = base_gfn;
    let tally = |mix: &mut Stage2Mix, d: &Decision, pages: u64| {
        let bytes = pages * 4096;
        let (bucket, reason) = match d.size {
            PageSize::Size1G => (&mut mix.bytes_1g, None),
            PageSize::Size2M => (&mut mix.bytes_2m, d.not_1g.primary().map(|r| (r, true))),
            PageSize::Size4K => (&mut mix.bytes_4k, d.not_2m.primary().map(|r| (r, false))),
        };
        *bucket += bytes;
        if let Some((r, is_1g)) = reason {
            let m = if is_1g { &mut mix.not_1g } else { &mut mix.not_2m };
            *m.entry(r.name().to_string()).or_default() += bytes;
        }
    };
    // Decisions already asked for in the current 2M gfn block, by the host extent's
    // attributes: inside one block, pages with the same host leaf, kind and permissions share
    // slot, block and host answer, so slat-mmu's decision is the same.
    let mut seen: Vec<((PageSize, BackingKind, bool, bool), Decision)> = Vec::new();
    while gfn < end_gfn {
        let block_end = ((gfn / 512) + 1) * 512;
        let n = block_end.min(end_gfn) - gfn;
        let hva = base_hva + ((gfn - base_gfn) << 12);
        let hva_end = hva + (n << 12);
        let i = map.extents().partition_point(|e| e.end <= hva);
        seen.clear();
        let mut at = hva;
        for e in map.extents()[i..].iter().take_while(|e| e.start < hva_end) {
            let (s, t) = (e.start.max(hva), e.end.min(hva_end));
            mix.bytes_absent += s - at;
            let key = (e.size, e.kind, e.writable, e.zero);
            let d = match seen.iter().find(|(k, _)| *k == key) {
                Some((_, d)) => *d,
                None => {
                    let d = mmu.explain(Gfn(gfn + ((s - hva) >> 12))).decision;
                    seen.push((key, d));
                    d
                }
            };
            tally(mix, &d, (t - s) >> 12);
            at = t;
        }
        mix.bytes_absent += hva_end - at;
        gfn += n;
    }
}

fn backing_words(v: &Vma, kind: BackingKind, mount: Option<&policy::Mount>) -> String {
    match kind {
        BackingKind::Hugetlbfs => {
            let size = if v.kernel_page_size >= G1 { "1G" } else { "2M" };
            if v.path.starts_with("/memfd:") {
                format!("memfd hugetlb {size}")
            } else {
                format!("hugetlbfs {size} file")
            }
        }
        BackingKind::Shmem if v.path.starts_with("/memfd:") => "memfd (shmem)".into(),
        BackingKind::Shmem if !v.has_file() || mount.is_none() => "shared anonymous (shmem)".into(),
        BackingKind::Shmem => "tmpfs file".into(),
        BackingKind::Anonymous => "anonymous".into(),
        BackingKind::PageCache => format!("{} file", mount.map_or("page-cache", |m| m.fstype.as_str())),
        BackingKind::Dax => "DAX".into(),
        BackingKind::PfnMap => "PFN map".into(),
    }
}

/// Bytes in the largest unit that keeps them short (`1 GiB`, `1.75 MiB`, `768 KiB`).
pub fn human_bytes(b: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    if b == 0 {
        return "0".into();
    }
    for (u, n) in UNITS {
        if b >= u {
            if b % u == 0 {
                return format!("{} {n}", b / u);
            }
            let s = format!("{:.2}", b as f64 / u as f64);
            return format!("{} {n}", s.trim_end_matches('0').trim_end_matches('.'));
        }
    }
    format!("{b} B")
}

/// A why-not-huge reason (slat-mmu's name) in an operator's words.
fn reason_words(name: &str) -> String {
    match name {
        "crosses-slot" => "memslot edges (the 640K-1M hole splits the first 2M; expected)".into(),
        "host-leaf-2m" => "host leaves are 2M (1G needs 1G hugetlb pages)".into(),
        "format-limit" => "the format or CPU has no leaf that large".into(),
        "misaligned" => "gpa and hva are not congruent".into(),
        "host-maps-small" => "the host maps it with 4K PTEs".into(),
        other => slat_mmu::WhyNotHuge::from_name(other).map_or(other.to_string(), |r| r.describe().to_string()),
    }
}

fn gib(bytes: u64) -> String {
    human_bytes(bytes)
}

/// What every block's report reads about the process and the host.
struct Context<'a> {
    kinds: &'a [(Vma, BackingKind)],
    mounts: &'a [policy::Mount],
    system: &'a SystemThp,
    process_thp: Option<bool>,
    /// pagemap + kpageflags of the process (root).
    folios: Option<&'a (Pagemap, KpageFlags)>,
}

fn block_report(t: &Target, slots: &[(u32, MemslotSpec)], mmu: &InspectMmu, cx: &Context<'_>) -> BlockReport {
    let Context { kinds, mounts, system, process_thp, folios } = *cx;
    let end = t.hva + t.size;
    let (vma, kind) =
        kinds.iter().find(|(v, _)| v.start <= t.hva && t.hva < v.end).map(|(v, k)| (v, *k)).expect("checked");
    let overlapping: Vec<&Vma> = kinds.iter().map(|(v, _)| v).filter(|v| v.start < end && v.end > t.hva).collect();
    let mount = policy::mount_of(mounts, vma);
    let file_offset = if vma.has_file() { vma.offset + (t.hva - vma.start) } else { 0 };
    let skew = |a: u64| t.hva.wrapping_sub(file_offset) % a;
    let alignment = Alignment {
        hva_mod_2m: t.hva % M2,
        hva_mod_1g: t.hva % G1,
        file_offset,
        file_skew_2m: if vma.has_file() || kind == BackingKind::Shmem { skew(M2) } else { t.hva % M2 },
        file_skew_1g: if vma.has_file() || kind == BackingKind::Shmem { skew(G1) } else { t.hva % G1 },
    };
    let policy = policy::thp_policy(vma, kind, mount, system, process_thp);
    let host = mmu.host().map().split(t.hva, end);
    let smaps_huge_bytes = overlapping
        .iter()
        .filter(|v| v.start >= t.hva && v.end <= end)
        .map(|v| if v.is_hugetlb() { v.hugetlb_bytes() } else { v.pmd_mapped_bytes() })
        .sum();
    let pte_mapped_thp = folios.map(|(pm, kpf)| {
        let map = mmu.host().map();
        let mut bytes = 0;
        let mut h = t.hva.next_multiple_of(M2);
        while h + M2 <= end {
            let small = map.uniform_size(h, h + M2) == Some(PageSize::Size4K);
            if small && crate::pagemap::is_thp_block(pm, kpf, h).unwrap_or(false) {
                bytes += M2;
            }
            h += M2;
        }
        bytes
    });
    let mut stage2 = Stage2Mix::default();
    for (_, spec) in slots {
        stage2_mix(mmu, spec, &mut stage2);
    }
    let backing = backing_words(vma, kind, mount);
    let (verdict, fix) = verdict(t, kind, &backing, vma, &alignment, &policy, &host, &stage2, system, pte_mapped_thp);
    BlockReport {
        name: t.name.clone(),
        hva: t.hva,
        size: t.size,
        memslots: slots
            .iter()
            .map(|(_, s)| GuestRange { gpa: s.base_gfn.gpa().0, len: s.npages << 12, hva: s.hva.0 })
            .collect(),
        gpa_assumed: t.gpa_assumed,
        located_by: t.located_by.clone(),
        kind: kind.name().to_string(),
        backing,
        vm_flags: vma.vm_flags.to_string(),
        vmas: overlapping.len(),
        alignment,
        policy,
        host,
        smaps_huge_bytes,
        pte_mapped_thp,
        stage2,
        verdict,
        fix,
    }
}

#[allow(clippy::too_many_arguments)]
fn verdict(
    t: &Target,
    kind: BackingKind,
    backing: &str,
    vma: &Vma,
    al: &Alignment,
    policy: &ThpPolicy,
    host: &Split,
    s2: &Stage2Mix,
    system: &SystemThp,
    pte_mapped_thp: Option<u64>,
) -> (String, Option<String>) {
    let size = gib(t.size);
    let present = host.present();
    let huge_host = host.bytes_2m + host.bytes_1g;
    let huge_s2 = s2.bytes_2m + s2.bytes_1g;
    if present == 0 {
        return (
            format!("{size} of {backing} guest RAM: nothing is present on the host yet (a paused VM without prealloc, or swapped out); nothing to map"),
            Some("inspect after the guest has touched its memory, or start the VM with prealloc=on".into()),
        );
    }
    let pct = |b: u64| b * 100 / present.max(1);
    let fix_shmem = "use memory-backend-file with align=2M on a huge=always tmpfs (or hugetlb: memory-backend-memfd,hugetlb=on / memory-backend-file on hugetlbfs)";
    if (kind == BackingKind::Shmem || kind == BackingKind::PageCache) && al.file_skew_2m != 0 {
        return (
            format!(
                "{size} of {backing} guest RAM is mapped {} KiB off a 2M boundary ((hva - file offset) mod 2M = {:#x}): no huge page is possible, on the host or at stage 2",
                al.file_skew_2m >> 10,
                al.file_skew_2m
            ),
            Some(fix_shmem.into()),
        );
    }
    let leaf = |s2: &Stage2Mix| {
        if s2.bytes_1g > 0 && s2.bytes_2m > 0 {
            "2M and 1G"
        } else if s2.bytes_1g > 0 {
            "1G"
        } else {
            "2M"
        }
    };
    // Where stage 2 loses: the biggest reason.
    let top = s2.not_2m.iter().max_by_key(|(_, b)| **b).map(|(r, b)| (r.as_str(), *b));
    if let Some(("misaligned", b)) = top {
        return (
            format!("{} of {size} of {backing} guest RAM: guest-physical and host addresses are not congruent modulo 2M, so KVM forbids 2M leaves for the whole memslot", gib(b)),
            Some("place guest RAM so that gpa and hva agree modulo 2M (a VMM bug or an odd memslot layout)".into()),
        );
    }
    if huge_host == present {
        let why_not_1g = s2
            .not_1g
            .iter()
            .max_by_key(|(_, b)| **b)
            .map(|(r, _)| {
                let w = if r == "crosses-slot" { "no whole 1G block inside a memslot".into() } else { reason_words(r) };
                format!("; not 1G: {w}")
            })
            .unwrap_or_default();
        let rest = if huge_s2 < present {
            let parts: Vec<String> =
                s2.not_2m.iter().map(|(r, b)| format!("{} at {}", gib(*b), reason_words(r))).collect();
            format!("; 4K: {}", parts.join(", "))
        } else {
            String::new()
        };
        return (
            format!(
                "{size} of {backing} guest RAM is host-huge throughout: stage 2 may map {} ({}%) with {} leaves{rest}{why_not_1g}",
                gib(huge_s2),
                pct(huge_s2),
                leaf(s2)
            ),
            None,
        );
    }
    let small = host.bytes_4k;
    let (cause, fix): (String, Option<String>) = match (kind, policy.allows_thp) {
        (BackingKind::Hugetlbfs, _) => ("hugetlb pages are mapped small".into(), None),
        (BackingKind::PageCache, _) => (
            format!(
                "it is a regular file on {} (page cache): huge only where the page cache holds PMD-size folios; if this was meant to be hugetlbfs, the path is not on a hugetlbfs mount (a plain directory can mask one)",
                vma.path
            ),
            Some("put mem-path on a hugetlbfs mount (check with findmnt), or use anonymous RAM with THP".into()),
        ),
        (_, Some(false)) => {
            let fix = match kind {
                BackingKind::Anonymous if vma.vm_flags.contains(VmFlag::NoHugepage) => "the VMM set MADV_NOHUGEPAGE (e.g. postcopy); clear it".to_string(),
                BackingKind::Anonymous if system.anon_mode() == Some("never") => {
                    "echo madvise > /sys/kernel/mm/transparent_hugepage/enabled (the VMM madvises guest RAM) or always".into()
                }
                BackingKind::Anonymous => "have the VMM madvise(MADV_HUGEPAGE) guest RAM, or echo always > /sys/kernel/mm/transparent_hugepage/enabled".into(),
                BackingKind::Shmem if policy.because.starts_with("tmpfs") => "mount the tmpfs with huge=always (mount -o remount,huge=always) and restart the VM; if hugetlbfs was intended, mem-path is not on a hugetlbfs mount (a tmpfs or empty directory masks it)".into(),
                BackingKind::Shmem => format!(
                    "echo advise > /sys/kernel/mm/transparent_hugepage/shmem_enabled (QEMU madvises) and restart the VM, or {fix_shmem}"
                ),
                _ => "use anonymous THP or hugetlb backing".into(),
            };
            (format!("THP is off for it: {}", policy.because), Some(fix))
        }
        _ if al.hva_mod_2m != 0 && kind == BackingKind::Anonymous => (
            format!("it starts {} KiB past a 2M boundary, so its head and tail cannot be huge", al.hva_mod_2m >> 10),
            Some("2M-align guest RAM in the VMM".into()),
        ),
        _ => {
            let split = match pte_mapped_thp {
                Some(x) if x > 0 => format!(
                    "{} is THP folios mapped with 4K PTEs (a split mapping: a 4K mprotect/madvise or a partial munmap; KVM maps those 4K) and {} is 4K folios (THP allocation failed or never collapsed)",
                    gib(x),
                    gib(small - x)
                ),
                Some(_) => format!("{} is 4K folios: THP allocation failed (fragmentation) or never happened", gib(small)),
                None => format!(
                    "{} is PTE-mapped: THP allocation failed (fragmentation), or a THP was split (a 4K mprotect/madvise, KSM, a partial munmap); run as root to tell them apart",
                    gib(small)
                ),
            };
            (
                format!("THP is allowed ({}) but {split}", policy.because),
                Some("MADV_COLLAPSE or khugepaged (after compaction: echo 1 > /proc/sys/vm/compact_memory) can make it huge again; for guaranteed huge pages use hugetlb".into()),
            )
        }
    };
    let reason = if top.is_some() {
        let parts: Vec<String> = s2.not_2m.iter().map(|(r, b)| format!("{r} {}", gib(*b))).collect();
        format!("; stage 2 4K by reason: {}", parts.join(", "))
    } else {
        String::new()
    };
    (
        format!(
            "{size} of {backing} guest RAM: {}% of the present {} is host-huge ({}), {}% may be huge at stage 2; {cause}{reason}",
            pct(huge_host),
            gib(present),
            if huge_host > 0 { "2M/1G" } else { "none" },
            pct(huge_s2)
        ),
        fix,
    )
}
