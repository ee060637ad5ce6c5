//! Every key a scenario (or `--set`) can set, with its type, default and meaning: the list
//! behind `slat keys`. A test sets each one on the default scenario, so the list cannot drift
//! from the schema.

/// One settable key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyDoc {
    /// The dotted key (`[i]` stands for an array index).
    pub key: &'static str,
    /// The type or the accepted values.
    pub kind: &'static str,
    /// The default (`required` when the key must be given).
    pub default: &'static str,
    /// What it means.
    pub about: &'static str,
    /// A value `--set` accepts, for the self-check.
    pub example: &'static str,
}

const fn k(
    key: &'static str,
    kind: &'static str,
    default: &'static str,
    about: &'static str,
    example: &'static str,
) -> KeyDoc {
    KeyDoc { key, kind, default, about, example }
}

const SIZE: &str = "size (4096, \"4K\", \"2M\", \"1G\", \"1T\")";
const FRACTION: &str = "fraction 0..=1";
const TLB: &str = "{ entries = N, ways = W }";
const PAGE: &str = "\"4K\" | \"2M\" | \"1G\"";

/// Every settable key, in file order.
pub const KEYS: &[KeyDoc] = &[
    k("name", "string", "required", "short name", "x"),
    k("description", "string (one line)", "required", "what the run shows", "\"a run\""),
    k("seed", "integer", "required", "seed of every random choice", "7"),
    k(
        "host.kind",
        "\"simulated\" | \"linux\"",
        "\"simulated\"",
        "the simulated host, or this machine's kernel (root; real memory, bounded)",
        "linux",
    ),
    k("host.memory", SIZE, "required", "host RAM", "16G"),
    k("host.fragmentation", FRACTION, "0", "free 2M blocks broken up by a pinned page", "0.5"),
    k("host.fragmentation_1g", FRACTION, "0", "whole 1G blocks broken up too", "0.5"),
    k("host.thp", "\"never\" | \"madvise\" | \"always\"", "\"madvise\"", "anonymous THP policy", "always"),
    k(
        "host.shmem_huge",
        "\"never\" | \"always\" | \"within_size\" | \"advise\"",
        "\"never\"",
        "shmem/tmpfs huge policy",
        "always",
    ),
    k("host.hugetlb_2m", "integer", "0", "2M hugetlb pages reserved", "16"),
    k("host.hugetlb_1g", "integer", "0", "1G hugetlb pages reserved", "1"),
    k("host.dax_size", SIZE, "0", "DAX device size", "1G"),
    k("host.dax_align", "\"2M\" | \"1G\"", "\"2M\"", "DAX device alignment", "1G"),
    k("host.page_cache_max_order", "integer 0..=9", "9", "largest page-cache folio order", "4"),
    k("host.khugepaged_max_ptes_none", "integer 0..=511", "511", "khugepaged max_ptes_none", "0"),
    k(
        "vm.format",
        "\"ept4\" | \"ept5\" | \"npt\" | \"arm64-l0\" | \"arm64-l1\" | \"sv39x4\" | \"sv48x4\"",
        "\"ept4\"",
        "stage-2 page-table format",
        "npt",
    ),
    k("vm.vcpus", "integer 1..=1024", "1", "vCPUs (each has its own TLB)", "2"),
    k("vm.guest_pages[i].gva", SIZE, "required", "first guest-virtual address of a region", "0"),
    k("vm.guest_pages[i].gpa", SIZE, "gva", "guest-physical address it maps to", "0"),
    k("vm.guest_pages[i].len", SIZE, "required", "region length", "1G"),
    k("vm.guest_pages[i].size", PAGE, "required", "guest page size", "4K"),
    k("vm.tlb.l1_4k", TLB, "64 entries, 4-way", "first-level 4K TLB", "{ entries = 64, ways = 4 }"),
    k("vm.tlb.l1_2m", TLB, "32 entries, 4-way", "first-level 2M TLB", "{ entries = 32, ways = 4 }"),
    k("vm.tlb.l1_1g", TLB, "8 entries, fully associative", "first-level 1G TLB", "{ entries = 8, ways = 8 }"),
    k("vm.tlb.stlb", TLB, "1536 entries, 12-way", "second-level TLB (4K and 2M)", "{ entries = 2048, ways = 16 }"),
    k("vm.tlb.stlb_1g", TLB, "16 entries, 4-way", "second-level 1G TLB", "{ entries = 16, ways = 4 }"),
    k("vm.tlb.walk_caches", "bool", "true", "paging-structure caches and nested TLB", "false"),
    k(
        "vm.on_sigbus",
        "\"stop\" | \"continue\"",
        "\"stop\"",
        "a hugetlbfs fault on an empty pool (SIGBUS): stop the run, or drop the access and go on",
        "continue",
    ),
    k("memslot[i].id", "integer", "required", "slot id, unique", "0"),
    k("memslot[i].gpa", SIZE, "required", "first guest-physical address", "0"),
    k("memslot[i].size", SIZE, "required", "slot size", "2G"),
    k(
        "memslot[i].backing",
        "\"anonymous\" | \"anonymous-thp\" | \"shmem\" | \"hugetlbfs-2m\" | \"hugetlbfs-1g\" | \"page-cache\" | \"dax\" | \"pfnmap\"",
        "required",
        "what backs the slot on the host",
        "anonymous",
    ),
    k("memslot[i].hva_offset", SIZE, "0", "host address offset (4096 breaks gpa/hva congruence)", "0"),
    k("memslot[i].readonly", "bool", "false", "guest writes are refused", "false"),
    k("memslot[i].madvise_hugepage", "bool", "false", "the VMM applies MADV_HUGEPAGE", "true"),
    k("memslot[i].at_boot", "bool", "true", "present from boot (false: a memslot-add event adds it)", "true"),
    k(
        "policy.dirty_log",
        "\"write-protect\" | \"split-on-fault\" | \"eager-split\" | \"hardware-dirty\"",
        "\"split-on-fault\"",
        "huge leaves while dirty logging",
        "eager-split",
    ),
    k("policy.eager_split_chunk", "integer", "64", "page-table pages per eager-split step", "32"),
    k("policy.harvest", "\"get-and-clear\" | \"manual-clear\"", "\"get-and-clear\"", "harvest protocol", "manual-clear"),
    k("policy.initially_set", "bool", "false", "manual-clear: start all dirty", "false"),
    k("policy.recover", "\"zap\" | \"in-place\"", "\"in-place\"", "recovery when logging stops", "zap"),
    k("policy.nx_huge_pages", "bool", "false", "NX huge-page workaround", "true"),
    k("policy.nx_recovery_ratio", "integer", "60", "NX recovery: 1/ratio of split blocks per pass", "30"),
    k("policy.max_leaf", PAGE, "\"1G\"", "largest leaf the CPU supports", "2M"),
    k("policy.cap", PAGE, "none", "largest leaf the policy allows", "2M"),
    k("phase[i].name", "string", "required", "phase name, unique", "run"),
    k(
        "phase[i].kind",
        "\"sequential\" | \"uniform\" | \"zipf\" | \"strided\" | \"trace\"",
        "required (trace: optional)",
        "access pattern",
        "uniform",
    ),
    k("phase[i].accesses", "integer", "required", "guest accesses in the phase", "1000"),
    k("phase[i].gva", SIZE, "required", "first address of the range touched", "0"),
    k("phase[i].len", SIZE, "required", "length of the range touched", "1G"),
    k("phase[i].write_ratio", FRACTION, "0", "share of writes", "0.5"),
    k("phase[i].exec_ratio", FRACTION, "0", "share of instruction fetches", "0"),
    k("phase[i].code_gva", SIZE, "none", "where instruction fetches go", "0"),
    k("phase[i].code_len", SIZE, "none", "length of the code range", "2M"),
    k("phase[i].vcpus", "integer", "vm.vcpus", "vCPUs issuing the phase's accesses", "1"),
    k("phase[i].quantum", "integer", "64", "accesses per vCPU turn", "64"),
    k("phase[i].step", SIZE, "4K", "sequential/strided: bytes between accesses", "4K"),
    k("phase[i].stride", SIZE, "required (strided)", "strided: bytes between runs", "2M"),
    k("phase[i].s", "number > 0", "1.0", "zipf: skew", "1.2"),
    k("phase[i].hot_set", SIZE, "len", "zipf: bytes of the hot set", "512M"),
    k("phase[i].trace", "path", "none", "trace: lackey file, relative to the scenario", "t.lackey"),
    k("event[i].phase", "phase name", "required", "phase the event happens in", "serve"),
    k("event[i].at", "integer", "required", "accesses into the phase (0: its start)", "10"),
    k(
        "event[i].kind",
        "dirty-log-on, dirty-log-off, harvest, clear-log, recover-nx, memslot-add, memslot-delete, memslot-move, set-attributes, write-track, munmap, mprotect, madvise-dontneed, khugepaged, madvise-collapse, migrate, compact, ksm-merge, balloon-inflate, balloon-deflate, share-pte-map, reclaim-age, hugetlb-resize",
        "required",
        "what happens",
        "harvest",
    ),
    k("event[i].slot", "memslot id", "every slot", "slot the event applies to", "0"),
    k("event[i].offset", SIZE, "0", "range start in the slot", "0"),
    k("event[i].len", SIZE, "the slot", "range length", "2M"),
    k("event[i].gpa", SIZE, "required (memslot-move)", "new guest-physical address", "4G"),
    k("event[i].prot", "\"none\" | \"read\" | \"read-write\"", "required (mprotect)", "new protection", "read"),
    k("event[i].attribute", "\"private\" | \"shared\"", "required (set-attributes)", "memory attribute", "private"),
    k("event[i].enable", "bool", "required (write-track)", "start or stop tracking", "true"),
    k("event[i].ratio", FRACTION, "required (ksm-merge)", "share of pages KSM merges", "0.5"),
    k(
        "event[i].amount",
        SIZE,
        "required (balloon, hugetlb-resize)",
        "bytes to inflate or deflate; hugetlb-resize: the pool's new size",
        "64M",
    ),
    k("event[i].unit", PAGE, "\"4K\" (hugetlb-resize: required)", "balloon granule; hugetlb-resize: the pool", "2M"),
    k("expect.METRIC", "comparison (\">= 10\", \"< 1%\", 0)", "none", "run expectation (see the docs of Check)", ">= 0"),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::ScenarioSource;

    #[test]
    fn every_key_is_accepted_by_set() {
        for d in KEYS {
            if d.key.starts_with("expect.") {
                continue;
            }
            let key = d.key.replace("[i]", "[0]");
            let mut s = ScenarioSource::from_library("default").unwrap();
            // Keys of events the default scenario's first event does not take are still known
            // to the schema: `set` checks the key and the value's type, not the kind.
            if let Err(e) = s.set(&key, d.example) {
                panic!("{key} = {}: {e}", d.example);
            }
        }
    }
}
