//! The validated model: phases and event timing, defaults, expectations, trace paths.

use slat_mmu::{DirtyLogMode, HarvestMode, RecoveryPolicy, WhyNotHuge};
use slat_sim::scenario::{
    Action, Backing, Bytes, CmpOp, Comparison, Metric, ScenarioSource, Scope, SlotRange, Subject,
};
use slat_sim::workload::{AccessKind, Pattern};

const TEXT: &str = r#"name = "model"
description = "model test"
seed = 9

[host]
memory = "4G"

[vm]
vcpus = 2

[[memslot]]
id = 0
gpa = 0
size = "1G"
backing = "anonymous"

[[memslot]]
id = 5
gpa = "2G"
size = "256M"
backing = "shmem"
at_boot = false

[[phase]]
name = "a"
kind = "uniform"
gva = 0
len = "1G"
accesses = 100

[[phase]]
name = "b"
kind = "zipf"
gva = 0
len = "1G"
hot_set = "64M"
accesses = 50
vcpus = 1
quantum = 7

[[event]]
phase = "b"
at = 50
kind = "memslot-delete"
slot = 5

[[event]]
phase = "a"
at = 100
kind = "memslot-add"
slot = 5

[[event]]
phase = "b"
at = 0
kind = "munmap"
slot = 5
offset = "1M"

[[event]]
phase = "a"
at = 3
kind = "compact"

[expect]
pages_2m = 3
huge_fraction = "> 0.5"

[expect.why_not_huge]
misaligned = 0

[[expect.slot]]
id = 5
pages_4k = "!= 2"

[[expect.after_phase]]
phase = "b"
faults = "<= 10"
"#;

#[test]
fn phases_get_absolute_starts_and_specs() {
    let s = ScenarioSource::from_text("m.toml", TEXT).parse().unwrap();
    assert_eq!(s.total_accesses(), 150);
    assert_eq!((s.phases[0].start, s.phases[1].start), (0, 100));
    assert_eq!(s.phases[0].spec.vcpus, 2, "phases default to every vCPU");
    assert_eq!((s.phases[1].spec.vcpus, s.phases[1].spec.quantum), (1, 7));
    assert_eq!(s.phases[1].spec.pattern, Pattern::Zipf { s: 1.0, hot_set: 64 << 20 });
    assert_eq!(s.phase("b").map(|(i, _)| i), Some(1));
}

#[test]
fn events_come_in_firing_order_with_absolute_counts() {
    let s = ScenarioSource::from_text("m.toml", TEXT).parse().unwrap();
    let timeline: Vec<(u64, &str)> = s.events.iter().map(|e| (e.access, e.action.kind().name())).collect();
    assert_eq!(timeline, [(3, "compact"), (100, "memslot-add"), (100, "munmap"), (150, "memslot-delete")]);
    let munmap = &s.events[2];
    assert_eq!((munmap.phase, munmap.at), (1, 0));
    assert_eq!(munmap.action, Action::Munmap(SlotRange { slot: 5, offset: 1 << 20, len: (256 << 20) - (1 << 20) }));
    assert_eq!(munmap.location.line(), Some(TEXT.lines().position(|l| l.contains("offset = \"1M\"")).unwrap() - 4));
}

#[test]
fn events_at_a_phase_end_fire_before_those_at_the_next_start() {
    // memslot-add is written at the start of "b" *after* the munmap at the end of "a" would be;
    // file order puts the add second, phase order first: the end of "a" comes first.
    let text = TEXT
        .replace("phase = \"b\"\nat = 0\nkind = \"munmap\"", "phase = \"a\"\nat = 100\nkind = \"harvest\"\n#")
        .replace("phase = \"a\"\nat = 100\nkind = \"memslot-add\"", "phase = \"b\"\nat = 0\nkind = \"memslot-add\"");
    let text = text.replace("#\nslot = 5\noffset = \"1M\"", "");
    let s = ScenarioSource::from_text("m.toml", text).parse().unwrap();
    let order: Vec<(usize, &str)> = s.events.iter().map(|e| (e.index, e.action.kind().name())).collect();
    assert_eq!(order, [(3, "compact"), (2, "harvest"), (1, "memslot-add"), (0, "memslot-delete")]);
}

#[test]
fn a_phase_needs_a_kind_or_a_trace() {
    let e = ScenarioSource::from_text("m.toml", TEXT.replace("kind = \"uniform\"\n", "")).parse().unwrap_err();
    assert_eq!(e.field(), Some("phase[0]"));
    assert!(e.to_string().contains("missing field \"kind\""), "{e}");
}

#[test]
fn slot_presence_follows_the_timeline() {
    // Using the late slot before it is added is an error, and so is adding it twice.
    let early = TEXT.replace("phase = \"b\"\nat = 0\nkind = \"munmap\"", "phase = \"a\"\nat = 0\nkind = \"munmap\"");
    let e = ScenarioSource::from_text("m.toml", early).parse().unwrap_err();
    assert_eq!(e.field(), Some("event[2].slot"));
    assert!(e.to_string().contains("not present at this point"), "{e}");
    let boot = TEXT.replace("at_boot = false", "at_boot = true");
    let e = ScenarioSource::from_text("m.toml", boot).parse().unwrap_err();
    assert_eq!(e.field(), Some("event[1].slot"));
}

