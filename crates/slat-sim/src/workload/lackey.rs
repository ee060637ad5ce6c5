//! Streaming reader of valgrind lackey memory traces.
//!
//! `valgrind --tool=lackey --trace-mem=yes prog` prints one line per access:
//!
//! ```text
//! ==12345== Lackey, an example Valgrind tool
//! I  04010173,3
//!  L 04222cac,8
//!  S 04222cac,8
//!  M 0421b3e8,4
//! ```
//!
//! `I` is an instruction fetch, `L` a load, `S` a store and `M` a modify (a load and a store to
//! the same address); the address is hexadecimal, the size decimal. Lines starting with `==`
//! (valgrind's own messages) and blank lines are skipped; anything else is an error naming the
//! line number. The reader never holds more than one line of at most [`MAX_LINE_BYTES`]: it
//! streams any size of trace.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use super::AccessKind;

/// The operation of one lackey line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LackeyOp {
    /// `I`: instruction fetch.
    Instr,
    /// `L`: data load.
    Load,
    /// `S`: data store.
    Store,
    /// `M`: data modify (load then store).
    Modify,
}

/// One parsed lackey access line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LackeyLine {
    /// The operation.
    pub op: LackeyOp,
    /// The address accessed.
    pub addr: u64,
    /// The access size in bytes.
    pub size: u32,
}

impl LackeyLine {
    /// Parse one line (without its line break). `Ok(None)` for lines to skip (`==pid==` messages
    /// and blank lines); `Err` with the reason for a malformed line.
    pub fn parse(line: &[u8]) -> Result<Option<LackeyLine>, &'static str> {
        let line = trim_end(line);
        if line.starts_with(b"==") || line.iter().all(|b| b.is_ascii_whitespace()) {
            return Ok(None);
        }
        let mut i = 0;
        while i < line.len() && line[i] == b' ' {
            i += 1;
        }
        let op = match line.get(i) {
            Some(b'I') => LackeyOp::Instr,
            Some(b'L') => LackeyOp::Load,
            Some(b'S') => LackeyOp::Store,
            Some(b'M') => LackeyOp::Modify,
            _ => return Err("expected an operation I, L, S or M"),
        };
        i += 1;
        let spaces = i;
        while i < line.len() && line[i] == b' ' {
            i += 1;
        }
        if i == spaces {
            return Err("expected a space after the operation");
        }
        let addr_start = i;
        let mut addr: u64 = 0;
        while i < line.len() && line[i] != b',' {
            let d = match line[i] {
                c @ b'0'..=b'9' => c - b'0',
                c @ b'a'..=b'f' => c - b'a' + 10,
                c @ b'A'..=b'F' => c - b'A' + 10,
                _ => return Err("the address is not hexadecimal"),
            };
            if addr >> 60 != 0 {
                return Err("the address does not fit 64 bits");
            }
            addr = addr << 4 | u64::from(d);
            i += 1;
        }
        if i == addr_start {
            return Err("missing address");
        }
        if i == line.len() {
            return Err("expected ',<size>' after the address");
        }
        i += 1;
        let size_start = i;
        let mut size: u32 = 0;
        while i < line.len() {
            let c = line[i];
            if !c.is_ascii_digit() {
                return Err("the size is not a decimal number");
            }
            size = match size.checked_mul(10).and_then(|s| s.checked_add(u32::from(c - b'0'))) {
                Some(s) => s,
                None => return Err("the size is too large"),
            };
            i += 1;
        }
        if i == size_start {
            return Err("missing size after ','");
        }
        Ok(Some(LackeyLine { op, addr, size }))
    }
}

fn trim_end(mut line: &[u8]) -> &[u8] {
    while let [rest @ .., b'\n' | b'\r' | b' ' | b'\t'] = line {
        line = rest;
    }
    line
}

/// Why a trace cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum LackeyError {
    /// The file could not be opened or read.
    #[error("{name}: {error}")]
    Io {
        /// File name.
        name: String,
        /// The I/O error.
        #[source]
        error: io::Error,
    },
    /// A line is not a lackey access line.
    #[error("{name}:{line}: malformed lackey line {text:?}: {reason} (expected \"I|L|S|M <hex address>,<size>\")")]
    Malformed {
        /// File name.
        name: String,
        /// 1-based line number.
        line: u64,
        /// The line (cut to 80 characters).
        text: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The trace holds no access line at all.
    #[error("{name}: the trace holds no accesses")]
    Empty {
        /// File name.
        name: String,
    },
}

