//! Any text through the scenario parser: an error naming the problem, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use slat_sim::scenario::ScenarioSource;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = ScenarioSource::from_text("fuzz.toml", text).parse();
    }
});
