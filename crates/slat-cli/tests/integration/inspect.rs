//! `slat inspect` end to end: a real QEMU, clear errors for a missing process and for a
//! process of another user.

use crate::common::*;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn root(test: &str) -> bool {
    let ok = std::fs::read_to_string("/proc/self/status")
        .is_ok_and(|s| s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0")));
    if !ok {
        eprintln!("SKIP {test}: needs root (to run processes as other users)");
    }
    ok
}

fn have(cmd: &str, test: &str) -> bool {
    let ok = Command::new(cmd)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("SKIP {test}: {cmd} is not installed");
    }
    ok
}

struct Reaped(Child);
impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `sleep 60` running as `uid`.
fn sleeper(uid: u32) -> Reaped {
    let c = Command::new("setpriv")
        .args(["--reuid", &uid.to_string(), "--regid", &uid.to_string(), "--clear-groups", "sleep", "60"])
        .stdin(Stdio::null())
        .spawn()
        .expect("setpriv sleep");
    // Wait until the exec happened (the process runs `sleep`).
    let t = Instant::now();
    while std::fs::read_to_string(format!("/proc/{}/comm", c.id())).map_or(true, |s| s.trim() != "sleep") {
        assert!(t.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(10));
    }
    Reaped(c)
}

/// `slat ARGS` run as `uid`.
fn slat_as(uid: u32, args: &[&str]) -> Out {
    let out = Command::new("setpriv")
        .args(["--reuid", &uid.to_string(), "--regid", &uid.to_string(), "--clear-groups", env!("CARGO_BIN_EXE_slat")])
        .args(args)
        .current_dir("/")
        .stdin(Stdio::null())
        .output()
        .expect("setpriv slat");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn no_such_pid() {
    let o = slat(&["inspect", "--pid", "2147483647"]);
    assert_eq!(o.code, 2, "{o:?}");
    assert_eq!(o.stderr, "error: no process with pid 2147483647\n");
}

#[test]
fn bad_range_is_a_usage_error() {
    let o = slat(&["inspect", "--pid", "1", "--range", "0x1001:4K"]);
    assert_eq!(o.code, 2, "{o:?}");
    assert!(o.stderr.contains("multiples of 4 KiB"), "{}", o.stderr);
}

#[test]
fn another_users_process_is_a_permission_error() {
    if !root("another_users_process") || !have("setpriv", "another_users_process") {
        return;
    }
    // nobody inspecting a process of uid 65533.
    let target = sleeper(65533);
    let pid = target.0.id().to_string();
    let o = slat_as(65534, &["inspect", "--pid", &pid]);
    assert_eq!(o.code, 2, "{o:?}");
    assert!(o.stderr.starts_with("error: permission denied: read the memory map (/proc/"), "{}", o.stderr);
    assert!(o.stderr.contains("ptrace read access"), "{}", o.stderr);
    // nobody inspecting a root process: the same clear error.
    let o = slat_as(65534, &["inspect", "--pid", &std::process::id().to_string()]);
    assert_eq!(o.code, 2, "{o:?}");
    assert!(o.stderr.contains("permission denied"), "{}", o.stderr);
}

#[test]
fn a_qemu_process_on_one_screen_and_as_json() {
    if !have("qemu-system-x86_64", "a_qemu_process") {
        return;
    }
    let sock = std::env::temp_dir().join(format!("slat-cli-qmp-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&sock);
    let q = Reaped(
        Command::new("qemu-system-x86_64")
            .args(["-accel", "tcg", "-S", "-display", "none", "-nodefaults", "-m", "64M"])
            .args(["-object", "memory-backend-memfd,id=mem0,size=64M,prealloc=on,share=on"])
            .args(["-machine", "pc,memory-backend=mem0", "-qmp"])
            .arg(format!("unix:{},server=on,wait=off", sock.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn qemu"),
    );
    let pid = q.0.id().to_string();
    let t = Instant::now();
    let text = loop {
        let o = slat(&["inspect", "--pid", &pid]);
        if o.code == 0 {
            break o.stdout;
        }
        assert!(t.elapsed() < Duration::from_secs(60), "inspect never succeeded: {o:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(text.starts_with(&format!("slat inspect: pid {pid} (qemu-system-x86, QEMU ")), "{text}");
    assert!(text.contains("\nmem0  64 MiB  memfd (shmem)  at hva 0x"), "{text}");
    assert!(text.contains("  verdict    64 MiB of memfd (shmem) guest RAM is mapped "), "{text}");
    assert!(text.contains("  fix        use memory-backend-file with align=2M"), "{text}");
    assert!(text.lines().count() <= 25, "one screen:\n{text}");
    let o = slat(&["inspect", "--pid", &pid, "--json", "--no-debugfs"]);
    assert_eq!(o.code, 0, "{o:?}");
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["blocks"][0]["name"], "mem0");
    assert_eq!(v["blocks"][0]["kind"], "shmem");
    assert_eq!(v["blocks"][0]["host"]["bytes_2m"], 0);
    assert_eq!(v["host_source"], "pagemap-scan");
    drop(q);
    let _ = std::fs::remove_file(&sock);
}

#[test]
fn a_non_dumpable_process_of_the_same_user_is_a_permission_error() {
    // The system python (a user-local one may not be reachable by nobody).
    const PY: &str = "/usr/bin/python3";
    if !root("non_dumpable") || !have("setpriv", "non_dumpable") || !have(PY, "non_dumpable") {
        return;
    }
    // A jailed VMM's situation: same uid, PR_SET_DUMPABLE 0.
    let script =
        "import ctypes,time\nctypes.CDLL(None).prctl(4, 0, 0, 0, 0)\nprint('ready', flush=True)\ntime.sleep(60)\n";
    let mut c = Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups", PY, "-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .current_dir("/")
        .spawn()
        .expect("setpriv python3");
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(c.stdout.take().unwrap()), &mut line).unwrap();
    let target = Reaped(c);
    assert_eq!(line.trim(), "ready");
    let o = slat_as(65534, &["inspect", "--pid", &target.0.id().to_string()]);
    assert_eq!(o.code, 2, "{o:?}");
    assert!(o.stderr.contains("permission denied") && o.stderr.contains("non-dumpable"), "{}", o.stderr);
}
