//! Element rings in shared memory: across threads, across fork()ed processes, at the
//! full/empty edges, through wrap-around, and on attach (layout checks, no replay).

use std::sync::atomic::{AtomicU32, Ordering};

use pipeline::ring::{Consumer, ElemRing, PongFrame, Producer, UmemFrameDescriptor, WsFrameInfo};
use pipeline::shm::{ShmDir, HEADER_BYTES};

fn unique(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("t{}_{}_{}", std::process::id(), tag, N.fetch_add(1, Ordering::Relaxed))
}

const N_THREADS: u64 = 5_000_000;
const N_FORK: u64 = 2_000_000;

/// Producer pushes 0..n in variable batches; consumer checks order, no loss, no dup.
fn produce(mut p: Producer<u64>, n: u64) {
    let mut next = 0u64;
    let mut batch = 1usize;
    while next < n {
        let mut staged = 0;
        while staged < batch && next < n && p.stage(next).is_ok() {
            next += 1;
            staged += 1;
        }
        p.publish();
        if staged == 0 {
            std::thread::yield_now();
        }
        batch = batch % 61 + 1;
    }
}

fn consume(c: &mut Consumer<u64>, n: u64) -> u64 {
    let mut expect = c.position();
    let mut sum = 0u64;
    while expect < n {
        let avail = c.available();
        if avail == 0 {
            std::thread::yield_now();
            continue;
        }
        // Consume a varying part of what is there to exercise partial releases.
        let take = avail.min((expect % 97 + 1) as usize);
        for i in 0..take {
            let v = *c.get(i).unwrap();
            assert_eq!(v, expect, "out of order, lost or duplicated element");
            sum = sum.wrapping_add(v);
            expect += 1;
        }
        c.advance(take);
        c.release();
    }
    sum
}

#[test]
fn across_threads_millions_in_order() {
    let dir = ShmDir::create(&unique("thr")).unwrap();
    let (p, mut c) = ElemRing::<u64>::create(&dir, "raw_inbox.shm", 1024).unwrap().split();
    let t = std::thread::spawn(move || produce(p, N_THREADS));
    let sum = consume(&mut c, N_THREADS);
    t.join().unwrap();
    assert_eq!(sum, N_THREADS * (N_THREADS - 1) / 2);
    assert_eq!(c.ring().head(), N_THREADS);
    assert_eq!(c.ring().tail(), N_THREADS);
}

#[test]
fn across_forked_processes_millions_in_order() {
    let name = unique("fork");
    let dir = ShmDir::create(&name).unwrap();
    let ring = ElemRing::<u64>::create(&dir, "raw_inbox.shm", 256).unwrap();
    // SAFETY: the child only touches the already-mapped ring and leaves with _exit, so
    // no destructors or atexit handlers of the test harness run in it.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // The child attaches by name like an independent process would.
        let code = std::panic::catch_unwind(|| {
            let d = ShmDir::open(&name).unwrap();
            let r = ElemRing::<u64>::attach(&d, "raw_inbox.shm").unwrap();
            produce(r.into_producer(), N_FORK);
        })
        .map(|_| 0)
        .unwrap_or(1);
        // SAFETY: leave the forked child without running the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    let sum = consume(&mut ring.into_consumer(), N_FORK);
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "producer child failed: {status}");
    assert_eq!(sum, N_FORK * (N_FORK - 1) / 2);
}

#[test]
fn full_and_empty_edges_and_wrap_around() {
    let dir = ShmDir::create(&unique("edge")).unwrap();
    let ring = ElemRing::<u64>::create(&dir, "pongs.shm", 4).unwrap();
    let (mut p, mut c) = ring.split();
    assert_eq!(c.pop(), None, "empty ring must pop nothing");
    // Go around the 4 slots many times, filling completely each time.
    for lap in 0..1000u64 {
        for i in 0..4 {
            p.push(lap * 4 + i).unwrap();
        }
        assert_eq!(p.push(999), Err(999), "5th push into a 4-slot ring must fail");
        assert_eq!(p.free(), 0);
        for i in 0..4 {
            assert_eq!(c.pop(), Some(lap * 4 + i));
        }
        assert_eq!(c.pop(), None);
        assert_eq!(p.free(), 4);
    }
    // Staged elements are invisible until published.
    p.stage(7).unwrap();
    assert_eq!(c.available(), 0);
    p.publish();
    assert_eq!(c.available(), 1);
    assert_eq!(c.pop(), Some(7));
}

#[test]
fn attacher_continues_from_stored_position_without_replay() {
    let name = unique("att");
    let dir = ShmDir::create(&name).unwrap();
    let ring = ElemRing::<u64>::create(&dir, "ws_frame_info.shm", 8).unwrap();
    let (mut p, mut c) = ring.split();
    for v in 0..6 {
        p.push(v).unwrap();
    }
    for v in 0..4 {
        assert_eq!(c.pop(), Some(v));
    }
    drop(c);
    // A new consumer in "another process" must start at 4, not at 0 or at the head.
    let d2 = ShmDir::open(&name).unwrap();
    let r2 = ElemRing::<u64>::attach(&d2, "ws_frame_info.shm").unwrap();
    let mut c2 = r2.into_consumer();
    assert_eq!(c2.position(), 4);
    assert_eq!(c2.pop(), Some(4));
    assert_eq!(c2.pop(), Some(5));
    assert_eq!(c2.pop(), None);
}

