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
    /// Software bits a leaf carries in entry bits the hardware ignores. The page-table layer
    /// stores and compares them and gives them no meaning: the layer above names them (slat-mmu
    /// keeps "the host maps the page writable" and "write-protected for dirty logging" here).
    /// Every format has room for these two.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct SwBits: u8 {
        /// The first software bit.
        const SW0 = 1 << 0;
        /// The second software bit.
        const SW1 = 1 << 1;
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
    /// Write-back guest RAM with `perms`, accessed, not dirty, no software bits.
    ///
    /// ```
    /// use slat_pt::{LeafAttrs, MemType, Perms, SwBits};
    /// let a = LeafAttrs::ram(Perms::RW);
    /// assert_eq!((a.mem_type, a.accessed, a.dirty, a.sw), (MemType::WriteBack, true, false, SwBits::empty()));
    /// ```
    pub const fn ram(perms: Perms) -> Self {
        LeafAttrs { perms, mem_type: MemType::WriteBack, accessed: true, dirty: false, sw: SwBits::empty() }
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

/// Kind of guest access (what a stage-2 fault reports, and what a simulated walk checks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Data read.
    Read,
    /// Data write.
    Write,
    /// Instruction fetch.
    Exec,
}
