//! Whole-engine throughput: the faulting path (every access touches a new 4 KiB page of a host
//! without THP, so each one is a hardware walk, a stage-2 fault, a host fault-in and an install)
//! and a mostly-hitting run for contrast.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use slat_sim::engine::{run, RunOptions};
use slat_sim::scenario::ScenarioSource;

const FAULTING: &str = r#"
name = "faulting"
description = "every access is a first touch of a 4K page"
seed = 1
[host]
memory = "4G"
thp = "never"
[vm]
format = "ept4"
vcpus = 1
[[memslot]]
id = 0
gpa = 0
size = "1G"
backing = "anonymous"
[[phase]]
name = "touch"
kind = "sequential"
gva = 0
len = "960M"
step = "4K"
accesses = 245760
write_ratio = 1.0
"#;

const HITTING: &str = r#"
name = "hitting"
description = "a small hot set on 2M leaves"
seed = 1
[host]
memory = "4G"
thp = "always"
[vm]
format = "ept4"
vcpus = 1
[[memslot]]
id = 0
gpa = 0
size = "1G"
backing = "anonymous"
[[phase]]
name = "hot"
kind = "uniform"
gva = 0
len = "128K"
accesses = 2000000
"#;

fn engine(c: &mut Criterion) {
    let mut g = c.benchmark_group("engine");
    g.sample_size(10);
    for (name, text) in [("faulting_4k", FAULTING), ("tlb_hits", HITTING)] {
        let scenario = ScenarioSource::from_text(format!("{name}.toml"), text).parse().unwrap();
        g.throughput(Throughput::Elements(scenario.total_accesses()));
        g.bench_function(name, |b| b.iter(|| run(&scenario, RunOptions::default()).unwrap()));
    }
    g.finish();
}

criterion_group!(benches, engine);
criterion_main!(benches);
