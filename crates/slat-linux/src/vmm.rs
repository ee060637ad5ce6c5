//! A micro-VMM on the real kernel's KVM (feature `kvm`), built on rust-vmm's `kvm-ioctls`.
//!
//! It exists to make KVM an oracle for slat-mmu: one VM, one vCPU, two memslots, and guest code
//! that sweeps a range of guest memory with a stride and exits. The VM's binary statistics
//! (`pages_4k/2m/1g`), its dirty log and the guest's page-table gfns are what a caller compares
//! with slat-mmu driven by the same faults ([`crate::oracle`]).
//!
//! Layout (guest-physical):
//!
//! * memslot [`SYSTEM_SLOT`] at gpa 0, [`SYSTEM_BYTES`] of anonymous memory with
//!   `MADV_HUGEPAGE`, its first 2 MiB mapped by the guest with one 2 MiB page: the guest's page
//!   tables (PML4 at gfn 1, PDPT 2, PD for the first GiB 3, PD for the data 4, the data's PTs
//!   from gfn 0x10 when the guest uses 4 KiB pages) and its code (gfn [`CODE_GFN`]). The shadow
//!   MMU write-tracks the page-table gfns, so the code's leaf is 4 KiB although guest and host
//!   map it with 2 MiB pages;
//! * memslot [`DATA_SLOT`] at [`DATA_GPA`] (1 GiB): the caller's [`Backing`], up to 1 GiB;
//! * gpa [`EXIT_GPA`]: no memslot; the guest's final write there is an MMIO exit.
//!
//! The vCPU runs in 64-bit mode at CPL3 with paging on, the one context a PVM host (KVM with
//! the shadow MMU, `tdp_mmu=N`) runs natively; real mode and CPL0 are emulated instruction by
//! instruction there and build no stage-2 leaves. Under shadow paging a leaf is at most the
//! guest's own page size, so the guest maps its data with 2 MiB or 4 KiB pages
//! ([`GuestPageSize`]), chosen per VM.
//!
//! ```no_run
//! use slat_linux::backing::{Backing, Placement, ThpAdvice};
//! use slat_linux::vmm::{GuestPageSize, MicroVm, Sweep};
//! let ram = Backing::anonymous(16 << 20, ThpAdvice::Hugepage, Placement::aligned(2 << 20))?;
//! ram.populate_write()?;
//! let system = slat_linux::vmm::system_backing()?;
//! let mut vm = MicroVm::new(&system, &ram, GuestPageSize::Size2M)?;
//! vm.run(Sweep::write_all(ram.len()))?;
//! let s = vm.stats()?;
//! println!("pages_4k {} pages_2m {}", s.pages_4k, s.pages_2m);
//! # Ok::<(), slat_linux::Error>(())
//! ```

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use kvm_bindings::{
    kvm_clear_dirty_log, kvm_enable_cap, kvm_segment, kvm_userspace_memory_region, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
    KVM_DIRTY_LOG_INITIALLY_SET, KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE, KVM_MAX_CPUID_ENTRIES, KVM_MEM_LOG_DIRTY_PAGES,
};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use rustix::ioctl::{Ioctl, IoctlOutput, Opcode};

use crate::backing::{Backing, Placement, ThpAdvice};
use crate::error::{Error, Result};

/// Memslot id of the page tables and code.
pub const SYSTEM_SLOT: u32 = 0;
/// Memslot id of the data.
pub const DATA_SLOT: u32 = 1;
/// Size of the system memslot.
pub const SYSTEM_BYTES: u64 = 4 << 20;
/// The gfn of the guest's code page.
pub const CODE_GFN: u64 = 8;
/// The guest-physical (and guest-virtual) address whose write ends a sweep: no memslot there.
pub const EXIT_GPA: u64 = 0x3000_0000;
/// The guest-physical base of the data memslot (1 GiB: congruent with any 2M- or 1G-aligned hva).
pub const DATA_GPA: u64 = 1 << 30;
/// The largest data memslot.
pub const MAX_DATA_BYTES: u64 = 1 << 30;

