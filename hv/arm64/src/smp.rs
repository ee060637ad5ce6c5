//! Two vCPUs on two emulated CPUs (QEMU multi-threaded TCG, `-smp 2`): CPU 1 is started with
//! PSCI CPU_ON and runs a second vCPU of the same guest over the same slat MMU, so faults and
//! harvests race for real on slat's atomics while QEMU's walkers update the same tables.
//!
//! * Same block at once: both vCPUs store into the same unmapped 2 MiB block after a barrier;
//!   both fault, both call `handle_fault_on` concurrently; exactly one 2 MiB leaf results.
//! * Harvest racing writes: vCPU 1 runs a guest loop that writes every page of a 2 MiB region
//!   while CPU 0 calls `get_dirty_log` in a loop; every page written in a round must be in the
//!   union of that round's harvests (I5), in hardware-dirty and in write-protect mode.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::arch::asm;
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering::SeqCst};

use hv_common::arena::FrameArena;
use hv_common::check;
use hv_common::host::{BareHost, HVA_1G, HVA_2M, HVA_4K};
use hv_common::report::Report;
use hv_common::scenario::{S2Fault, CODE_GPA, SLOT_1G, SLOT_2M, SLOT_4K};
use slat_mmu::{DirtyLogMode, FaultOutcome, Gfn, Gpa, Hva, MemslotSpec, Mmu, MmuConfig, MmuNotifier, Parts};
use slat_pt::{PageSize, PAGE_SIZE};

use crate::s2::{Fmt1, S2Tlb, S2Vm};

type SmpMmu = Mmu<Fmt1, Parts<FrameArena, &'static BareHost, S2Tlb>>;

/// Offset of the write-loop stub in the stub page.
const LOOP_STUB: u64 = 0x100;
/// Pages the write loop covers (one 2 MiB block of slot 1).
const LOOP_PAGES: u64 = 512;
const ROUNDS: u32 = 6;
const SAME_BLOCK_ROUNDS: u32 = 24;
/// Rounds run until at least [`OVERLAPS_WANTED`] of them had both vCPUs faulting, up to this many.
const SAME_BLOCK_MAX_ROUNDS: u32 = 128;
const OVERLAPS_WANTED: u32 = 3;
/// Spin iterations of a 2 MiB fault-in during the same-block rounds (a few milliseconds under
/// TCG): long enough that both vCPUs are inside `handle_fault` together even when the host
/// time-slices QEMU's two vCPU threads.
const SLOW_FAULT_IN: u64 = 200_000;

const JOB_STORE: u64 = 1;
const JOB_LOOP: u64 = 2;

/// What CPU 0 and CPU 1 share.
struct Shared {
    mmu: AtomicPtr<SmpMmu>,
    job: AtomicU64,
    gpa: AtomicU64,
    val: AtomicU64,
    seq: AtomicU32,
    done: AtomicU32,
    arrive: AtomicU32,
    /// Stage-2 faults CPU 1 took in slot 1 during the last job.
    faults: AtomicU32,
    /// CPU 1's faults that found the leaf already installed by the other vCPU.
    not_new: AtomicU32,
    failed: AtomicU32,
    up: AtomicU32,
    arg_delay: AtomicU64,
    count: AtomicU64,
}

static SHARED: Shared = Shared {
    mmu: AtomicPtr::new(core::ptr::null_mut()),
    job: AtomicU64::new(0),
    gpa: AtomicU64::new(0),
    val: AtomicU64::new(0),
    seq: AtomicU32::new(0),
    done: AtomicU32::new(0),
    arrive: AtomicU32::new(0),
    faults: AtomicU32::new(0),
    not_new: AtomicU32::new(0),
    failed: AtomicU32::new(0),
    up: AtomicU32::new(0),
    arg_delay: AtomicU64::new(0),
    count: AtomicU64::new(LOOP_PAGES),
};

static LAST_ERR: spin::Mutex<Option<hv_common::scenario::RunError>> = spin::Mutex::new(None);

