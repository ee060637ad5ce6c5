//! KVM binary statistics read from a stats fd a VMM holds (here: this test process), taken with
//! `pidfd_getfd` as `slat inspect` does for another process.

mod common;

use std::fs::File;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};

use rustix::ioctl::{Ioctl, IoctlOutput, Opcode};

/// `_IO(KVMIO, nr)` with no argument, returning a new fd.
struct FdIoctl(Opcode);

// SAFETY: the KVM ioctls used here (`KVM_CREATE_VM` with machine type 0, `KVM_GET_STATS_FD`)
// take no pointer argument and return a new fd or -1.
unsafe impl Ioctl for FdIoctl {
    type Output = OwnedFd;
    const IS_MUTATING: bool = false;
    fn opcode(&self) -> Opcode {
        self.0
    }
    fn as_ptr(&mut self) -> *mut std::ffi::c_void {
        std::ptr::null_mut()
    }
    unsafe fn output_from_ptr(out: IoctlOutput, _: *mut std::ffi::c_void) -> rustix::io::Result<OwnedFd> {
        // SAFETY: the kernel returned a new fd that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(out) })
    }
}

const KVM_CREATE_VM: Opcode = rustix::ioctl::opcode::none(0xAE, 0x01);
const KVM_GET_STATS_FD: Opcode = rustix::ioctl::opcode::none(0xAE, 0xce);

#[test]
fn pages_from_a_held_stats_fd() {
    if !common::root("pages_from_a_held_stats_fd") {
        return;
    }
    let Ok(kvm) = File::options().read(true).write(true).open("/dev/kvm") else {
        eprintln!("SKIP pages_from_a_held_stats_fd: no usable /dev/kvm");
        return;
    };
    // SAFETY: KVM_CREATE_VM on /dev/kvm with type 0 takes no pointer.
    let vm = unsafe { rustix::ioctl::ioctl(kvm.as_fd(), FdIoctl(KVM_CREATE_VM)) }.expect("KVM_CREATE_VM");
    // SAFETY: KVM_GET_STATS_FD on a VM fd takes no argument.
    let stats = match unsafe { rustix::ioctl::ioctl(vm.as_fd(), FdIoctl(KVM_GET_STATS_FD)) } {
        Ok(fd) => fd,
        Err(e) => {
            eprintln!("SKIP pages_from_a_held_stats_fd: KVM_GET_STATS_FD: {e}");
            return;
        }
    };
    let parsed = slat_linux::kvm::parse_stats(&File::from(stats.try_clone().unwrap())).unwrap();
    let names: Vec<&str> = parsed.iter().map(|(n, _)| n.as_str()).collect();
    for n in ["pages_4k", "pages_2m", "pages_1g", "remote_tlb_flush"] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
    // As another process would: find the fd in /proc, take it with pidfd_getfd, read it.
    let me = std::process::id() as i32;
    assert!(!slat_linux::kvm::stats_fds(me).is_empty());
    let held = slat_linux::kvm::read_held_stats(me).unwrap();
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!((held[0].pages_4k, held[0].pages_2m, held[0].pages_1g), (0, 0, 0), "no memslot, no leaf");
    assert!(slat_linux::kvm::vm_fds(me).len() == 1);
    drop((stats, vm));
}
