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
    /// Too large for a debug build's test suite at full size (the published experiments): the
    /// tests run it with [`quick`](Self::quick), a release build runs it whole.
    pub large: bool,
    /// `key=value` overrides (as for `--set`) that make a small copy of a large scenario with
    /// the same story; empty for the others.
    pub quick: &'static [&'static str],
}

macro_rules! entry {
    ($name:literal, $description:literal) => {
        entry!($name, $description, false, &[])
    };
    ($name:literal, $description:literal, quick: $quick:expr) => {
        entry!($name, $description, true, $quick)
    };
    ($name:literal, $description:literal, $large:literal, $quick:expr) => {
        LibraryEntry {
            name: $name,
            description: $description,
            toml: include_str!(concat!("../../scenarios/", $name, ".toml")),
            large: $large,
            quick: $quick,
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
    entry!(
        "dirty-log-perf",
        "Large (256 GiB): KVM dirty_log_perf_test, 64 vCPUs x 4 GiB on 2M hugetlbfs, in-place recovery vs zap",
        quick: &[
            "host.memory=6G",
            "host.hugetlb_2m=2048",
            "vm.vcpus=8",
            "vm.guest_pages[0].len=4G",
            "memslot[0].size=4G",
            "phase[0].len=4G",
            "phase[1].len=4G",
            "phase[2].len=4G",
            "phase[3].len=4G",
            "phase[0].accesses=1048576",
            "phase[1].accesses=2048",
            "phase[2].accesses=2048",
            "phase[3].accesses=2048",
            "expect.pages_2m=2048",
            "expect.after_phase[0].pages_2m=2048",
        ]
    ),
];

/// Every built-in scenario, `default` first.
pub fn library() -> &'static [LibraryEntry] {
    LIBRARY
}