impl LackeyError {
    /// The 1-based line number of a malformed line.
    pub fn line(&self) -> Option<u64> {
        match self {
            LackeyError::Malformed { line, .. } => Some(*line),
            _ => None,
        }
    }
}

/// Longest line accepted (lackey's lines are under 40 bytes; this bounds the reader's memory
/// on input that is not a trace, such as `/dev/zero`).
pub const MAX_LINE_BYTES: usize = 4096;

/// Streams the accesses of a lackey trace: `M` lines become a read then a write.
#[derive(Debug)]
pub struct LackeyReader<R> {
    reader: R,
    name: String,
    buf: Vec<u8>,
    line: u64,
    /// The store half of an `M` line, returned by the next call.
    pending_store: Option<u64>,
}

impl LackeyReader<BufReader<File>> {
    /// Open a trace file.
    pub fn open(path: &Path) -> Result<Self, LackeyError> {
        let name = path.display().to_string();
        match File::open(path) {
            Ok(f) => Ok(LackeyReader::new(BufReader::with_capacity(1 << 16, f), name)),
            Err(error) => Err(LackeyError::Io { name, error }),
        }
    }
}

impl<R: BufRead> LackeyReader<R> {
    /// Read a trace from `reader`; `name` appears in errors.
    pub fn new(reader: R, name: impl Into<String>) -> Self {
        LackeyReader { reader, name: name.into(), buf: Vec::with_capacity(64), line: 0, pending_store: None }
    }

    /// The name errors use for this trace (usually the file path).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Line number of the last line read (1-based; 0 before the first).
    pub fn line(&self) -> u64 {
        self.line
    }

    /// The next access as `(address, kind)`, `Ok(None)` at the end of the trace.
    pub fn next_access(&mut self) -> Result<Option<(u64, AccessKind)>, LackeyError> {
        if let Some(addr) = self.pending_store.take() {
            return Ok(Some((addr, AccessKind::Write)));
        }
        loop {
            self.buf.clear();
            match (&mut self.reader).take(MAX_LINE_BYTES as u64 + 1).read_until(b'\n', &mut self.buf) {
                Ok(0) => return Ok(None),
                Ok(_) => {}
                Err(error) => return Err(LackeyError::Io { name: self.name.clone(), error }),
            }
            self.line += 1;
            if self.buf.len() > MAX_LINE_BYTES && self.buf.last() != Some(&b'\n') {
                let text: String = String::from_utf8_lossy(&self.buf[..80]).into_owned();
                return Err(LackeyError::Malformed {
                    name: self.name.clone(),
                    line: self.line,
                    text,
                    reason: "the line is longer than 4096 bytes (not a lackey trace?)",
                });
            }
            match LackeyLine::parse(&self.buf) {
                Ok(None) => continue,
                Ok(Some(l)) => {
                    let kind = match l.op {
                        LackeyOp::Instr => AccessKind::Exec,
                        LackeyOp::Load => AccessKind::Read,
                        LackeyOp::Store => AccessKind::Write,
                        LackeyOp::Modify => {
                            self.pending_store = Some(l.addr);
                            AccessKind::Read
                        }
                    };
                    return Ok(Some((l.addr, kind)));
                }
                Err(reason) => {
                    let text: String = String::from_utf8_lossy(trim_end(&self.buf)).chars().take(80).collect();
                    return Err(LackeyError::Malformed { name: self.name.clone(), line: self.line, text, reason });
                }
            }
        }
    }
}

impl<R: BufRead + Seek> LackeyReader<R> {
    /// Go back to the start of the trace.
    pub fn rewind(&mut self) -> Result<(), LackeyError> {
        self.pending_store = None;
        self.line = 0;
        self.reader
            .seek(SeekFrom::Start(0))
            .map(|_| ())
            .map_err(|error| LackeyError::Io { name: self.name.clone(), error })
    }
}

impl<R: BufRead> Iterator for LackeyReader<R> {
    type Item = Result<(u64, AccessKind), LackeyError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_access().transpose()
    }
}

/// Read a whole trace file once, checking every line; returns the number of accesses it yields.
pub fn count_accesses(path: &Path) -> Result<u64, LackeyError> {
    let mut reader = LackeyReader::open(path)?;
    let mut n = 0;
    while reader.next_access()?.is_some() {
        n += 1;
    }
    Ok(n)
}
