//! Switches for the TLB implementations of the hypervisors: the scenario's "skip this flush"
//! demonstration and the `drop-flush` injected bug.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Set by the scenario around one step whose flushes it deliberately skips, to show that the
/// emulator then serves a stale translation (the check can fail).
pub static SKIP_FLUSH: AtomicBool = AtomicBool::new(false);

/// Invalidation instructions executed so far.
pub static FLUSHES: AtomicU64 = AtomicU64::new(0);

/// Leaves by which a range-honouring `Tlb` shifts its invalidations (the `shift-flush` bug: 1).
pub const SHIFT_LEAVES: u64 = cfg!(feature = "shift-flush") as u64;

/// Whether a `Tlb` implementation must execute its invalidation now. Counts the flush when so.
pub fn flush_enabled() -> bool {
    if cfg!(feature = "drop-flush") || SKIP_FLUSH.load(Ordering::SeqCst) {
        return false;
    }
    FLUSHES.fetch_add(1, Ordering::Relaxed);
    true
}
