//! KVM binary statistics read from a stats fd a VMM holds (here: this test process), taken with
//! `pidfd_getfd` as `slat inspect` does for another process.

#![cfg(feature = "kvm")]

mod common;

#[test]
fn pages_from_a_held_stats_fd() {
    if !common::root("pages_from_a_held_stats_fd") {
        return;
    }
    let kvm = match slat_linux::vmm::open_kvm() {
        Ok(k) => k,
        Err(e) => {
            eprintln!("SKIP pages_from_a_held_stats_fd: {e}");
            return;
        }
    };
    let vm = kvm.create_vm().expect("KVM_CREATE_VM");
    let stats = match slat_linux::vmm::stats_fd(&vm, "VM") {
        Ok(f) => f,
        Err(e) => {
            eprintln!("SKIP pages_from_a_held_stats_fd: {e}");
            return;
        }
    };
    let parsed = slat_linux::kvm::parse_stats(&stats.try_clone().unwrap()).unwrap();
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
