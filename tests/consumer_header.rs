//! The header-only C consumer (`include/pipeline_consumer.h`) against rings written by
//! the Rust side: reads every frame in place and in order, continues from the stored
//! position, refuses an unknown layout version, and notices an overrun.
//!
//! The probe is built with AddressSanitizer and UBSan (`SANITIZE`), so a read outside
//! what the header maps, or undefined behaviour in it, fails the test instead of
//! passing by luck.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use pipeline::ring::{ElemRing, MsgInbox, OverrunPolicy, WsFrameInfo};
use pipeline::shm::{names, ShmDir};

fn unique(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("t{}_{}_{}", std::process::id(), tag, N.fetch_add(1, Ordering::Relaxed))
}

fn build_probe() -> PathBuf {
    static PROBE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PROBE.get_or_init(compile_probe).clone()
}

/// Every C program that exercises `pipeline_consumer.h` in a test is built with these:
/// any sanitizer report aborts the program (no recovery), so the test sees it.
const SANITIZE: [&str; 3] = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-g"];

fn compile_probe() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("plc_consumer_probe");
    let o = Command::new("cc")
        .args(["-std=c11", "-O2", "-Wall", "-Wextra", "-Werror"])
        .args(SANITIZE)
        .arg("-o")
        .arg(&out)
        .arg(root.join("tests/c/consumer_probe.c"))
        .arg(format!("-I{}", root.join("include").display()))
        .output()
        .expect("cc");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out
}

/// Frame i's arrival stamp is STAMP_BASE + i * 1000 (as in tests/c/consumer_probe.c).
const STAMP_BASE: u64 = (1 << 48) - 150_000_000;

/// Write frame `i` ("msg i") into the inbox and publish its info.
fn put(w: &mut pipeline::ring::InboxWriter, p: &mut pipeline::ring::Producer<WsFrameInfo>, i: u64) -> bool {
    let payload = format!("msg {i}");
    // A 2-byte fake frame header before each payload, like a real server frame.
    let b = w.buf(2 + payload.len());
    if b.len() < 2 + payload.len() {
        return false;
    }
    b[0] = 0x81;
    b[1] = payload.len() as u8;
    b[2..].copy_from_slice(payload.as_bytes());
    let pos = w.position() + 2;
    w.commit(2 + payload.len());
    // Stamps the probe checks (tests/c/consumer_probe.c, STAMP_BASE): frames around
    // i = 150,000 have an arrival below a 2^48 ns boundary and a parse stamp above it,
    // so the probe sees the 48-bit parse stamp rebuilt across the boundary.
    let arrival = STAMP_BASE + i * 1000;
    let info = WsFrameInfo::new(pos, payload.len() as u32, arrival + 250_000, 1, true, 0).with_stamps(arrival, arrival + 100);
    while p.push(info).is_err() {
        std::thread::yield_now();
    }
    true
}

