//! Guest RAM of a QEMU process and its guest-physical layout, from QEMU's monitor (QMP).
//!
//! * `query-memdev`: the memory backends (id, size, share, prealloc); no address.
//! * `info ramblock` (through `human-monitor-command`): every RAMBlock with page size and size;
//!   QEMU 10 adds an HVA column, QEMU 7.2 has none.
//! * `info mtree -f`: the flat view of the `memory` address space: which gpa ranges map which
//!   RAMBlock at which offset (the 0xa0000-0x100000 hole and the above-4G alias included).
//!
//! Without the HVA column the block is found among the process's VMAs ([`locate_blocks`]): a
//! `dc` (`MADV_DONTFORK`) mapping of exactly the block's size, preferring one whose name carries
//! the backend (`/memfd:`, `qemu_back_mem.<id>.`). VMAs merge and split, so a VMA is only a
//! candidate address for a block, never the block.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::smaps::{VmFlag, Vma};

/// A QMP connection.
#[derive(Debug)]
pub struct Qmp {
    socket: String,
    writer: UnixStream,
    reader: BufReader<UnixStream>,
    /// `major.minor.micro` from the greeting.
    pub version: (u64, u64, u64),
}

impl Qmp {
    /// Connect to the QMP socket at `path` and leave capabilities negotiation mode.
    pub fn connect(path: impl AsRef<Path>) -> Result<Self> {
        let socket = path.as_ref().display().to_string();
        let qerr = |detail: String| Error::Qmp { socket: socket.clone(), detail };
        let stream = UnixStream::connect(&path).map_err(|e| qerr(format!("cannot connect: {e}")))?;
        stream.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| qerr(e.to_string()))?;
        let reader = BufReader::new(stream.try_clone().map_err(|e| qerr(e.to_string()))?);
        let mut q = Qmp { socket: socket.clone(), writer: stream, reader, version: (0, 0, 0) };
        let greeting = q.read_message()?;
        let v = &greeting["QMP"]["version"]["qemu"];
        if v.is_null() {
            return Err(qerr(format!("not a QMP greeting: {greeting}")));
        }
        q.version =
            (v["major"].as_u64().unwrap_or(0), v["minor"].as_u64().unwrap_or(0), v["micro"].as_u64().unwrap_or(0));
        q.execute("qmp_capabilities", None)?;
        Ok(q)
    }

    fn read_message(&mut self) -> Result<Value> {
        loop {
            let mut line = String::new();
            let n = self
                .reader
                .read_line(&mut line)
                .map_err(|e| Error::Qmp { socket: self.socket.clone(), detail: format!("read: {e}") })?;
            if n == 0 {
                return Err(Error::Qmp { socket: self.socket.clone(), detail: "connection closed".into() });
            }
            let v: Value = serde_json::from_str(&line)
                .map_err(|e| Error::Qmp { socket: self.socket.clone(), detail: format!("bad JSON {line:?}: {e}") })?;
            if v.get("event").is_none() {
                return Ok(v);
            }
        }
    }

    /// Run a command; its `return` value, or [`Error::Qmp`] with QEMU's error.
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value> {
        let mut msg = json!({ "execute": command });
        if let Some(a) = arguments {
            msg["arguments"] = a;
        }
        let text = format!("{msg}\n");
        self.writer
            .write_all(text.as_bytes())
            .map_err(|e| Error::Qmp { socket: self.socket.clone(), detail: format!("write: {e}") })?;
        let r = self.read_message()?;
        if let Some(e) = r.get("error") {
            return Err(Error::Qmp { socket: self.socket.clone(), detail: format!("{command}: {e}") });
        }
        Ok(r.get("return").cloned().unwrap_or(Value::Null))
    }

    /// A human monitor command's text output.
    pub fn hmp(&mut self, command_line: &str) -> Result<String> {
        let r = self.execute("human-monitor-command", Some(json!({ "command-line": command_line })))?;
        Ok(r.as_str().unwrap_or_default().to_string())
    }

    /// `query-memdev`.
    pub fn memdevs(&mut self) -> Result<Vec<Memdev>> {
        let r = self.execute("query-memdev", None)?;
        serde_json::from_value(r)
            .map_err(|e| Error::Qmp { socket: self.socket.clone(), detail: format!("query-memdev: {e}") })
    }

    /// `info ramblock`, parsed.
    pub fn ramblocks(&mut self) -> Result<Vec<RamBlock>> {
        parse_ramblocks(&self.hmp("info ramblock")?)
    }

    /// `info mtree -f`, the RAM ranges of the `memory` address space.
    pub fn ram_ranges(&mut self) -> Result<Vec<MtreeRange>> {
        parse_mtree_ram(&self.hmp("info mtree -f")?)
    }

    /// The migration status (`query-migrate`): `Some("active")` etc. while a migration runs,
    /// when KVM dirty-logs every memslot.
    pub fn migration_status(&mut self) -> Option<String> {
        let r = self.execute("query-migrate", None).ok()?;
        r["status"].as_str().map(str::to_string)
    }

    /// KVM's page counts through `query-stats` (QEMU 7.1+; `None` without KVM or the command).
    pub fn kvm_pages(&mut self) -> Option<[u64; 3]> {
        let r = self.execute("query-stats", Some(json!({ "target": "vm" }))).ok()?;
        let stats = r.as_array()?.iter().find(|p| p["provider"] == "kvm")?["stats"].as_array()?.clone();
        let get = |n: &str| stats.iter().find(|s| s["name"] == n).and_then(|s| s["value"].as_u64());
        Some([get("pages_4k")?, get("pages_2m")?, get("pages_1g")?])
    }
}

