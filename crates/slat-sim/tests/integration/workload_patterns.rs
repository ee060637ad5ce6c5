//! Workload generators: each distribution, determinism, vCPU interleaving, phases.

use std::collections::HashMap;

use slat_sim::workload::{Access, AccessKind, GvaRange, Pattern, PhaseSpec, Workload, WorkloadError, CACHE_LINE};

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

fn run(seed: u64, phases: Vec<PhaseSpec>) -> Vec<Access> {
    let mut w = Workload::new(seed, phases).unwrap();
    let v: Vec<Access> = w.by_ref().collect();
    assert!(w.error().is_none());
    v
}

fn one(pattern: Pattern, range: GvaRange, n: u64) -> PhaseSpec {
    PhaseSpec::new("p", pattern, range, n)
}

#[test]
fn same_seed_same_accesses_other_seed_others() {
    let phases = || {
        vec![
            one(Pattern::Uniform, GvaRange::new(0, GIB), 10_000).with_mix(0.3, 0.1).with_vcpus(3, 16),
            one(Pattern::Zipf { s: 1.1, hot_set: 64 * MIB }, GvaRange::new(GIB, GIB), 10_000).with_mix(0.5, 0.0),
        ]
    };
    let a = run(42, phases());
    assert_eq!(a, run(42, phases()));
    assert_ne!(a, run(43, phases()));
    assert_eq!(a.len(), 20_000);
}

#[test]
fn changing_one_phase_leaves_the_others_alone() {
    let second = || one(Pattern::Uniform, GvaRange::new(0, GIB), 1000).with_mix(0.3, 0.0);
    let a = run(1, vec![one(Pattern::Uniform, GvaRange::new(0, GIB), 100), second()]);
    let b = run(1, vec![one(Pattern::Uniform, GvaRange::new(0, 2 * GIB), 777), second()]);
    assert_eq!(a[100..], b[777..]);
}

#[test]
fn sequential_steps_exactly_and_wraps() {
    let range = GvaRange::new(0x4000_0000, 64 * 4096);
    let a = run(0, vec![one(Pattern::Sequential { step: 4096 }, range, 130)]);
    for (i, x) in a.iter().enumerate() {
        assert_eq!(x.gva, range.start + (i as u64 % 64) * 4096);
        assert_eq!(x.kind, AccessKind::Read);
    }
}

#[test]
fn sequential_gives_each_vcpu_its_own_slice() {
    let range = GvaRange::new(0, 4 * MIB);
    let a = run(0, vec![one(Pattern::Sequential { step: 4096 }, range, 1024).with_vcpus(4, 8)]);
    let mut last: HashMap<u32, u64> = HashMap::new();
    for x in &a {
        let slice = x.gva / MIB;
        assert_eq!(slice, u64::from(x.vcpu), "vCPU {} strayed out of its slice: {:#x}", x.vcpu, x.gva);
        if let Some(prev) = last.insert(x.vcpu, x.gva) {
            assert_eq!(x.gva, prev + 4096);
        }
    }
    // Every page of the range is touched exactly once.
    let mut pages: Vec<u64> = a.iter().map(|x| x.gva).collect();
    pages.sort_unstable();
    pages.dedup();
    assert_eq!(pages.len(), 1024);
}

#[test]
fn strided_stride_is_exact_and_columns_advance() {
    let stride = 8192;
    let range = GvaRange::new(0x10_0000, 16 * stride);
    let a = run(0, vec![one(Pattern::Strided { stride, step: 64 }, range, 16 * 3)]);
    for w in a.windows(2) {
        let (x, y) = (w[0].gva, w[1].gva);
        if y > x {
            assert_eq!(y - x, stride, "consecutive accesses are one stride apart");
        } else {
            // A wrap: back to the start, one column (64 bytes) further.
            assert_eq!((y - range.start) % stride, (x - range.start) % stride + 64);
        }
    }
    assert_eq!(a[16].gva, range.start + 64);
    assert_eq!(a[32].gva, range.start + 128);
}