#[test]
fn producer_peek_at_reads_back_consumed_descriptors() {
    let dir = ShmDir::create(&unique("peek")).unwrap();
    let ring = ElemRing::<UmemFrameDescriptor>::create(&dir, "raw_inbox.shm", 4).unwrap();
    let (mut p, mut c) = ring.split();
    for i in 0..4u64 {
        p.push(UmemFrameDescriptor { umem_addr: i * 4096, ..Default::default() }).unwrap();
    }
    c.pop();
    c.pop();
    assert_eq!(p.consumer_pos(), 2);
    // The XDP stage returns frames 0 and 1 to the fill ring by reading its own slots.
    assert_eq!(p.peek_at(0).unwrap().umem_addr, 0);
    assert_eq!(p.peek_at(1).unwrap().umem_addr, 4096);
    assert!(p.peek_at(4).is_none(), "not written yet");
    p.push(UmemFrameDescriptor { umem_addr: 4 * 4096, ..Default::default() }).unwrap();
    assert!(p.peek_at(0).is_none(), "slot 0 has been reused for position 4");
    assert_eq!(p.peek_at(4).unwrap().umem_addr, 4 * 4096);
}

#[test]
fn attach_refuses_wrong_element_size_and_layout_version() {
    let name = unique("lay");
    let dir = ShmDir::create(&name).unwrap();
    let _ring = ElemRing::<WsFrameInfo>::create(&dir, "ws_frame_info.shm", 16).unwrap();
    let d2 = ShmDir::open(&name).unwrap();
    let err = ElemRing::<PongFrame>::attach(&d2, "ws_frame_info.shm").err().expect("must refuse").to_string();
    assert!(err.contains("element size 32") && err.contains("128"), "{err}");

    // Bump the layout version in the file: an attacher must refuse it by name.
    let path = dir.path().join("ws_frame_info.shm");
    let mut bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes.len(), HEADER_BYTES + 16 * 32);
    bytes[8..12].copy_from_slice(&99u32.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let err = ElemRing::<WsFrameInfo>::attach(&d2, "ws_frame_info.shm").err().expect("must refuse").to_string();
    assert!(err.contains("layout version 99"), "{err}");

    // Garbage is not a region.
    std::fs::write(dir.path().join("junk.shm"), vec![0u8; 8192]).unwrap();
    let err = ElemRing::<WsFrameInfo>::attach(&d2, "junk.shm").err().expect("must refuse").to_string();
    assert!(err.contains("bad magic"), "{err}");
    std::fs::remove_file(dir.path().join("junk.shm")).unwrap();
}

#[test]
fn element_layouts_match_the_design() {
    assert_eq!(std::mem::size_of::<UmemFrameDescriptor>(), 32);
    assert_eq!(std::mem::align_of::<UmemFrameDescriptor>(), 32);
    // 16 B of position, length and packed meta, then the arrival and decrypt stamps.
    assert_eq!(std::mem::size_of::<WsFrameInfo>(), 32);
    assert_eq!(std::mem::size_of::<PongFrame>(), 128);
    let w = WsFrameInfo::new(0x1_2345_6789, 77, (1 << 48) + 5, 0x2, true, WsFrameInfo::FLAG_MESSAGE);
    assert_eq!(w.msg_inbox_offset, 0x2345_6789);
    assert_eq!((w.payload_len, w.parse_stamp(), w.opcode(), w.is_final(), w.flags()), (77, 5, 2, true, 1));
    let mut d = UmemFrameDescriptor::default();
    d.set_meta(u64::MAX, 0x12, pipeline::ring::FrameType::Pong);
    assert_eq!((d.timestamp_ns(), d.tcp_flags(), d.frame_type()), ((1 << 48) - 1, 0x12, 2));
    assert!(PongFrame::new(0x0A, &[0; 126]).is_none());
    assert_eq!(PongFrame::new(0x0A, b"hi").unwrap().bytes(), b"hi");
}

/// A hostile or corrupt header must be refused, not trusted: capacity times element size
/// can wrap around (2^60 slots of 16 bytes "fit" a 0-byte payload), and a capacity
/// larger than the file would index past the mapping (issue 9, item 5).
#[test]
fn attach_refuses_a_capacity_that_overflows_or_exceeds_the_file() {
    use std::os::unix::fs::FileExt;
    let name = unique("hcap");
    let dir = ShmDir::create(&name).unwrap();
    let _ring = ElemRing::<WsFrameInfo>::create(&dir, "ws_frame_info.shm", 16).unwrap();
    let path = dir.path().join("ws_frame_info.shm");
    let poke = |off: u64, v: u64| {
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(&v.to_le_bytes(), off).unwrap();
    };
    let d2 = ShmDir::open(&name).unwrap();
    // capacity at byte 24, payload_bytes at 32.
    poke(24, 1 << 40);
    let e = ElemRing::<WsFrameInfo>::attach(&d2, "ws_frame_info.shm").err().expect("capacity 2^40 accepted").to_string();
    assert!(e.contains("capacity"), "{e}");
    // 2^60 * 16 wraps to 0: shrink the file to a bare header page that says so.
    poke(24, 1 << 60);
    poke(32, 0);
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(HEADER_BYTES as u64).unwrap();
    let e = ElemRing::<WsFrameInfo>::attach(&d2, "ws_frame_info.shm").err().expect("wrapping capacity accepted").to_string();
    assert!(e.contains("capacity"), "{e}");
}