/// One `query-memdev` entry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct Memdev {
    /// Backend id (`-object memory-backend-*,id=`).
    #[serde(default)]
    pub id: Option<String>,
    /// Bytes.
    pub size: u64,
    /// `share=on`.
    #[serde(default)]
    pub share: bool,
    /// `prealloc=on`.
    #[serde(default)]
    pub prealloc: bool,
    /// `merge` (KSM).
    #[serde(default)]
    pub merge: bool,
}

/// One row of `info ramblock`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RamBlock {
    /// Block name (the backend id, `pc.ram`, `pc.bios`, `/rom@etc/...`).
    pub name: String,
    /// Page size of the block's memory (4 KiB, or the hugetlb size).
    pub page_size: u64,
    /// Offset in QEMU's ram_addr space.
    pub offset: u64,
    /// Bytes in use.
    pub used: u64,
    /// Bytes reserved.
    pub total: u64,
    /// Host address (QEMU 10's HVA column).
    pub hva: Option<u64>,
}

fn size_with_unit(s: &str, unit: &str) -> Option<u64> {
    let n: f64 = s.parse().ok()?;
    let m = match unit {
        "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1048576.0,
        "GiB" => 1073741824.0,
        _ => return None,
    };
    Some((n * m) as u64)
}

fn hex_field(s: &str) -> Option<u64> {
    u64::from_str_radix(s.trim_start_matches("0x"), 16).ok()
}

/// Parse `info ramblock` (QEMU 7.2: no HVA column; QEMU 10: HVA and flags columns).
pub fn parse_ramblocks(text: &str) -> Result<Vec<RamBlock>> {
    let bad = |l: &str| Error::Parse { path: "info ramblock".into(), detail: format!("unexpected line {l:?}") };
    let mut out = Vec::new();
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header = lines.next().ok_or_else(|| bad(""))?;
    if !header.contains("Block Name") {
        return Err(bad(header));
    }
    let has_hva = header.contains("HVA");
    for l in lines {
        let f: Vec<&str> = l.split_whitespace().collect();
        // name, psize, unit, offset, used, total [, hva [, flags]]
        if f.len() < 6 {
            return Err(bad(l));
        }
        out.push(RamBlock {
            name: f[0].to_string(),
            page_size: size_with_unit(f[1], f[2]).ok_or_else(|| bad(l))?,
            offset: hex_field(f[3]).ok_or_else(|| bad(l))?,
            used: hex_field(f[4]).ok_or_else(|| bad(l))?,
            total: hex_field(f[5]).ok_or_else(|| bad(l))?,
            hva: if has_hva { f.get(6).and_then(|h| hex_field(h)) } else { None },
        });
    }
    Ok(out)
}

