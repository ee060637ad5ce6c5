//! Bad input: every class of error names the file, the line, the field and what is accepted,
//! and nothing panics.

use proptest::prelude::*;
use slat_sim::scenario::{ErrorKind, ScenarioError, ScenarioSource};

const GOOD: &str = r#"name = "t"
description = "a test"
seed = 1

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
id = 1
gpa = "1G"
size = "1G"
backing = "shmem"

[policy]
recover = "in-place"

[[phase]]
name = "boot"
kind = "sequential"
gva = 0
len = "2G"
step = "4K"
accesses = 1000

[[event]]
phase = "boot"
at = 10
kind = "munmap"
slot = 1
offset = "4K"
len = "8K"

[expect]
pages_2m = ">= 1"
"#;

fn parse(text: &str) -> Result<(), ScenarioError> {
    ScenarioSource::from_text("bad.toml", text).parse().map(|_| ())
}

fn err(text: &str) -> ScenarioError {
    match parse(text) {
        Ok(()) => panic!("expected an error"),
        Err(e) => e,
    }
}

/// The 1-based line of the first line containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).expect("needle present") + 1
}

#[test]
fn the_good_file_parses() {
    parse(GOOD).unwrap();
}

#[test]
fn unknown_field_names_file_line_field_and_accepted_fields() {
    let text = GOOD.replace("recover = \"in-place\"", "recover = \"in-place\"\nrecovery_batch = 4");
    let e = err(&text);
    assert_eq!(e.kind, ErrorKind::UnknownField);
    assert_eq!(e.line(), Some(line_of(&text, "recovery_batch")));
    assert_eq!(e.field(), Some("policy.recovery_batch"));
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!(
            "bad.toml:{}: policy.recovery_batch: unknown field",
            line_of(&text, "recovery_batch")
        )),
        "{msg}"
    );
    assert!(msg.contains("\"recover\"") && msg.contains("\"dirty_log\""), "{msg}");
}

#[test]
fn unknown_field_in_an_array_of_tables() {
    let text = GOOD.replace("backing = \"shmem\"", "backing = \"shmem\"\nhuge = true");
    let e = err(&text);
    assert_eq!(e.field(), Some("memslot[1].huge"));
    assert_eq!(e.line(), Some(line_of(&text, "huge = true")));
    assert!(e.to_string().contains("\"hva_offset\""), "{e}");
}

#[test]
fn bad_enum_value_lists_the_accepted_values() {
    let text = GOOD.replace("recover = \"in-place\"", "recover = \"inplace\"");
    let e = err(&text);
    assert_eq!(e.kind, ErrorKind::BadValue);
    let line = line_of(&text, "inplace");
    assert_eq!(
        e.to_string(),
        format!("bad.toml:{line}: policy.recover = \"inplace\": expected one of \"zap\", \"in-place\"")
    );
}

#[test]
fn bad_value_in_an_array_of_tables() {
    let text = GOOD.replace("backing = \"shmem\"", "backing = \"tmpfs\"");
    let e = err(&text);
    assert_eq!(e.field(), Some("memslot[1].backing"));
    assert_eq!(e.line(), Some(line_of(&text, "tmpfs")));
    assert!(e.to_string().contains("\"hugetlbfs-2m\""), "{e}");
}

#[test]
fn wrong_type_and_bad_size() {
    let e = err(&GOOD.replace("vcpus = 2", "vcpus = \"two\""));
    assert_eq!(e.field(), Some("vm.vcpus"));
    assert_eq!(e.kind, ErrorKind::BadValue);
    let e = err(&GOOD.replace("memory = \"4G\"", "memory = \"4Q\""));
    assert_eq!(e.field(), Some("host.memory"));
    assert!(e.to_string().contains("\"2M\""), "{e}");
}

#[test]
fn missing_field_names_the_table() {
    let text = GOOD.replace("size = \"1G\"\nbacking = \"shmem\"", "backing = \"shmem\"");
    let e = err(&text);
    assert_eq!(e.kind, ErrorKind::MissingField);
    assert_eq!(e.field(), Some("memslot[1]"));
    assert!(e.to_string().contains("missing field \"size\""), "{e}");
    assert_eq!(e.line(), Some(line_of(&text, "id = 1") - 1), "the line of the [[memslot]] header");
}

