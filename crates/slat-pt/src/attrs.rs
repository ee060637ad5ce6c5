//! Format-neutral leaf attributes: permissions, memory type, hardware A/D state and software bits.

use bitflags::bitflags;

bitflags! {
    /// Access permissions of a leaf, as the guest sees them through stage 2.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct Perms: u8 {
        /// Reads allowed.
        const READ = 1 << 0;
        /// Writes allowed.
        const WRITE = 1 << 1;
        /// Instruction fetches allowed.
        const EXEC = 1 << 2;
    }
}

impl Perms {
    /// Read + write.
    pub const RW: Perms = Perms::READ.union(Perms::WRITE);
    /// Read + write + execute.
    pub const RWX: Perms = Perms::RW.union(Perms::EXEC);
    /// Read + execute.
    pub const RX: Perms = Perms::READ.union(Perms::EXEC);
}

bitflags! {
    /// Software-defined bits kept in ignored entry bits. The hardware never reads them.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct SwBits: u8 {
        /// The host maps the page writable: the MMU may grant write without asking the host again.
        /// A leaf with this bit and without [`Perms::WRITE`] is write-protected by the MMU itself,
        /// for example for dirty logging.
        const HOST_WRITABLE = 1 << 0;
        /// Write access was removed for dirty logging; a write fault restores it and logs the page.
        const DIRTY_LOG_WP = 1 << 1;
    }
}

/// Memory type / cacheability of the output page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MemType {
    /// Normal write-back cacheable memory (guest RAM).
    #[default]
    WriteBack,
    /// Normal write-through memory.
    WriteThrough,
    /// Write-combining (normal non-cacheable on arm64).
    WriteCombining,
    /// Uncacheable / device memory (MMIO).
    Uncached,
}

/// Everything a leaf says besides its output address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LeafAttrs {
    /// Guest access permissions.
    pub perms: Perms,
    /// Memory type of the output page.
    pub mem_type: MemType,
    /// Accessed flag (set by hardware where the format supports it; set at creation otherwise).
    pub accessed: bool,
    /// Dirty flag (set by hardware where the format supports it).
    pub dirty: bool,
    /// Software bits.
    pub sw: SwBits,
}

impl LeafAttrs {
    /// Write-back guest RAM with `perms`, accessed, not dirty, host-writable when `perms` has write.
    ///
    /// ```
    /// use slat_pt::{LeafAttrs, Perms, SwBits};
    /// let a = LeafAttrs::ram(Perms::RW);
    /// assert!(a.sw.contains(SwBits::HOST_WRITABLE));
    /// ```
    pub const fn ram(perms: Perms) -> Self {
        LeafAttrs {
            perms,
            mem_type: MemType::WriteBack,
            accessed: true,
            dirty: false,
            sw: if perms.contains(Perms::WRITE) { SwBits::HOST_WRITABLE } else { SwBits::empty() },
        }
    }

    /// The same attributes with other permissions.
    pub const fn with_perms(self, perms: Perms) -> Self {
        LeafAttrs { perms, ..self }
    }

    /// Whether two leaves could be merged into one: same permissions, memory type and software bits
    /// (accessed / dirty state is not compared).
    pub fn uniform_with(&self, other: &LeafAttrs) -> bool {
        self.perms == other.perms && self.mem_type == other.mem_type && self.sw == other.sw
    }
}
