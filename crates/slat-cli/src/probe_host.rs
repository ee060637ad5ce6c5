//! `slat probe-host`: what will this host's KVM map for a VM backed like X? Runs a micro-VM
//! ([`slat_linux::oracle::probe`]) on the chosen backing and prints KVM's leaves beside slat's
//! prediction for the same guest accesses, and slat's reasons for pages below 2 MiB.

use std::fmt::Write as _;

use clap::{Args, ValueEnum};
use slat_linux::oracle::{self, HostBacking, ProbeReport};
use slat_linux::vmm::{DirtyLogProtect, GuestAccess, GuestPageSize, Sweep};

use crate::error::CliError;

/// The guest's page size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GuestPages {
    /// 2 MiB pages (leaves up to 2 MiB under shadow paging).
    #[value(name = "2M")]
    Size2M,
    /// 4 KiB pages (every leaf 4 KiB under shadow paging).
    #[value(name = "4K")]
    Size4K,
}

/// How the dirty log is harvested in the dirty-logging phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DirtyLogMode {
    /// `KVM_GET_DIRTY_LOG` gets, clears and re-protects (the default protocol).
    GetClears,
    /// `KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2`: GET only reads; `KVM_CLEAR_DIRTY_LOG` clears and
    /// re-protects.
    Manual,
    /// As `manual`, with `KVM_DIRTY_LOG_INITIALLY_SET`: every bit set, nothing protected, until
    /// the first clear.
    ManualInitiallySet,
}

impl DirtyLogMode {
    fn protect(self) -> DirtyLogProtect {
        match self {
            DirtyLogMode::GetClears => DirtyLogProtect::GetClears,
            DirtyLogMode::Manual => DirtyLogProtect::Manual,
            DirtyLogMode::ManualInitiallySet => DirtyLogProtect::ManualInitiallySet,
        }
    }
}

/// `slat probe-host`.
#[derive(Debug, Clone, Args)]
pub struct ProbeHostArgs {
    /// How the guest memory is backed: anon-thp, anon-4k, memfd, memfd-hugetlb-2m, hugetlbfs-2m,
    /// memfd-hugetlb-1g, tmpfs-huge, hugetlbfs-1g, memfd-shmem-advise (sets shmem_enabled=advise
    /// for the run), tmpfs-within-size, tmpfs-advise, regular-file, regular-file-hugepage (a file
    /// in TMPDIR). Pools, mounts and knobs need root and are restored after.
    #[arg(long, default_value = "anon-thp", value_parser = parse_backing)]
    pub backing: HostBacking,
    /// Guest memory size (K/M/G suffixes; a multiple of 2M, at most 1G).
    #[arg(long, default_value = "64M", value_parser = parse_size)]
    pub size: u64,
    /// The guest's own page size for its memory.
    #[arg(long, value_enum, default_value = "2M")]
    pub guest_pages: GuestPages,
    /// Place the hva this many bytes past a 2M boundary (e.g. 4K: gpa and hva incongruent).
    #[arg(long, default_value = "0", value_parser = parse_size)]
    pub hva_skew: u64,
    /// Touch one byte every STRIDE bytes (K/M suffixes).
    #[arg(long, default_value = "4K", value_parser = parse_size)]
    pub stride: u64,
    /// The guest reads instead of writing.
    #[arg(long)]
    pub read: bool,
    /// Then log dirty pages, harvested this way: partial rewrites and harvests (with a manual
    /// mode, a KVM_CLEAR_DIRTY_LOG of the first quarter), logging off and a full rewrite, each
    /// compared between KVM and slat.
    #[arg(long, value_enum)]
    pub dirty_log: Option<DirtyLogMode>,
    /// Print the report as JSON instead.
    #[arg(long)]
    pub json: bool,
}

fn parse_backing(s: &str) -> Result<HostBacking, String> {
    HostBacking::from_name(s).ok_or_else(|| {
        let names: Vec<&str> = HostBacking::ALL.iter().map(|b| b.name()).collect();
        format!("unknown backing {s:?}; one of {}", names.join(", "))
    })
}

