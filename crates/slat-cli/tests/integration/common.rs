//! Helpers for the end-to-end tests: run the built `slat` binary and check its outputs.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Stdio};

/// What one `slat` invocation produced.
#[derive(Debug)]
pub struct Out {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Run `slat ARGS` in `dir` with no stdin; stderr is a pipe, so no progress bar is drawn.
pub fn slat_in(dir: &Path, args: &[&str]) -> Out {
    let out = Command::new(env!("CARGO_BIN_EXE_slat"))
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env("LC_ALL", "C.UTF-8")
        .env_remove("COLUMNS")
        .env_remove("CLICOLOR_FORCE")
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::null())
        .output()
        .expect("run the slat binary");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Run `slat ARGS` with extra environment variables (`None`: unset).
pub fn slat_env(args: &[&str], env: &[(&str, Option<&str>)]) -> Out {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_slat"));
    cmd.args(args).env("LC_ALL", "C.UTF-8").env_remove("COLUMNS").stdin(Stdio::null());
    for v in ["NO_COLOR", "CLICOLOR", "CLICOLOR_FORCE", "RUST_BACKTRACE"] {
        cmd.env_remove(v);
    }
    for (k, v) in env {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let out = cmd.output().expect("run the slat binary");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Run `slat ARGS` in the crate directory.
pub fn slat(args: &[&str]) -> Out {
    slat_in(Path::new(env!("CARGO_MANIFEST_DIR")), args)
}

/// Assert a clean exit 0.
pub fn assert_ok(out: &Out) {
    assert_eq!(out.code, 0, "exit code\nstdout:\n{}\nstderr:\n{}", out.stdout, out.stderr);
    assert_no_panic(out);
}

/// Assert stderr shows no panic or backtrace.
pub fn assert_no_panic(out: &Out) {
    for bad in ["panicked", "RUST_BACKTRACE", "stack backtrace"] {
        assert!(!out.stderr.contains(bad), "stderr shows {bad:?}:\n{}", out.stderr);
    }
}

/// Assert a bad-input failure: exit 2, one `error: ...` line on stderr containing `needle`,
/// nothing on stdout, no panic.
pub fn assert_input_error(out: &Out, needle: &str) {
    assert_eq!(out.code, 2, "exit code\nstdout:\n{}\nstderr:\n{}", out.stdout, out.stderr);
    assert_no_panic(out);
    assert!(out.stdout.is_empty(), "stdout should be empty:\n{}", out.stdout);
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line on stderr:\n{}", out.stderr);
    assert!(lines[0].starts_with("error: "), "stderr: {}", out.stderr);
    assert!(lines[0].contains(needle), "stderr should contain {needle:?}:\n{}", out.stderr);
}

/// The embedded scenario `name`'s TOML, via `slat scenarios show`.
pub fn scenario_toml(name: &str) -> String {
    let out = slat(&["scenarios", "show", name]);
    assert_ok(&out);
    out.stdout
}

/// Names of the embedded scenarios, via `slat scenarios`.
pub fn scenario_names() -> Vec<String> {
    let out = slat(&["scenarios"]);
    assert_ok(&out);
    out.stdout
        .lines()
        .skip(2)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// `--set` overrides that divide every phase's accesses and every event's offset of the embedded
/// scenario `name` by `divisor` (events stay inside their phases): a short run for tests whose
/// point is not the scenario itself.
pub fn shrink(name: &str, divisor: u64) -> Vec<String> {
    let doc: toml::Table = scenario_toml(name).parse().expect("embedded scenarios are TOML");
    let mut sets = Vec::new();
    for (key, field) in [("phase", "accesses"), ("event", "at")] {
        let items = doc.get(key).and_then(|v| v.as_array()).cloned().unwrap_or_default();
        for (i, item) in items.iter().enumerate() {
            if let Some(n) = item.get(field).and_then(|v| v.as_integer()) {
                let scaled = if field == "accesses" { (n as u64 / divisor).max(1) } else { n as u64 / divisor };
                sets.push("--set".to_string());
                sets.push(format!("{key}[{i}].{field}={scaled}"));
            }
        }
    }
    sets
}

/// Every `<svg ...>...</svg>` element of an HTML document, as text.
pub fn svg_elements(html: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find("<svg") {
        let end = rest[start..].find("</svg>").expect("an <svg> element is closed") + start + "</svg>".len();
        out.push(&rest[start..end]);
        rest = &rest[end..];
    }
    out
}

/// Parse a whole report as XML (the HTML is XHTML-compatible) and each of its SVG charts on
/// their own; returns the number of charts.
pub fn check_wellformed(html: &str) -> usize {
    let opts = roxmltree::ParsingOptions { allow_dtd: true, ..Default::default() };
    let doc = roxmltree::Document::parse_with_options(html, opts)
        .unwrap_or_else(|e| panic!("report is not well-formed XML: {e}"));
    assert_eq!(doc.root_element().tag_name().name(), "html");
    let svgs = svg_elements(html);
    for svg in &svgs {
        let d = roxmltree::Document::parse(svg).unwrap_or_else(|e| panic!("chart is not well-formed: {e}\n{svg}"));
        let root = d.root_element();
        assert_eq!(root.tag_name().name(), "svg");
        assert!(root.attribute("viewBox").is_some(), "chart without viewBox");
        assert!(
            d.descendants().any(|n| n.has_tag_name(("http://www.w3.org/2000/svg", "title"))),
            "chart without title"
        );
    }
    // Self-contained: no scripts, no external resources.
    assert!(!html.contains("<script"), "report has a script");
    assert!(!html.contains("<link"), "report links a resource");
    assert!(!html.contains(" src="), "report loads a resource");
    assert!(!html.contains("url("), "report's CSS loads a resource");
    svgs.len()
}
