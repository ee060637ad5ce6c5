//! `inspect` on real QEMU processes (paused with -S, guest RAM preallocated, QMP on a socket).
//! Each test checks that QEMU is installed (and root where it needs pools or mounts) and
//! prints why it skips otherwise.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use slat_linux::backing::HugetlbSize;
use slat_linux::inspect::{inspect, BlockReport, GuestRange, Options, Report};
use slat_linux::pool::{HugetlbReservation, HugetlbfsMount, TmpfsHuge, TmpfsMount};
use slat_linux::smaps;

const QEMU: &str = "qemu-system-x86_64";

fn have_qemu(test: &str) -> bool {
    let ok = Command::new(QEMU)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("SKIP {test}: {QEMU} is not installed (apt-get install qemu-system-x86)");
    }
    ok
}

/// A paused QEMU; killed and reaped on drop (before any pool or mount guard declared earlier).
struct Qemu {
    child: Child,
    socket: PathBuf,
}

impl Qemu {
    /// Start QEMU with `-m SIZE` and one memory backend `object` (its id must be `mem0`).
    fn start(size_mb: u64, object: &str) -> Qemu {
        Self::start_accel("tcg", size_mb, object)
    }

    /// As [`start`](Self::start) with another accelerator.
    fn start_accel(accel: &str, size_mb: u64, object: &str) -> Qemu {
        let socket = std::env::temp_dir().join(format!("slat-qmp-{}-{}.sock", std::process::id(), next()));
        let _ = std::fs::remove_file(&socket);
        let child = Command::new(QEMU)
            .args(["-accel", accel, "-S", "-display", "none", "-nodefaults", "-machine", "pc,memory-backend=mem0"])
            .args(["-m", &format!("{size_mb}M"), "-object", object])
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", socket.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn qemu");
        let mut q = Qemu { child, socket };
        // Prealloc finishes before the monitor answers; wait for the socket.
        let t = Instant::now();
        while !q.socket.exists() {
            if let Ok(Some(status)) = q.child.try_wait() {
                panic!("qemu exited early: {status}");
            }
            assert!(t.elapsed() < Duration::from_secs(60), "qemu did not open its QMP socket");
            std::thread::sleep(Duration::from_millis(20));
        }
        // Wait until the monitor answers (prealloc done).
        let t = Instant::now();
        loop {
            if slat_linux::qemu::Qmp::connect(&q.socket).is_ok() {
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(60), "qemu's QMP does not answer");
            std::thread::sleep(Duration::from_millis(50));
        }
        q
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn inspect(&self) -> Report {
        inspect(self.pid(), &Options { no_debugfs: true, ..Options::default() }).expect("inspect")
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
    }
}

fn next() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// The one guest RAM block, checked against smaps to the page: the block's VMA is exactly the
/// block, its present bytes equal smaps Rss (or the hugetlb bytes) and its huge bytes equal
/// smaps' PMD (or hugetlb) counter.
fn one_block_agreeing_with_smaps(q: &Qemu, r: &Report, size: u64) -> BlockReport {
    assert_eq!(r.blocks.len(), 1, "{r:#?}");
    let b = r.blocks[0].clone();
    assert_eq!((b.name.as_str(), b.size), ("mem0", size));
    let vmas = smaps::read(q.pid()).unwrap();
    let v = vmas.iter().find(|v| v.start <= b.hva && b.hva < v.end).unwrap();
    assert_eq!((v.start, v.end), (b.hva, b.hva + size), "the block is exactly one VMA here");
    let present = if v.is_hugetlb() { v.hugetlb_bytes() } else { v.rss };
    let huge = if v.is_hugetlb() { v.hugetlb_bytes() } else { v.pmd_mapped_bytes() };
    assert_eq!(b.host.present(), present, "present bytes == smaps");
    assert_eq!(b.host.bytes_2m + b.host.bytes_1g, huge, "huge bytes == smaps");
    assert_eq!(b.smaps_huge_bytes, huge);
    assert_eq!(b.host.bytes_absent, size - present);
    // The guest-physical layout of `-machine pc` below 4G: [0, 0xc0000) and [1M, size).
    assert_eq!((b.memslots[0].gpa, b.memslots[0].len, b.memslots[0].hva), (0, 0xc_0000, b.hva));
    assert_eq!(b.memslots[1], GuestRange { gpa: 0x10_0000, len: size - 0x10_0000, hva: b.hva + 0x10_0000 });
    b
}

