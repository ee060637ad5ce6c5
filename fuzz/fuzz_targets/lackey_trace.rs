//! Any bytes as a valgrind lackey trace: accesses or an error naming the line, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use slat_sim::workload::{LackeyLine, LackeyReader};

fuzz_target!(|data: &[u8]| {
    for line in data.split(|&b| b == b'\n') {
        let _ = LackeyLine::parse(line);
    }
    let mut r = LackeyReader::new(std::io::Cursor::new(data), "fuzz");
    for _ in 0..(2 * data.len() + 2) {
        match r.next_access() {
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
});