#[test]
fn uniform_stays_in_range_aligned_and_flat() {
    let range = GvaRange::new(3 * GIB, GIB);
    let n = 400_000;
    let a = run(5, vec![one(Pattern::Uniform, range, n)]);
    let mut buckets = [0u64; 16];
    for x in &a {
        assert!(range.contains(x.gva));
        assert_eq!(x.gva % CACHE_LINE, 0);
        buckets[((x.gva - range.start) / (range.len / 16)) as usize] += 1;
    }
    let expect = n / 16;
    for b in buckets {
        assert!(b.abs_diff(expect) < expect / 20, "{buckets:?}");
    }
}

#[test]
fn zipf_hot_set_gets_most_accesses() {
    let range = GvaRange::new(0, GIB);
    let hot_set = 64 * MIB;
    let n = 500_000;
    let a = run(7, vec![one(Pattern::Zipf { s: 1.0, hot_set }, range, n)]);
    let mut per_page: HashMap<u64, u64> = HashMap::new();
    let spacing = range.len / hot_set;
    for x in &a {
        assert!(range.contains(x.gva));
        let page = x.gva / 4096;
        assert_eq!(page % spacing, 0, "hot pages are every {spacing}th page");
        *per_page.entry(page).or_default() += 1;
    }
    assert!(per_page.len() as u64 <= hot_set / 4096);
    let mut counts: Vec<u64> = per_page.into_values().collect();
    counts.sort_unstable_by(|a, b| b.cmp(a));
    // With s = 1 over 16384 pages, the hottest 1% of the pages take about half the accesses.
    let top: u64 = counts.iter().take(164).sum();
    let share = top as f64 / n as f64;
    assert!((0.45..0.6).contains(&share), "top 1% of pages: {share}");
    // The hottest page gets about 1 / H(16384) = 9.6%.
    let hottest = counts[0] as f64 / n as f64;
    assert!((0.085..0.107).contains(&hottest), "hottest page: {hottest}");
}

#[test]
fn zipf_concentrates_more_as_s_grows() {
    let range = GvaRange::new(0, GIB);
    let top_share = |s: f64| {
        let a = run(1, vec![one(Pattern::Zipf { s, hot_set: GIB }, range, 200_000)]);
        let mut per_page: HashMap<u64, u64> = HashMap::new();
        for x in &a {
            *per_page.entry(x.gva / 4096).or_default() += 1;
        }
        let mut c: Vec<u64> = per_page.into_values().collect();
        c.sort_unstable_by(|a, b| b.cmp(a));
        c.iter().take(100).sum::<u64>() as f64 / 200_000.0
    };
    let (flat, mid, steep) = (top_share(0.0), top_share(0.9), top_share(1.5));
    assert!(flat < 0.01 && flat < mid && mid < steep, "{flat} {mid} {steep}");
}

#[test]
fn write_and_exec_ratios_hold() {
    let n = 1_000_000;
    let a = run(3, vec![one(Pattern::Uniform, GvaRange::new(0, GIB), n).with_mix(0.3, 0.05)]);
    let writes = a.iter().filter(|x| x.kind == AccessKind::Write).count() as f64 / n as f64;
    let execs = a.iter().filter(|x| x.kind == AccessKind::Exec).count() as f64 / n as f64;
    assert!((writes - 0.3).abs() < 0.003, "{writes}");
    assert!((execs - 0.05).abs() < 0.002, "{execs}");
    let all_writes = run(3, vec![one(Pattern::Uniform, GvaRange::new(0, GIB), 1000).with_mix(1.0, 0.0)]);
    assert!(all_writes.iter().all(|x| x.kind == AccessKind::Write));
    let all_exec = run(3, vec![one(Pattern::Uniform, GvaRange::new(0, GIB), 1000).with_mix(0.0, 1.0)]);
    assert!(all_exec.iter().all(|x| x.kind == AccessKind::Exec));
}

#[test]
fn instruction_fetches_go_to_the_code_range() {
    let code = GvaRange::new(0, 64 * MIB);
    let data = GvaRange::new(GIB, GIB);
    let a = run(3, vec![one(Pattern::Uniform, data, 100_000).with_mix(0.2, 0.2).with_code(code)]);
    for x in &a {
        match x.kind {
            AccessKind::Exec => assert!(code.contains(x.gva)),
            _ => assert!(data.contains(x.gva)),
        }
    }
    assert!(a.iter().any(|x| x.kind == AccessKind::Exec));
}

