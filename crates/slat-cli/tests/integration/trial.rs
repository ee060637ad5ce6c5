//! End-to-end tests of the built `slat` binary on the bad inputs of the newcomer trial
//! (`research/newcomer-trial.md`): each failed before its fix.

use crate::common::*;

/// A small scenario: 256 MiB guest on one anonymous THP slot, with `extra` TOML appended.
fn small(extra: &str) -> String {
    format!(
        r#"
name = "small"
description = "trial"
seed = 1

[host]
memory = "2G"
thp = "always"

[vm]
vcpus = 1

[[vm.guest_pages]]
gva = 0
len = "256M"
size = "2M"

[[memslot]]
id = 0
gpa = 0
size = "256M"
backing = "anonymous"
{extra}
"#
    )
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

/// The JSON report of `slat run FILE --json -`.
fn run_json(dir: &std::path::Path, file: &str, extra: &[&str]) -> (Out, serde_json::Value) {
    let mut args = vec!["run", file, "--json", "-", "-q"];
    args.extend_from_slice(extra);
    let out = slat_in(dir, &args);
    let v = serde_json::from_str(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out, v)
}

/// A final counter of the JSON report (`totals.mmu`, `totals.hw` or `totals.host`).
fn total(v: &serde_json::Value, key: &str) -> u64 {
    for group in ["mmu", "hw", "host"] {
        if let Some(rows) = v["totals"][group].as_array() {
            if let Some(row) = rows.iter().find(|r| r[0] == key) {
                return row[1].as_u64().unwrap();
            }
        }
    }
    panic!("no counter {key} in {}", v["totals"])
}

// Item 1: accesses that exit to the VMM are not retries of one fault.

#[test]
fn writes_to_a_readonly_slot_exit_instead_of_livelocking() {
    let dir = tempfile::tempdir().unwrap();
    // A second, read-only slot mapped by the guest and written every time.
    let toml = small(
        r#"
[[vm.guest_pages]]
gva = "1G"
gpa = "1G"
len = "64M"
size = "4K"

[[memslot]]
id = 1
gpa = "1G"
size = "64M"
backing = "anonymous"
readonly = true

[[phase]]
name = "write-rom"
kind = "uniform"
gva = "1G"
len = "64M"
accesses = 5000
write_ratio = 1.0
"#,
    );
    let f = write(dir.path(), "rom.toml", &toml);
    // Two samples: the whole phase is one batch, so 65 exits come in a row.
    let (out, v) = run_json(dir.path(), &f, &["--samples", "2"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(total(&v, "readonly_exits") >= 4000, "{}", v["totals"]);
}

#[test]
fn touching_memory_without_a_memslot_exits_instead_of_livelocking() {
    let dir = tempfile::tempdir().unwrap();
    // The guest maps gva 1G onto gpa 1G, where no memslot is: every access is an MMIO exit.
    let toml = small(
        r#"
[[vm.guest_pages]]
gva = "1G"
gpa = "1G"
len = "2M"
size = "2M"

[[phase]]
name = "mmio"
kind = "sequential"
gva = "1G"
len = "2M"
step = "4K"
accesses = 512
"#,
    );
    let f = write(dir.path(), "mmio.toml", &toml);
    let (out, v) = run_json(dir.path(), &f, &["--samples", "2"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(total(&v, "mmio_exits"), 512, "{}", v["totals"]);
}

#[test]
fn harvest_after_a_logged_slot_moved_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let toml = small(
        r#"
[[vm.guest_pages]]
gva = "1G"
gpa = "1G"
len = "64M"
size = "4K"

[[memslot]]
id = 1
gpa = "1G"
size = "64M"
backing = "anonymous"

[[phase]]
name = "write"
kind = "sequential"
gva = "1G"
len = "64M"
step = "4K"
accesses = 1000
write_ratio = 1.0

[[phase]]
name = "after"
kind = "sequential"
gva = 0
len = "1M"
step = "4K"
accesses = 10

[[event]]
phase = "write"
at = 0
kind = "dirty-log-on"
slot = 1

[[event]]
phase = "after"
at = 0
kind = "memslot-move"
slot = 1
gpa = "2G"

[[event]]
phase = "after"
at = 5
kind = "harvest"
slot = 1
"#,
    );
    let f = write(dir.path(), "move.toml", &toml);
    let (out, v) = run_json(dir.path(), &f, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(total(&v, "dirty_lost"), 0, "{}", v["totals"]);
}

// Item 2: the last sample is not taken over an empty interval.

#[test]
fn rate_series_do_not_end_in_a_false_zero() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["fragmented-khugepaged", "balloon"] {
        let (out, v) = run_json(dir.path(), name, &[]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        let samples = v["samples"].as_array().unwrap();
        let n = samples.len();
        let rate = |i: usize| samples[i]["tlb_misses_per_1k"].as_f64().unwrap();
        assert!(rate(n - 2) > 0.0, "{name}: {}", samples[n - 2]);
        assert!(rate(n - 1) > 0.0, "{name}: the last sample ends in 0: {}", samples[n - 1]);
        assert!(samples[n - 1]["walk_refs_per_access"].as_f64().unwrap() > 0.0, "{name}");
    }
}

// Item 3: resources are estimated up front; a scenario that would not fit fails at once with
// one line naming the field, the estimate and the limit.

/// Run `args` and assert a prompt one-line error containing every needle.
fn assert_prompt_error(dir: &std::path::Path, args: &[&str], needles: &[&str]) {
    let t = std::time::Instant::now();
    let out = slat_in(dir, args);
    assert_input_error(&out, needles[0]);
    for n in needles {
        assert!(out.stderr.contains(n), "stderr should contain {n:?}:\n{}", out.stderr);
    }
    assert!(t.elapsed().as_secs() < 20, "took {:?}: {}", t.elapsed(), out.stderr);
}

#[test]
fn a_huge_tlb_is_refused_before_it_is_allocated() {
    let dir = tempfile::tempdir().unwrap();
    assert_prompt_error(
        dir.path(),
        &["run", "--set", "vm.tlb.stlb={ entries = 2147483648, ways = 1 }", "--max-memory", "4G"],
        &["vm.tlb.stlb.entries", "the TLBs would need", "the limit is 4 GiB", "--max-memory"],
    );
    // Per-vCPU TLBs multiply: both values valid alone.
    assert_prompt_error(
        dir.path(),
        &[
            "run",
            "--set",
            "vm.vcpus=1024",
            "--set",
            "vm.tlb.stlb={ entries = 1048576, ways = 16 }",
            "--max-memory",
            "8G",
        ],
        &["vm.tlb.stlb.entries", "1,024 vCPUs", "the limit is 8 GiB"],
    );
}

#[test]
fn a_guest_mapped_with_4k_pages_beyond_memory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // 1 TiB with THP off, every 4K page touched: hundreds of GB in the simulator.
    let toml = r#"
name = "big"
description = "1 TiB touched with 4K pages"
seed = 1
[host]
memory = "2T"
thp = "never"
[[memslot]]
id = 0
gpa = 0
size = "1T"
backing = "anonymous"
[[phase]]
name = "touch"
kind = "sequential"
gva = 0
len = "1T"
step = "4K"
accesses = 268435456
"#;
    let f = write(dir.path(), "big.toml", toml);
    assert_prompt_error(
        dir.path(),
        &["run", &f, "--max-memory", "8G"],
        &["big.toml:", "memslot[0].size", "4 KiB pages", "the limit is 8 GiB", "--max-memory"],
    );
    // A 1 TiB guest that touches 1 GiB fits.
    let small = toml.replace("accesses = 268435456", "accesses = 262144");
    let f = write(dir.path(), "ok.toml", &small);
    let out = slat_in(dir.path(), &["run", &f, "-q", "--max-memory", "1G"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
}

#[test]
fn too_many_accesses_or_events_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    assert_prompt_error(
        dir.path(),
        &["run", "--set", "phase[1].accesses=9223372036854775807"],
        &["phase[1].accesses", "years", "the limit is 4,294,967,296", "--max-accesses"],
    );
    let mut toml = small("[[phase]]\nname = \"run\"\nkind = \"uniform\"\ngva = 0\nlen = \"256M\"\naccesses = 100\n");
    for _ in 0..10_001 {
        toml.push_str("[[event]]\nphase = \"run\"\nat = 1\nkind = \"harvest\"\n");
    }
    let f = write(dir.path(), "events.toml", &toml);
    assert_prompt_error(dir.path(), &["run", &f], &["event[10000]", "10,001 events", "--max-events"]);
}

#[test]
fn dev_zero_and_newline_free_traces_fail_fast() {
    let dir = tempfile::tempdir().unwrap();
    assert_prompt_error(dir.path(), &["run", "/dev/zero"], &["cannot read /dev/zero", "larger than 64 MiB"]);
    assert_prompt_error(dir.path(), &["run", "--trace", "/dev/zero"], &["/dev/zero:1", "longer than 4096 bytes"]);
    let sparse = dir.path().join("sparse.lackey");
    std::fs::File::create(&sparse).unwrap().set_len(1 << 30).unwrap();
    assert_prompt_error(
        dir.path(),
        &["run", "--trace", "sparse.lackey"],
        &["sparse.lackey:1", "longer than 4096 bytes"],
    );
}

// Item 4: validation is linear in the number of events.

#[test]
fn validation_time_grows_linearly_with_events() {
    let dir = tempfile::tempdir().unwrap();
    let base = small("[[phase]]\nname = \"run\"\nkind = \"uniform\"\ngva = 0\nlen = \"256M\"\naccesses = 100\n");
    let time = |n: usize| {
        let mut toml = base.clone();
        for _ in 0..n {
            toml.push_str("[[event]]\nphase = \"run\"\nat = 1\nkind = \"harvest\"\n");
        }
        // The last event is wrong: validation reads every event, then fails.
        toml.push_str("[[event]]\nphase = \"nope\"\nat = 1\nkind = \"harvest\"\n");
        let f = write(dir.path(), &format!("ev{n}.toml"), &toml);
        let t = std::time::Instant::now();
        let out = slat_in(dir.path(), &["run", &f, "--max-events", "1000000"]);
        assert_input_error(&out, &format!("event[{n}].phase"));
        t.elapsed().as_secs_f64()
    };
    let small_run = time(8_000);
    let large_run = time(32_000);
    // Quadratic validation takes 16 times as long for 4 times the events; linear about 4.
    assert!(large_run < 8.0 * small_run.max(0.05), "8k events {small_run:.2} s, 32k events {large_run:.2} s");
}

// Item 5: outputs never overwrite inputs or each other, and are checked before the run.

#[test]
fn outputs_never_overwrite_an_input_or_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let victim = write(dir.path(), "victim.toml", &scenario_toml("default"));
    let before = std::fs::read_to_string(&victim).unwrap();
    let out = slat_in(dir.path(), &["run", "victim.toml", "--report", "./victim.toml", "-q"]);
    assert_input_error(&out, "--report ./victim.toml: that is an input of this run");
    let out = slat_in(dir.path(), &["run", "victim.toml", "--json", &victim, "-q"]);
    assert_input_error(&out, "that is an input of this run");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), before, "the scenario was overwritten");

    let out = slat_in(dir.path(), &["run", "--json", "same.out", "--report", "same.out", "-q"]);
    assert_input_error(&out, "--report same.out: --json writes to the same file");

    std::fs::write(dir.path().join("t.lackey"), "I  04010173,3\n L 04222cac,8\n").unwrap();
    let out = slat_in(dir.path(), &["run", "--trace", "t.lackey", "--report", "t.lackey", "-q"]);
    assert_input_error(&out, "that is an input of this run (t.lackey)");
    assert!(std::fs::read_to_string(dir.path().join("t.lackey")).unwrap().starts_with("I  "));
}

#[test]
fn unwritable_outputs_fail_before_the_run() {
    let dir = tempfile::tempdir().unwrap();
    for target in ["/proc/slat-report.html", "/sys/slat.json"] {
        let t = std::time::Instant::now();
        let option = if target.ends_with(".html") { "--report" } else { "--json" };
        // A run of minutes, if it started.
        let out = slat_in(dir.path(), &["run", "--set", "phase[1].accesses=2000000000", option, target, "-q"]);
        assert_input_error(&out, &format!("cannot write {target}"));
        assert!(t.elapsed().as_secs() < 10, "the run started before the output was checked");
    }
}

#[test]
fn outputs_are_complete_files_and_leave_no_temporaries() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("r.json"), "old").unwrap();
    let out = slat_in(dir.path(), &["run", "dax-huge", "--json", "r.json", "--report", "r.html", "-q"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("r.json")).unwrap()).unwrap();
    assert_eq!(v["scenario"], "dax-huge");
    let mut names: Vec<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["r.html", "r.json"]);
    // Special files are written in place, never replaced.
    let out = slat_in(dir.path(), &["run", "dax-huge", "--json", "/dev/null", "-q"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!std::fs::metadata("/dev/null").unwrap().file_type().is_file());
}

