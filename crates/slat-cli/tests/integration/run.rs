//! `slat run` end to end: the default scenario's summary, JSON and HTML report (well-formed, and
//! rendered by headless Chromium), overrides, seeds, failing expectations and trace replay.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::common::*;

/// One full run of the default scenario with every output, shared by the tests below.
struct DefaultRun {
    out: Out,
    json: String,
    html: String,
    html_path: PathBuf,
    _dir: tempfile::TempDir,
}

fn default_run() -> &'static DefaultRun {
    static RUN: OnceLock<DefaultRun> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let out = slat_in(dir.path(), &["run", "--quiet", "--json", "run.json", "--report", "report.html"]);
        let html_path = dir.path().join("report.html");
        let json = std::fs::read_to_string(dir.path().join("run.json")).unwrap_or_default();
        let html = std::fs::read_to_string(&html_path).unwrap_or_default();
        DefaultRun { out, json, html, html_path, _dir: dir }
    })
}

#[test]
fn default_run_summarises_leaves_and_why_not_huge() {
    let r = default_run();
    assert_ok(&r.out);
    let s = &r.out.stdout;
    for needle in [
        "slat · default",
        "format ",
        "seed ",
        "Guest memory by leaf size",
        "4K leaves",
        "2M leaves",
        "1G leaves",
        "peak 4K",
        "whole run",
        "Translation cost by phase",
        "Totals",
        "faults",
        "retries",
        "splits",
        "recoveries",
        "flushes",
        "TLB misses / 1k accesses",
        "walk refs / access",
        "page-table memory",
        "bookkeeping",
        "Why not huge",
        "Expectations",
        "result: PASS",
    ] {
        assert!(s.contains(needle), "summary lacks {needle:?}:\n{s}");
    }
    // The phases of the default scenario appear as rows.
    let toml = scenario_toml("default");
    for line in toml.lines().filter(|l| l.trim_start().starts_with("name = ")).skip(1) {
        let name = line.split('"').nth(1).unwrap();
        assert!(s.contains(name), "phase {name} missing from the summary:\n{s}");
    }
    // No progress bar or notes on stdout, and only file notes (or nothing) on stderr.
    assert!(!s.contains('\r'));
    assert!(r.out.stderr.is_empty(), "--quiet run wrote to stderr:\n{}", r.out.stderr);
}

#[test]
fn json_schema_is_stable() {
    let r = default_run();
    assert_ok(&r.out);
    let v: serde_json::Value = serde_json::from_str(&r.json).expect("run.json is JSON");
    assert_eq!(v["schema"], 1);
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    for k in [
        "schema",
        "scenario",
        "description",
        "seed",
        "format",
        "overrides",
        "samples",
        "events",
        "phases",
        "why_not_huge",
        "totals",
        "expectations",
    ] {
        assert!(keys.contains(&k), "top-level key {k:?} missing: {keys:?}");
    }
    assert_eq!(v["scenario"], "default");
    let samples = v["samples"].as_array().unwrap();
    assert!(samples.len() >= 2, "too few samples");
    for k in [
        "access",
        "leaves",
        "faults",
        "retries",
        "splits",
        "recoveries",
        "flushes",
        "tlb_misses_per_1k",
        "walk_refs_per_access",
        "table_pages",
    ] {
        assert!(samples[0].get(k).is_some(), "sample key {k:?} missing");
    }
    for k in ["pages_4k", "pages_2m", "pages_1g"] {
        assert!(samples[0]["leaves"].get(k).is_some(), "leaves key {k:?} missing");
    }
    for k in [
        "accesses",
        "mmu",
        "hw",
        "host",
        "tlb_misses_per_1k",
        "walk_refs_per_access",
        "table_bytes",
        "bookkeeping_bytes",
        "isolation_violations",
        "audits",
    ] {
        assert!(v["totals"].get(k).is_some(), "totals key {k:?} missing");
    }
    assert!(v["expectations"].as_array().unwrap().iter().all(|e| e["ok"] == true));
}

