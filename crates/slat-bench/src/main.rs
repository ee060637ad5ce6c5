//! `slat-bench`: slat beside x86_64, aarch64-paging, page_table_multiarch and page-table-generic
//! and a raw-store floor, in one process on one frame pool.
//!
//! ```text
//! cargo run --release -p slat-bench -- --out BENCHMARKS.md --json crates/slat-bench/results.json --callgrind
//! ```
//!
//! Options: `--reps N` (repetitions of the fast rows, default 21), `--dirty-reps N` (dirty-logging
//! and fault rows, default 5), `--only PREFIX` (rows whose key starts with PREFIX), `--tiny`
//! (small sizes), `--callgrind` (also count instructions per op under valgrind), `--one KEY`
//! (run one case once: what `--callgrind` runs under valgrind).

use std::path::PathBuf;
use std::process::Command;

use slat_bench::pool;
use slat_bench::report::{self, CaseResult, RowResult};
use slat_bench::run::{self, Scale};

struct Args {
    out: Option<PathBuf>,
    json: Option<PathBuf>,
    reps: usize,
    dirty_reps: usize,
    only: Vec<String>,
    scale: Scale,
    callgrind: bool,
    one: Option<String>,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        out: None,
        json: None,
        reps: 21,
        dirty_reps: 5,
        only: Vec::new(),
        scale: Scale::Full,
        callgrind: false,
        one: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--out" => a.out = Some(val("--out")?.into()),
            "--json" => a.json = Some(val("--json")?.into()),
            "--reps" => a.reps = val("--reps")?.parse().map_err(|e| format!("--reps: {e}"))?,
            "--dirty-reps" => a.dirty_reps = val("--dirty-reps")?.parse().map_err(|e| format!("--dirty-reps: {e}"))?,
            "--only" => a.only.push(val("--only")?),
            "--tiny" => a.scale = Scale::Tiny,
            "--callgrind" => a.callgrind = true,
            "--one" => a.one = Some(val("--one")?),
            "-h" | "--help" => {
                println!(
                    "{}",
                    include_str!("main.rs")
                        .lines()
                        .take_while(|l| l.starts_with("//!"))
                        .map(|l| l.trim_start_matches("//!").trim_start())
                        .collect::<Vec<_>>()
                        .join("\n")
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    if a.reps == 0 || a.dirty_reps == 0 {
        return Err("--reps and --dirty-reps must be at least 1".into());
    }
    Ok(a)
}

fn main() {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let rows: Vec<_> = run::rows(args.scale)
        .into_iter()
        .filter(|r| args.only.is_empty() || args.only.iter().any(|p| r.key.starts_with(p.as_str())))
        .collect();

    if let Some(key) = &args.one {
        let (row, case) =
            rows.iter().find_map(|r| r.cases.iter().find(|c| &c.key == key).map(|c| (r, c))).unwrap_or_else(|| {
                eprintln!("error: no case {key:?}");
                std::process::exit(2)
            });
        let dirty = matches!(row.kind, run::RowKind::Split | run::RowKind::Harvest | run::RowKind::Recover);
        pool::init(if dirty { run::pool_frames(args.scale) } else { 4096 });
        let s = case.run(args.scale, &row.shape);
        println!("{key} {:.3} ns/op", s.ns);
        return;
    }

    pool::init(run::pool_frames(args.scale));
    let started = std::time::Instant::now();
    let mut results = Vec::new();
    for row in &rows {
        let reps = match row.kind {
            run::RowKind::Map(_) | run::RowKind::Unmap(_) | run::RowKind::Translate => args.reps,
            _ => args.dirty_reps,
        };
        let n = row.cases.len();
        let mut samples = vec![Vec::with_capacity(reps); n];
        // One warm-up pass, then repetitions with the starting case rotated.
        for c in &row.cases {
            c.run(args.scale, &row.shape);
        }
        for r in 0..reps {
            for k in 0..n {
                let i = (r + k) % n;
                samples[i].push(row.cases[i].run(args.scale, &row.shape));
            }
        }
        let cases = samples.into_iter().map(|s| CaseResult { samples: s, ir: None }).collect();
        let rr = RowResult { row: row.clone(), cases };
        eprintln!("{:>6.1}s  {}", started.elapsed().as_secs_f64(), row.title);
        for (c, res) in rr.row.cases.iter().zip(&rr.cases) {
            eprintln!("          {:<22} {:<36} {:>10.2} ns/op  allocs {}", c.imp, c.api_name, res.ns(), res.allocs());
        }
        results.push(rr);
    }
    if args.callgrind {
        callgrind(&mut results, &args);
    }
    let meta = meta(&args, started.elapsed().as_secs_f64());
    let md = report::markdown(&results, args.scale, args.reps, &meta);
    match &args.out {
        Some(p) => write_between_markers(p, &md),
        None => println!("{md}"),
    }
    if let Some(p) = &args.json {
        std::fs::write(p, report::json(&results, args.scale, args.reps)).expect("write JSON");
    }
}

fn meta(args: &Args, secs: f64) -> String {
    let sh = |c: &str, a: &[&str]| {
        Command::new(c)
            .args(a)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load.split_whitespace().next().unwrap_or("?");
    format!(
        "Run {} · {} · {} vCPUs ({cpu}) · load average {load} at the end · {} repetitions ({} for fault and \
         dirty-logging rows) · {:.0} s{}",
        sh("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        sh("rustc", &["--version"]),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        args.reps,
        args.dirty_reps,
        secs,
        if args.callgrind { " in all, callgrind pass included" } else { "" },
    )
}

const START: &str = "<!-- slat-bench:start (generated; everything up to the end marker is rewritten) -->";
const END: &str = "<!-- slat-bench:end -->";

/// Put `body` between the markers of the file at `p`, or write a new file holding only it.
fn write_between_markers(p: &std::path::Path, body: &str) {
    let old = std::fs::read_to_string(p).unwrap_or_default();
    let new = match (old.find(START), old.find(END)) {
        (Some(a), Some(b)) if a < b => format!("{}{START}\n{body}\n{}", &old[..a], &old[b..]),
        _ => format!("{START}\n{body}\n{END}\n"),
    };
    std::fs::write(p, new).expect("write Markdown");
}

/// Run every case once under callgrind, counting only `cg_region`, and record Ir per op.
fn callgrind(results: &mut [RowResult], args: &Args) {
    let exe = std::env::current_exe().expect("own path");
    let dir = std::env::temp_dir().join(format!("slat-bench-cg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("callgrind dir");
    for r in results.iter_mut() {
        let ops = report::ops(&r.row, args.scale) as f64;
        for (i, c) in r.row.cases.iter().enumerate() {
            if c.key.ends_with("2-threads") {
                // `--toggle-collect` follows the thread that enters `cg_region`; the second
                // thread's instructions would be missed, so no count rather than half a count.
                continue;
            }
            let out = dir.join(format!("{}.out", c.key.replace('/', "_")));
            let mut cmd = Command::new("valgrind");
            cmd.arg("--tool=callgrind")
                .arg(format!("--callgrind-out-file={}", out.display()))
                .arg("--collect-atstart=no")
                .arg("--toggle-collect=*cg_region*")
                .arg(&exe)
                .arg("--one")
                .arg(&c.key);
            if args.scale == Scale::Tiny {
                cmd.arg("--tiny");
            }
            let ok = cmd.output().map(|o| o.status.success()).unwrap_or(false);
            let ir = ok.then(|| std::fs::read_to_string(&out).ok()).flatten().and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("summary:") || l.starts_with("totals:"))
                    .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse::<f64>().ok()))
            });
            if ir.is_none() {
                eprintln!("callgrind: no count for {} (is valgrind installed?)", c.key);
            }
            r.cases[i].ir = ir.map(|v| v / ops);
            eprintln!("callgrind {:<40} {}", c.key, r.cases[i].ir.map(|v| format!("{v:.1} Ir/op")).unwrap_or_default());
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