const PML4_GFN: u64 = 1;
const PDPT_GFN: u64 = 2;
const PD_LOW_GFN: u64 = 3;
const PD_DATA_GFN: u64 = 4;
const PT_DATA_GFN: u64 = 0x10;

const PTE_P: u64 = 1;
const PTE_RW: u64 = 2;
const PTE_US: u64 = 4;
const PTE_PS: u64 = 0x80;
const PTE_USER: u64 = PTE_P | PTE_RW | PTE_US;

/// Write loop: `mov [rdi], cl; add rdi, rdx; cmp rdi, rsi; jb loop; mov [r8], al; jmp $`.
const CODE_WRITE: [u8; 15] = [0x88, 0x0f, 0x48, 0x01, 0xd7, 0x48, 0x39, 0xf7, 0x72, 0xf6, 0x41, 0x88, 0x00, 0xeb, 0xfe];
/// Read loop: `mov al, [rdi]; add rdi, rdx; cmp rdi, rsi; jb loop; mov [r8], al; jmp $`.
const CODE_READ: [u8; 15] = [0x8a, 0x07, 0x48, 0x01, 0xd7, 0x48, 0x39, 0xf7, 0x72, 0xf6, 0x41, 0x88, 0x00, 0xeb, 0xfe];
/// Offset of the read loop in the code page.
const READ_OFFSET: u64 = 0x100;

/// The guest's own page size for its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum GuestPageSize {
    /// 4 KiB PTEs: under shadow paging every leaf is 4 KiB.
    #[serde(rename = "4K")]
    Size4K,
    /// 2 MiB PDEs (`PS`): leaves up to 2 MiB.
    #[serde(rename = "2M")]
    Size2M,
}

impl GuestPageSize {
    /// Bytes per guest page.
    pub const fn bytes(self) -> u64 {
        match self {
            GuestPageSize::Size4K => 4096,
            GuestPageSize::Size2M => 2 << 20,
        }
    }

    /// The page size as a leaf size.
    pub const fn page_size(self) -> slat_pt::PageSize {
        match self {
            GuestPageSize::Size4K => slat_pt::PageSize::Size4K,
            GuestPageSize::Size2M => slat_pt::PageSize::Size2M,
        }
    }
}

/// What the guest does to its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum GuestAccess {
    /// One byte read per stride.
    Read,
    /// One byte written per stride.
    Write,
}

/// One pass of the guest over `[offset, offset + len)` of the data memslot, touching one byte
/// every `stride` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Sweep {
    /// First byte, from the start of the data memslot.
    pub offset: u64,
    /// Bytes covered.
    pub len: u64,
    /// Distance between touched bytes (> 0).
    pub stride: u64,
    /// Read or write.
    pub access: GuestAccess,
}

impl Sweep {
    /// Write one byte in every 4 KiB page of `len` bytes from the start.
    pub const fn write_all(len: u64) -> Self {
        Sweep { offset: 0, len, stride: 4096, access: GuestAccess::Write }
    }

    /// The offsets (from the start of the data memslot) the sweep touches.
    pub fn offsets(&self) -> impl Iterator<Item = u64> {
        let (start, end, stride) = (self.offset, self.offset + self.len, self.stride.max(1));
        (0..).map(move |i| start + i * stride).take_while(move |&o| o < end)
    }
}

/// What a run cost, from the vCPU's statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct RunReport {
    /// `KVM_RUN` calls (MMIO exits included).
    pub runs: u64,
    /// vCPU exits (`exits`, cumulative).
    pub exits: u64,
    /// Instructions KVM emulated (`insn_emulation`, cumulative): near zero when the guest runs natively.
    pub insn_emulation: u64,
    /// Guest page faults KVM handled (`pf_taken`, cumulative).
    pub pf_taken: u64,
}

/// The VM's leaf counts and flush counts (`KVM_GET_STATS_FD`).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct VmStats {
    /// 4 KiB leaves.
    pub pages_4k: u64,
    /// 2 MiB leaves.
    pub pages_2m: u64,
    /// 1 GiB leaves.
    pub pages_1g: u64,
    /// Every single-value statistic by name.
    pub all: Vec<(String, u64)>,
}

