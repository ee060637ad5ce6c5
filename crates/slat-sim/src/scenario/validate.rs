//! Validation: from the deserialised file to a consistent [`Scenario`], with every problem
//! reported against the key it concerns.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use slat_mmu::WhyNotHuge;
use slat_pt::PageSize;

use super::bytes::Bytes;
use super::document::{DocPath, Locator};
use super::error::{ErrorKind, ScenarioError};
use super::event::{Action, Event, SlotRange};
use super::expect::{Check, Comparison, Scope, Subject};
use super::names::{page_size_name, quoted_list, Backing, EventKind, Harvest, Metric, PhaseKind};
use super::schema::{Memslot, RawEvent, RawPhase, RawScenario, TlbArray};
use super::{Phase, Scenario};
use crate::workload::{GvaRange, Pattern, PhaseSpec, WorkloadError, CACHE_LINE, DEFAULT_QUANTUM};

const PAGE: u64 = 4096;
const SIZE_2M: u64 = 2 << 20;
const SIZE_1G: u64 = 1 << 30;
/// Dirty-log clears work on 64-page words.
const CLEAR_LOG_ALIGN: u64 = 64 * PAGE;
/// Most vCPUs a scenario may ask for.
const MAX_VCPUS: u32 = 1024;

type Result<T> = std::result::Result<T, ScenarioError>;

/// Validation context: the locator for errors.
struct Ctx<'a, 'b> {
    loc: &'a Locator<'b>,
}

impl Ctx<'_, '_> {
    fn invalid(&self, path: &DocPath, message: impl Into<String>) -> ScenarioError {
        self.loc.error(path, ErrorKind::Invalid, message)
    }

    fn bad_value(&self, path: &DocPath, message: impl Into<String>) -> ScenarioError {
        self.loc.error(path, ErrorKind::BadValue, message)
    }

    /// `memslot[2] (line 31)`: a reference to another part of the file for messages.
    fn refer(&self, path: &DocPath) -> String {
        match self.loc.location(path).line() {
            Some(line) => format!("{path} (line {line})"),
            None => path.to_string(),
        }
    }
}

fn root() -> DocPath {
    DocPath::root()
}

pub(crate) fn validate(raw: RawScenario, loc: &Locator<'_>, base_dir: Option<&Path>) -> Result<Scenario> {
    let cx = Ctx { loc };
    if raw.name.trim().is_empty() {
        return Err(cx.invalid(&root().key("name"), "must not be empty"));
    }
    if raw.description.trim().is_empty() || raw.description.contains('\n') {
        return Err(cx.invalid(&root().key("description"), "must be one non-empty line"));
    }
    check_host(&cx, &raw)?;
    check_vm(&cx, &raw)?;
    check_memslots(&cx, &raw)?;
    check_policy(&cx, &raw)?;
    let phases = build_phases(&cx, &raw, base_dir)?;
    let events = build_events(&cx, &raw, &phases)?;
    let checks = match &raw.expect {
        Some(t) => build_checks(&cx, t, &raw.memslot, &phases)?,
        None => Vec::new(),
    };
    Ok(Scenario {
        name: raw.name,
        description: raw.description,
        seed: raw.seed,
        host: raw.host,
        vm: raw.vm,
        memslot_locations: (0..raw.memslot.len()).map(|i| loc.location(&slot_path(i))).collect(),
        memslots: raw.memslot,
        policy: raw.policy,
        phases,
        events,
        checks,
        file: loc.file.to_string(),
        overrides: loc.overrides.to_vec(),
    })
}

fn fraction(cx: &Ctx<'_, '_>, path: DocPath, v: f64) -> Result<()> {
    if v.is_finite() && (0.0..=1.0).contains(&v) {
        Ok(())
    } else {
        Err(cx.bad_value(&path, "expected a fraction within 0..=1"))
    }
}

fn check_host(cx: &Ctx<'_, '_>, raw: &RawScenario) -> Result<()> {
    let h = &raw.host;
    let host = root().key("host");
    if h.memory.get() == 0 || !h.memory.is_aligned(PAGE) {
        return Err(cx.invalid(&host.key("memory"), "must be a non-zero multiple of 4K"));
    }
    fraction(cx, host.key("fragmentation"), h.fragmentation)?;
    fraction(cx, host.key("fragmentation_1g"), h.fragmentation_1g)?;
    let pools = h
        .hugetlb_2m
        .checked_mul(SIZE_2M)
        .and_then(|a| h.hugetlb_1g.checked_mul(SIZE_1G).and_then(|b| a.checked_add(b)));
    match pools {
        Some(p) if p <= h.memory.get() => {}
        _ => {
            let path = if h.hugetlb_1g > 0 { host.key("hugetlb_1g") } else { host.key("hugetlb_2m") };
            return Err(cx.invalid(
                &path,
                format!(
                    "the hugetlb pools ({} x 2M + {} x 1G) do not fit in host.memory = {}",
                    h.hugetlb_2m, h.hugetlb_1g, h.memory
                ),
            ));
        }
    }
    if !h.dax_size.is_aligned(h.dax_align.bytes()) {
        return Err(cx.invalid(
            &host.key("dax_size"),
            format!("must be a multiple of host.dax_align = \"{}\"", page_size_name(h.dax_align)),
        ));
    }
    if h.page_cache_max_order > 18 {
        return Err(cx.bad_value(&host.key("page_cache_max_order"), "expected an order within 0..=18 (9 = 2M folios)"));
    }
    if h.khugepaged_max_ptes_none > 511 {
        return Err(cx.bad_value(&host.key("khugepaged_max_ptes_none"), "expected a count within 0..=511"));
    }
    Ok(())
}

