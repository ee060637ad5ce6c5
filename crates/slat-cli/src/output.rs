//! Output files, written safely: checked before the run (the directory exists and is writable,
//! the file is not an input of the run nor another output), then written to a temporary file
//! beside the target and renamed over it, so a failed write never leaves a truncated file and
//! never destroys what was there.
//!
//! Special files (`/dev/null`, a FIFO, a terminal) are written in place: renaming over them
//! would replace the device node.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::CliError;

/// `-`: standard output.
pub fn is_stdout(path: &Path) -> bool {
    path == Path::new("-")
}

/// The file's identity if it exists: (device, inode) on Unix, else its canonical path.
fn identity(path: &Path) -> Option<(u64, u64, PathBuf)> {
    let meta = fs::metadata(path).ok()?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Some((meta.dev(), meta.ino(), PathBuf::new()))
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        Some((0, 0, fs::canonicalize(path).ok()?))
    }
}

/// Where `path` would be: its canonical directory plus its file name (for files that do not
/// exist yet).
fn place(path: &Path) -> Option<PathBuf> {
    let dir = parent(path);
    Some(fs::canonicalize(dir).ok()?.join(path.file_name()?))
}

/// Whether two paths name the same file (or would).
pub fn same_file(a: &Path, b: &Path) -> bool {
    match (identity(a), identity(b)) {
        (Some(x), Some(y)) => x == y,
        _ => place(a).is_some_and(|p| Some(p) == place(b)),
    }
}

/// The directory a file goes in (`.` for a bare name).
fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Whether `path` exists and is not a regular file (a device, FIFO or socket): written in place.
fn is_special(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| !m.is_file() && !m.is_dir())
}

/// The temporary file beside `path`.
fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    parent(path).join(format!(".{name}.slat-{}.tmp", std::process::id()))
}

/// One output of a command, with the option that names it (`--json`, `--report`).
#[derive(Debug, Clone, Copy)]
pub struct Output<'a> {
    /// The option.
    pub option: &'static str,
    /// The path.
    pub path: &'a Path,
}

/// Check the outputs before the run: none is an input or another output, each directory
/// exists and takes a new file (a special file such as `/dev/null` must open for writing).
pub fn check(outputs: &[Output<'_>], inputs: &[&Path]) -> Result<(), CliError> {
    for (i, o) in outputs.iter().enumerate() {
        if is_stdout(o.path) {
            continue;
        }
        let shown = o.path.display();
        for input in inputs {
            if same_file(o.path, input) {
                return Err(CliError::input(format!(
                    "{} {shown}: that is an input of this run ({}); choose another file name",
                    o.option,
                    input.display()
                )));
            }
        }
        for other in &outputs[..i] {
            if !is_stdout(other.path) && same_file(o.path, other.path) {
                return Err(CliError::input(format!(
                    "{} {shown}: {} writes to the same file; choose two file names",
                    o.option, other.option
                )));
            }
        }
        if o.path.is_dir() {
            return Err(CliError::input(format!("cannot write {shown}: it is a directory")));
        }
        if is_special(o.path) {
            OpenOptions::new().write(true).open(o.path).map_err(|e| CliError::io("write", o.path, &e))?;
            continue;
        }
        let dir = parent(o.path);
        if !dir.is_dir() {
            return Err(CliError::input(format!("cannot write {shown}: no directory {}", dir.display())));
        }
        // The directory must take a new file: the temporary file is created there later.
        let probe = temp_path(o.path);
        match File::create(&probe) {
            Ok(_) => {
                let _ = fs::remove_file(&probe);
            }
            Err(e) => return Err(CliError::io("write", o.path, &e)),
        }
    }
    Ok(())
}

/// A file written to a temporary beside its target, renamed over it by [`Staged::commit`];
/// dropped without commit, the temporary is removed.
#[derive(Debug)]
pub struct Staged {
    target: PathBuf,
    temp: Option<PathBuf>,
}

impl Staged {
    /// Write `bytes` for `path` (to a temporary file, or in place for a special file).
    pub fn write(path: &Path, bytes: &[u8]) -> Result<Staged, CliError> {
        if is_special(path) {
            let mut f = OpenOptions::new().write(true).open(path).map_err(|e| CliError::io("write", path, &e))?;
            f.write_all(bytes).and_then(|_| f.flush()).map_err(|e| CliError::io("write", path, &e))?;
            return Ok(Staged { target: path.to_path_buf(), temp: None });
        }
        let temp = temp_path(path);
        let staged = Staged { target: path.to_path_buf(), temp: Some(temp.clone()) };
        let mut f = File::create(&temp).map_err(|e| CliError::io("write", path, &e))?;
        f.write_all(bytes).and_then(|_| f.sync_all()).map_err(|e| CliError::io("write", path, &e))?;
        Ok(staged)
    }

    /// Rename the temporary over the target.
    pub fn commit(mut self) -> Result<(), CliError> {
        if let Some(temp) = self.temp.take() {
            if let Err(e) = fs::rename(&temp, &self.target) {
                let _ = fs::remove_file(&temp);
                return Err(CliError::io("write", &self.target, &e));
            }
        }
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(temp) = self.temp.take() {
            let _ = fs::remove_file(temp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_file_sees_through_spellings() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.toml");
        fs::write(&a, "x").unwrap();
        assert!(same_file(&a, &dir.path().join(".").join("a.toml")));
        assert!(!same_file(&a, &dir.path().join("b.toml")));
        assert!(same_file(&dir.path().join("new.html"), &dir.path().join("./new.html")));
    }

    #[test]
    fn a_failed_stage_leaves_the_target_alone() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("out.json");
        fs::write(&t, "old").unwrap();
        drop(Staged::write(&t, b"new").unwrap());
        assert_eq!(fs::read_to_string(&t).unwrap(), "old");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary left");
        Staged::write(&t, b"new").unwrap().commit().unwrap();
        assert_eq!(fs::read_to_string(&t).unwrap(), "new");
    }
}