impl VmStats {
    /// The value of statistic `name`.
    pub fn get(&self, name: &str) -> Option<u64> {
        self.all.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }
}

/// `_IO(KVMIO, nr)` returning a new fd.
struct FdIoctl(Opcode);

// SAFETY: the only opcode used (`KVM_GET_STATS_FD`) takes no pointer argument and returns a new
// fd or -1.
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

const KVM_GET_STATS_FD: Opcode = rustix::ioctl::opcode::none(0xAE, 0xce);
/// `_IOWR(KVMIO, 0xc0, struct kvm_clear_dirty_log)`.
const KVM_CLEAR_DIRTY_LOG: Opcode = rustix::ioctl::opcode::read_write::<kvm_clear_dirty_log>(0xAE, 0xc0);

/// How `KVM_GET_DIRTY_LOG` behaves (`KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DirtyLogProtect {
    /// The default: `KVM_GET_DIRTY_LOG` returns the bitmap, clears it and write-protects the
    /// pages it reported.
    GetClears,
    /// Manual protect: `KVM_GET_DIRTY_LOG` only reads; `KVM_CLEAR_DIRTY_LOG` clears bits and
    /// write-protects exactly the pages whose bits it cleared.
    Manual,
    /// Manual protect with `KVM_DIRTY_LOG_INITIALLY_SET`: enabling logging sets every bit and
    /// protects nothing until the first clear.
    ManualInitiallySet,
}

/// `KVM_GET_STATS_FD` on a KVM VM or vCPU fd (`what` names it in the error): the binary
/// statistics file that [`crate::kvm::parse_stats`] reads. kvm-ioctls has no wrapper for it.
///
/// ```no_run
/// let kvm = slat_linux::vmm::open_kvm()?;
/// let vm = kvm.create_vm().expect("KVM_CREATE_VM");
/// let stats = slat_linux::vmm::stats_fd(&vm, "VM")?;
/// let pages = slat_linux::kvm::parse_stats(&stats)?;
/// # Ok::<(), slat_linux::Error>(())
/// ```
pub fn stats_fd(fd: &impl AsRawFd, what: &str) -> Result<File> {
    // SAFETY: the fd is a live KVM VM or vCPU fd owned by the caller for the call's duration.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd.as_raw_fd()) };
    // SAFETY: KVM_GET_STATS_FD takes no argument.
    let stats = unsafe { rustix::ioctl::ioctl(fd.as_fd(), FdIoctl(KVM_GET_STATS_FD)) }
        .map_err(|e| Error::io(format!("KVM_GET_STATS_FD on the {what} fd"), e))?;
    Ok(File::from(stats))
}

fn kvm_err(what: &str, e: kvm_ioctls::Error) -> Error {
    Error::io(what.to_string(), std::io::Error::from_raw_os_error(e.errno()))
}

/// Open `/dev/kvm`, with an error that says why it cannot be used.
pub fn open_kvm() -> Result<Kvm> {
    if !std::path::Path::new("/dev/kvm").exists() {
        return Err(Error::Unsupported { what: "/dev/kvm is absent (no KVM on this host)".into() });
    }
    Kvm::new().map_err(|e| match e.errno() {
        libc_eacces @ (1 | 13) => Error::Permission {
            what: "open /dev/kvm".into(),
            path: "/dev/kvm".into(),
            hint: format!("errno {libc_eacces}: run as root or join the group that owns /dev/kvm (usually `kvm`)"),
        },
        _ => kvm_err("open /dev/kvm", e),
    })
}

/// One VM with one vCPU, a system memslot and a data memslot over a [`Backing`].
pub struct MicroVm<'a> {
    _kvm: Kvm,
    vm: VmFd,
    vcpu: VcpuFd,
    vm_stats: File,
    vcpu_stats: File,
    system: &'a Backing,
    data: &'a Backing,
    data_gpa: u64,
    guest_pages: GuestPageSize,
    page_table_gfns: Vec<u64>,
    logging: bool,
    protect: DirtyLogProtect,
    runs: u64,
}