fn check_vm(cx: &Ctx<'_, '_>, raw: &RawScenario) -> Result<()> {
    let vm = root().key("vm");
    if raw.vm.vcpus == 0 || raw.vm.vcpus > MAX_VCPUS {
        return Err(cx.bad_value(&vm.key("vcpus"), format!("expected a count within 1..={MAX_VCPUS}")));
    }
    let limit = 1u64 << raw.vm.format.gpa_bits();
    let mut regions: Vec<(u64, u64, usize)> = Vec::new();
    for (i, g) in raw.vm.guest_pages.iter().enumerate() {
        let p = vm.key("guest_pages").index(i);
        let size = g.size.bytes();
        let name = page_size_name(g.size);
        for (key, v) in [("gva", g.gva.get()), ("gpa", g.gpa()), ("len", g.len.get())] {
            if v % size != 0 {
                return Err(cx.invalid(&p.key(key), format!("must be a multiple of the region's page size \"{name}\"")));
            }
        }
        if g.len.get() == 0 {
            return Err(cx.invalid(&p.key("len"), "must not be zero"));
        }
        if g.gpa().checked_add(g.len.get()).is_none_or(|end| end > limit) {
            return Err(cx.invalid(
                &p.key("len"),
                format!("the region ends beyond the guest-physical space of format \"{}\"", raw.vm.format),
            ));
        }
        if g.gva.get().checked_add(g.len.get()).is_none() {
            return Err(cx.invalid(&p.key("len"), "the region ends beyond the 64-bit address space"));
        }
        regions.push((g.gva.get(), g.gva.get() + g.len.get(), i));
    }
    regions.sort();
    for w in regions.windows(2) {
        let ((_, a_end, a), (b_start, _, b)) = (w[0], w[1]);
        if b_start < a_end {
            let (first, second) = (a.min(b), a.max(b));
            return Err(cx.invalid(
                &vm.key("guest_pages").index(second).key("gva"),
                format!("overlaps {}", cx.refer(&vm.key("guest_pages").index(first))),
            ));
        }
    }
    let tlb = vm.key("tlb");
    let t = &raw.vm.tlb;
    for (name, array) in
        [("l1_4k", t.l1_4k), ("l1_2m", t.l1_2m), ("l1_1g", t.l1_1g), ("stlb", t.stlb), ("stlb_1g", t.stlb_1g)]
    {
        if let Some(TlbArray { entries, ways }) = array {
            if entries == 0 {
                continue;
            }
            if ways == 0 || entries % ways != 0 || !(entries / ways).is_power_of_two() {
                return Err(cx.invalid(
                    &tlb.key(name),
                    format!("{entries} entries in sets of {ways} ways: ways must divide entries into a power-of-two number of sets"),
                ));
            }
        }
    }
    Ok(())
}

fn slot_path(i: usize) -> DocPath {
    root().key("memslot").index(i)
}

fn check_memslots(cx: &Ctx<'_, '_>, raw: &RawScenario) -> Result<()> {
    if raw.memslot.is_empty() {
        return Err(cx.invalid(&root(), "a scenario needs at least one [[memslot]]"));
    }
    let limit = 1u64 << raw.vm.format.gpa_bits();
    let mut ids: HashMap<u32, usize> = HashMap::new();
    let mut dax_total = 0u64;
    for (i, m) in raw.memslot.iter().enumerate() {
        let p = slot_path(i);
        if let Some(&first) = ids.get(&m.id) {
            return Err(
                cx.invalid(&p.key("id"), format!("duplicate id; {} has it already", cx.refer(&slot_path(first))))
            );
        }
        ids.insert(m.id, i);
        if !m.gpa.is_aligned(PAGE) {
            return Err(cx.invalid(&p.key("gpa"), "must be 4K aligned"));
        }
        if m.size.get() == 0 || !m.size.is_aligned(PAGE) {
            return Err(cx.invalid(&p.key("size"), "must be a non-zero multiple of 4K"));
        }
        if m.gpa.get().checked_add(m.size.get()).is_none_or(|end| end > limit) {
            return Err(cx.invalid(
                &p.key("size"),
                format!(
                    "the slot ends beyond the {}-bit guest-physical space of format \"{}\"",
                    raw.vm.format.gpa_bits(),
                    raw.vm.format
                ),
            ));
        }
        if !m.hva_offset.is_aligned(PAGE) || m.hva_offset.get() >= SIZE_1G {
            return Err(cx.invalid(&p.key("hva_offset"), "must be a multiple of 4K below 1G"));
        }
        if let Some(ps) = m.backing.hugetlb_page() {
            if !m.size.is_aligned(ps.bytes()) {
                return Err(cx.invalid(
                    &p.key("size"),
                    format!("a \"{}\" slot must be a multiple of {}", m.backing, page_size_name(ps)),
                ));
            }
        }
        if m.backing == Backing::Dax {
            let align = raw.host.dax_align;
            if !m.size.is_aligned(align.bytes()) {
                return Err(cx.invalid(
                    &p.key("size"),
                    format!("a \"dax\" slot must be a multiple of host.dax_align = \"{}\"", page_size_name(align)),
                ));
            }
            dax_total += m.size.get();
            if dax_total > raw.host.dax_size.get() {
                return Err(cx.invalid(
                    &p.key("size"),
                    format!("the \"dax\" slots need {} but host.dax_size is {}", Bytes(dax_total), raw.host.dax_size),
                ));
            }
        }
    }
    check_hugetlb_pools(cx, raw)?;
    check_guest_table_room(cx, raw)?;
    check_overlaps(cx, &raw.memslot, None)
}