#[test]
fn anonymous_ram() {
    if !have_qemu("anonymous_ram") {
        return;
    }
    let q = Qemu::start(128, "memory-backend-ram,id=mem0,size=128M,prealloc=on");
    let r = q.inspect();
    assert!(r.qemu_version.is_some());
    let b = one_block_agreeing_with_smaps(&q, &r, 128 * M);
    assert_eq!(b.kind, "anonymous");
    assert!(b.vm_flags.contains("dc") && b.vm_flags.contains("hg"), "{}", b.vm_flags);
    assert_eq!(b.alignment.hva_mod_2m, 0);
    assert_eq!(b.host.present(), 128 * M, "prealloc made every page present");
    // Stage 2 follows the host: every host-huge 2M block inside a memslot may be 2M, except the
    // first 2M of guest-physical memory, which the 640K-1M hole splits.
    assert!(b.stage2.bytes_2m <= b.host.bytes_2m);
    assert!(b.stage2.bytes_2m + M2 >= b.host.bytes_2m, "{:?}", b.stage2);
    if b.host.bytes_2m == 128 * M {
        assert_eq!(b.stage2.bytes_2m, 126 * M);
        assert_eq!(b.stage2.not_2m.get("crosses-slot"), Some(&(M2 - 256 * 1024)));
        assert!(b.verdict.contains("host-huge throughout"), "{}", b.verdict);
        assert_eq!(b.fix, None);
    }
}

#[test]
fn memfd_is_misaligned() {
    if !have_qemu("memfd_is_misaligned") {
        return;
    }
    let q = Qemu::start(128, "memory-backend-memfd,id=mem0,size=128M,prealloc=on,share=on");
    let r = q.inspect();
    let b = one_block_agreeing_with_smaps(&q, &r, 128 * M);
    assert_eq!((b.kind.as_str(), b.backing.as_str()), ("shmem", "memfd (shmem)"));
    assert_ne!(b.alignment.file_skew_2m, 0, "QEMU maps memfd RAM off a 2M boundary");
    assert_eq!(b.host.bytes_2m, 0);
    assert_eq!(b.stage2.bytes_2m + b.stage2.bytes_1g, 0);
    assert!(b.stage2.not_2m.contains_key("misaligned"), "{:?}", b.stage2.not_2m);
    assert!(b.verdict.contains("off a 2M boundary") && b.verdict.contains("no huge page is possible"), "{}", b.verdict);
    assert!(b.fix.as_deref().unwrap().contains("align=2M"));
}

#[test]
fn memfd_hugetlb_2m_with_a_reserved_pool() {
    if !have_qemu("memfd_hugetlb_2m") || !root("memfd_hugetlb_2m") {
        return;
    }
    let before = slat_linux::pool::PoolState::read(HugetlbSize::Size2M).unwrap().total;
    {
        let _pool = HugetlbReservation::reserve(HugetlbSize::Size2M, 64).unwrap();
        let q =
            Qemu::start(128, "memory-backend-memfd,id=mem0,size=128M,prealloc=on,share=on,hugetlb=on,hugetlbsize=2M");
        let r = q.inspect();
        let b = one_block_agreeing_with_smaps(&q, &r, 128 * M);
        assert_eq!((b.kind.as_str(), b.backing.as_str()), ("hugetlbfs", "memfd hugetlb 2M"));
        assert_eq!(b.host.bytes_2m, 128 * M);
        assert_eq!(b.stage2.bytes_2m, 126 * M);
        assert_eq!(b.policy.allows_thp, None);
        drop(q);
    }
    assert_eq!(slat_linux::pool::PoolState::read(HugetlbSize::Size2M).unwrap().total, before, "pool restored");
}