fn parse_size(s: &str) -> Result<u64, String> {
    let (num, mult) = match s.as_bytes().last() {
        Some(b'K' | b'k') => (&s[..s.len() - 1], 1u64 << 10),
        Some(b'M' | b'm') => (&s[..s.len() - 1], 1 << 20),
        Some(b'G' | b'g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    let n: u64 = match num.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => num.parse(),
    }
    .map_err(|_| format!("{s:?} is not a size (e.g. 64M, 4K, 0x1000)"))?;
    n.checked_mul(mult).ok_or_else(|| format!("{s:?} is too large"))
}

/// Run `slat probe-host`.
pub fn run(args: &ProbeHostArgs) -> Result<u8, CliError> {
    if args.size == 0 || args.size % (2 << 20) != 0 || args.size > 1 << 30 {
        return Err(CliError::input(format!("--size {:#x}: must be a non-zero multiple of 2M, at most 1G", args.size)));
    }
    if args.stride == 0 || args.hva_skew % 4096 != 0 || args.hva_skew >= 2 << 20 {
        return Err(CliError::input("--stride must be positive and --hva-skew a multiple of 4K below 2M"));
    }
    let guest_pages = match args.guest_pages {
        GuestPages::Size2M => GuestPageSize::Size2M,
        GuestPages::Size4K => GuestPageSize::Size4K,
    };
    let access = if args.read { GuestAccess::Read } else { GuestAccess::Write };
    let sweep = Sweep { offset: 0, len: args.size, stride: args.stride, access };
    let dirty_log = args.dirty_log.map(DirtyLogMode::protect);
    let report = oracle::probe(args.backing, args.size, args.hva_skew, guest_pages, sweep, dirty_log).map_err(|e| {
        let mut err = CliError::from_error(&e).context("probe-host");
        // A refused 1G pool: say why the kernel has no free GiB.
        if let slat_linux::Error::PoolShort { size: "1G", .. } = e {
            if let Ok(b) = slat_linux::pool::GiganticBlockers::scan() {
                err.message = format!("{}\n  why: {b}", err.message);
            }
        }
        err
    })?;
    let text = if args.json {
        serde_json::to_string_pretty(&report).map_err(|e| CliError::input(format!("cannot encode JSON: {e}")))? + "\n"
    } else {
        render(&report)
    };
    crate::commands::emit_text(&text)?;
    Ok(0)
}

/// The report on one screen.
pub fn render(r: &ProbeReport) -> String {
    let mut s = String::new();
    let guest = match r.guest_pages {
        GuestPageSize::Size2M => "2M",
        GuestPageSize::Size4K => "4K",
    };
    let verb = if r.sweep.access == GuestAccess::Read { "read" } else { "write" };
    let _ = writeln!(
        s,
        "{} of {}, hva {} past 2M, guest {guest} pages, {verb} every {}",
        crate::units::bytes(r.bytes),
        r.backing.name(),
        crate::units::bytes(r.hva_skew),
        crate::units::bytes(r.sweep.stride)
    );
    let _ = writeln!(s, "{:<10} {:>10} {:>10}", "leaves", "KVM", "slat");
    for (name, k, v) in [
        ("4K", r.kvm.pages_4k, r.slat.pages_4k),
        ("2M", r.kvm.pages_2m, r.slat.pages_2m),
        ("1G", r.kvm.pages_1g, r.slat.pages_1g),
    ] {
        let mark = if k == v { "" } else { "  <- differs" };
        let _ = writeln!(s, "{name:<10} {k:>10} {v:>10}{mark}");
    }
    let _ = writeln!(
        s,
        "{}; {} of the 4K leaves are the guest's page tables and code (a 2M block KVM write-tracks); \
{} are KVM's PTE prefetch (__direct_pte_prefetch), counted on slat's side as KVM does",
        if r.kvm == r.slat { "KVM and slat agree" } else { "KVM and slat DIFFER" },
        r.system_4k,
        r.prefetched
    );
    let _ = writeln!(
        s,
        "vCPU: {} exits, {} instructions emulated, {} page faults",
        r.run.exits, r.run.insn_emulation, r.run.pf_taken
    );
    if !r.why_totals.is_empty() {
        let totals: Vec<String> =
            r.why_totals.iter().map(|(n, p)| format!("{n} {}", crate::units::bytes(p << 12))).collect();
        let _ = writeln!(s, "guest memory not in 1G leaves, by slat's primary reason: {}", totals.join(", "));
    }
    for line in r.reasons.iter().take(8) {
        let _ = writeln!(s, "  {line}");
    }
    if r.reasons.len() > 8 {
        let _ = writeln!(s, "  ... {} more 2M blocks below 2M", r.reasons.len() - 8);
    }
    if let Some(d) = &r.dirty {
        render_dirty(&mut s, d);
    }
    s
}

fn render_dirty(s: &mut String, d: &oracle::DirtyProbe) {
    let mode = match d.protect {
        DirtyLogProtect::GetClears => "GET_DIRTY_LOG clears",
        DirtyLogProtect::Manual => "manual protect (KVM_CLEAR_DIRTY_LOG)",
        DirtyLogProtect::ManualInitiallySet => "manual protect, initially set",
    };
    let _ = writeln!(s, "dirty logging, {mode}:");
    let _ = writeln!(s, "  {:<62} {:>13} {:>17} {:>17}", "step", "dirty KVM/slat", "KVM 4K/2M", "slat 4K/2M");
    let leaves = |c: &oracle::LeafCounts| format!("{}/{}", c.pages_4k, c.pages_2m);
    for round in &d.rounds {
        let mark = if round.agree() { "" } else { "  <- differs" };
        let _ = writeln!(
            s,
            "  {:<62} {:>13} {:>17} {:>17}{mark}",
            round.step,
            format!("{}/{}", round.kvm_dirty, round.slat_dirty),
            leaves(&round.kvm),
            leaves(&round.slat)
        );
        if let Some(diff) = &round.difference {
            let _ = writeln!(s, "    {}", diff.replace('\n', "\n    "));
        }
    }
    for (step, (k, v)) in [("logging off", d.logging_off), ("the sweep again, logging off", d.rewritten)] {
        let mark = if k == v { "" } else { "  <- differs" };
        let _ = writeln!(s, "  {step:<62} {:>13} {:>17} {:>17}{mark}", "-", leaves(&k), leaves(&v));
    }
    let _ = writeln!(s, "  {}", if d.agree() { "KVM and slat agree at every step" } else { "KVM and slat DIFFER" });
}