#[test]
fn report_is_wellformed_xhtml_with_every_chart() {
    let r = default_run();
    assert_ok(&r.out);
    let charts = check_wellformed(&r.html);
    assert_eq!(
        charts, 8,
        "leaves, 4K leaves, page-table memory, TLB misses, walk refs, faults, splits/recoveries/flushes, why-not-huge"
    );
    for needle in [
        "<h1>default",
        "Guest memory by leaf size",
        "4 KiB leaves",
        "2 MiB leaves",
        "1 GiB leaves",
        "guest accesses",
        "TLB misses per 1000 accesses",
        "walk refs / access",
        "Faults and flushes",
        "Why not huge",
        "Phases",
        "Expectations",
        "Final counters",
    ] {
        assert!(r.html.contains(needle), "report lacks {needle:?}");
    }
    // Events are drawn on the leaf chart (the default scenario has events).
    let first_svg = svg_elements(&r.html)[0];
    assert!(first_svg.contains(r#"class="events""#), "no event markers on the leaf chart");
}

#[test]
fn report_tells_the_story() {
    let r = default_run();
    assert_ok(&r.out);
    // Every time chart numbers its event markers (badges 1..5), not only the leaf chart.
    let time_charts: Vec<&str> =
        svg_elements(&r.html).into_iter().filter(|s| s.contains(r#"class="events""#)).collect();
    assert_eq!(time_charts.len(), 7, "seven time charts carry the events");
    for svg in &time_charts {
        for n in 1..=5 {
            assert!(
                svg.contains(&format!(">{n}</text>")) || svg.contains(&format!(">{n} ")),
                "event {n} is not numbered"
            );
        }
    }
    // Headline cards say end and peak: page-table memory peaked during migrate (4 MiB, not
    // the 16 KiB left at the end), 4K leaves peaked at 524,288 while the end shows 0.
    assert!(r.html.contains("page-table memory, end"), "cards do not say end");
    assert!(r.html.contains("peak 524,288 during migrate"), "4K leaves card lacks the peak");
    let peak = r.html.split("page-table memory, end").nth(1).unwrap();
    assert!(peak[..400].contains("during migrate"), "page-table card lacks the peak: {}", &peak[..400]);
    // The 4K leaves get their own axis.
    assert!(r.html.contains("Guest memory mapped by 4 KiB leaves") && r.html.contains("Stage-2 page-table memory"));
    // Why-not-huge over time: the default scenario is about dirty logging, which only the
    // per-phase view shows (at the end every leaf is 2M again).
    let per_phase = r.html.split("<h3>Per phase</h3>").nth(1).expect("a per-phase why-not-huge table");
    assert!(per_phase[..per_phase.find("</table>").unwrap()].contains("dirty-logging"));
    let migrate = r.out.stdout.lines().find(|l| l.trim_start().starts_with("migrate") && l.contains("85,132"));
    assert!(migrate.is_some(), "the terminal lacks the per-phase dirty-logging decisions:\n{}", r.out.stdout);
    // Provenance: the command line and the host.
    assert!(r.html.contains("<dt>command</dt><dd>slat run --quiet --json run.json --report report.html</dd>"));
    assert!(r.html.contains("<dt>host</dt><dd>"));
}

fn find_chromium() -> Option<PathBuf> {
    for c in ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"] {
        if Path::new(c).exists() {
            return Some(PathBuf::from(c));
        }
    }
    None
}

#[test]
fn report_renders_in_headless_chromium() {
    let r = default_run();
    assert_ok(&r.out);
    let Some(chromium) = find_chromium() else {
        eprintln!("SKIPPED report_renders_in_headless_chromium: chromium is not installed (apt-get install chromium; .ci/run installs it)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let png_path = dir.path().join("report.png");
    let profile = dir.path().join("profile");
    let mut child = Command::new(&chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", png_path.display()))
        .arg("--window-size=1280,2000")
        .arg(format!("file://{}", r.html_path.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish the screenshot within 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let file = std::fs::File::open(&png_path).expect("chromium wrote a screenshot");
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!((info.width, info.height), (1280, 2000), "screenshot size");
    let channels = info.color_type.samples();
    assert!(channels >= 3, "unexpected colour type {:?}", info.color_type);
    let pixels = &buf[..info.buffer_size()];
    let mut colours = std::collections::HashSet::new();
    let mut non_white = 0usize;
    let total = (info.width * info.height) as usize;
    for px in pixels.chunks_exact(channels) {
        let rgb = (px[0], px[1], px[2]);
        colours.insert(rgb);
        if rgb.0 < 240 || rgb.1 < 240 || rgb.2 < 240 {
            non_white += 1;
        }
    }
    let frac = non_white as f64 / total as f64;
    assert!(colours.len() > 16, "only {} distinct colours: blank page?", colours.len());
    assert!(frac > 0.03, "only {:.2}% non-white pixels: blank page?", frac * 100.0);
    // The leaf-size palette is on screen (the stacked area's 2 MiB band, #4c78a8 at 78% on white).
    let blue = |&(r, g, b): &(u8, u8, u8)| i32::from(b) > i32::from(r) + 40 && i32::from(b) > i32::from(g) + 10;
    assert!(colours.iter().any(blue), "no blue chart fill on screen");
}

#[test]
fn json_to_stdout_is_pure_json() {
    let mut args = vec!["run", "--quiet", "--json", "-"];
    let small = shrink("default", 256);
    args.extend(small.iter().map(String::as_str));
    let out = slat(&args);
    assert!(out.code == 0 || out.code == 1, "exit {}: {}", out.code, out.stderr);
    assert_no_panic(&out);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("stdout is only JSON");
    assert_eq!(v["schema"], 1);
    // The overrides are reported.
    let overrides = v["overrides"].as_array().unwrap();
    assert!(overrides.iter().any(|o| o.as_str().unwrap().starts_with("phase[0].accesses=")), "{overrides:?}");
    // With the summary off, failed expectations go to stderr.
    if out.code == 1 {
        assert!(out.stderr.contains("FAIL: expectation failed"), "{}", out.stderr);
    }
}

#[test]
fn seed_and_overrides_are_shown() {
    let mut args = vec!["run", "--quiet", "--seed", "42", "--set", "policy.recover=zap"];
    let small = shrink("default", 256);
    args.extend(small.iter().map(String::as_str));
    let out = slat(&args);
    assert!(out.code == 0 || out.code == 1, "exit {}: {}", out.code, out.stderr);
    assert_no_panic(&out);
    assert!(out.stdout.contains("seed 42"), "{}", out.stdout);
    assert!(out.stdout.contains("policy.recover=zap"), "{}", out.stdout);
}

#[test]
fn failed_expectation_exits_1_and_says_which() {
    let mut args = vec!["run", "--quiet", "--set", "expect.pages_4k=>= 999999999999"];
    let small = shrink("default", 256);
    args.extend(small.iter().map(String::as_str));
    let out = slat(&args);
    assert_eq!(out.code, 1, "stdout:\n{}\nstderr:\n{}", out.stdout, out.stderr);
    assert_no_panic(&out);
    assert!(out.stdout.contains("result: FAIL"), "{}", out.stdout);
    let line =
        out.stdout.lines().find(|l| l.contains("expectation failed:")).unwrap_or_else(|| panic!("{}", out.stdout));
    assert!(line.contains("pages_4k") && line.contains("999999999999"), "{line}");
}

#[test]
fn trace_replay_runs_on_the_default_vm() {
    let dir = tempfile::tempdir().unwrap();
    let mut trace = String::from("==4242== Lackey, an example Valgrind tool\n");
    for i in 0..3000u64 {
        trace.push_str(&format!("I  {:08x},3\n", 0x0401_0000 + (i % 64) * 4));
        trace.push_str(&format!(" L {:08x},8\n", 0x0422_0000 + i * 4096));
        if i % 3 == 0 {
            trace.push_str(&format!(" M {:08x},4\n", 0x0800_0000 + (i % 97) * 64));
        }
    }
    std::fs::write(dir.path().join("prog.lackey"), trace).unwrap();
    let out = slat_in(dir.path(), &["run", "--quiet", "--trace", "prog.lackey", "--json", "run.json"]);
    assert_ok(&out);
    assert!(out.stdout.contains("prog.lackey"), "{}", out.stdout);
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("run.json")).unwrap()).unwrap();
    let phases = v["phases"].as_array().unwrap();
    assert_eq!(phases.len(), 1, "{phases:?}");
    assert_eq!(phases[0]["name"], "trace");
    // 3000 fetches, 3000 loads, 1000 modifies (a load and a store each).
    assert_eq!(phases[0]["accesses"], 8000);
    assert_eq!(v["samples"].as_array().unwrap().last().unwrap()["access"], 8000);
}