/// hugetlbfs slots must fit their pool: a fault on an empty pool kills the VMM.
fn check_hugetlb_pools(cx: &Ctx<'_, '_>, raw: &RawScenario) -> Result<()> {
    for (ps, pool, key) in
        [(PageSize::Size2M, raw.host.hugetlb_2m, "hugetlb_2m"), (PageSize::Size1G, raw.host.hugetlb_1g, "hugetlb_1g")]
    {
        let mut need = 0u64;
        for (i, m) in raw.memslot.iter().enumerate() {
            if m.backing.hugetlb_page() != Some(ps) {
                continue;
            }
            need += m.size.get() / ps.bytes();
            if need > pool {
                return Err(cx.invalid(
                    &slot_path(i).key("size"),
                    format!(
                        "the \"{}\" memslots need {need} pages of {} but the pool host.{key} has {pool}; raise host.{key}",
                        m.backing,
                        page_size_name(ps)
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// The guest page tables live at the top of the first memslot present at boot.
fn check_guest_table_room(cx: &Ctx<'_, '_>, raw: &RawScenario) -> Result<()> {
    let Some(first) = raw.memslot.iter().position(|m| m.at_boot) else {
        return Err(cx.invalid(
            &slot_path(0).key("at_boot"),
            "no memslot is present at boot (at_boot = true); the guest page tables need one",
        ));
    };
    let m = &raw.memslot[first];
    let regions: Vec<(u64, u64)> = if raw.vm.guest_pages.is_empty() {
        raw.memslot.iter().map(|m| (m.gpa.get(), m.size.get())).collect()
    } else {
        raw.vm.guest_pages.iter().map(|g| (g.gva.get(), g.len.get())).collect()
    };
    let reserve = super::guest_table_reserve(regions.iter().map(|r| r.1));
    if reserve >= m.size.get() {
        return Err(cx.invalid(
            &slot_path(first).key("size"),
            format!(
                "the guest page tables take the top {} of the first boot memslot, so it must be larger than that (at least {}), or put a larger at_boot memslot first",
                Bytes(reserve),
                Bytes(reserve + PAGE)
            ),
        ));
    }
    Ok(())
}

/// Overlapping gpa ranges between slots (with slot `moved` at `gpa` instead, when given).
fn check_overlaps(cx: &Ctx<'_, '_>, slots: &[Memslot], moved: Option<(usize, u64, DocPath)>) -> Result<()> {
    let mut ranges: Vec<(u64, u64, usize)> = slots
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let start = match &moved {
                Some((j, gpa, _)) if *j == i => *gpa,
                _ => m.gpa.get(),
            };
            (start, start.saturating_add(m.size.get()), i)
        })
        .collect();
    ranges.sort();
    for w in ranges.windows(2) {
        let ((a_start, a_end, a), (b_start, b_end, b)) = (w[0], w[1]);
        if b_start < a_end {
            let (first, second) = (a.min(b), a.max(b));
            let (fs, fe, ss, se) =
                if first == a { (a_start, a_end, b_start, b_end) } else { (b_start, b_end, a_start, a_end) };
            return Err(match &moved {
                Some((j, _, path)) => {
                    let other = if *j == first { second } else { first };
                    cx.invalid(
                        path,
                        format!(
                            "moving memslot {} there makes it overlap {} (gpa {:#x}..{:#x})",
                            slots[*j].id,
                            cx.refer(&slot_path(other)),
                            slots[other].gpa.get(),
                            slots[other].gpa_end()
                        ),
                    )
                }
                None => cx.invalid(
                    &slot_path(second).key("gpa"),
                    format!("gpa {ss:#x}..{se:#x} overlaps {} (gpa {fs:#x}..{fe:#x})", cx.refer(&slot_path(first))),
                ),
            });
        }
    }
    Ok(())
}

fn check_policy(cx: &Ctx<'_, '_>, raw: &RawScenario) -> Result<()> {
    let p = &raw.policy;
    let path = root().key("policy");
    if p.eager_split_chunk == 0 {
        return Err(cx.bad_value(&path.key("eager_split_chunk"), "expected at least 1 page-table page per step"));
    }
    if p.initially_set && p.harvest != Harvest::ManualClear {
        return Err(cx.invalid(
            &path.key("initially_set"),
            format!("needs policy.harvest = \"manual-clear\" (it is \"{}\")", p.harvest),
        ));
    }
    Ok(())
}

/// The gva ranges the guest maps: its page-table regions, or every memslot at gva = gpa.
fn mapped_ranges(raw: &RawScenario) -> Vec<(u64, u64)> {
    let mut r: Vec<(u64, u64)> = if raw.vm.guest_pages.is_empty() {
        raw.memslot.iter().map(|m| (m.gpa.get(), m.gpa_end())).collect()
    } else {
        raw.vm.guest_pages.iter().map(|g| (g.gva.get(), g.gva.get().saturating_add(g.len.get()))).collect()
    };
    r.sort();
    r
}

/// The first part of `start..end` that no range covers.
fn first_hole(ranges: &[(u64, u64)], start: u64, end: u64) -> Option<(u64, u64)> {
    let mut at = start;
    for &(s, e) in ranges {
        if s > at {
            break;
        }
        at = at.max(e);
        if at >= end {
            return None;
        }
    }
    let next = ranges.iter().map(|&(s, _)| s).filter(|&s| s > at).min().unwrap_or(end).min(end);
    Some((at, next))
}

fn phase_params(kind: PhaseKind) -> &'static [&'static str] {
    match kind {
        PhaseKind::Sequential => &["step"],
        PhaseKind::Uniform => &[],
        PhaseKind::Zipf => &["s", "hot_set"],
        PhaseKind::Strided => &["stride", "step"],
        PhaseKind::Trace => &["trace"],
    }
}

fn raw_phase_params(p: &RawPhase) -> Vec<&'static str> {
    let mut v = Vec::new();
    for (name, present) in [
        ("step", p.step.is_some()),
        ("stride", p.stride.is_some()),
        ("s", p.s.is_some()),
        ("hot_set", p.hot_set.is_some()),
        ("trace", p.trace.is_some()),
    ] {
        if present {
            v.push(name);
        }
    }
    v
}

fn build_phases(cx: &Ctx<'_, '_>, raw: &RawScenario, base_dir: Option<&Path>) -> Result<Vec<Phase>> {
    if raw.phase.is_empty() {
        return Err(cx.invalid(&root(), "a scenario needs at least one [[phase]]"));
    }
    let mapped = mapped_ranges(raw);
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut start = 0u64;
    let mut phases = Vec::with_capacity(raw.phase.len());
    for (i, p) in raw.phase.iter().enumerate() {
        let path = root().key("phase").index(i);
        if p.name.trim().is_empty() {
            return Err(cx.invalid(&path.key("name"), "must not be empty"));
        }
        if let Some(&first) = names.get(p.name.as_str()) {
            return Err(cx.invalid(
                &path.key("name"),
                format!("duplicate phase name; {} has it already", cx.refer(&root().key("phase").index(first))),
            ));
        }
        names.insert(&p.name, i);
        let kind = match (p.kind, &p.trace) {
            (Some(k), _) => k,
            (None, Some(_)) => PhaseKind::Trace,
            (None, None) => {
                return Err(cx.loc.error(
                    &path,
                    ErrorKind::MissingField,
                    format!("missing field \"kind\" (one of {}), or trace = \"file.lackey\"", PhaseKind::accepted()),
                ))
            }
        };
        let own = phase_params(kind);
        if let Some(extra) = raw_phase_params(p).into_iter().find(|n| !own.contains(n)) {
            let takes = if own.is_empty() { "no parameters of their own".to_string() } else { own.join(", ") };
            return Err(
                cx.invalid(&path.key(extra), format!("not a parameter of \"{kind}\" phases; they take {takes}"))
            );
        }
        if kind == PhaseKind::Trace {
            for (key, present) in [
                ("write_ratio", p.write_ratio != 0.0),
                ("exec_ratio", p.exec_ratio != 0.0),
                ("code_gva", p.code_gva.is_some()),
                ("code_len", p.code_len.is_some()),
            ] {
                if present {
                    return Err(cx.invalid(&path.key(key), "trace phases take their access kinds from the trace"));
                }
            }
        }
        if p.accesses == 0 {
            return Err(cx.bad_value(&path.key("accesses"), "expected at least 1 access"));
        }
        if !p.gva.is_aligned(PAGE) {
            return Err(cx.invalid(&path.key("gva"), "must be 4K aligned"));
        }
        if p.len.get() == 0 || !p.len.is_aligned(PAGE) {
            return Err(cx.invalid(&path.key("len"), "must be a non-zero multiple of 4K"));
        }
        let Some(end) = p.gva.get().checked_add(p.len.get()) else {
            return Err(cx.invalid(&path.key("len"), "the range ends beyond the 64-bit address space"));
        };
        if let Some((hs, he)) = first_hole(&mapped, p.gva.get(), end) {
            let what =
                if raw.vm.guest_pages.is_empty() { "every memslot (gva = gpa)" } else { "every vm.guest_pages region" };
            return Err(
                cx.invalid(&path.key("gva"), format!("gva {hs:#x}..{he:#x} of the phase's range lies outside {what}"))
            );
        }
        fraction(cx, path.key("write_ratio"), p.write_ratio)?;
        fraction(cx, path.key("exec_ratio"), p.exec_ratio)?;
        if p.write_ratio + p.exec_ratio > 1.0 {
            return Err(cx.invalid(&path.key("exec_ratio"), "write_ratio + exec_ratio must not exceed 1"));
        }
        let code = match (p.code_gva, p.code_len) {
            (None, None) => None,
            (Some(g), Some(l)) => {
                if !g.is_aligned(PAGE) || l.get() == 0 || !l.is_aligned(PAGE) {
                    return Err(cx.invalid(
                        &path.key("code_len"),
                        "code_gva and code_len must be 4K aligned, code_len non-zero",
                    ));
                }
                let Some(code_end) = g.get().checked_add(l.get()) else {
                    return Err(
                        cx.invalid(&path.key("code_len"), "the code range ends beyond the 64-bit address space")
                    );
                };
                if let Some((hs, he)) = first_hole(&mapped, g.get(), code_end) {
                    return Err(cx.invalid(
                        &path.key("code_gva"),
                        format!("gva {hs:#x}..{he:#x} of the code range is not mapped"),
                    ));
                }
                Some(GvaRange::new(g.get(), l.get()))
            }
            (Some(_), None) => return Err(cx.invalid(&path.key("code_gva"), "needs code_len too")),
            (None, Some(_)) => return Err(cx.invalid(&path.key("code_len"), "needs code_gva too")),
        };
        let vcpus = p.vcpus.unwrap_or(raw.vm.vcpus);
        if vcpus == 0 || vcpus > raw.vm.vcpus {
            return Err(cx.bad_value(&path.key("vcpus"), format!("expected 1..={} (vm.vcpus)", raw.vm.vcpus)));
        }
        let quantum = p.quantum.unwrap_or(DEFAULT_QUANTUM);
        if quantum == 0 {
            return Err(cx.bad_value(&path.key("quantum"), "expected at least 1 access per turn"));
        }
        let positive = |key: &str, v: Option<Bytes>, default: u64| -> Result<u64> {
            match v {
                None => Ok(default),
                Some(b) if b.get() > 0 => Ok(b.get()),
                Some(_) => Err(cx.bad_value(&path.key(key), "expected a positive byte count")),
            }
        };
        let pattern = match kind {
            PhaseKind::Sequential => Pattern::Sequential { step: positive("step", p.step, CACHE_LINE)? },
            PhaseKind::Uniform => Pattern::Uniform,
            PhaseKind::Strided => {
                let Some(stride) = p.stride else {
                    return Err(cx.invalid(&path, "\"strided\" phases need stride"));
                };
                Pattern::Strided {
                    stride: positive("stride", Some(stride), 0)?,
                    step: positive("step", p.step, CACHE_LINE)?,
                }
            }
            PhaseKind::Zipf => {
                let s = p.s.unwrap_or(1.0);
                if !s.is_finite() || s < 0.0 {
                    return Err(cx.bad_value(&path.key("s"), "expected a finite exponent >= 0"));
                }
                let hot_set = p.hot_set.unwrap_or(p.len);
                if hot_set.get() == 0 || !hot_set.is_aligned(PAGE) || hot_set > p.len {
                    return Err(cx.invalid(
                        &path.key("hot_set"),
                        format!("must be a non-zero multiple of 4K, at most len = {}", p.len),
                    ));
                }
                Pattern::Zipf { s, hot_set: hot_set.get() }
            }
            PhaseKind::Trace => {
                let Some(trace) = &p.trace else {
                    return Err(cx.invalid(&path, "\"trace\" phases need trace = \"path/to/file.lackey\""));
                };
                let file = match base_dir {
                    Some(dir) => dir.join(trace),
                    None => Path::new(trace).to_path_buf(),
                };
                if let Err(e) = std::fs::File::open(&file) {
                    return Err(cx.invalid(&path.key("trace"), format!("cannot open {}: {e}", file.display())));
                }
                if file.is_dir() {
                    return Err(
                        cx.invalid(&path.key("trace"), format!("{} is a directory, not a trace", file.display()))
                    );
                }
                Pattern::Trace { path: file }
            }
        };
        let spec = PhaseSpec {
            name: p.name.clone(),
            pattern,
            range: GvaRange::new(p.gva.get(), p.len.get()),
            accesses: p.accesses,
            write_ratio: p.write_ratio,
            exec_ratio: p.exec_ratio,
            code,
            vcpus,
            quantum,
        };
        if let Err(WorkloadError::InvalidPhase { field, reason, .. }) = spec.validate() {
            let key = match field {
                "range" => "len",
                "code" => "code_len",
                other => other,
            };
            return Err(cx.invalid(&path.key(key), reason));
        }
        let location = cx.loc.location(&path);
        phases.push(Phase { name: p.name.clone(), start, spec, location, open_ended: false });
        start = start
            .checked_add(p.accesses)
            .ok_or_else(|| cx.invalid(&path.key("accesses"), "the phases add up to more than 2^64 accesses"))?;
    }
    Ok(phases)
}

/// The parameters an event kind takes, and those it needs.
fn event_params(kind: EventKind) -> (&'static [&'static str], &'static [&'static str]) {
    const RANGE: &[&str] = &["slot", "offset", "len"];
    match kind {
        EventKind::DirtyLogOn | EventKind::DirtyLogOff | EventKind::Harvest => (&["slot"], &[]),
        EventKind::ClearLog => (RANGE, &["slot"]),
        EventKind::RecoverNx | EventKind::Compact => (&[], &[]),
        EventKind::MemslotAdd | EventKind::MemslotDelete => (&["slot"], &["slot"]),
        EventKind::MemslotMove => (&["slot", "gpa"], &["slot", "gpa"]),
        EventKind::SetAttributes => (&["slot", "offset", "len", "attribute"], &["slot", "attribute"]),
        EventKind::WriteTrack => (&["slot", "offset", "len", "enable"], &["slot"]),
        EventKind::Munmap
        | EventKind::MadviseDontneed
        | EventKind::MadviseCollapse
        | EventKind::Migrate
        | EventKind::SharePteMap => (RANGE, &["slot"]),
        EventKind::Mprotect => (&["slot", "offset", "len", "prot"], &["slot", "prot"]),
        EventKind::Khugepaged | EventKind::ReclaimAge => (RANGE, &[]),
        EventKind::KsmMerge => (&["slot", "offset", "len", "ratio"], &["slot"]),
        EventKind::BalloonInflate => (&["slot", "offset", "len", "amount", "unit"], &["slot"]),
        EventKind::BalloonDeflate => (&["slot", "amount"], &["slot"]),
        EventKind::HugetlbResize => (&["amount", "unit"], &["amount", "unit"]),
    }
}

fn build_events(cx: &Ctx<'_, '_>, raw: &RawScenario, phases: &[Phase]) -> Result<Vec<Event>> {
    let slots: HashMap<u32, usize> = raw.memslot.iter().enumerate().map(|(i, m)| (m.id, i)).collect();
    let ids = || quoted_ids(&raw.memslot);
    let mut events = Vec::with_capacity(raw.event.len());
    for (i, e) in raw.event.iter().enumerate() {
        let path = root().key("event").index(i);
        let Some(phase) = phases.iter().position(|p| p.name == e.phase) else {
            let names = quoted_list(phases.iter().map(|p| p.name.as_str()));
            return Err(cx.invalid(&path.key("phase"), format!("no such phase; expected one of {names}")));
        };
        let accesses = phases[phase].spec.accesses;
        if e.at > accesses {
            return Err(cx.invalid(
                &path.key("at"),
                format!("phase \"{}\" has only {accesses} accesses (at may be 0..={accesses})", e.phase),
            ));
        }
        let (takes, needs) = event_params(e.kind);
        let present = e.present_params();
        if let Some(extra) = present.iter().find(|n| !takes.contains(n)) {
            let list = if takes.is_empty() { "no parameters".to_string() } else { takes.join(", ") };
            return Err(
                cx.invalid(&path.key(extra), format!("not a parameter of \"{}\" events; they take {list}", e.kind))
            );
        }
        if let Some(missing) = needs.iter().find(|n| !present.contains(n)) {
            return Err(cx.loc.error(&path, ErrorKind::MissingField, format!("\"{}\" events need {missing}", e.kind)));
        }
        let slot_index = match e.slot {
            Some(id) => match slots.get(&id) {
                Some(&idx) => Some(idx),
                None => {
                    return Err(cx.invalid(&path.key("slot"), format!("no memslot with this id; ids are {}", ids())))
                }
            },
            None => None,
        };
        if slot_index.is_none() && (e.offset.is_some() || e.len.is_some()) {
            let key = if e.offset.is_some() { "offset" } else { "len" };
            return Err(cx.invalid(&path.key(key), "a range needs slot too"));
        }
        let range = match slot_index {
            Some(idx) => Some(slot_range(cx, &path, e, &raw.memslot[idx])?),
            None => None,
        };
        let action = build_action(cx, &path, e, range, slot_index.map(|i| &raw.memslot[i]), raw)?;
        let location = cx.loc.location(&path);
        events.push(Event { phase, at: e.at, access: phases[phase].start + e.at, action, index: i, location });
    }
    // Firing order: by access count, then phase (the end of one phase before the start of the
    // next), then file order.
    let mut order: Vec<usize> = (0..events.len()).collect();
    order.sort_by_key(|&i| (events[i].access, events[i].phase, i));
    check_slot_presence(cx, raw, &events, &order)?;
    let mut sorted: Vec<Option<Event>> = events.into_iter().map(Some).collect();
    Ok(order.into_iter().filter_map(|i| sorted[i].take()).collect())
}

fn quoted_ids(slots: &[Memslot]) -> String {
    slots.iter().map(|m| m.id.to_string()).collect::<Vec<_>>().join(", ")
}

/// The event's `offset`/`len` inside its slot (default: the whole slot from `offset`).
fn slot_range(cx: &Ctx<'_, '_>, path: &DocPath, e: &RawEvent, slot: &Memslot) -> Result<SlotRange> {
    let size = slot.size.get();
    let offset = e.offset.map_or(0, Bytes::get);
    if offset % PAGE != 0 || offset >= size {
        return Err(cx.invalid(
            &path.key("offset"),
            format!("must be 4K aligned and below memslot {}'s size {}", slot.id, slot.size),
        ));
    }
    let len = e.len.map_or(size - offset, Bytes::get);
    if len == 0 || len % PAGE != 0 {
        return Err(cx.invalid(&path.key("len"), "must be a non-zero multiple of 4K"));
    }
    if offset.checked_add(len).is_none_or(|end| end > size) {
        return Err(cx.invalid(
            &path.key("len"),
            format!(
                "offset + len = {} runs past the end of memslot {} (size {})",
                Bytes(offset.saturating_add(len)),
                slot.id,
                slot.size
            ),
        ));
    }
    Ok(SlotRange { slot: slot.id, offset, len })
}

fn build_action(
    cx: &Ctx<'_, '_>,
    path: &DocPath,
    e: &RawEvent,
    range: Option<SlotRange>,
    slot: Option<&Memslot>,
    raw: &RawScenario,
) -> Result<Action> {
    // `needs` was checked: kinds that need a slot have `range` and `slot`.
    let need_range =
        || range.ok_or_else(|| cx.loc.error(path, ErrorKind::MissingField, format!("\"{}\" events need slot", e.kind)));
    Ok(match e.kind {
        EventKind::DirtyLogOn => Action::DirtyLogOn { slot: e.slot },
        EventKind::DirtyLogOff => Action::DirtyLogOff { slot: e.slot },
        EventKind::Harvest => Action::Harvest { slot: e.slot },
        EventKind::ClearLog => {
            let r = need_range()?;
            let size = slot.map_or(0, |m| m.size.get());
            if r.offset % CLEAR_LOG_ALIGN != 0 {
                return Err(cx.invalid(&path.key("offset"), "must be a multiple of 64 pages (256K)"));
            }
            if r.len % CLEAR_LOG_ALIGN != 0 && r.offset + r.len != size {
                return Err(
                    cx.invalid(&path.key("len"), "must be a multiple of 64 pages (256K) or reach the end of the slot")
                );
            }
            Action::ClearLog(r)
        }
        EventKind::RecoverNx => Action::RecoverNx,
        EventKind::Compact => Action::Compact,
        EventKind::MemslotAdd => {
            let r = need_range()?;
            if slot.is_some_and(|m| m.at_boot) {
                return Err(cx.invalid(
                    &path.key("slot"),
                    format!("memslot {} exists from boot; declare it with at_boot = false to add it later", r.slot),
                ));
            }
            Action::MemslotAdd { slot: r.slot }
        }
        EventKind::MemslotDelete => Action::MemslotDelete { slot: need_range()?.slot },
        EventKind::MemslotMove => {
            let r = need_range()?;
            let gpa = e.gpa.map_or(0, Bytes::get);
            if gpa % PAGE != 0 {
                return Err(cx.invalid(&path.key("gpa"), "must be 4K aligned"));
            }
            let limit = 1u64 << raw.vm.format.gpa_bits();
            if gpa.checked_add(r.len + r.offset).is_none_or(|end| end > limit) {
                return Err(cx.invalid(
                    &path.key("gpa"),
                    format!("the moved slot would end beyond the guest-physical space of format \"{}\"", raw.vm.format),
                ));
            }
            let idx = raw.memslot.iter().position(|m| m.id == r.slot).unwrap_or(0);
            check_overlaps(cx, &raw.memslot, Some((idx, gpa, path.key("gpa"))))?;
            Action::MemslotMove { slot: r.slot, gpa }
        }
        EventKind::SetAttributes => {
            let attribute = e.attribute.ok_or_else(|| {
                cx.loc.error(path, ErrorKind::MissingField, "\"set-attributes\" events need attribute")
            })?;
            Action::SetAttributes { range: need_range()?, attribute }
        }
        EventKind::WriteTrack => Action::WriteTrack { range: need_range()?, enable: e.enable.unwrap_or(true) },
        EventKind::Munmap => Action::Munmap(need_range()?),
        EventKind::Mprotect => {
            let prot =
                e.prot.ok_or_else(|| cx.loc.error(path, ErrorKind::MissingField, "\"mprotect\" events need prot"))?;
            Action::Mprotect { range: need_range()?, prot }
        }
        EventKind::MadviseDontneed => Action::MadviseDontneed(need_range()?),
        EventKind::Khugepaged => Action::Khugepaged(range),
        EventKind::MadviseCollapse => Action::MadviseCollapse(need_range()?),
        EventKind::Migrate => Action::Migrate(need_range()?),
        EventKind::KsmMerge => {
            let r = need_range()?;
            let ratio = e.ratio.unwrap_or(1.0);
            fraction(cx, path.key("ratio"), ratio)?;
            if let Some(m) = slot {
                if !matches!(m.backing, Backing::Anonymous | Backing::AnonymousThp) {
                    return Err(cx.invalid(
                        &path.key("slot"),
                        format!("KSM merges only private anonymous memory; memslot {} is \"{}\"", m.id, m.backing),
                    ));
                }
            }
            Action::KsmMerge { range: r, ratio }
        }
        EventKind::BalloonInflate => {
            let r = need_range()?;
            let unit = e.unit.unwrap_or(PageSize::Size4K);
            let u = unit.bytes();
            if r.offset % u != 0 || r.len % u != 0 {
                return Err(cx.invalid(
                    &path.key("unit"),
                    format!("the range (offset, len) must be a multiple of the unit \"{}\"", page_size_name(unit)),
                ));
            }
            let amount = e.amount.map_or(r.len, Bytes::get);
            if amount == 0 || amount % u != 0 || amount > r.len {
                return Err(cx.invalid(
                    &path.key("amount"),
                    format!(
                        "must be a non-zero multiple of the unit \"{}\", at most len = {}",
                        page_size_name(unit),
                        Bytes(r.len)
                    ),
                ));
            }
            Action::BalloonInflate { range: r, amount, unit }
        }
        EventKind::BalloonDeflate => {
            let r = need_range()?;
            let amount = e.amount.map(Bytes::get);
            if amount.is_some_and(|a| a == 0 || a % PAGE != 0) {
                return Err(cx.invalid(&path.key("amount"), "must be a non-zero multiple of 4K"));
            }
            Action::BalloonDeflate { slot: r.slot, amount }
        }
        EventKind::SharePteMap => {
            let r = need_range()?;
            if let Some(m) = slot {
                if !matches!(m.backing, Backing::Shmem | Backing::PageCache) {
                    return Err(cx.invalid(
                        &path.key("slot"),
                        format!(
                            "another process can share only shmem or page-cache memory; memslot {} is \"{}\"",
                            m.id, m.backing
                        ),
                    ));
                }
            }
            Action::SharePteMap(r)
        }
        EventKind::ReclaimAge => Action::ReclaimAge(range),
        EventKind::HugetlbResize => {
            let unit = e.unit.unwrap_or(PageSize::Size4K);
            if unit == PageSize::Size4K {
                return Err(cx.invalid(&path.key("unit"), "hugetlb pools hold \"2M\" or \"1G\" pages"));
            }
            let amount = e.amount.map_or(0, Bytes::get);
            if amount % unit.bytes() != 0 {
                return Err(cx.invalid(
                    &path.key("amount"),
                    format!(
                        "the pool size must be a multiple of the unit \"{}\" (0 empties the pool)",
                        page_size_name(unit)
                    ),
                ));
            }
            Action::HugetlbResize { unit, pages: amount / unit.bytes() }
        }
    })
}

/// Slots must exist when an event uses them: `memslot-add` only for absent slots, everything
/// else only for present ones.
fn check_slot_presence(cx: &Ctx<'_, '_>, raw: &RawScenario, events: &[Event], order: &[usize]) -> Result<()> {
    let mut present: BTreeMap<u32, bool> = raw.memslot.iter().map(|m| (m.id, m.at_boot)).collect();
    for &i in order {
        let ev = &events[i];
        let Some(slot) = ev.action.slot() else { continue };
        let here = present.get(&slot).copied().unwrap_or(false);
        let path = root().key("event").index(i).key("slot");
        match ev.action {
            Action::MemslotAdd { .. } => {
                if here {
                    return Err(cx.invalid(&path, format!("memslot {slot} is already present at this point")));
                }
                present.insert(slot, true);
            }
            _ if !here => {
                return Err(cx.invalid(
                    &path,
                    format!(
                        "memslot {slot} is not present at this point (not added yet, or deleted by an earlier event)"
                    ),
                ));
            }
            Action::MemslotDelete { .. } => {
                present.insert(slot, false);
            }
            _ => {}
        }
    }
    Ok(())
}

fn build_checks(cx: &Ctx<'_, '_>, table: &toml::Table, slots: &[Memslot], phases: &[Phase]) -> Result<Vec<Check>> {
    let mut checks = Vec::new();
    let path = root().key("expect");
    scope_checks(cx, table, &path, Scope::Run, &["slot", "after_phase"], &mut checks)?;
    for (ep, t) in expect_entries(cx, table, &path, "slot")? {
        let Some(id) = t.get("id").and_then(toml::Value::as_integer) else {
            return Err(cx.loc.error(&ep, ErrorKind::MissingField, "needs id = <memslot id>"));
        };
        if !slots.iter().any(|m| i64::from(m.id) == id) {
            return Err(cx.invalid(&ep.key("id"), format!("no memslot with this id; ids are {}", quoted_ids(slots))));
        }
        scope_checks(cx, t, &ep, Scope::Slot(id as u32), &["id"], &mut checks)?;
    }
    for (ep, t) in expect_entries(cx, table, &path, "after_phase")? {
        let Some(name) = t.get("phase").and_then(toml::Value::as_str) else {
            return Err(cx.loc.error(&ep, ErrorKind::MissingField, "needs phase = \"<phase name>\""));
        };
        let Some(idx) = phases.iter().position(|ph| ph.name == name) else {
            let names = quoted_list(phases.iter().map(|ph| ph.name.as_str()));
            return Err(cx.invalid(&ep.key("phase"), format!("no such phase; expected one of {names}")));
        };
        let first = checks.len();
        scope_checks(cx, t, &ep, Scope::AfterPhase(idx), &["phase"], &mut checks)?;
        // Label the checks by the phase they are about, not by their index in the
        // [[expect.after_phase]] array: `expect.after_phase(migrate).pages_2m`.
        let indexed = ep.to_string();
        for c in &mut checks[first..] {
            if let Some(rest) = c.key.strip_prefix(&indexed) {
                c.key = format!("expect.after_phase({name}){rest}");
            }
        }
    }
    Ok(checks)
}

/// The tables of `[[expect.<key>]]`, with their paths.
fn expect_entries<'t>(
    cx: &Ctx<'_, '_>,
    table: &'t toml::Table,
    path: &DocPath,
    key: &str,
) -> Result<Vec<(DocPath, &'t toml::Table)>> {
    let Some(value) = table.get(key) else { return Ok(Vec::new()) };
    let p = path.key(key);
    let Some(entries) = value.as_array() else {
        return Err(cx.bad_value(&p, format!("expected [[expect.{key}]] tables")));
    };
    entries
        .iter()
        .enumerate()
        .map(|(j, entry)| match entry.as_table() {
            Some(t) => Ok((p.index(j), t)),
            None => Err(cx.bad_value(&p.index(j), format!("expected a [[expect.{key}]] table"))),
        })
        .collect()
}