impl std::fmt::Debug for MicroVm<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MicroVm")
            .field("data_gpa", &format_args!("{:#x}", self.data_gpa))
            .field("data_bytes", &self.data.len())
            .field("guest_pages", &self.guest_pages)
            .field("logging", &self.logging)
            .finish()
    }
}

impl<'a> MicroVm<'a> {
    /// A VM whose system memslot is `system` (from [`system_backing`]: the guest's page tables
    /// and code are written into it) and whose data memslot is `data` at [`DATA_GPA`] (at most
    /// 1 GiB and a multiple of the guest page size), mapped by the guest with `guest_pages`.
    pub fn new(system: &'a Backing, data: &'a Backing, guest_pages: GuestPageSize) -> Result<Self> {
        if system.len() != SYSTEM_BYTES {
            return Err(Error::Invalid(format!(
                "system memslot of {:#x} bytes: must be {SYSTEM_BYTES:#x} (see system_backing)",
                system.len()
            )));
        }
        let data_gpa = DATA_GPA;
        if data.len() > MAX_DATA_BYTES || data.len() % guest_pages.bytes() != 0 {
            return Err(Error::Invalid(format!(
                "data memslot of {:#x} bytes: at most 1 GiB and a multiple of the guest page size {:#x}",
                data.len(),
                guest_pages.bytes()
            )));
        }
        let kvm = open_kvm()?;
        let vm = kvm.create_vm().map_err(|e| kvm_err("KVM_CREATE_VM", e))?;
        let page_table_gfns = write_guest(system, data.len(), guest_pages)?;
        let mut this = MicroVm {
            vm_stats: stats_fd(&vm, "VM")?,
            vcpu_stats: File::open("/dev/null").map_err(|e| Error::io("open /dev/null", e))?,
            vcpu: vm.create_vcpu(0).map_err(|e| kvm_err("KVM_CREATE_VCPU", e))?,
            _kvm: kvm,
            vm,
            system,
            data,
            data_gpa,
            guest_pages,
            page_table_gfns,
            logging: false,
            protect: DirtyLogProtect::GetClears,
            runs: 0,
        };
        this.vcpu_stats = stats_fd(&this.vcpu, "vCPU")?;
        this.set_slot(SYSTEM_SLOT, 0, this.system.hva(), SYSTEM_BYTES, 0)?;
        this.set_slot(DATA_SLOT, data_gpa, data.hva(), data.len(), 0)?;
        let cpuid =
            this._kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).map_err(|e| kvm_err("KVM_GET_SUPPORTED_CPUID", e))?;
        this.vcpu.set_cpuid2(&cpuid).map_err(|e| kvm_err("KVM_SET_CPUID2", e))?;
        this.setup_sregs()?;
        Ok(this)
    }

    fn set_slot(&self, slot: u32, gpa: u64, hva: u64, len: u64, flags: u32) -> Result<()> {
        let region =
            kvm_userspace_memory_region { slot, flags, guest_phys_addr: gpa, memory_size: len, userspace_addr: hva };
        // SAFETY: [hva, hva + len) is a mapping owned by a Backing that outlives this VM (the
        // system backing is a field; the data backing is borrowed for 'a), so the guest never
        // sees memory that is unmapped or reused while the memslot exists.
        unsafe { self.vm.set_user_memory_region(region) }
            .map_err(|e| kvm_err(&format!("KVM_SET_USER_MEMORY_REGION slot {slot} gpa {gpa:#x}+{len:#x}"), e))
    }

    fn setup_sregs(&self) -> Result<()> {
        let mut s = self.vcpu.get_sregs().map_err(|e| kvm_err("KVM_GET_SREGS", e))?;
        let code = kvm_segment {
            base: 0,
            limit: 0xffff_ffff,
            selector: 0x1b,
            type_: 0xb,
            present: 1,
            dpl: 3,
            db: 0,
            s: 1,
            l: 1,
            g: 1,
            avl: 0,
            unusable: 0,
            padding: 0,
        };
        let data = kvm_segment { selector: 0x23, type_: 0x3, db: 1, l: 0, ..code };
        s.cs = code;
        (s.ds, s.es, s.fs, s.gs, s.ss) = (data, data, data, data, data);
        s.cr3 = PML4_GFN << 12;
        s.cr4 = 0x20; // PAE
        s.cr0 = 0x8001_0033; // PG | WP | NE | ET | MP | PE
        s.efer = 0x500; // LMA | LME
        self.vcpu.set_sregs(&s).map_err(|e| kvm_err("KVM_SET_SREGS (64-bit CPL3)", e))
    }

    /// The data memslot's guest-physical base.
    pub fn data_gpa(&self) -> u64 {
        self.data_gpa
    }

    /// The guest's page size for its data.
    pub fn guest_pages(&self) -> GuestPageSize {
        self.guest_pages
    }

    /// The system memslot's backing (page tables and code).
    pub fn system(&self) -> &Backing {
        self.system
    }

    /// The data memslot's backing.
    pub fn data(&self) -> &Backing {
        self.data
    }

    /// The gfns of the guest's own page-table pages (all in the system memslot), which the
    /// shadow MMU write-tracks once it shadows them.
    pub fn page_table_gfns(&self) -> &[u64] {
        &self.page_table_gfns
    }

    /// Run one sweep to its MMIO exit.
    pub fn run(&mut self, sweep: Sweep) -> Result<RunReport> {
        if sweep.stride == 0 || sweep.offset.checked_add(sweep.len).is_none_or(|e| e > self.data.len()) {
            return Err(Error::Invalid(format!(
                "sweep {:#x}+{:#x} stride {:#x} does not fit the {:#x}-byte data memslot",
                sweep.offset,
                sweep.len,
                sweep.stride,
                self.data.len()
            )));
        }
        if sweep.len == 0 {
            return self.run_report();
        }
        let mut regs = self.vcpu.get_regs().map_err(|e| kvm_err("KVM_GET_REGS", e))?;
        let code = (CODE_GFN << 12) + if sweep.access == GuestAccess::Read { READ_OFFSET } else { 0 };
        regs.rip = code;
        regs.rflags = 0x2;
        regs.rdi = self.data_gpa + sweep.offset;
        regs.rsi = self.data_gpa + sweep.offset + sweep.len;
        regs.rdx = sweep.stride;
        regs.rcx = 0x5a;
        regs.r8 = EXIT_GPA;
        self.vcpu.set_regs(&regs).map_err(|e| kvm_err("KVM_SET_REGS", e))?;
        loop {
            self.runs += 1;
            match self.vcpu.run() {
                Ok(VcpuExit::MmioWrite(addr, _)) if addr == EXIT_GPA => break,
                Ok(VcpuExit::MmioWrite(addr, _)) | Ok(VcpuExit::MmioRead(addr, _)) => {
                    return Err(Error::Invalid(format!("guest touched MMIO at {addr:#x} before its exit")))
                }
                Ok(VcpuExit::Intr) => continue,
                Ok(other) => {
                    let other = format!("{other:?}");
                    let regs = self.vcpu.get_regs().ok();
                    return Err(Error::Invalid(format!(
                        "guest stopped with {other} (rip {:#x}, rdi {:#x}) instead of its MMIO exit",
                        regs.map_or(0, |r| r.rip),
                        regs.map_or(0, |r| r.rdi)
                    )));
                }
                Err(e) if e.errno() == 4 || e.errno() == 11 => continue, // EINTR, EAGAIN
                Err(e) => return Err(kvm_err("KVM_RUN", e)),
            }
        }
        self.run_report()
    }

    fn run_report(&self) -> Result<RunReport> {
        let s = crate::kvm::parse_stats(&self.vcpu_stats)?;
        let get = |n: &str| s.iter().find(|(k, _)| k == n).map_or(0, |(_, v)| *v);
        Ok(RunReport {
            runs: self.runs,
            exits: get("exits"),
            insn_emulation: get("insn_emulation"),
            pf_taken: get("pf_taken"),
        })
    }

    /// The VM's statistics now.
    pub fn stats(&self) -> Result<VmStats> {
        let all = crate::kvm::parse_stats(&self.vm_stats)?;
        let get = |n: &str| all.iter().find(|(k, _)| k == n).map(|(_, v)| *v);
        match (get("pages_4k"), get("pages_2m"), get("pages_1g")) {
            (Some(pages_4k), Some(pages_2m), Some(pages_1g)) => Ok(VmStats { pages_4k, pages_2m, pages_1g, all }),
            _ => Err(Error::Unsupported { what: "pages_4k/2m/1g in the VM's binary statistics".into() }),
        }
    }

    /// Turn dirty logging of the data memslot on or off (`KVM_MEM_LOG_DIRTY_PAGES`).
    pub fn set_dirty_logging(&mut self, on: bool) -> Result<()> {
        let flags = if on { KVM_MEM_LOG_DIRTY_PAGES } else { 0 };
        self.set_slot(DATA_SLOT, self.data_gpa, self.data.hva(), self.data.len(), flags)?;
        self.logging = on;
        Ok(())
    }

    /// Choose how the dirty log is harvested (`KVM_ENABLE_CAP` of
    /// `KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2`); [`DirtyLogProtect::GetClears`] is the default and
    /// needs no call. Fails with [`Error::Unsupported`] when the kernel lacks the capability or
    /// the `INITIALLY_SET` option.
    pub fn set_dirty_log_protect(&mut self, mode: DirtyLogProtect) -> Result<()> {
        let offered = self.vm.check_extension_raw(KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2.into());
        let want = match mode {
            DirtyLogProtect::GetClears => 0,
            DirtyLogProtect::Manual => KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE,
            DirtyLogProtect::ManualInitiallySet => KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE | KVM_DIRTY_LOG_INITIALLY_SET,
        };
        if (offered as u32) & want != want {
            return Err(Error::Unsupported {
                what: format!("KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 option {want:#x} ({mode:?}): KVM offers {offered:#x}"),
            });
        }
        let cap = kvm_enable_cap {
            cap: KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
            args: [want.into(), 0, 0, 0],
            ..Default::default()
        };
        self.vm.enable_cap(&cap).map_err(|e| kvm_err("KVM_ENABLE_CAP(MANUAL_DIRTY_LOG_PROTECT2)", e))?;
        self.protect = mode;
        Ok(())
    }

    /// The dirty-log harvest mode in force.
    pub fn dirty_log_protect(&self) -> DirtyLogProtect {
        self.protect
    }

    /// `KVM_CLEAR_DIRTY_LOG` on the data memslot: clear the bits of `mask` (bit `i % 64` of word
    /// `i / 64` is page `first_page + i`) and write-protect the pages whose bits were set.
    /// `first_page` must be a multiple of 64 and the mask must end at a multiple of 64 pages or
    /// at the memslot's end, as KVM demands (EINVAL otherwise).
    pub fn clear_dirty_log(&self, first_page: u64, mask: &[u64]) -> Result<()> {
        if !self.logging || self.protect == DirtyLogProtect::GetClears {
            return Err(Error::Invalid("KVM_CLEAR_DIRTY_LOG needs dirty logging on in a manual-protect mode".into()));
        }
        let npages = self.data.len() >> 12;
        let num_pages = (mask.len() as u64 * 64).min(npages.saturating_sub(first_page));
        let mut bitmap = mask.to_vec();
        let mut arg = kvm_clear_dirty_log {
            slot: DATA_SLOT,
            num_pages: u32::try_from(num_pages)
                .map_err(|_| Error::Invalid(format!("clear of {num_pages} pages: more than u32")))?,
            first_page,
            __bindgen_anon_1: kvm_bindings::kvm_clear_dirty_log__bindgen_ty_1 {
                dirty_bitmap: bitmap.as_mut_ptr().cast(),
            },
        };
        // SAFETY: the VM fd is live; `arg` is the struct KVM_CLEAR_DIRTY_LOG expects, and its
        // bitmap pointer covers `num_pages` bits (`mask.len()` words), alive for the call.
        let ioctl = unsafe { rustix::ioctl::Updater::<{ KVM_CLEAR_DIRTY_LOG }, kvm_clear_dirty_log>::new(&mut arg) };
        // SAFETY: see above.
        unsafe { rustix::ioctl::ioctl(self.vm_borrowed(), ioctl) }.map_err(|e| {
            Error::io(format!("KVM_CLEAR_DIRTY_LOG pages {first_page}+{num_pages}"), std::io::Error::from(e))
        })
    }

    fn vm_borrowed(&self) -> std::os::fd::BorrowedFd<'_> {
        // SAFETY: the VM fd is owned by self.vm and outlives the borrow.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(self.vm.as_raw_fd()) }
    }

    /// `KVM_GET_DIRTY_LOG` of the data memslot: one bit per 4 KiB page (also clears and
    /// re-protects, unless a manual-protect mode is on: [`DirtyLogProtect`]).
    pub fn dirty_log(&self) -> Result<Vec<u64>> {
        if !self.logging {
            return Err(Error::Invalid("dirty logging is off for the data memslot".into()));
        }
        self.vm.get_dirty_log(DATA_SLOT, self.data.len() as usize).map_err(|e| kvm_err("KVM_GET_DIRTY_LOG", e))
    }
}