#[test]
fn c_consumer_reads_every_frame_in_place_and_continues_from_the_stored_position() {
    const N: u64 = 300_000;
    let probe = build_probe();
    let name = unique("cons");
    let dir = ShmDir::create(&name).unwrap();
    let ring = ElemRing::<WsFrameInfo>::create(&dir, names::WS_FRAME_INFO, 1024).unwrap();
    let inbox = MsgInbox::create(&dir, 1 << 16, OverrunPolicy::Backpressure).unwrap();
    let mut w = inbox.writer();
    let mut p = ring.into_producer();
    let writer = std::thread::spawn(move || {
        for i in 0..N {
            while !put(&mut w, &mut p, i) {
                std::thread::yield_now();
            }
        }
        (w, p)
    });
    let out = Command::new(&probe).args([&name, &N.to_string()]).output().unwrap();
    let (mut w, mut p) = writer.join().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("ok {N}"));
    assert_eq!(p.ring().tail(), N, "the C side released every frame");
    assert_eq!(inbox.read_pos(), inbox.write_pos(), "and every byte");

    // A second attach continues at N: frames N.. carry "msg N".. but the probe expects
    // "msg 0".. — so publish frames numbered from 0 again and check it reads those,
    // i.e. it did not replay the first N.
    for i in 0..10 {
        assert!(put(&mut w, &mut p, i));
    }
    let out = Command::new(&probe).args([&name, "10"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok 10");
}

#[test]
fn c_consumer_refuses_an_unknown_layout_version() {
    let probe = build_probe();
    let name = unique("ver");
    let dir = ShmDir::create(&name).unwrap();
    let _ring = ElemRing::<WsFrameInfo>::create(&dir, names::WS_FRAME_INFO, 16).unwrap();
    let _inbox = MsgInbox::create(&dir, 4096, OverrunPolicy::Backpressure).unwrap();
    let path = dir.path().join(names::WS_FRAME_INFO);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[8..12].copy_from_slice(&2u32.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let out = Command::new(&probe).args([&name, "1"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("layout version 2") && text.contains("refusing"), "{text}");
    // And a pipeline that does not exist is named.
    let out = Command::new(&probe).args([&unique("none"), "1"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("is pipeline"), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn c_consumer_notices_when_it_has_been_overrun() {
    let probe = build_probe();
    let name = unique("ovr");
    let dir = ShmDir::create(&name).unwrap();
    let ring = ElemRing::<WsFrameInfo>::create(&dir, names::WS_FRAME_INFO, 4096).unwrap();
    let inbox = MsgInbox::create(&dir, 4096, OverrunPolicy::Overwrite).unwrap();
    let mut w = inbox.writer();
    let mut p = ring.into_producer();
    // Nobody reads: in overwrite mode the producer laps the 4 KiB inbox.
    for i in 0..2000 {
        assert!(put(&mut w, &mut p, i));
    }
    assert!(inbox.overrun_bytes() > 0);
    let out = Command::new(&probe).args([&name, "2000"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(4), "{text}");
    assert!(text.contains("overrun noticed after 0 frames"), "{text}");
}

// ---- Hostile or foreign shared memory (issue 9, items 1 and 5) ---------------------

use std::os::unix::fs::{chown, symlink, FileExt, PermissionsExt};

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A pipeline directory with a 16-entry WS_FRAME_INFO ring and a 4 KiB inbox.
fn setup(tag: &str) -> (String, ShmDir, ElemRing<WsFrameInfo>, MsgInbox) {
    let name = unique(tag);
    let dir = ShmDir::create(&name).unwrap();
    let ring = ElemRing::<WsFrameInfo>::create(&dir, names::WS_FRAME_INFO, 16).unwrap();
    let inbox = MsgInbox::create(&dir, 4096, OverrunPolicy::Backpressure).unwrap();
    (name, dir, ring, inbox)
}

/// Overwrite bytes of a region file in place (what a corrupt or hostile writer does).
fn poke(dir: &ShmDir, file: &str, off: u64, bytes: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(dir.path().join(file)).unwrap();
    f.write_all_at(bytes, off).unwrap();
}

/// Run the probe; (exit code, stdout + stderr). A crash (signal, or a sanitizer abort)
/// shows as None or as ASan's exit code with its report in the text.
fn probe(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(build_probe()).args(args).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code(), text)
}

// Offsets in a region file: header fields, then the control area at 256.
const CAPACITY_OFF: u64 = 24;
const HEAD_OFF: u64 = 256;
const TAIL_OFF: u64 = 256 + 128;

#[test]
fn c_consumer_refuses_a_ring_capacity_the_file_cannot_hold() {
    let (name, dir, _ring, _inbox) = setup("cap");
    // Capacity 2^40 in a file holding 16 slots, and a tail far into that "ring".
    poke(&dir, names::WS_FRAME_INFO, CAPACITY_OFF, &(1u64 << 40).to_le_bytes());
    poke(&dir, names::WS_FRAME_INFO, TAIL_OFF, &(1u64 << 39).to_le_bytes());
    poke(&dir, names::WS_FRAME_INFO, HEAD_OFF, &((1u64 << 39) + 1).to_le_bytes());
    let (code, text) = probe(&[&name, "1", "drain"]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("capacity") && text.contains("-2 "), "PLC_ERR_LAYOUT naming the capacity: {text}");
    // cap * 16 wrapping to the payload size must not pass either.
    poke(&dir, names::WS_FRAME_INFO, CAPACITY_OFF, &((1u64 << 60) + 16).to_le_bytes());
    let (code, text) = probe(&[&name, "1", "drain"]);
    assert_eq!(code, Some(2), "{text}");
}

#[test]
fn c_consumer_refuses_a_frame_longer_than_the_inbox() {
    let (name, _dir, ring, inbox) = setup("len");
    let mut w = inbox.writer();
    assert_eq!(w.write(b"\x81\x08msg 0xyz"), 10);
    let mut p = ring.into_producer();
    p.push(WsFrameInfo::new(2, 0xFFFF_FFF0, 0, 1, true, 0)).unwrap();
    let (code, text) = probe(&[&name, "1", "drain"]);
    assert_eq!(code, Some(6), "{text}");
    assert!(text.contains("-5 ") && text.contains("corrupt"), "PLC_ERR_CORRUPT: {text}");
    assert_eq!(p.ring().tail(), 0, "a corrupt entry is not released");
}

#[test]
fn c_consumer_refuses_a_frame_beyond_the_write_position() {
    let (name, _dir, ring, inbox) = setup("pos");
    let mut w = inbox.writer();
    assert_eq!(w.write(b"\x81\x08msg 0xyz"), 10);
    // Inside the mapping once taken modulo the capacity, but never written.
    ring.into_producer().push(WsFrameInfo::new(5000, 10, 0, 1, true, 0)).unwrap();
    let (code, text) = probe(&[&name, "1", "drain"]);
    assert_eq!(code, Some(6), "{text}");
    assert!(text.contains("-5 ") && text.contains("write position"), "{text}");
}

#[test]
fn c_consumer_refuses_a_producer_position_more_than_a_ring_ahead() {
    let (name, dir, _ring, _inbox) = setup("head");
    poke(&dir, names::WS_FRAME_INFO, HEAD_OFF, &(1u64 << 20).to_le_bytes());
    let (code, text) = probe(&[&name, "100", "drain"]);
    assert_eq!(code, Some(6), "{text}");
    assert!(text.contains("-5 "), "{text}");
}

#[test]
fn c_consumer_refuses_regions_others_could_have_written() {
    // A region file replaced by a symlink (here to another pipeline's inbox).
    let (name, dir, _ring, _inbox) = setup("lnk");
    let (_other, odir, _oring, _oinbox) = setup("lnko");
    std::fs::remove_file(dir.path().join(names::MSG_INBOX)).unwrap();
    symlink(odir.path().join(names::MSG_INBOX), dir.path().join(names::MSG_INBOX)).unwrap();
    let (code, text) = probe(&[&name, "1"]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("symbolic link") && text.contains("-4 "), "PLC_ERR_OWNER: {text}");

    // A region writable by others.
    let (name, dir, _ring, _inbox) = setup("mod");
    let f = dir.path().join(names::WS_FRAME_INFO);
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o666)).unwrap();
    let (code, text) = probe(&[&name, "1"]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("mode 0666") && text.contains("-4 "), "{text}");

    // A directory writable by others.
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o733)).unwrap();
    let (code, text) = probe(&[&name, "1"]);
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("mode 0733") && text.contains("-4 "), "{text}");

    if is_root() {
        // A directory (and files) owned by another user: `nobody`.
        chown(dir.path(), Some(65534), None).unwrap();
        let (code, text) = probe(&[&name, "1"]);
        chown(dir.path(), Some(0), None).unwrap();
        assert_eq!(code, Some(2), "{text}");
        assert!(text.contains("owned by uid 65534") && text.contains("-4 "), "{text}");
        chown(&f, Some(65534), None).unwrap();
        let (code, text) = probe(&[&name, "1"]);
        chown(&f, Some(0), None).unwrap();
        assert_eq!(code, Some(2), "{text}");
        assert!(text.contains("owned by uid 65534"), "{text}");
    }
}
