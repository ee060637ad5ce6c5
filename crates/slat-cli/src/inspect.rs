//! `slat inspect`: how a running VMM's guest RAM is backed and mapped on this host (see
//! [`slat_linux::inspect`]), rendered on one screen or as JSON.

use std::fmt::Write as _;
use std::path::PathBuf;

use clap::Args;
use slat_linux::inspect::{self, BlockReport, Options, RangeSpec, Report};

use crate::error::CliError;

/// `slat inspect`.
#[derive(Debug, Clone, Args)]
pub struct InspectArgs {
    /// The VMM process (QEMU: guest RAM is found over its QMP socket).
    #[arg(long, value_name = "PID")]
    pub pid: i32,
    /// Guest RAM range of any VMM, `HVA:LEN[@GPA]` (hex with 0x or decimal, K/M/G suffixes; repeatable).
    /// Without @GPA a congruent guest-physical address is assumed.
    #[arg(long = "range", value_name = "HVA:LEN[@GPA]")]
    pub ranges: Vec<RangeSpec>,
    /// QEMU's QMP socket (default: from the QEMU command line's -qmp or -chardev/-mon).
    #[arg(long, value_name = "SOCKET")]
    pub qmp: Option<PathBuf>,
    /// Print the report as JSON instead.
    #[arg(long)]
    pub json: bool,
    /// Read host leaf sizes from pagemap and smaps, not PAGEMAP_SCAN (what older kernels get).
    #[arg(long)]
    pub smaps: bool,
    /// Do not read KVM's counts from debugfs (and so never mount it).
    #[arg(long)]
    pub no_debugfs: bool,
}

/// Run `slat inspect`.
pub fn run(args: &InspectArgs) -> Result<u8, CliError> {
    let opts = Options {
        ranges: args.ranges.clone(),
        qmp: args.qmp.clone(),
        force_smaps: args.smaps,
        no_debugfs: args.no_debugfs,
    };
    let report = inspect::inspect(args.pid, &opts).map_err(|e| CliError::from_error(&e))?;
    let text = if args.json {
        serde_json::to_string_pretty(&report).map_err(|e| CliError::input(format!("cannot encode JSON: {e}")))? + "\n"
    } else {
        render(&report)
    };
    crate::commands::emit_text(&text)?;
    Ok(0)
}

/// Bytes in the largest unit that keeps them short.
pub fn bytes(b: u64) -> String {
    inspect::human_bytes(b)
}

fn reasons(m: &std::collections::BTreeMap<String, u64>) -> String {
    m.iter().map(|(r, b)| format!("{r} {}", bytes(*b))).collect::<Vec<_>>().join(", ")
}

fn block(out: &mut String, b: &BlockReport) {
    let _ =
        writeln!(out, "\n{}  {}  {}  at hva {:#x}  VmFlags [{}]", b.name, bytes(b.size), b.backing, b.hva, b.vm_flags);
    let slots: Vec<String> =
        b.memslots.iter().map(|m| format!("{:#x}+{} -> {:#x}", m.gpa, bytes(m.len), m.hva)).collect();
    let _ = writeln!(
        out,
        "  guest      {}{}  [found by {}]",
        slots.join(", "),
        if b.gpa_assumed { " (gpa assumed congruent)" } else { "" },
        b.located_by
    );
    let a = &b.alignment;
    let _ = writeln!(
        out,
        "  alignment  hva mod 2M {:#x}, mod 1G {:#x}; (hva - file offset) mod 2M {:#x}, mod 1G {:#x}",
        a.hva_mod_2m, a.hva_mod_1g, a.file_skew_2m, a.file_skew_1g
    );
    let elig = match b.policy.thp_eligible {
        Some(true) => "THPeligible 1",
        Some(false) => "THPeligible 0",
        None => "THPeligible -",
    };
    let _ = writeln!(out, "  policy     {}; {elig}", b.policy.because);
    let h = &b.host;
    let _ = writeln!(
        out,
        "  host       4K {} | 2M {} | 1G {} | absent {}{}   (smaps huge: {}, {} VMA{})",
        bytes(h.bytes_4k),
        bytes(h.bytes_2m),
        bytes(h.bytes_1g),
        bytes(h.bytes_absent),
        if h.bytes_zero > 0 { format!(" | zero page {}", bytes(h.bytes_zero)) } else { String::new() },
        bytes(b.smaps_huge_bytes),
        b.vmas,
        if b.vmas == 1 { "" } else { "s" }
    );
    let s = &b.stage2;
    let mut line = format!(
        "  stage 2    4K {} | 2M {} | 1G {} (slat-mmu rules, present pages)",
        bytes(s.bytes_4k),
        bytes(s.bytes_2m),
        bytes(s.bytes_1g)
    );
    if !s.not_2m.is_empty() {
        let _ = write!(line, "; not 2M: {}", reasons(&s.not_2m));
    }
    if !s.not_1g.is_empty() {
        let _ = write!(line, "; not 1G: {}", reasons(&s.not_1g));
    }
    let _ = writeln!(out, "{line}");
    let _ = writeln!(out, "  verdict    {}", b.verdict);
    if let Some(f) = &b.fix {
        let _ = writeln!(out, "  fix        {f}");
    }
}

/// The one-screen text report.
pub fn render(r: &Report) -> String {
    let mut out = String::new();
    let qemu = r.qemu_version.as_deref().map(|v| format!(", QEMU {v}")).unwrap_or_default();
    let _ = writeln!(out, "slat inspect: pid {} ({}{qemu})", r.pid, r.comm);
    let s = &r.system;
    let o = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let _ = writeln!(
        out,
        "host: THP enabled={} (2048kB: {}), defrag={}, shmem_enabled={}; kvm.nx_huge_pages={}; process THP {}; leaf sizes from {}",
        o(&s.enabled),
        o(&s.pmd_enabled),
        o(&s.defrag),
        o(&s.shmem_enabled),
        o(&s.kvm_nx_huge_pages),
        match r.process_thp_enabled {
            Some(true) => "enabled",
            Some(false) => "DISABLED (PR_SET_THP_DISABLE)",
            None => "unknown",
        },
        match r.host_source {
            slat_linux::hostmap::MapSource::PagemapScan => "PAGEMAP_SCAN",
            slat_linux::hostmap::MapSource::Smaps => "pagemap+smaps (no THP positions)",
        }
    );
    let pools: Vec<String> = r
        .hugetlb_pools
        .iter()
        .map(|p| match p.node {
            None => format!("{} {} free of {}", p.size, p.free, p.total),
            Some(n) => format!("{} node{n} {} free of {}", p.size, p.free, p.total),
        })
        .collect();
    if !pools.is_empty() {
        let _ = writeln!(out, "hugetlb pools: {}", pools.join(", "));
    }
    for b in &r.blocks {
        block(&mut out, b);
    }
    out.push('\n');
    if r.kvm.vms.is_empty() {
        let _ = writeln!(out, "kvm: {}", r.kvm.note.as_deref().unwrap_or("no counts"));
    }
    for v in &r.kvm.vms {
        let _ = writeln!(
            out,
            "kvm: mapped 4K x{} | 2M x{} | 1G x{}  ({}; per VM, all memslots, only what the guest touched)",
            v.pages_4k, v.pages_2m, v.pages_1g, v.source
        );
    }
    if let (false, Some(n)) = (r.kvm.vms.is_empty(), &r.kvm.note) {
        let _ = writeln!(out, "kvm: {n}");
    }
    for n in &r.notes {
        let _ = writeln!(out, "note: {n}");
    }
    out
}
