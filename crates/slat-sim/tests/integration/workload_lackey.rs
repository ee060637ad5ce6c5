//! valgrind lackey traces: parsing, streaming, malformed lines, and replay folded into a range.

use std::io::Cursor;

use slat_sim::workload::{
    AccessKind, GvaRange, LackeyError, LackeyLine, LackeyOp, LackeyReader, Pattern, PhaseSpec, Workload, WorkloadError,
};

/// The start of a real `valgrind --tool=lackey --trace-mem=yes /bin/true` run, plus a modify.
const TRACE: &str = "==23596== Lackey, an example Valgrind tool
==23596== Copyright (C) 2002-2017, and GNU GPL'd, by Nicholas Nethercote.
==23596== Command: /bin/true
==23596== 
I  0401ab70,3
I  0401ab73,5
 S 1fff000688,8
I  0401b770,1
 L 04222cac,8
 M 0421b3e8,4

==23596== Counted 0 calls to main()
";

fn accesses(text: &str) -> Result<Vec<(u64, AccessKind)>, LackeyError> {
    LackeyReader::new(Cursor::new(text.as_bytes()), "t.lackey").collect()
}

#[test]
fn parses_every_line_kind() {
    assert_eq!(
        LackeyLine::parse(b"I  04010173,3"),
        Ok(Some(LackeyLine { op: LackeyOp::Instr, addr: 0x0401_0173, size: 3 }))
    );
    assert_eq!(
        LackeyLine::parse(b" L 04222cac,8"),
        Ok(Some(LackeyLine { op: LackeyOp::Load, addr: 0x0422_2cac, size: 8 }))
    );
    assert_eq!(
        LackeyLine::parse(b" S 04222cac,8\n"),
        Ok(Some(LackeyLine { op: LackeyOp::Store, addr: 0x0422_2cac, size: 8 }))
    );
    assert_eq!(
        LackeyLine::parse(b" M 0421b3e8,4\r\n"),
        Ok(Some(LackeyLine { op: LackeyOp::Modify, addr: 0x0421_b3e8, size: 4 }))
    );
    assert_eq!(LackeyLine::parse(b"==123== Lackey"), Ok(None));
    assert_eq!(LackeyLine::parse(b"   "), Ok(None));
    for bad in [
        &b"X 1000,4"[..],
        b"I1000,4",
        b"I  10z0,4",
        b"I  1000",
        b"I  1000,",
        b"I  ,4",
        b"I  1000,4x",
        b"I  11112222333344445,4",
    ] {
        assert!(LackeyLine::parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
    }
}

#[test]
fn reads_a_trace_and_splits_modify_into_read_then_write() {
    let a = accesses(TRACE).unwrap();
    assert_eq!(
        a,
        [
            (0x0401_ab70, AccessKind::Exec),
            (0x0401_ab73, AccessKind::Exec),
            (0x1f_ff00_0688, AccessKind::Write),
            (0x0401_b770, AccessKind::Exec),
            (0x0422_2cac, AccessKind::Read),
            (0x0421_b3e8, AccessKind::Read),
            (0x0421_b3e8, AccessKind::Write),
        ]
    );
}

#[test]
fn malformed_line_error_names_the_line() {
    let text = TRACE.replace(" L 04222cac,8", " L 04222cac;8");
    let err = accesses(&text).unwrap_err();
    assert_eq!(err.line(), Some(9));
    let msg = err.to_string();
    assert!(msg.starts_with("t.lackey:9: malformed lackey line \" L 04222cac;8\""), "{msg}");
}

#[test]
fn replay_folds_addresses_into_the_range_and_loops() {
    let dir = std::env::temp_dir().join(format!("slat-lackey-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("t.lackey");
    std::fs::write(&path, TRACE).unwrap();
    let range = GvaRange::new(1 << 30, 256 << 20);
    let spec = PhaseSpec::new("trace", Pattern::Trace { path: path.clone() }, range, 17).with_vcpus(2, 4);
    let mut w = Workload::new(1, vec![spec]).unwrap();
    let a: Vec<_> = w.by_ref().collect();
    assert!(w.error().is_none());
    assert_eq!(a.len(), 17);
    let trace = accesses(TRACE).unwrap();
    for (i, x) in a.iter().enumerate() {
        let (addr, kind) = trace[i % trace.len()];
        assert_eq!(x.gva, range.start + addr % range.len, "access {i}");
        assert_eq!(x.kind, kind);
        assert_eq!(x.vcpu, (i as u32 / 4) % 2);
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn replay_stops_with_the_error_of_a_malformed_line() {
    let dir = std::env::temp_dir().join(format!("slat-lackey-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.lackey");
    std::fs::write(&path, "I  1000,4\n L 2000,8\ngarbage\n").unwrap();
    let spec = PhaseSpec::new("trace", Pattern::Trace { path: path.clone() }, GvaRange::new(0, 1 << 20), 10);
    let mut w = Workload::new(1, vec![spec]).unwrap();
    assert_eq!(w.by_ref().count(), 2);
    match w.error() {
        Some(WorkloadError::Trace { phase, error }) => {
            assert_eq!(phase, "trace");
            assert_eq!(error.line(), Some(3));
            assert!(error.to_string().contains("bad.lackey:3: malformed lackey line \"garbage\""), "{error}");
        }
        other => panic!("{other:?}"),
    }
    // An empty trace and a missing file are errors too.
    std::fs::write(&path, "==1== nothing\n").unwrap();
    let spec = PhaseSpec::new("trace", Pattern::Trace { path: path.clone() }, GvaRange::new(0, 1 << 20), 10);
    let mut w = Workload::new(1, vec![spec]).unwrap();
    assert_eq!(w.by_ref().count(), 0);
    assert!(matches!(w.error(), Some(WorkloadError::Trace { error: LackeyError::Empty { .. }, .. })));
    let spec = PhaseSpec::new("trace", Pattern::Trace { path: dir.join("nope.lackey") }, GvaRange::new(0, 1 << 20), 10);
    assert!(matches!(Workload::new(1, vec![spec]), Err(WorkloadError::Trace { error: LackeyError::Io { .. }, .. })));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn streams_long_traces() {
    // 200k lines through a small buffer: nothing is held but the current line.
    let mut text = String::new();
    for i in 0..200_000u64 {
        text.push_str(&format!("{}{:08x},8\n", if i % 3 == 0 { "I  " } else { " L " }, i * 64));
    }
    let reader = LackeyReader::new(std::io::BufReader::with_capacity(256, Cursor::new(text.into_bytes())), "big");
    let mut n = 0u64;
    for (i, a) in reader.enumerate() {
        let (addr, _) = a.unwrap();
        assert_eq!(addr, i as u64 * 64);
        n += 1;
    }
    assert_eq!(n, 200_000);
}