fn ticks() -> u64 {
    let t: u64;
    // SAFETY: reading the physical counter (CNTVOFF_EL2 may differ per CPU).
    unsafe { asm!("isb", "mrs {}, cntpct_el0", out(reg) t, options(nomem, nostack)) };
    t
}

fn delay_ticks(n: u64) {
    let t0 = ticks();
    while ticks() - t0 < n {
        core::hint::spin_loop();
    }
}

extern "C" {
    fn _start_secondary();
}

/// The write loop: `str w5, [x1]; add x1, x1, x4; subs x2, x2, #1; b.ne 1b; hvc #0`.
fn loop_stub() -> Vec<u8> {
    [0xB900_0025u32, 0x8B04_0021, 0xF100_0442, 0x54FF_FFA1, 0xD400_0002].iter().flat_map(|w| w.to_le_bytes()).collect()
}

fn in_slot1(f: &S2Fault) -> bool {
    (SLOT_2M.1..SLOT_2M.1 + SLOT_2M.2).contains(&f.gpa)
}

fn mmu_ref() -> &'static SmpMmu {
    // SAFETY: CPU 0 publishes a leaked MMU before posting any job and never frees it.
    unsafe { &*SHARED.mmu.load(SeqCst) }
}

/// Post a job for CPU 1.
fn post(job: u64, gpa: u64, val: u64) -> u32 {
    SHARED.job.store(job, SeqCst);
    SHARED.gpa.store(gpa, SeqCst);
    SHARED.val.store(val, SeqCst);
    SHARED.arrive.store(0, SeqCst);
    SHARED.seq.fetch_add(1, SeqCst) + 1
}

fn barrier() {
    SHARED.arrive.fetch_add(1, SeqCst);
    while SHARED.arrive.load(SeqCst) < 2 {
        core::hint::spin_loop();
    }
}

fn wait_done(seq: u32) {
    while SHARED.done.load(SeqCst) != seq {
        core::hint::spin_loop();
    }
}

/// CPU 1: run jobs forever.
#[no_mangle]
extern "C" fn hv_secondary() -> ! {
    let mut vm = S2Vm::<Fmt1>::new();
    SHARED.up.store(1, SeqCst);
    let mut last = 0;
    let mut root = 0;
    loop {
        let seq = SHARED.seq.load(SeqCst);
        if seq == last {
            core::hint::spin_loop();
            continue;
        }
        last = seq;
        let mmu = mmu_ref();
        if mmu.root_pa() != root {
            root = mmu.root_pa();
            crate::s2::set_root_on_this_cpu(root);
        }
        let (faults, not_new) = (AtomicU32::new(0), AtomicU32::new(0));
        let mut on_fault = |f: &S2Fault| {
            if in_slot1(f) {
                faults.fetch_add(1, SeqCst);
            }
            match mmu.handle_fault_on(1, Gpa(f.gpa), f.access) {
                Ok(FaultOutcome::Mapped { new_leaf, .. }) => {
                    if !new_leaf && in_slot1(f) {
                        not_new.fetch_add(1, SeqCst);
                    }
                    true
                }
                Ok(FaultOutcome::Retry) => true,
                _ => false,
            }
        };
        let gpa = SHARED.gpa.load(SeqCst);
        let val = SHARED.val.load(SeqCst);
        let r = match SHARED.job.load(SeqCst) {
            JOB_STORE => {
                barrier();
                // Vary the relative timing of the two vCPUs over the rounds.
                delay_ticks(SHARED.arg_delay.load(SeqCst));
                vm.enter(CODE_GPA, &[(1, gpa), (2, val)], 16, &mut on_fault)
            }
            _ => {
                let n = SHARED.count.load(SeqCst);
                vm.enter(
                    CODE_GPA + LOOP_STUB,
                    &[(1, gpa), (2, n), (4, PAGE_SIZE), (5, val)],
                    4 * n as usize + 16,
                    &mut on_fault,
                )
            }
        };
        SHARED.failed.fetch_add(r.is_err() as u32, SeqCst);
        if let Err(e) = r {
            *LAST_ERR.lock() = Some(e);
        }
        SHARED.faults.store(faults.load(SeqCst), SeqCst);
        SHARED.not_new.store(not_new.load(SeqCst), SeqCst);
        SHARED.done.store(seq, SeqCst);
    }
}