/// The metric and why-not-huge checks of one expectation table; keys in `other` are handled
/// by the caller.
fn scope_checks(
    cx: &Ctx<'_, '_>,
    t: &toml::Table,
    path: &DocPath,
    scope: Scope,
    other: &[&str],
    out: &mut Vec<Check>,
) -> Result<()> {
    for (key, value) in t {
        let p = path.key(key);
        if other.contains(&key.as_str()) {
            continue;
        }
        let subject_checks: Vec<(Subject, DocPath, &toml::Value)> = if key == "why_not_huge" {
            let Some(reasons) = value.as_table() else {
                return Err(cx.bad_value(&p, "expected a table of <reason> = <comparison>"));
            };
            let mut v = Vec::new();
            for (rk, rv) in reasons {
                let Some(reason) = WhyNotHuge::from_name(rk) else {
                    let names = quoted_list(WhyNotHuge::ALL.iter().map(|r| r.name()));
                    return Err(cx.loc.error(
                        &p.key(rk),
                        ErrorKind::UnknownField,
                        format!("unknown reason; expected one of {names}"),
                    ));
                };
                v.push((Subject::WhyNotHuge(reason), p.key(rk), rv));
            }
            v
        } else if let Some(metric) = Metric::from_name(key) {
            vec![(Subject::Metric(metric), p.clone(), value)]
        } else {
            let mut accepted: Vec<&str> = Metric::ALL.iter().map(|m| m.name()).collect();
            accepted.push("why_not_huge");
            accepted.extend(other);
            return Err(cx.loc.error(
                &p,
                ErrorKind::UnknownField,
                format!("unknown field; expected one of {}", quoted_list(accepted)),
            ));
        };
        for (subject, sp, v) in subject_checks {
            let comparison = Comparison::from_toml(v).map_err(|m| cx.bad_value(&sp, m))?;
            out.push(Check {
                scope: scope.clone(),
                subject,
                comparison,
                key: sp.to_string(),
                location: cx.loc.location(&sp),
            });
        }
    }
    Ok(())
}