// Item 6: compare refuses settings that would make its variants identical; quoted values may
// hold commas.

#[test]
fn compare_refuses_a_seed_or_set_that_overrides_the_varied_key() {
    let out = slat(&["compare", "dax-huge", "--vary", "seed=1,2", "--seed", "5"]);
    assert_input_error(&out, "--seed 5 conflicts with --vary seed=1,2");
    let out = slat(&["compare", "dax-huge", "--set", "policy.recover=zap", "--vary", "policy.recover=zap,in-place"]);
    assert_input_error(&out, "--set policy.recover=zap conflicts with --vary policy.recover");
    let out = slat(&["compare", "dax-huge", "--set", "vm.tlb.stlb={ entries = 64, ways = 4 }", "--vary", "vm.tlb=x,y"]);
    assert_input_error(&out, "conflicts with --vary vm.tlb");
}

#[test]
fn compare_values_with_commas_inside_quotes_or_braces() {
    let out = slat(&["compare", "dax-huge", "--vary", r#"description="a,b",c"#, "--json", "-", "-q"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let variants = v["variants"].as_array().unwrap();
    assert_eq!(variants.len(), 2, "{}", v["variants"]);
    assert_eq!(variants[0]["report"]["description"], "a,b");
    assert_eq!(variants[1]["report"]["description"], "c");
    let out = slat(&[
        "compare",
        "dax-huge",
        "--vary",
        "vm.tlb.stlb={ entries = 64, ways = 4 },{ entries = 128, ways = 4 }",
        "--json",
        "-",
        "-q",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["variants"].as_array().unwrap().len(), 2);
}

// Item 7: traces from pipes are read once, streamed.

/// Run `slat ARGS` with `input` on stdin (a pipe).
fn slat_piped(args: &[&str], input: &[u8]) -> Out {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_slat"))
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn traces_stream_from_a_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let mut trace = String::from("==1== Lackey\n");
    for i in 0..30_000u64 {
        trace.push_str(&format!("I  {:08x},3\n L {:08x},8\n M {:08x},4\n", 0x400000 + i * 16, i * 4096, i * 64));
    }
    let f = write(dir.path(), "t.lackey", &trace);
    let out = slat_in(dir.path(), &["run", "--trace", &f, "--json", "-", "-q"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let from_file: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let accesses = from_file["totals"]["accesses"].as_u64().unwrap();
    assert_eq!(accesses, 120_000);
    for arg in ["-", "/dev/stdin"] {
        let out = slat_piped(&["run", "--trace", arg, "--json", "-", "-q"], trace.as_bytes());
        assert_eq!(out.code, 0, "--trace {arg}: {}", out.stderr);
        let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(v["totals"]["accesses"], accesses, "--trace {arg}");
        assert_eq!(v["phases"][0]["accesses"], 120_000, "--trace {arg}");
        let samples = v["samples"].as_array().unwrap();
        assert!((100..=400).contains(&samples.len()), "{} samples", samples.len());
        assert_eq!(samples.last().unwrap()["access"], 120_000);
        assert_eq!(v["totals"]["tlb_misses_per_1k"], from_file["totals"]["tlb_misses_per_1k"]);
    }
    let out = slat_piped(&["run", "--trace", "-", "-q"], b"==1== nothing\n");
    assert_input_error(&out, "the trace holds no accesses");
}

// Item 8: errors found before or during a run name file:line and the key to blame, and say
// what is wrong without contradicting themselves.

#[test]
fn a_slot_too_small_for_the_guest_tables_names_the_key_and_the_rule() {
    let dir = tempfile::tempdir().unwrap();
    let toml = r#"name = "tiny"
description = "one 2 MiB memslot"
seed = 1
[host]
memory = "1G"
[[memslot]]
id = 0
gpa = 0
size = "2M"
backing = "anonymous"
[[phase]]
name = "run"
kind = "uniform"
gva = 0
len = "2M"
accesses = 1
"#;
    let f = write(dir.path(), "tiny.toml", toml);
    let out = slat_in(dir.path(), &["run", &f]);
    assert_input_error(&out, "tiny.toml:9: memslot[0].size = \"2M\": the guest page tables take the top 2M");
    assert!(out.stderr.contains("at least"), "{}", out.stderr);
}

#[test]
fn an_empty_hugetlb_pool_is_found_before_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let toml = small("").replace("backing = \"anonymous\"", "backing = \"hugetlbfs-2m\"")
        + "[[phase]]\nname = \"run\"\nkind = \"uniform\"\ngva = 0\nlen = \"256M\"\naccesses = 100\n";
    let f = write(dir.path(), "pool.toml", &toml);
    let out = slat_in(dir.path(), &["run", &f]);
    assert_input_error(&out, "pool.toml:");
    assert!(out.stderr.contains("memslot[0].size"), "{}", out.stderr);
    assert!(out.stderr.contains("need 128 pages of 2M but the pool host.hugetlb_2m has 0"), "{}", out.stderr);
}

#[test]
fn host_out_of_memory_during_the_run_names_the_memslot_line() {
    let dir = tempfile::tempdir().unwrap();
    let toml = small("[[phase]]\nname = \"run\"\nkind = \"sequential\"\ngva = 0\nlen = \"256M\"\nstep = \"4K\"\naccesses = 65536\nwrite_ratio = 1.0\n")
        .replace("memory = \"2G\"", "memory = \"64M\"")
        .replace("thp = \"always\"", "thp = \"never\"");
    let f = write(dir.path(), "oom.toml", &toml);
    let out = slat_in(dir.path(), &["run", &f]);
    assert_input_error(&out, "oom.toml:");
    let line = out.stderr.lines().next().unwrap();
    assert!(line.contains(": memslot[0]: memslot 0 (anonymous) at gpa"), "{line}");
    assert!(line.contains("host out of memory; the OOM killer would take the VMM; grow host.memory"), "{line}");
}

// The report: honest axes for empty and tiny series, readable phase names, one number format.

#[test]
fn report_axes_are_honest_for_tiny_and_empty_series() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "one.toml",
        &small("[[phase]]\nname = \"once\"\nkind = \"uniform\"\ngva = 0\nlen = \"256M\"\naccesses = 1\n"),
    );
    let out = slat_in(dir.path(), &["run", &f, "--report", "one.html", "-q"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let html = std::fs::read_to_string(dir.path().join("one.html")).unwrap();
    for svg in svg_elements(&html) {
        // No fractional ticks of accesses, counts or bytes ("0.2", "0.2 B").
        assert!(!svg.contains(">0.2<") && !svg.contains(">0.2 "), "fractional tick in:\n{svg}");
    }
    assert!(html.contains("all zero during the run"), "an all-zero chart has no note");
    // The last sample of a rate series is the real one (1 access, 1 miss: 1,000 per 1k).
    let out = slat_in(dir.path(), &["run", &f, "--json", "-", "-q"]);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["samples"].as_array().unwrap().last().unwrap()["tlb_misses_per_1k"], 1000.0);
}

#[test]
fn phase_names_sit_under_the_axis_in_dark_ink() {
    let dir = tempfile::tempdir().unwrap();
    let out = slat_in(dir.path(), &["run", "--report", "r.html", "-q"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let html = std::fs::read_to_string(dir.path().join("r.html")).unwrap();
    let leaves = svg_elements(&html)[0];
    let phases = &leaves[leaves.find(r#"<g class="phases">"#).unwrap()..];
    let phases = &phases[..phases.find("</g></g>").unwrap()];
    for name in ["boot", "serve", "migrate", "recovered"] {
        assert!(phases.contains(&format!(r##"fill="#39414d">{name}</text>"##)), "phase {name} label:\n{phases}");
    }
}

#[test]
fn compare_with_32_variants_keeps_every_legend_entry() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "c.toml",
        &small("[[phase]]\nname = \"run\"\nkind = \"uniform\"\ngva = 0\nlen = \"256M\"\naccesses = 2000\n"),
    );
    let seeds: Vec<String> = (1..=32).map(|i| i.to_string()).collect();
    let vary = format!("seed={}", seeds.join(","));
    let out = slat_in(dir.path(), &["compare", &f, "--vary", &vary, "--report", "c.html", "-q"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let html = std::fs::read_to_string(dir.path().join("c.html")).unwrap();
    assert!(html.contains(r#"<div class="scroll"><table class="compare">"#));
    let charts: Vec<&str> = svg_elements(&html).into_iter().filter(|s| s.contains(r#"class="legend""#)).collect();
    assert!(!charts.is_empty());
    for svg in charts {
        let legend = &svg[svg.find(r#"class="legend""#).unwrap()..];
        let legend = &legend[..legend.find("</g>").unwrap()];
        for s in &seeds {
            assert!(legend.contains(&format!(">{s}</text>")), "legend lacks variant {s}");
        }
        // Every entry lies inside the chart's width.
        let width: f64 = svg.split("width=\"").nth(1).unwrap().split('"').next().unwrap().parse().unwrap();
        for x in legend.split("<text x=\"").skip(1).map(|t| t.split('"').next().unwrap().parse::<f64>().unwrap()) {
            assert!(x < width - 20.0, "legend entry at x={x} in a {width}-wide chart");
        }
    }
}

#[test]
fn after_phase_expectations_name_their_phase() {
    let out = slat(&["run", "-q"]);
    assert_ok(&out);
    assert!(out.stdout.contains("expect.after_phase(migrate).pages_2m < 100"), "{}", out.stdout);
    assert!(!out.stdout.contains("after_phase[1]"), "{}", out.stdout);
}
