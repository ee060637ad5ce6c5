//! Simulated hardware walks (feature `sim`): what a CPU does with the tables on a guest access,
//! for simulators and tests. Not part of the page-table operations an embedder needs.

use crate::addr::Gpa;
use crate::attrs::{Access, Perms};
use crate::format::{Format, Pte};
use crate::frame::FrameAllocator;
use crate::size::{Level, PageSize};
use crate::table::{PageTable, Translation};

/// Why a hardware walk faulted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalkFault {
    /// No present entry at this level (a frozen entry counts as not present).
    NotPresent {
        /// Level of the missing entry.
        level: Level,
    },
    /// A leaf of this size exists but does not permit the access.
    Permission {
        /// The leaf's size.
        size: PageSize,
    },
}

/// Result of a simulated hardware walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HwWalk {
    /// The translation, or the fault the hardware would raise.
    pub result: Result<Translation, WalkFault>,
    /// Entries read from memory during the walk.
    pub refs: u32,
}

impl<F: Format, A: FrameAllocator> PageTable<F, A> {
    /// Walk as the hardware would for `access` at `gpa`: count the entries read, check
    /// permissions, and on success set the accessed (and for a write, dirty) state the way the
    /// format's hardware does.
    pub fn hw_walk(&self, gpa: Gpa, access: Access) -> HwWalk {
        let gpa = gpa.0;
        let mut refs = 0;
        let mut c = self.cursor(gpa, gpa.saturating_add(1));
        loop {
            let (slot, level) = (c.slot(), c.level());
            let raw = slot.load();
            refs += 1;
            if !F::is_present(raw) || gpa >= self.input_limit() {
                return HwWalk { result: Err(WalkFault::NotPresent { level }), refs };
            }
            if !F::is_leaf(level, raw) {
                c.down(raw);
                continue;
            }
            let size = PageSize::from_level(level).expect("leaf level");
            let Pte::Leaf { pa, attrs } = F::decode(level, raw) else {
                return HwWalk { result: Err(WalkFault::NotPresent { level }), refs };
            };
            let allowed = match access {
                Access::Read => attrs.perms.contains(Perms::READ),
                Access::Write => F::is_writable(raw),
                Access::Exec => attrs.perms.contains(Perms::EXEC),
            };
            if !allowed {
                return HwWalk { result: Err(WalkFault::Permission { size }), refs };
            }
            let write = access == Access::Write;
            let mut cur = raw;
            loop {
                let upd = F::hw_update(cur, write);
                if upd == cur {
                    break;
                }
                match slot.cas(cur, upd) {
                    Ok(_) => break,
                    Err(now) if F::is_present(now) && F::addr(level, now) == pa => cur = now,
                    Err(_) => return HwWalk { result: Err(WalkFault::NotPresent { level }), refs },
                }
            }
            let attrs = match F::decode(level, F::hw_update(cur, write)) {
                Pte::Leaf { attrs, .. } => attrs,
                _ => attrs,
            };
            return HwWalk { result: Ok(Translation { pa: pa + (gpa & (size.bytes() - 1)), size, attrs }), refs };
        }
    }
}