/// One RAM range of the flat `memory` address space.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MtreeRange {
    /// First guest-physical address.
    pub gpa: u64,
    /// Bytes.
    pub len: u64,
    /// Memory region name (the RAMBlock's name for guest RAM).
    pub name: String,
    /// Offset of `gpa` inside the region (`@offset`).
    pub offset: u64,
}

/// Parse `info mtree -f`: the `ram` ranges of the flat view of address space `memory`.
pub fn parse_mtree_ram(text: &str) -> Result<Vec<MtreeRange>> {
    let mut out = Vec::new();
    let mut in_memory = false;
    for l in text.lines() {
        let t = l.trim();
        if t.starts_with("FlatView") {
            in_memory = false;
            continue;
        }
        if t.starts_with("AS \"memory\"") {
            in_memory = true;
            continue;
        }
        if !in_memory {
            continue;
        }
        // 0000000000100000-0000000007ffffff (prio 0, ram): ram0 @0000000000100000 [KVM]
        let Some((range, rest)) = t.split_once(' ') else { continue };
        let Some((s, e)) = range.split_once('-') else { continue };
        let (Some(s), Some(e)) = (hex_field(s), hex_field(e)) else { continue };
        let Some((kind, name)) = rest.split_once("): ") else { continue };
        if !kind.ends_with(", ram") {
            continue;
        }
        let mut words = name.split_whitespace();
        let region = words.next().unwrap_or_default().to_string();
        let offset = words.find_map(|w| w.strip_prefix('@')).and_then(hex_field).unwrap_or(0);
        out.push(MtreeRange { gpa: s, len: e - s + 1, name: region, offset });
    }
    if out.is_empty() && !text.contains("AS \"memory\"") {
        return Err(Error::Parse {
            path: "info mtree -f".into(),
            detail: "no flat view of address space \"memory\"".into(),
        });
    }
    Ok(out)
}

/// Where the QMP socket of QEMU process `pid` is, from its command line
/// (`-qmp unix:PATH[,...]`, or `-chardev socket,id=X,path=PATH` with `-mon chardev=X,mode=control`).
pub fn qmp_socket_of(pid: i32) -> Option<PathBuf> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<String> = raw.split(|&b| b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    let value = |i: usize| args.get(i + 1).map(String::as_str).unwrap_or_default();
    for (i, a) in args.iter().enumerate() {
        if a == "-qmp" || a == "--qmp" {
            let v = value(i);
            let p = v.strip_prefix("unix:")?;
            let p = p.split(',').next().unwrap_or(p);
            return Some(PathBuf::from(p.strip_prefix("path=").unwrap_or(p)));
        }
    }
    let control: Vec<&str> = args
        .iter()
        .enumerate()
        .filter(|(_, a)| *a == "-mon")
        .map(|(i, _)| value(i))
        .filter(|v| v.contains("mode=control"))
        .filter_map(|v| v.split(',').find_map(|kv| kv.strip_prefix("chardev=")))
        .collect();
    for (i, a) in args.iter().enumerate() {
        if a == "-chardev" {
            let v = value(i);
            let id = v.split(',').find_map(|kv| kv.strip_prefix("id="));
            if v.starts_with("socket") && id.is_some_and(|id| control.contains(&id)) {
                if let Some(p) = v.split(',').find_map(|kv| kv.strip_prefix("path=")) {
                    return Some(PathBuf::from(p));
                }
            }
        }
    }
    None
}