/// Start CPU 1 through PSCI CPU_ON (SMC conduit: QEMU virt with EL2 and no EL3).
fn start_cpu1() -> i64 {
    let ret: i64;
    // SAFETY: PSCI CPU_ON for MPIDR 1 at `_start_secondary`, which sets up its own stack, EL2
    // vectors and MMU before touching memory; the call returns to us.
    unsafe {
        asm!("smc #0", inlateout("x0") 0xC400_0003u64 as i64 => ret, in("x1") 1u64,
             in("x2") _start_secondary as *const () as u64, in("x3") 0u64, options(nostack))
    };
    ret
}

fn new_mmu(host: &'static BareHost, arena: (u64, u64), dirty_log: DirtyLogMode) -> &'static SmpMmu {
    let mmu = Box::leak(Box::new(
        SmpMmu::new(MmuConfig::default().with_dirty_log(dirty_log), FrameArena::new(arena.0, arena.1), host, S2Tlb)
            .expect("MMU configuration"),
    ));
    for (id, gpa, len) in [SLOT_4K, SLOT_2M, SLOT_1G] {
        let hva = [HVA_4K, HVA_2M, HVA_1G][id as usize];
        let spec = MemslotSpec {
            id,
            base_gfn: Gfn(gpa / PAGE_SIZE),
            npages: len / PAGE_SIZE,
            hva: Hva(hva),
            readonly: false,
            log_dirty: false,
        };
        mmu.add_memslot(spec).expect("memslot");
    }
    SHARED.mmu.store(mmu as *const SmpMmu as *mut SmpMmu, SeqCst);
    mmu
}

/// Run the two-vCPU checks; `arenas` are two disjoint page-table ranges.
pub fn run(r: &mut Report, host: &'static BareHost, arenas: [(u64, u64); 3]) {
    r.section("two vCPUs on two emulated CPUs (-smp 2, multi-threaded TCG)");
    host.write_bytes(HVA_4K + CODE_GPA + LOOP_STUB, &loop_stub());
    let ret = start_cpu1();
    let mut spins = 0u64;
    while SHARED.up.load(SeqCst) == 0 && spins < 2_000_000_000 {
        spins += 1;
        core::hint::spin_loop();
    }
    if !check!(r, ret == 0 && SHARED.up.load(SeqCst) == 1, "PSCI CPU_ON started CPU 1 (status {ret})") {
        return;
    }
    same_block(r, host, arenas[0]);
    for (i, mode) in [DirtyLogMode::HardwareDirty, DirtyLogMode::SplitOnFault].into_iter().enumerate() {
        harvest_race(r, host, arenas[i + 1], mode);
    }
    split_recover_race(r, host, arenas[0]);
}

/// Eager split and in-place recovery of slot 1 (eight 2 MiB blocks) back and forth while vCPU 1
/// writes every page of the slot in a guest loop: no write may be lost or land elsewhere, the
/// tables must stay legal, and the slot ends as eight 2 MiB leaves again.
fn split_recover_race(r: &mut Report, host: &'static BareHost, arena: (u64, u64)) {
    let mmu = new_mmu(host, arena, DirtyLogMode::EagerSplit { chunk_tables: 2 });
    crate::s2::set_root_on_this_cpu(mmu.root_pa());
    let id = SLOT_2M.0;
    let pages = SLOT_2M.2 / PAGE_SIZE;
    SHARED.count.store(pages, SeqCst);
    let (mut intact, mut toggles, mut mid, mut legal) = (0, 0u64, 0u64, 0);
    for round in 0..ROUNDS {
        let seq = post(JOB_LOOP, SLOT_2M.1, 0x7700 + round as u64);
        let mut on = false;
        while SHARED.done.load(SeqCst) != seq {
            on = !on;
            if mmu.set_dirty_logging(id, on).is_ok() {
                toggles += 1;
                mid += (SHARED.done.load(SeqCst) != seq) as u64;
            }
        }
        let _ = mmu.set_dirty_logging(id, false);
        intact += (0..pages).all(|p| host.read(HVA_2M + p * PAGE_SIZE) == 0x7700 + round) as u32;
        if let Some(p) = (0..pages).find(|p| host.read(HVA_2M + p * PAGE_SIZE) != 0x7700 + round) {
            r.note(format_args!(
                "round {round}: page {p:#x} holds {:#x}; vCPU 1 failures so far {}, last error {:?}",
                host.read(HVA_2M + p * PAGE_SIZE),
                SHARED.failed.load(SeqCst),
                LAST_ERR.lock()
            ));
        }
        legal += mmu.audit().is_ok() as u32;
    }
    SHARED.count.store(LOOP_PAGES, SeqCst);
    let s = mmu.stats();
    check!(
        r,
        intact == ROUNDS && legal == ROUNDS && SHARED.failed.load(SeqCst) == 0,
        "eager split / in-place recovery toggled {toggles} times ({mid} while vCPU 1 was writing): every one of {pages} pages holds its round's value in {intact} of {ROUNDS} rounds, audit() clean after {legal}"
    );
    check!(
        r,
        s.pages_2m == 8 && s.eager_splits > 0 && s.recoveries > 0 && mid > 0,
        "slot 1 ends as {} x 2M leaves after {} eager splits and {} in-place recoveries under the running guest",
        s.pages_2m,
        s.eager_splits,
        s.recoveries
    );
}

fn same_block(r: &mut Report, host: &'static BareHost, arena: (u64, u64)) {
    let mmu = new_mmu(host, arena, DirtyLogMode::SplitOnFault);
    let mut vm = S2Vm::<Fmt1>::new();
    crate::s2::set_root_on_this_cpu(mmu.root_pa());
    host.set_slow_fault_in(SLOW_FAULT_IN);
    let (mut both, mut found, mut landed, mut one_leaf, mut f0, mut f1) = (0, 0, 0, 0, 0, 0);
    let mut rounds = 0;
    for round in 0..SAME_BLOCK_MAX_ROUNDS {
        if round >= SAME_BLOCK_ROUNDS && both >= OVERLAPS_WANTED {
            break;
        }
        rounds += 1;
        // Start every round from an unmapped slot 1.
        mmu.invalidate_range_start(Hva(HVA_2M), Hva(HVA_2M + SLOT_2M.2));
        mmu.invalidate_range_end(Hva(HVA_2M), Hva(HVA_2M + SLOT_2M.2));
        let block = SLOT_2M.1 + (round as u64 % 8) * PageSize::Size2M.bytes();
        let (g0, g1) = (block + 0x1000 * (round as u64 % 7 + 1), block + 0x10_0000 + 0x40 * round as u64);
        SHARED.arg_delay.store((round as u64 % 8) * 60_000, SeqCst);
        let seq = post(JOB_STORE, g1, 0x5A00_0000 | round as u64);
        let mut mine = 0;
        let mut mine_not_new = 0;
        barrier();
        let res = vm.enter(CODE_GPA, &[(1, g0), (2, 0xA500_0000 | round as u64)], 16, &mut |f| {
            if in_slot1(f) {
                mine += 1;
            }
            match mmu.handle_fault_on(0, Gpa(f.gpa), f.access) {
                Ok(FaultOutcome::Mapped { new_leaf, .. }) => {
                    mine_not_new += (!new_leaf && in_slot1(f)) as u32;
                    true
                }
                Ok(FaultOutcome::Retry) => true,
                _ => false,
            }
        });
        wait_done(seq);
        let theirs = SHARED.faults.load(SeqCst);
        both += (mine > 0 && theirs > 0) as u32;
        f0 += mine;
        f1 += theirs;
        found += mine_not_new + SHARED.not_new.load(SeqCst);
        let ok = res.is_ok()
            && host.read(HVA_2M + (g0 - SLOT_2M.1)) == 0xA500_0000 | round
            && host.read(HVA_2M + (g1 - SLOT_2M.1)) == 0x5A00_0000 | round;
        landed += ok as u32;
        let leaves = mmu.with_tables(|pt| pt.leaves(slat_mmu::Gpa(SLOT_2M.1), SLOT_2M.2));
        one_leaf += (leaves.len() == 1 && leaves[0].size == PageSize::Size2M && leaves[0].gpa.0 == block) as u32;
    }
    host.set_slow_fault_in(0);
    check!(
        r,
        landed == rounds && one_leaf == rounds && SHARED.failed.load(SeqCst) == 0,
        "same 2M block from both vCPUs at once, {rounds} rounds: both stores landed and exactly one 2M leaf maps the block every round"
    );
    check!(
        r,
        both > 0,
        "both vCPUs took a stage-2 fault on the same block in {both} of {rounds} rounds ({f0} + {f1} faults); {found} fault(s) found the other vCPU's leaf already installed"
    );
    match mmu.audit() {
        Ok(a) => check!(r, true, "audit() after the concurrent faults: {} leaves, invariants hold", a.leaves),
        Err(e) => check!(r, false, "audit() after the concurrent faults: {e}"),
    };
}

fn harvest_race(r: &mut Report, host: &'static BareHost, arena: (u64, u64), mode: DirtyLogMode) {
    let mmu = new_mmu(host, arena, mode);
    crate::s2::set_root_on_this_cpu(mmu.root_pa());
    let id = SLOT_2M.0;
    let _ = mmu.set_dirty_logging(id, true);
    let mut complete = 0;
    let mut harvests = 0u64;
    let mut mid_round = 0u64;
    let mut extra = 0u64;
    for round in 0..ROUNDS {
        let seq = post(JOB_LOOP, SLOT_2M.1, round as u64 + 1);
        let mut union = [0u64; (LOOP_PAGES / 64) as usize];
        let mut merge = |log: &[u64], union: &mut [u64; 8]| -> u64 {
            let mut n = 0;
            for (w, bits) in log.iter().enumerate() {
                if w < union.len() {
                    n += (bits & !union[w]).count_ones() as u64;
                    union[w] |= bits;
                } else {
                    extra += bits.count_ones() as u64;
                }
            }
            n
        };
        while SHARED.done.load(SeqCst) != seq {
            if let Ok(log) = mmu.get_dirty_log(id) {
                harvests += 1;
                mid_round += merge(&log, &mut union);
            }
        }
        if let Ok(log) = mmu.get_dirty_log(id) {
            merge(&log, &mut union);
        }
        let all = union.iter().all(|w| *w == u64::MAX);
        let values_ok = (0..LOOP_PAGES).all(|p| host.read(HVA_2M + p * PAGE_SIZE) == round + 1);
        complete += (all && values_ok) as u32;
    }
    let name = match mode {
        DirtyLogMode::HardwareDirty => "hardware-dirty",
        _ => "write-protect",
    };
    check!(
        r,
        complete == ROUNDS && extra == 0 && SHARED.failed.load(SeqCst) == 0,
        "{name}: vCPU 1 writes all {LOOP_PAGES} pages per round while CPU 0 harvests; every written page is in that round's harvests in {complete} of {ROUNDS} rounds (no page reported twice-outside: {extra})"
    );
    check!(
        r,
        mid_round > 0,
        "{name}: {harvests} harvests raced the guest's writes and caught {mid_round} page(s) mid-round"
    );
    match mmu.audit() {
        Ok(a) => check!(r, true, "audit() after the {name} race: {} leaves, invariants hold", a.leaves),
        Err(e) => check!(r, false, "audit() after the {name} race: {e}"),
    };
}
