//! `slat scenarios`, `slat scenarios show`, and every embedded scenario runs by name and from
//! the TOML that `show` prints.

use crate::common::*;

#[test]
fn lists_embedded_scenarios_with_descriptions() {
    let out = slat(&["scenarios"]);
    assert_ok(&out);
    let names = scenario_names();
    assert_eq!(names.first().map(String::as_str), Some("default"), "{}", out.stdout);
    for line in out.stdout.lines().skip(2).take(names.len()) {
        let description = line.split_once(' ').map(|(_, d)| d.trim()).unwrap_or("");
        assert!(!description.is_empty(), "no description: {line:?}");
    }
}

#[test]
fn show_prints_the_toml() {
    let toml = scenario_toml("default");
    assert!(toml.contains(r#"name = "default""#), "{toml}");
    assert!(toml.contains("[[phase]]"));
}

/// Every embedded scenario runs by name and meets its own expectations; the default one also
/// runs from the file `scenarios show` prints (the starting point for custom scenarios).
#[test]
fn every_embedded_scenario_runs() {
    let names = scenario_names();
    // Two at a time (CI has two cores).
    for pair in names.chunks(2) {
        std::thread::scope(|scope| {
            let runs: Vec<_> = pair
                .iter()
                .map(|name| {
                    // A large scenario (the published experiments) runs as its quick copy.
                    let mut args = vec!["run".to_string(), "--quiet".into(), name.clone()];
                    let entry = slat_sim::scenario::library().iter().find(|e| e.name == name.as_str());
                    for kv in entry.map_or(&[][..], |e| e.quick) {
                        args.extend(["--set".to_string(), kv.to_string()]);
                    }
                    (name, scope.spawn(move || slat(&args.iter().map(String::as_str).collect::<Vec<_>>())))
                })
                .collect();
            for (name, run) in runs {
                let out = run.join().unwrap();
                assert_ok(&out);
                assert!(out.stdout.contains(&format!("slat · {name}")), "{}", out.stdout);
                assert!(out.stdout.contains("result: PASS"), "{name}: {}", out.stdout);
            }
        });
    }
}

#[test]
fn show_output_runs_as_a_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mine.toml"), scenario_toml("default")).unwrap();
    let mut args = vec!["run".to_string(), "--quiet".into(), "mine.toml".into()];
    args.extend(shrink("default", 256));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = slat_in(dir.path(), &args);
    assert!(out.code == 0 || out.code == 1, "exit {}: {}", out.code, out.stderr);
    assert_no_panic(&out);
    assert!(out.stdout.contains("Guest memory by leaf size"), "{}", out.stdout);
}