#[test]
fn overlapping_memslots() {
    let text = GOOD.replace("gpa = \"1G\"", "gpa = \"512M\"");
    let e = err(&text);
    assert_eq!(e.kind, ErrorKind::Invalid);
    assert_eq!(e.field(), Some("memslot[1].gpa"));
    assert_eq!(e.line(), Some(line_of(&text, "512M")));
    let msg = e.to_string();
    assert!(msg.contains("overlaps memslot[0] (line 11)"), "{msg}");
}

#[test]
fn misaligned_gpa() {
    let text = GOOD.replace("gpa = \"1G\"", "gpa = 0x40000800");
    let e = err(&text);
    assert_eq!(e.field(), Some("memslot[1].gpa"));
    assert_eq!(e.line(), Some(line_of(&text, "0x40000800")));
    assert!(e.to_string().contains("memslot[1].gpa = 0x40000800: must be 4K aligned"), "{e}");
}

#[test]
fn zero_size_and_duplicate_id() {
    let e = err(&GOOD.replace("size = \"1G\"\nbacking = \"shmem\"", "size = 0\nbacking = \"shmem\""));
    assert_eq!(e.field(), Some("memslot[1].size"));
    let text = GOOD.replace("id = 1", "id = 0");
    let e = err(&text);
    assert_eq!(e.field(), Some("memslot[1].id"));
    assert!(e.to_string().contains("duplicate id"), "{e}");
}

#[test]
fn event_referencing_a_missing_slot() {
    let text = GOOD.replace("slot = 1", "slot = 7");
    let e = err(&text);
    assert_eq!(e.field(), Some("event[0].slot"));
    assert_eq!(e.line(), Some(line_of(&text, "slot = 7")));
    assert_eq!(
        e.to_string(),
        format!("bad.toml:{}: event[0].slot = 7: no memslot with this id; ids are 0, 1", line_of(&text, "slot = 7"))
    );
}

#[test]
fn event_referencing_a_missing_phase() {
    let text = GOOD.replace("phase = \"boot\"", "phase = \"bot\"");
    let e = err(&text);
    assert_eq!(e.field(), Some("event[0].phase"));
    assert!(e.to_string().contains("expected one of \"boot\""), "{e}");
}

#[test]
fn event_range_past_the_slot() {
    let e = err(&GOOD.replace("offset = \"4K\"", "offset = \"1020M\"").replace("len = \"8K\"", "len = \"8M\""));
    assert_eq!(e.field(), Some("event[0].len"));
    assert!(e.to_string().contains("runs past the end of memslot 1"), "{e}");
}

#[test]
fn event_parameter_not_taken_by_its_kind() {
    let text = GOOD.replace("len = \"8K\"", "len = \"8K\"\nprot = \"read\"");
    let e = err(&text);
    assert_eq!(e.field(), Some("event[0].prot"));
    assert_eq!(e.line(), Some(line_of(&text, "prot = ")));
    assert!(e.to_string().contains("not a parameter of \"munmap\" events; they take slot, offset, len"), "{e}");
}

#[test]
fn event_missing_a_required_parameter() {
    let e = err(&GOOD.replace("kind = \"munmap\"", "kind = \"mprotect\""));
    assert_eq!(e.kind, ErrorKind::MissingField);
    assert!(e.to_string().contains("\"mprotect\" events need prot"), "{e}");
}

#[test]
fn event_after_the_end_of_its_phase() {
    let e = err(&GOOD.replace("at = 10", "at = 1001"));
    assert_eq!(e.field(), Some("event[0].at"));
    assert!(e.to_string().contains("only 1000 accesses"), "{e}");
}

#[test]
fn phase_parameter_of_another_kind() {
    let e = err(&GOOD.replace("step = \"4K\"", "step = \"4K\"\ns = 1.2"));
    assert_eq!(e.field(), Some("phase[0].s"));
    assert!(e.to_string().contains("not a parameter of \"sequential\" phases; they take step"), "{e}");
}

#[test]
fn phase_range_outside_memory() {
    let e = err(&GOOD.replace("len = \"2G\"", "len = \"3G\""));
    assert_eq!(e.field(), Some("phase[0].gva"));
    assert!(e.to_string().contains("0x80000000..0xc0000000"), "{e}");
}

#[test]
fn ratios_out_of_range() {
    let e = err(&GOOD.replace("accesses = 1000", "accesses = 1000\nwrite_ratio = 1.5"));
    assert_eq!(e.field(), Some("phase[0].write_ratio"));
    let e = err(&GOOD.replace("accesses = 1000", "accesses = 1000\nwrite_ratio = 0.7\nexec_ratio = 0.7"));
    assert_eq!(e.field(), Some("phase[0].exec_ratio"));
}

