//! The built-in scenarios (`crates/slat-sim/scenarios/*.toml`), embedded in the binary.

/// One built-in scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LibraryEntry {
    /// Name (also the `name` key of the file, and the file name without `.toml`).
    pub name: &'static str,
    /// One-line description (also the `description` key of the file).
    pub description: &'static str,
    /// The TOML text.
    pub toml: &'static str,
}

macro_rules! entry {
    ($name:literal, $description:literal) => {
        LibraryEntry {
            name: $name,
            description: $description,
            toml: include_str!(concat!("../../scenarios/", $name, ".toml")),
        }
    };
}

static LIBRARY: &[LibraryEntry] = &[
    entry!("default", "Migration rehearsal: boot, serve, dirty-log for a migration that is abandoned, logging off, huge pages recovered"),
    entry!("dax-huge", "DAX-backed guest memory (pmem): 1G leaves on a PUD-mapped device, 2M leaves on a PMD-mapped one"),
    entry!("arm64-misaligned", "arm64 stage-2 blocks on THP and hugetlbfs, and what a 4K-misaligned memslot loses"),
    entry!("shmem-thp-shared", "shmem/memfd guest RAM with huge folios, partly PTE-mapped by another process: stage-2 stays 2M"),
    entry!("lazy-collapse", "A failed migration: dirty logging splits huge leaves, then zap-and-refault recovery (vs in-place)"),
    entry!("fragmented-khugepaged", "Host fragmentation leaves guest RAM on 4K pages until khugepaged collapses it into freed blocks"),
    entry!("hugetlbfs-1g", "1G hugetlbfs guest memory: 1G leaves, eagerly split for dirty logging, recovered in place"),
    entry!("balloon", "Balloon inflation in 4K units splits host THPs and 2M leaves; 2M units keep them"),
    entry!("ksm", "KSM merging inside THPs: attrition of 2M leaves that khugepaged cannot undo"),
    entry!("nx-huge-pages", "NX huge-page workaround: executed 2M blocks split to 4K, then recovered once execution stops"),
];

/// Every built-in scenario, `default` first.
pub fn library() -> &'static [LibraryEntry] {
    LIBRARY
}