#[test]
fn tmpfs_huge_always_needs_align_2m() {
    if !have_qemu("tmpfs_huge_always") || !root("tmpfs_huge_always") {
        return;
    }
    let mnt = TmpfsMount::new(TmpfsHuge::Always, 300 * M).unwrap();
    let dir = mnt.path().display().to_string();
    {
        let q = Qemu::start(
            128,
            &format!("memory-backend-file,id=mem0,size=128M,prealloc=on,share=on,mem-path={dir},align=2M"),
        );
        let r = q.inspect();
        let b = one_block_agreeing_with_smaps(&q, &r, 128 * M);
        assert_eq!(b.backing, "tmpfs file");
        assert!(b.policy.because.contains("huge=always"), "{}", b.policy.because);
        assert_eq!((b.alignment.hva_mod_2m, b.alignment.file_skew_2m), (0, 0));
        assert_eq!(b.host.bytes_2m, 128 * M, "huge=always + align=2M: all ShmemPmdMapped");
        assert_eq!(b.stage2.bytes_2m, 126 * M);
        assert!(b.located_by.contains("backend file name"), "{}", b.located_by);
        drop(q);
    }
    // Without align=2M QEMU places it 4K-aligned only: nothing huge.
    let q = Qemu::start(128, &format!("memory-backend-file,id=mem0,size=128M,prealloc=on,share=on,mem-path={dir}"));
    let r = q.inspect();
    let b = one_block_agreeing_with_smaps(&q, &r, 128 * M);
    if b.alignment.file_skew_2m != 0 {
        assert_eq!(b.host.bytes_2m, 0);
        assert!(b.verdict.contains("off a 2M boundary"), "{}", b.verdict);
    }
    drop(q);
    drop(mnt);
}

#[test]
fn hugetlbfs_1g_file_when_granted() {
    if !have_qemu("hugetlbfs_1g") || !root("hugetlbfs_1g") {
        return;
    }
    let pool = match HugetlbReservation::reserve(HugetlbSize::Size1G, 1) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("SKIP hugetlbfs_1g_file_when_granted: {e}");
            return;
        }
    };
    let mnt = HugetlbfsMount::new(HugetlbSize::Size1G).unwrap();
    let q = Qemu::start(
        1024,
        &format!("memory-backend-file,id=mem0,size=1G,prealloc=on,share=on,mem-path={}", mnt.path().display()),
    );
    let r = q.inspect();
    let b = one_block_agreeing_with_smaps(&q, &r, 1 << 30);
    assert_eq!(b.host.bytes_1g, 1 << 30);
    assert_eq!(b.alignment.hva_mod_1g, 0);
    // Below 4G the hole splits guest RAM, so no whole 1G block is inside one memslot: 2M leaves.
    assert_eq!(b.stage2.bytes_1g, 0);
    assert_eq!(b.stage2.bytes_2m, (1 << 30) - M2);
    assert!(b.stage2.not_1g.contains_key("crosses-slot"));
    drop(q);
    drop(mnt);
    drop(pool);
}

#[test]
fn no_such_process_is_a_clear_error() {
    let e = inspect(i32::MAX, &Options::default()).unwrap_err();
    assert_eq!(e.to_string(), format!("no process with pid {}", i32::MAX));
}

#[test]
fn kvm_counts_from_qmp_and_debugfs() {
    if !have_qemu("kvm_counts") || !root("kvm_counts") {
        return;
    }
    if !Path::new("/dev/kvm").exists() {
        eprintln!("SKIP kvm_counts: no /dev/kvm");
        return;
    }
    let was_mounted = slat_linux::pool::debugfs_mounted();
    let q = Qemu::start_accel("kvm", 64, "memory-backend-ram,id=mem0,size=64M,prealloc=on");
    let r = inspect(q.pid(), &Options::default()).unwrap();
    drop(q);
    if !was_mounted && slat_linux::pool::debugfs_mounted() {
        // Restore what the inspection changed.
        rustix::mount::unmount(slat_linux::pool::DEBUGFS, rustix::mount::UnmountFlags::empty()).unwrap();
        assert!(r.notes.iter().any(|n| n.contains("mounted debugfs")), "{:?}", r.notes);
    }
    let sources: Vec<&str> = r.kvm.vms.iter().map(|v| v.source.as_str()).collect();
    assert!(sources.contains(&"QMP query-stats"), "{sources:?}");
    assert!(sources.iter().any(|s| s.starts_with("debugfs kvm/")), "{sources:?}");
    // Paused with -S: KVM has built no stage-2 leaf yet.
    assert!(r.kvm.vms.iter().all(|v| v.pages_4k + v.pages_2m + v.pages_1g == 0));
    assert!(r.kvm.note.as_deref().unwrap_or_default().contains("mapped nothing yet"));
}
