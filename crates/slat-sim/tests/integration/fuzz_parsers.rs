//! The stable twins of the cargo-fuzz targets `scenario_parse` and `lackey_trace` (`fuzz/`):
//! the checked-in corpus, then seeded random mutations of it (byte flips, inserts, deletes,
//! splices of TOML tokens), through the same entry points. Any panic fails the test; every input
//! must give a value or an error. Bounded by `SLAT_FUZZ_ITERS` (default 3000 per target).

use std::io::Cursor;
use std::path::Path;

use slat_sim::scenario::ScenarioSource;
use slat_sim::workload::{LackeyLine, LackeyReader};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus").join(target);
    let mut v: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .flatten()
        .map(|e| std::fs::read(e.path()).unwrap())
        .collect();
    v.sort();
    assert!(!v.is_empty(), "empty corpus {}", dir.display());
    v
}

const TOKENS: &[&[u8]] = &[
    b"=",
    b"[",
    b"]",
    b"[[",
    b"]]",
    b"\"",
    b"'",
    b"\n",
    b"0x",
    b"-1",
    b"1e400",
    b"18446744073709551616",
    b"G",
    b"size",
    b"backing",
    b"memslots",
    b"[[phase]]",
    b"{",
    b"}",
    b",",
    b"nan",
    b"true",
    b"\xff",
    b"\\u0000",
];

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut d = seed.to_vec();
    for _ in 0..1 + rng.below(8) {
        let at = rng.below(d.len() + 1);
        match rng.below(5) {
            0 if !d.is_empty() => {
                let i = at.min(d.len() - 1);
                d[i] ^= 1 << rng.below(8);
            }
            1 => {
                let t = TOKENS[rng.below(TOKENS.len())];
                d.splice(at..at, t.iter().copied());
            }
            2 if !d.is_empty() => {
                let end = (at + rng.below(64)).min(d.len());
                d.drain(at.min(end)..end);
            }
            3 => {
                // Duplicate a slice somewhere else.
                let a = rng.below(d.len() + 1);
                let b = (a + rng.below(128)).min(d.len());
                let piece = d[a..b].to_vec();
                d.splice(at..at, piece);
            }
            _ => d.insert(at, rng.next() as u8),
        }
    }
    d
}

fn scenario_target(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = ScenarioSource::from_text("fuzz.toml", text).parse();
    }
}

fn lackey_target(data: &[u8]) {
    for line in data.split(|&b| b == b'\n') {
        let _ = LackeyLine::parse(line);
    }
    let mut r = LackeyReader::new(Cursor::new(data), "fuzz");
    for _ in 0..(2 * data.len() + 2) {
        match r.next_access() {
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
}

fn run(target: &str, f: fn(&[u8])) {
    let iters = env("SLAT_FUZZ_ITERS", 3000);
    let seeds = corpus(target);
    for s in &seeds {
        f(s);
    }
    let mut rng = Rng(env("SLAT_FUZZ_SEED", 0xf022) | 1);
    for i in 0..iters {
        let seed = &seeds[rng.below(seeds.len())];
        let input = mutate(&mut rng, seed);
        let r = std::panic::catch_unwind(|| f(&input));
        if r.is_err() {
            panic!("{target}: input {i} panicked: {:?}", String::from_utf8_lossy(&input));
        }
    }
    eprintln!("{target}: {} corpus inputs, {iters} mutated inputs", seeds.len());
}

#[test]
fn scenario_parser_never_panics() {
    run("scenario_parse", scenario_target);
}

#[test]
fn lackey_parser_never_panics() {
    run("lackey_trace", lackey_target);
}
