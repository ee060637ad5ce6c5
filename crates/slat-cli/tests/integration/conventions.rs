//! CLI conventions (ripgrep, cargo, hyperfine): `--color`, `NO_COLOR`/`CLICOLOR_FORCE`, help
//! and output fitted to the terminal, an ASCII fallback, `check`, `keys`, completions and a man
//! page. End-to-end on the built binary.

use crate::common::*;

const ESC: char = '\u{1b}';

#[test]
fn color_flag_and_environment() {
    // stdout is a pipe: auto means no colour...
    assert!(!slat_env(&["scenarios"], &[]).stdout.contains(ESC));
    // ...unless forced, by the flag or by CLICOLOR_FORCE.
    assert!(slat_env(&["--color", "always", "scenarios"], &[]).stdout.contains(ESC));
    assert!(slat_env(&["scenarios", "--color=always"], &[]).stdout.contains(ESC));
    assert!(slat_env(&["scenarios"], &[("CLICOLOR_FORCE", Some("1"))]).stdout.contains(ESC));
    // NO_COLOR wins over CLICOLOR_FORCE under auto; --color never wins over both.
    assert!(!slat_env(&["scenarios"], &[("CLICOLOR_FORCE", Some("1")), ("NO_COLOR", Some("1"))]).stdout.contains(ESC));
    assert!(!slat_env(&["--color", "never", "scenarios"], &[("CLICOLOR_FORCE", Some("1"))]).stdout.contains(ESC));
    let out = slat_env(&["--color", "sometimes", "scenarios"], &[]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("auto") && out.stderr.contains("never"), "{}", out.stderr);
}

#[test]
fn help_and_output_fit_the_terminal_width() {
    for args in [&["run", "--help"][..], &["compare", "--help"], &["--help"]] {
        let out = slat_env(args, &[("COLUMNS", Some("80"))]);
        assert_eq!(out.code, 0);
        let widest = out.stdout.lines().map(|l| l.chars().count()).max().unwrap();
        assert!(widest <= 80, "{args:?}: {widest} columns:\n{}", out.stdout);
    }
    for args in [&["scenarios"][..], &["keys"]] {
        let out = slat_env(args, &[("COLUMNS", Some("90"))]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        let widest = out.stdout.lines().filter(|l| !l.starts_with('─')).map(|l| l.chars().count()).max().unwrap();
        assert!(widest <= 90, "{args:?}: {widest} columns:\n{}", out.stdout);
    }
}

#[test]
fn ascii_where_the_locale_is_not_utf8() {
    let out = slat_env(&["run", "dax-huge"], &[("LC_ALL", Some("C"))]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.is_ascii(), "{}", out.stdout);
    assert!(out.stdout.contains("----") && out.stdout.contains('#'), "{}", out.stdout);
    let out = slat_env(&["run", "dax-huge"], &[("LC_ALL", Some("en_US.UTF-8"))]);
    assert!(out.stdout.contains('─'));
}

#[test]
fn why_not_huge_bars_are_shares_of_memory() {
    // dax-huge: two reasons of 25% each draw quarter bars, not full ones.
    let out = slat(&["run", "dax-huge"]);
    let bars: Vec<usize> =
        out.stdout.lines().filter(|l| l.contains("25%")).map(|l| l.chars().filter(|&c| c == '█').count()).collect();
    assert_eq!(bars, [4, 4], "{}", out.stdout);
}

#[test]
fn check_validates_without_running() {
    let out = slat(&["check", "default"]);
    assert_ok(&out);
    assert!(out.stdout.starts_with("ok: default (4 phases, 5 events"), "{}", out.stdout);
    assert!(out.stdout.contains("memory: at most about"), "{}", out.stdout);
    // A run of hours is only checked.
    let out = slat(&["check", "--set", "phase[1].accesses=4000000000"]);
    assert_ok(&out);
    let out = slat(&["check", "--set", "policy.recover=inplace"]);
    assert_input_error(&out, "policy.recover = \"inplace\": expected one of \"zap\", \"in-place\"");
}

#[test]
fn keys_lists_every_settable_key_with_type_and_default() {
    let out = slat(&["keys"]);
    assert_ok(&out);
    for (key, default) in [
        ("policy.recover", "\"in-place\""),
        ("host.thp", "\"madvise\""),
        ("vm.vcpus", "1"),
        ("memslot[i].readonly", "false"),
        ("vm.tlb.stlb", "1536 entries, 12-way"),
    ] {
        let line = out.stdout.lines().find(|l| l.split_whitespace().next() == Some(key));
        let line = line.unwrap_or_else(|| panic!("no {key} in:\n{}", out.stdout));
        assert!(line.contains(default), "{line}");
    }
}

#[test]
fn completions_and_man_page() {
    for (shell, needle) in
        [("bash", "_slat()"), ("zsh", "#compdef slat"), ("fish", "complete -c slat"), ("elvish", "slat")]
    {
        let out = slat(&["completions", shell]);
        assert_ok(&out);
        assert!(out.stdout.contains(needle), "{shell}:\n{}", &out.stdout[..out.stdout.len().min(300)]);
        assert!(out.stdout.contains("compare") && out.stdout.contains("max-memory"), "{shell}");
    }
    let out = slat(&["man"]);
    assert_ok(&out);
    assert!(out.stdout.contains(".TH slat 1"), "{}", &out.stdout[..300]);
    for sub in ["run", "compare", "check", "keys"] {
        assert!(out.stdout.contains(sub), "man page lacks {sub}");
    }
}