#[test]
fn expectations_become_checks() {
    let s = ScenarioSource::from_text("m.toml", TEXT).parse().unwrap();
    let find = |key: &str| s.checks.iter().find(|c| c.key == key).unwrap_or_else(|| panic!("{key}"));
    let c = find("expect.pages_2m");
    assert_eq!(
        (c.scope.clone(), c.subject, c.comparison),
        (Scope::Run, Subject::Metric(Metric::Pages2M), Comparison { op: CmpOp::Eq, value: 3.0 })
    );
    assert!(c.holds(3.0) && !c.holds(2.0));
    assert!(find("expect.huge_fraction").holds(0.6));
    assert_eq!(find("expect.why_not_huge.misaligned").subject, Subject::WhyNotHuge(WhyNotHuge::Misaligned));
    assert_eq!(find("expect.slot[0].pages_4k").scope, Scope::Slot(5));
    assert_eq!(find("expect.after_phase(b).faults").scope, Scope::AfterPhase(1));
    assert_eq!(s.checks.len(), 5);
    assert_eq!(find("expect.pages_2m").to_string(), "expect.pages_2m == 3");
}

#[test]
fn comparisons_parse() {
    assert_eq!(Comparison::parse(">= 10"), Ok(Comparison { op: CmpOp::Ge, value: 10.0 }));
    assert_eq!(Comparison::parse("<0.5"), Ok(Comparison { op: CmpOp::Lt, value: 0.5 }));
    assert_eq!(Comparison::parse("1_000"), Ok(Comparison { op: CmpOp::Eq, value: 1000.0 }));
    assert!(Comparison::parse("=> 3").is_err());
    assert!(Comparison::parse(">= x").is_err());
    assert!(Comparison { op: CmpOp::Ne, value: 0.0 }.holds(1.0));
}

#[test]
fn defaults_fill_in() {
    let s = ScenarioSource::from_text("m.toml", TEXT).parse().unwrap();
    assert_eq!(s.vm.format.name(), "ept4");
    assert_eq!(s.policy.recover.name(), "in-place");
    assert_eq!(s.host.thp.name(), "madvise");
    assert_eq!(s.host.shmem_huge.name(), "never");
    let regions = s.guest_regions();
    assert_eq!(regions.len(), 2);
    assert_eq!((regions[1].gva, regions[1].gpa(), regions[1].len), (Bytes(2 << 30), 2 << 30, Bytes(256 << 20)));
}

#[test]
fn trace_paths_are_relative_to_the_scenario_file() {
    let dir = std::env::temp_dir().join(format!("slat-scenario-model-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("t.lackey"), "==1== header\nI  00001000,4\n L 00002008,8\n M 00003010,4\n").unwrap();
    let text = TEXT.replace(
        "kind = \"uniform\"\ngva = 0\nlen = \"1G\"\naccesses = 100",
        "trace = \"t.lackey\"\ngva = 0\nlen = \"1G\"\naccesses = 100",
    );
    std::fs::write(dir.join("s.toml"), &text).unwrap();
    let s = ScenarioSource::load(dir.join("s.toml")).unwrap().parse().unwrap();
    let first: Vec<_> = s.workload().unwrap().take(4).map(|a| (a.gva, a.kind)).collect();
    assert_eq!(
        first,
        [
            (0x1000, AccessKind::Exec),
            (0x2008, AccessKind::Read),
            (0x3010, AccessKind::Read),
            (0x3010, AccessKind::Write)
        ]
    );
    // A trace that is not there is an error at the phase's trace key.
    let missing =
        ScenarioSource::from_text(dir.join("x.toml").display().to_string(), text.replace("t.lackey", "missing.lackey"));
    let e = missing.parse().unwrap_err();
    assert_eq!(e.field(), Some("phase[0].trace"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn every_mmu_statistic_can_be_expected() {
    for (name, _) in slat_mmu::Stats::default().named() {
        assert!(Metric::from_name(name).is_some(), "no metric for slat_mmu::Stats {name}");
    }
}

#[test]
fn policy_maps_onto_the_mmu_config() {
    let mut source = ScenarioSource::from_text("m.toml", TEXT);
    source.set("policy.dirty_log", "eager-split").unwrap();
    source.set("policy.eager_split_chunk", "16").unwrap();
    source.set("policy.harvest", "manual-clear").unwrap();
    source.set("policy.initially_set", "true").unwrap();
    source.set("policy.recover", "zap").unwrap();
    source.set("policy.nx_huge_pages", "true").unwrap();
    source.set("policy.cap", "2M").unwrap();
    let s = source.parse().unwrap();
    let c = s.policy.mmu_config();
    assert_eq!(c.dirty_log, DirtyLogMode::EagerSplit { chunk_tables: 16 });
    assert_eq!(c.harvest, HarvestMode::ManualClear { initially_set: true });
    assert_eq!(c.recovery, RecoveryPolicy::Zap);
    assert_eq!(c.nx.map(|n| n.recovery_ratio), Some(60));
    assert_eq!(c.cap, Some(slat_pt::PageSize::Size2M));
    assert_eq!(s.policy.largest_leaf(), slat_pt::PageSize::Size2M);
    assert_eq!(Backing::Hugetlbfs1G.kind(), slat_mmu::BackingKind::Hugetlbfs);
}