#[test]
fn vcpus_take_turns_in_quanta() {
    let a = run(0, vec![one(Pattern::Uniform, GvaRange::new(0, GIB), 100).with_vcpus(3, 10)]);
    for (i, x) in a.iter().enumerate() {
        assert_eq!(x.vcpu, (i as u32 / 10) % 3);
    }
}

#[test]
fn phases_play_in_order_and_fill_matches_iteration() {
    let phases = || {
        vec![
            one(Pattern::Sequential { step: 4096 }, GvaRange::new(0, MIB), 300),
            PhaseSpec::new("empty", Pattern::Uniform, GvaRange::new(0, MIB), 0),
            one(Pattern::Uniform, GvaRange::new(GIB, MIB), 500).with_vcpus(2, 3),
        ]
    };
    let iterated = run(11, phases());
    assert_eq!(iterated.len(), 800);
    assert!(iterated[..300].iter().all(|x| x.gva < MIB));
    assert!(iterated[300..].iter().all(|x| x.gva >= GIB));
    let mut w = Workload::new(11, phases()).unwrap();
    assert_eq!(w.total_accesses(), 800);
    assert_eq!(w.current_phase(), 0);
    let mut filled = Vec::new();
    let mut buf = [Access { vcpu: 0, gva: 0, kind: AccessKind::Read }; 64];
    loop {
        let n = w.fill(&mut buf);
        if n == 0 {
            break;
        }
        filled.extend_from_slice(&buf[..n]);
        if filled.len() == 320 {
            assert_eq!(w.current_phase(), 2);
        }
    }
    assert_eq!(filled, iterated);
    assert_eq!(w.issued(), 800);
    assert_eq!(w.current_phase(), 3);
}

#[test]
fn bad_phases_are_rejected_with_the_parameter() {
    let bad = |spec: PhaseSpec, field: &str| match Workload::new(0, vec![spec]) {
        Err(WorkloadError::InvalidPhase { field: f, .. }) => assert_eq!(f, field),
        other => panic!("expected an invalid {field}: {other:?}"),
    };
    let r = GvaRange::new(0, GIB);
    bad(one(Pattern::Uniform, GvaRange::new(0, 0), 1), "range");
    bad(one(Pattern::Uniform, r, 1).with_mix(1.2, 0.0), "write_ratio");
    bad(one(Pattern::Uniform, r, 1).with_mix(0.6, 0.6), "exec_ratio");
    bad(one(Pattern::Uniform, r, 1).with_vcpus(0, 1), "vcpus");
    bad(one(Pattern::Uniform, r, 1).with_vcpus(1, 0), "quantum");
    bad(one(Pattern::Sequential { step: 0 }, r, 1), "step");
    bad(one(Pattern::Strided { stride: 0, step: 64 }, r, 1), "stride");
    bad(one(Pattern::Zipf { s: -1.0, hot_set: MIB }, r, 1), "s");
    bad(one(Pattern::Zipf { s: 1.0, hot_set: 2 * GIB }, r, 1), "hot_set");
    bad(one(Pattern::Zipf { s: 1.0, hot_set: 100 }, r, 1), "hot_set");
}

#[test]
fn huge_hot_sets_sample_without_big_tables() {
    // 4 TiB of 4 KiB pages (2^30 ranks): the sampler stays small and exact enough.
    let range = GvaRange::new(0, 4 << 40);
    let a = run(2, vec![one(Pattern::Zipf { s: 1.0, hot_set: 4 << 40 }, range, 100_000)]);
    assert!(a.iter().all(|x| range.contains(x.gva)));
    let mut per_page: HashMap<u64, u64> = HashMap::new();
    for x in &a {
        *per_page.entry(x.gva / 4096).or_default() += 1;
    }
    let hottest = per_page.values().max().copied().unwrap_or(0) as f64 / 100_000.0;
    // 1 / H(2^30) = 1 / 21.4
    assert!((0.04..0.054).contains(&hottest), "{hottest}");
}