/// Whether process `pid` looks like QEMU (by its executable name).
pub fn is_qemu(pid: i32) -> bool {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().starts_with("qemu-system")))
        .unwrap_or_else(|| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim().starts_with("qemu-system"))
        })
}

/// A guest RAM block of a QEMU process: where it is in the host and in the guest.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GuestRamBlock {
    /// RAMBlock name (memory backend id or `pc.ram`).
    pub name: String,
    /// Host address of the block's first byte.
    pub hva: u64,
    /// Bytes.
    pub size: u64,
    /// QEMU's page size for the block.
    pub page_size: u64,
    /// Guest-physical ranges: `(gpa, len, offset in block)`.
    pub gpa_ranges: Vec<(u64, u64, u64)>,
    /// How the host address was found (`info ramblock HVA column`, or the VMA match).
    pub located_by: String,
}

/// Put the RAM blocks that guest-physical ranges map at host addresses: from the HVA column
/// when QEMU prints one, else by matching the process's VMAs.
pub fn locate_blocks(blocks: &[RamBlock], ranges: &[MtreeRange], vmas: &[Vma]) -> Result<Vec<GuestRamBlock>> {
    let mut out = Vec::new();
    let mut taken: Vec<u64> = Vec::new();
    for b in blocks {
        let gpa_ranges: Vec<(u64, u64, u64)> =
            ranges.iter().filter(|r| r.name == b.name).map(|r| (r.gpa, r.len, r.offset)).collect();
        if gpa_ranges.is_empty() {
            continue; // ROMs and blocks not mapped as guest RAM
        }
        let (hva, located_by) = match b.hva {
            Some(h) => (h, "info ramblock HVA column".to_string()),
            None => {
                let own_file = format!("qemu_back_mem.{}.", b.name);
                let named = |v: &Vma| v.path.contains(&own_file);
                let mut cands: Vec<&Vma> = vmas
                    .iter()
                    .filter(|v| v.vm_flags.contains(VmFlag::DontCopy) && !v.vm_flags.contains(VmFlag::Exec))
                    .filter(|v| v.len() == b.total && !taken.contains(&v.start))
                    .collect();
                // A file backend's mapping carries its id: it is the block, whatever else fits.
                if cands.iter().any(|v| named(v)) {
                    cands.retain(|v| named(v));
                }
                match cands.as_slice() {
                    [v] => (v.start, format!("VMA match: {} bytes, dc flag{}", b.total, if named(v) { ", backend file name" } else { "" })),
                    [] => {
                        return Err(Error::Invalid(format!(
                            "guest RAM block {} ({} bytes): no DONTFORK (dc) mapping of that size, and this QEMU prints no HVA; pass --range HVA:LEN@GPA",
                            b.name, b.total
                        )))
                    }
                    [v, ..] => (v.start, format!("VMA match: {} same-size dc mappings, took the first (ambiguous)", cands.len())),
                }
            }
        };
        taken.push(hva);
        out.push(GuestRamBlock {
            name: b.name.clone(),
            hva,
            size: b.used,
            page_size: b.page_size,
            gpa_ranges,
            located_by,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `info ramblock` as QEMU 7.2.22 (Debian 12) prints it: no HVA column.
    const RAMBLOCK_7_2: &str =
        "              Block Name    PSize              Offset               Used              Total
                    ram0    4 KiB  0x0000000000000000 0x0000000008000000 0x0000000008000000
    /rom@etc/acpi/tables    4 KiB  0x0000000008080000 0x0000000000020000 0x0000000000200000
                 pc.bios    4 KiB  0x0000000008000000 0x0000000000040000 0x0000000000040000
";

    /// QEMU 10.0 adds HVA and flags columns (rows as the project's probe recorded them).
    const RAMBLOCK_10: &str = "              Block Name    PSize              Offset               Used              Total                HVA  RO
                  pc.ram    4 KiB  0x0000000000000000 0x0000000040000000 0x0000000040000000 0x00007fd21be00000  rw
                       m    2 MiB  0x0000000040000000 0x0000000040000000 0x0000000040000000 0x00007f3dc3e00000  rw
";

    /// `info mtree -f` of QEMU 7.2.22, `-machine pc,memory-backend=ram0 -m 128M -nodefaults` (trimmed).
    const MTREE_7_2: &str = "FlatView #0
 AS \"memory\", root: system
 AS \"cpu-memory-0\", root: system
 Root memory region: system
  0000000000000000-00000000000bffff (prio 0, ram): ram0
  00000000000c0000-00000000000dffff (prio 1, rom): pc.rom
  00000000000e0000-00000000000fffff (prio 0, rom): pc.bios @0000000000020000
  0000000000100000-0000000007ffffff (prio 0, ram): ram0 @0000000000100000
  00000000fec00000-00000000fec00fff (prio 0, i/o): ioapic
  00000000fffc0000-00000000ffffffff (prio 0, rom): pc.bios

FlatView #1
 AS \"cpu-smm-0\", root: memory
 Root memory region: memory
  0000000000000000-00000000000bffff (prio 0, ram): ram0
";

    #[test]
    fn ramblock_without_hva() {
        let b = parse_ramblocks(RAMBLOCK_7_2).unwrap();
        assert_eq!(b.len(), 3);
        assert_eq!(
            b[0],
            RamBlock { name: "ram0".into(), page_size: 4096, offset: 0, used: 128 << 20, total: 128 << 20, hva: None }
        );
        assert_eq!(b[1].name, "/rom@etc/acpi/tables");
        assert_eq!((b[1].used, b[1].total), (0x20000, 0x200000));
    }

    #[test]
    fn ramblock_with_hva() {
        let b = parse_ramblocks(RAMBLOCK_10).unwrap();
        assert_eq!(b[0].hva, Some(0x7fd2_1be0_0000));
        assert_eq!((b[1].name.as_str(), b[1].page_size, b[1].hva), ("m", 2 << 20, Some(0x7f3d_c3e0_0000)));
    }

    #[test]
    fn mtree_ram_ranges_of_the_memory_address_space_only() {
        let r = parse_mtree_ram(MTREE_7_2).unwrap();
        assert_eq!(
            r,
            vec![
                MtreeRange { gpa: 0, len: 0xc0000, name: "ram0".into(), offset: 0 },
                MtreeRange { gpa: 0x10_0000, len: 0x7f0_0000, name: "ram0".into(), offset: 0x10_0000 },
            ]
        );
        assert!(parse_mtree_ram("nothing").is_err());
    }

    #[test]
    fn blocks_are_located_by_hva_column_or_vma() {
        let ranges = parse_mtree_ram(MTREE_7_2).unwrap();
        let blocks = parse_ramblocks(RAMBLOCK_7_2).unwrap();
        let vma = |start: u64, len: u64, flags: &str, path: &str| Vma {
            start,
            end: start + len,
            vm_flags: crate::smaps::VmFlags::parse(flags),
            path: path.into(),
            ..Vma::default()
        };
        let vmas = vec![
            vma(0x7f00_0000_0000, 128 << 20, "rd wr mr mw me ac", ""),
            vma(0x7f10_0000_0000, 128 << 20, "rd wr mr mw me dc ac hg mg", ""),
            vma(0x7f20_0000_0000, 0x40000, "rd wr mr mw me dc ac", ""),
        ];
        let got = locate_blocks(&blocks, &ranges, &vmas).unwrap();
        assert_eq!(got.len(), 1, "ROMs are not guest RAM");
        assert_eq!((got[0].hva, got[0].gpa_ranges.len()), (0x7f10_0000_0000, 2));
        // With nothing of the size: a clear error naming --range.
        let e = locate_blocks(&blocks, &ranges, &vmas[..1]).unwrap_err();
        assert!(e.to_string().contains("--range"), "{e}");
    }
}