#[test]
fn initially_set_needs_manual_clear() {
    let e = err(&GOOD.replace("recover = \"in-place\"", "recover = \"in-place\"\ninitially_set = true"));
    assert_eq!(e.field(), Some("policy.initially_set"));
    assert!(e.to_string().contains("manual-clear"), "{e}");
}

#[test]
fn hugetlbfs_slot_not_a_multiple_of_its_page() {
    let e = err(&GOOD
        .replace("backing = \"anonymous\"", "backing = \"hugetlbfs-1g\"")
        .replace("size = \"1G\"\nbacking = \"hugetlbfs-1g\"", "size = \"1536M\"\nbacking = \"hugetlbfs-1g\""));
    assert_eq!(e.field(), Some("memslot[0].size"));
}

#[test]
fn expectation_errors() {
    let e = err(&GOOD.replace("pages_2m = \">= 1\"", "pages_2m = \">> 1\""));
    assert_eq!(e.field(), Some("expect.pages_2m"));
    assert!(e.to_string().contains("\"<op> <number>\""), "{e}");
    let text = GOOD.replace("pages_2m = \">= 1\"", "pages_2mb = 1");
    let e = err(&text);
    assert_eq!(e.kind, ErrorKind::UnknownField);
    assert_eq!(e.field(), Some("expect.pages_2mb"));
    assert_eq!(e.line(), Some(line_of(&text, "pages_2mb")));
    assert!(e.to_string().contains("\"pages_2m\""), "{e}");
    let e = err(&format!("{GOOD}\n[expect.why_not_huge]\nmisalinged = 0\n"));
    assert_eq!(e.field(), Some("expect.why_not_huge.misalinged"));
    assert!(e.to_string().contains("\"misaligned\""), "{e}");
    let e = err(&format!("{GOOD}\n[[expect.slot]]\nid = 9\npages_2m = 0\n"));
    assert_eq!(e.field(), Some("expect.slot[0].id"));
}

#[test]
fn malformed_toml_names_the_line() {
    let text = GOOD.replace("[policy]", "[policy");
    let e = err(&text);
    assert_eq!(e.kind, ErrorKind::Syntax);
    assert_eq!(e.line(), Some(line_of(&text, "[policy")));
    let msg = e.to_string();
    assert!(msg.starts_with(&format!("bad.toml:{}: TOML syntax error", line_of(&text, "[policy"))), "{msg}");
    assert!(!msg.contains('\n'), "one line: {msg}");
    let e = err(&GOOD.replace("seed = 1", "seed = 1\nseed = 2"));
    assert_eq!(e.kind, ErrorKind::Syntax);
    assert_eq!(e.line(), Some(4));
}

#[test]
fn missing_file_is_an_io_error() {
    let e = ScenarioSource::load("/nonexistent/scenario.toml").unwrap_err();
    assert_eq!(e.kind, ErrorKind::Io);
    assert!(e.to_string().starts_with("/nonexistent/scenario.toml: "), "{e}");
    assert!(std::error::Error::source(&e).is_some());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Deleting a line, truncating the file, or replacing a value never panics.
    #[test]
    fn mangled_input_never_panics(line in 0usize..60, cut in 0usize..900, junk in "[ -~]{0,12}") {
        let lines: Vec<&str> = GOOD.lines().collect();
        let without: String = lines.iter().enumerate().filter(|(i, _)| *i != line % lines.len()).map(|(_, l)| format!("{l}\n")).collect();
        let _ = parse(&without);
        let end = (0..=cut.min(GOOD.len())).rev().find(|&i| GOOD.is_char_boundary(i)).unwrap_or(0);
        let _ = parse(&GOOD[..end]);
        let replaced: String = lines.iter().enumerate().map(|(i, l)| {
            if i == line % lines.len() {
                match l.split_once(" = ") { Some((k, _)) => format!("{k} = {junk}\n"), None => format!("{junk}\n") }
            } else { format!("{l}\n") }
        }).collect();
        if let Err(e) = parse(&replaced) {
            prop_assert!(!e.to_string().is_empty());
        }
        let mut source = ScenarioSource::from_text("bad.toml", GOOD);
        let _ = source.set("policy.recover", &junk);
        let _ = source.set(&junk, "1");
        let _ = source.parse();
    }
}
