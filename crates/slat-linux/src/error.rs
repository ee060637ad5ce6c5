//! The one error type of this crate: every failure names what was being done and to which path.

use std::io;

/// A failure of a host operation, with what was being done.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The process does not exist (or exited while being read).
    #[error("no process with pid {pid}")]
    NoSuchProcess {
        /// The pid.
        pid: i32,
    },
    /// Permission denied reading something about a process or the host.
    #[error("permission denied: {what} ({path}); {hint}")]
    Permission {
        /// What was being read.
        what: String,
        /// The path or object.
        path: String,
        /// What would give access.
        hint: String,
    },
    /// The kernel does not offer an interface this needs.
    #[error("not supported by this kernel: {what}")]
    Unsupported {
        /// The interface.
        what: String,
    },
    /// The hugetlb pool could not be grown to the size asked for (the change was undone).
    #[error("hugetlb pool {size}: wanted {wanted} free pages, the kernel granted only {granted}")]
    PoolShort {
        /// Page size name (`2M`, `1G`).
        size: &'static str,
        /// Free pages wanted.
        wanted: u64,
        /// Free pages available after growing the pool.
        granted: u64,
    },
    /// A request that cannot be satisfied as asked.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// A file in /proc or /sys did not have the expected format.
    #[error("cannot parse {path}: {detail}")]
    Parse {
        /// The file.
        path: String,
        /// What was wrong.
        detail: String,
    },
    /// The VMM's monitor (QMP) failed or answered with an error.
    #[error("QMP {socket}: {detail}")]
    Qmp {
        /// The socket path.
        socket: String,
        /// What went wrong.
        detail: String,
    },
    /// Any other I/O failure.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An I/O error with context.
    pub fn io(what: impl Into<String>, source: impl Into<io::Error>) -> Self {
        Error::Io { what: what.into(), source: source.into() }
    }

    /// Map an error from opening or reading `path` of process `pid` to a clear error: a missing
    /// process becomes [`Error::NoSuchProcess`], `EACCES`/`EPERM` becomes [`Error::Permission`].
    pub fn proc_file(pid: i32, what: &str, path: &str, e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::InvalidInput
                if !std::path::Path::new(&format!("/proc/{pid}")).exists() =>
            {
                Error::NoSuchProcess { pid }
            }
            io::ErrorKind::PermissionDenied => Error::Permission {
                what: what.to_string(),
                path: path.to_string(),
                hint: format!(
                    "reading another process's memory map needs ptrace read access: the same user as pid {pid} \
                     and a dumpable process, or root/CAP_SYS_PTRACE (a non-dumpable VMM, e.g. a jailed one, is \
                     readable only with CAP_SYS_PTRACE)"
                ),
            },
            _ if e.raw_os_error() == Some(3) => Error::NoSuchProcess { pid },
            _ => Error::io(format!("{what} ({path})"), e),
        }
    }
}
