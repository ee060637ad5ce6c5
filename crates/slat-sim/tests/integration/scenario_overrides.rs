//! `set(key, value)` overrides and `vary`: dotted keys into the document before deserialising,
//! with the same located errors.

use slat_sim::scenario::{Bytes, ErrorKind, Location, Recover, ScenarioSource, TlbArray};

fn default() -> ScenarioSource {
    ScenarioSource::from_library("default").unwrap()
}

#[test]
fn set_changes_values_of_every_type() {
    let mut s = default();
    s.set("policy.recover", "zap").unwrap();
    s.set("host.fragmentation", "0.25").unwrap();
    s.set("host.memory", "16G").unwrap();
    s.set("vm.vcpus", "8").unwrap();
    s.set("policy.nx_huge_pages", "true").unwrap();
    s.set("memslot[0].hva_offset", "4096").unwrap();
    s.set("phase[1].s", "1.3").unwrap();
    let sc = s.parse().unwrap();
    assert_eq!(sc.policy.recover, Recover::Zap);
    assert_eq!(sc.host.fragmentation, 0.25);
    assert_eq!(sc.host.memory, Bytes(16 << 30));
    assert_eq!(sc.vm.vcpus, 8);
    assert!(sc.policy.nx_huge_pages);
    assert_eq!(sc.memslots[0].hva_offset, Bytes(4096));
    assert_eq!(sc.overrides.len(), 7);
    assert_eq!(sc.label().split(" [").next(), Some("default"));
}

#[test]
fn set_creates_missing_tables_and_inline_values() {
    let mut s = default();
    s.set("vm.tlb.stlb", "{ entries = 2048, ways = 16 }").unwrap();
    s.set("policy.cap", "2M").unwrap();
    let sc = s.parse().unwrap();
    assert_eq!(sc.vm.tlb.stlb, Some(TlbArray { entries: 2048, ways: 16 }));
    assert_eq!(sc.policy.cap, Some(slat_pt::PageSize::Size2M));
}

#[test]
fn a_later_set_replaces_an_earlier_one() {
    let mut s = default();
    s.set("policy.recover", "zap").unwrap();
    s.set("policy.recover", "in-place").unwrap();
    assert_eq!(s.overrides().len(), 1);
    assert_eq!(s.parse().unwrap().policy.recover, Recover::InPlace);
}

#[test]
fn set_rejects_unknown_keys_naming_the_override() {
    let mut s = default();
    let e = s.set("policy.recovr", "zap").unwrap_err();
    assert_eq!(e.kind, ErrorKind::UnknownField);
    assert_eq!(
        e.location,
        Location::Override { file: "default.toml".into(), key: "policy.recovr".into(), value: "zap".into() }
    );
    let msg = e.to_string();
    assert!(
        msg.starts_with("default.toml (--set policy.recovr=zap): policy.recovr: unknown field; expected one of"),
        "{msg}"
    );
    assert!(msg.contains("\"recover\""), "{msg}");
    let e = s.set("polcy.recover", "zap").unwrap_err();
    assert_eq!(e.field(), Some("polcy"));
    assert!(e.to_string().contains("\"policy\""), "{e}");
    assert!(s.overrides().is_empty(), "rejected overrides are not kept");
    s.parse().unwrap();
}

#[test]
fn set_rejects_values_not_accepted() {
    let mut s = default();
    let e = s.set("policy.recover", "inplace").unwrap_err();
    assert_eq!(
        e.to_string(),
        "default.toml (--set policy.recover=inplace): policy.recover = \"inplace\": expected one of \"zap\", \"in-place\""
    );
    let e = s.set("vm.vcpus", "many").unwrap_err();
    assert_eq!(e.kind, ErrorKind::BadValue);
}

#[test]
fn set_rejects_keys_that_lead_nowhere() {
    let mut s = default();
    let e = s.set("memslot[4].gpa", "0").unwrap_err();
    assert_eq!(e.kind, ErrorKind::BadOverride);
    assert!(e.to_string().contains("memslot has 1 entry; no entry [4]"), "{e}");
    let e = s.set("policy.recover.mode", "zap").unwrap_err();
    assert!(e.to_string().contains("policy.recover is a value"), "{e}");
    let e = s.set("policy..recover", "zap").unwrap_err();
    assert_eq!(e.kind, ErrorKind::BadOverride);
    let e = s.set_arg("policy.recover").unwrap_err();
    assert!(e.to_string().contains("expected key=value"), "{e}");
    s.set_arg("policy.recover=zap").unwrap();
    assert_eq!(s.parse().unwrap().policy.recover, Recover::Zap);
}

#[test]
fn validation_errors_caused_by_an_override_name_it() {
    let mut s = default();
    s.set("memslot[0].gpa", "4097").unwrap();
    let e = s.parse().unwrap_err();
    assert!(matches!(&e.location, Location::Override { key, .. } if key == "memslot[0].gpa"), "{e}");
    assert!(e.to_string().contains("memslot[0].gpa = 4097: must be 4K aligned"), "{e}");
}

#[test]
fn file_lines_survive_overrides_that_add_keys() {
    // Adding keys shifts lines in the rewritten document; errors still name the file's lines.
    let text = ScenarioSource::from_library("default")
        .unwrap()
        .text()
        .replace("pages_2m = \">= 1000\"           # recovered", "pages_2m = \"=> 1000\"           # recovered");
    let line = text.lines().position(|l| l.contains("=> 1000")).unwrap() + 1;
    let mut s = ScenarioSource::from_text("default.toml", text);
    s.set("host.fragmentation_1g", "0.5").unwrap();
    s.set("host.hugetlb_2m", "4").unwrap();
    s.set("vm.tlb.l1_4k", "{ entries = 64, ways = 4 }").unwrap();
    let e = s.parse().unwrap_err();
    assert_eq!(e.line(), Some(line), "{e}");
    assert_eq!(e.field(), Some("expect.pages_2m"));
}

#[test]
fn vary_makes_one_variant_per_value() {
    let variants = default().vary("policy.recover", &["zap", "in-place"]).unwrap();
    let recovers: Vec<_> = variants.iter().map(|v| v.parse().unwrap().policy.recover).collect();
    assert_eq!(recovers, [Recover::Zap, Recover::InPlace]);
    assert_eq!(variants[0].label(), "default.toml [policy.recover=zap]");
    let e = default().vary("policy.recover", &["zap", "lazy"]).unwrap_err();
    assert!(e.to_string().contains("\"lazy\""), "{e}");
}
