//! Bad input of every class: one `error: ...` line on stderr, exit code 2, no panic, nothing on
//! stdout. None of these reach the simulation.

use crate::common::*;

/// The embedded default scenario with `from` replaced by `to`, written to `dir/default.toml`;
/// returns the 1-based line of the change.
fn edited_default(dir: &std::path::Path, from: &str, to: &str) -> usize {
    let toml = scenario_toml("default");
    let line =
        toml.lines().position(|l| l.contains(from)).unwrap_or_else(|| panic!("default.toml has no {from:?}")) + 1;
    std::fs::write(dir.join("default.toml"), toml.replacen(from, to, 1)).unwrap();
    line
}

#[test]
fn missing_scenario_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = slat_in(dir.path(), &["run", "nope.toml"]);
    assert_input_error(&out, "cannot read nope.toml: No such file or directory");
}

#[test]
fn malformed_toml_names_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let line = edited_default(dir.path(), "[policy]", "[policy");
    let out = slat_in(dir.path(), &["run", "default.toml"]);
    assert_input_error(&out, &format!("default.toml:{line}:"));
}

#[test]
fn bad_enum_value_lists_accepted_values() {
    let dir = tempfile::tempdir().unwrap();
    let line = edited_default(dir.path(), r#"recover = "in-place""#, r#"recover = "inplace""#);
    let out = slat_in(dir.path(), &["run", "default.toml"]);
    assert_input_error(
        &out,
        &format!(r#"default.toml:{line}: policy.recover = "inplace": expected one of "zap", "in-place""#),
    );
}

#[test]
fn bad_enum_value_in_set() {
    let out = slat(&["run", "--set", "policy.recover=inplace"]);
    assert_input_error(&out, r#"expected one of "zap", "in-place""#);
    assert!(out.stderr.contains("--set policy.recover=inplace"), "{}", out.stderr);
}

#[test]
fn bad_value_type_in_set() {
    let out = slat(&["run", "--set", "vm.vcpus=many"]);
    assert_input_error(&out, "vm.vcpus");
}

#[test]
fn unknown_set_key() {
    let out = slat(&["run", "--set", "policy.recovr=zap"]);
    assert_input_error(&out, "policy.recovr");
}

#[test]
fn set_without_value() {
    let out = slat(&["run", "--set", "policy.recover"]);
    assert_input_error(&out, r#"--set "policy.recover": expected key=value"#);
}

#[test]
fn bad_vary_spec() {
    let out = slat(&["compare", "default", "--vary", "policy.recover"]);
    assert_input_error(&out, r#"--vary "policy.recover": no '='"#);
    let out = slat(&["compare", "default", "--vary", "policy.recover=zap,,in-place"]);
    assert_input_error(&out, "empty value");
    let out = slat(&["compare", "default", "--vary", "policy.recover=zap", "--vary", "policy.recover=in-place"]);
    assert_input_error(&out, "varied twice");
}

#[test]
fn bad_vary_value_says_vary() {
    let out = slat(&["compare", "default", "--vary", "policy.recover=zap,inplace"]);
    assert_input_error(&out, r#"(--vary policy.recover=inplace)"#);
    assert!(out.stderr.contains(r#"expected one of "zap", "in-place""#), "{}", out.stderr);
    let out = slat(&["compare", "default", "--vary", "policy.recovr=zap,in-place"]);
    assert_input_error(&out, "policy.recovr");
}

#[test]
fn missing_trace() {
    let dir = tempfile::tempdir().unwrap();
    let out = slat_in(dir.path(), &["run", "--trace", "trace.out"]);
    assert_input_error(&out, "cannot read trace.out: No such file or directory");
}

#[test]
fn malformed_trace_names_the_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("t.lackey"), "==1== Lackey\nI  04010173,3\nX oops\n").unwrap();
    let out = slat_in(dir.path(), &["run", "--trace", "t.lackey"]);
    assert_input_error(&out, "t.lackey:3: malformed lackey line");
}

#[test]
fn unknown_scenario_name_lists_known_names() {
    let out = slat(&["run", "no-such-scenario"]);
    assert_input_error(&out, r#"unknown scenario "no-such-scenario"; embedded scenarios: default"#);
    let out = slat(&["scenarios", "show", "no-such-scenario"]);
    assert_input_error(&out, r#"unknown scenario "no-such-scenario"; embedded scenarios: default"#);
    let out = slat(&["compare", "no-such-scenario", "--vary", "policy.recover=zap,in-place"]);
    assert_input_error(&out, "unknown scenario");
}

#[test]
fn unwritable_output() {
    let out = slat(&["run", "--report", "/nonexistent-dir/r.html"]);
    assert_input_error(&out, "cannot write /nonexistent-dir/r.html: no directory /nonexistent-dir");
    let out = slat(&["run", "--json", "/nonexistent-dir/r.json"]);
    assert_input_error(&out, "cannot write /nonexistent-dir/r.json");
}

#[test]
fn bad_arguments_exit_2() {
    for args in [&["run", "--seed", "minus-one"][..], &["frobnicate"][..], &["compare", "default"][..]] {
        let out = slat(args);
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        assert_no_panic(&out);
        assert!(out.stderr.starts_with("error: "), "{args:?}: {}", out.stderr);
    }
}