/// The system memslot's memory: [`SYSTEM_BYTES`] of 2M-aligned anonymous memory with
/// `MADV_HUGEPAGE`.
pub fn system_backing() -> Result<Backing> {
    Backing::anonymous(SYSTEM_BYTES, ThpAdvice::Hugepage, Placement::aligned(2 << 20))
}

/// Write the page tables and code into the system memslot; return the page-table gfns.
fn write_guest(system: &Backing, data_len: u64, guest_pages: GuestPageSize) -> Result<Vec<u64>> {
    let mut img = vec![0u8; SYSTEM_BYTES as usize];
    let mut put = |gpa: u64, v: u64| img[gpa as usize..gpa as usize + 8].copy_from_slice(&v.to_le_bytes());
    let mut gfns = vec![PML4_GFN, PDPT_GFN, PD_LOW_GFN, PD_DATA_GFN];
    put(PML4_GFN << 12, (PDPT_GFN << 12) | PTE_USER);
    put(PDPT_GFN << 12, (PD_LOW_GFN << 12) | PTE_USER);
    put((PDPT_GFN << 12) + 8, (PD_DATA_GFN << 12) | PTE_USER);
    // First GiB: page tables and code as one 2M page; the exit address as a 2M page with no memslot.
    put(PD_LOW_GFN << 12, PTE_USER | PTE_PS);
    put((PD_LOW_GFN << 12) + (EXIT_GPA >> 21) * 8, EXIT_GPA | PTE_USER | PTE_PS);
    // The data GiB, identity-mapped.
    let blocks = data_len.div_ceil(2 << 20);
    for i in 0..blocks {
        let gpa_2m = DATA_GPA + (i << 21);
        match guest_pages {
            GuestPageSize::Size2M => put((PD_DATA_GFN << 12) + i * 8, gpa_2m | PTE_USER | PTE_PS),
            GuestPageSize::Size4K => {
                let pt = PT_DATA_GFN + i;
                gfns.push(pt);
                put((PD_DATA_GFN << 12) + i * 8, (pt << 12) | PTE_USER);
                for j in 0..512 {
                    put((pt << 12) + j * 8, (gpa_2m + (j << 12)) | PTE_USER);
                }
            }
        }
    }
    let code = (CODE_GFN << 12) as usize;
    img[code..code + CODE_WRITE.len()].copy_from_slice(&CODE_WRITE);
    let read = code + READ_OFFSET as usize;
    img[read..read + CODE_READ.len()].copy_from_slice(&CODE_READ);
    // SAFETY: the system backing is a fresh private mapping of SYSTEM_BYTES owned by the caller,
    // readable and writable, and no Rust reference points into it.
    unsafe { std::ptr::copy_nonoverlapping(img.as_ptr(), system.hva() as *mut u8, img.len()) };
    Ok(gfns)
}
