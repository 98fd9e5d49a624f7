//! MSG_INBOX and MSG_OUTBOX: every position near the wrap, contiguous slices across
//! the physical end, backpressure, overrun detection, typed records across threads and
//! processes.

use std::sync::atomic::{AtomicU32, Ordering};

use pipeline::ring::{MsgInbox, MsgOutbox, OutboxKind, OverrunPolicy, Piece, FLAG_MORE};
use pipeline::shm::ShmDir;

fn unique(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("t{}_{}_{}", std::process::id(), tag, N.fetch_add(1, Ordering::Relaxed))
}

fn pattern(pos: u64) -> u8 {
    (pos.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8
}

#[test]
fn every_chunk_size_at_every_position_near_the_wrap_is_one_contiguous_slice() {
    let dir = ShmDir::create(&unique("wrap")).unwrap();
    let inbox = MsgInbox::create(&dir, 4096, OverrunPolicy::Backpressure).unwrap();
    let cap = inbox.capacity() as u64;
    let mut w = inbox.writer();
    // Walk the write position across the physical end in 1-byte steps; at each start
    // write chunks of several sizes (1 byte up to the whole ring) and read them back.
    for start_off in (cap - 70)..(cap + 70) {
        for &len in &[1usize, 2, 7, 63, 64, 65, 1000, 4095, 4096] {
            // Move the stream to the wanted position with everything released.
            let pos = w.position();
            let target = (pos / cap + 1) * cap + start_off % cap;
            while w.position() < target {
                let n = ((target - w.position()) as usize).min(1024);
                let k = w.write(&vec![0u8; n]);
                assert!(k > 0);
                inbox.release_to(w.position());
            }
            let at = w.position();
            assert_eq!(w.free(4096), 4096, "everything was released");
            let buf = w.buf(len);
            assert_eq!(buf.len(), len, "a contiguous {len}-byte slice at offset {}", at % cap);
            for (i, b) in buf.iter_mut().enumerate() {
                *b = pattern(at + i as u64);
            }
            w.commit(len);
            assert_eq!(inbox.readable_from(at), len);
            // SAFETY: [at, at+len) is written and not released.
            let got = unsafe { inbox.slice(at, len) };
            for (i, b) in got.iter().enumerate() {
                assert_eq!(*b, pattern(at + i as u64), "byte {i} of a {len}-byte chunk at {}", at % cap);
            }
            inbox.release_to(at + len as u64);
        }
    }
}

#[test]
fn backpressure_never_overwrites_unreleased_bytes() {
    let dir = ShmDir::create(&unique("bp")).unwrap();
    let inbox = MsgInbox::create(&dir, 4096, OverrunPolicy::Backpressure).unwrap();
    let mut w = inbox.writer();
    assert_eq!(w.write(&[1u8; 3000]), 3000);
    assert_eq!(w.write(&[2u8; 3000]), 1096, "only the free space is taken");
    assert_eq!(w.buf(10).len(), 0, "full: nothing more");
    assert!(!inbox.check_and_clear_dirty());
    inbox.release_to(100);
    assert_eq!(w.buf(1000).len(), 100);
    assert_eq!(inbox.overrun_bytes(), 0);
}

#[test]
fn overwrite_mode_flags_the_overrun_and_the_reader_notices() {
    let dir = ShmDir::create(&unique("ovr")).unwrap();
    let inbox = MsgInbox::create(&dir, 4096, OverrunPolicy::Overwrite).unwrap();
    assert_eq!(inbox.policy(), OverrunPolicy::Overwrite);
    let mut w = inbox.writer();
    let reader_pos = 0u64;
    assert_eq!(w.write(&[1u8; 4000]), 4000);
    assert!(!inbox.overrun_since(reader_pos));
    assert!(!inbox.check_and_clear_dirty());
    assert_eq!(w.write(&[2u8; 500]), 500, "overwrite mode never waits");
    assert!(inbox.overrun_since(reader_pos), "the reader at 0 has been lapped");
    assert!(inbox.check_and_clear_dirty(), "dirty flag set");
    assert!(!inbox.check_and_clear_dirty(), "and cleared by the check");
    assert_eq!(inbox.overrun_bytes(), 404);
    // Resynchronising at the write position leaves an intact reader.
    assert!(!inbox.overrun_since(inbox.write_pos()));
}

#[test]
fn expand_pos_recovers_64_bit_positions_from_32_bits() {
    for &base in &[0u64, 5, (1 << 32) - 3, (1 << 32) + 7, 0xFFFF_FFFF_0000_0000, 1 << 40] {
        for &d in &[0i64, 1, -1, 1000, -1000, (1 << 30), -(1 << 30)] {
            let pos = base.wrapping_add(d as u64);
            assert_eq!(MsgInbox::expand_pos(pos as u32, base), pos, "base {base:#x} delta {d}");
        }
    }
}

#[test]
fn inbox_stream_across_threads_with_random_chunking() {
    const TOTAL: u64 = 64 << 20;
    let dir = ShmDir::create(&unique("ithr")).unwrap();
    let inbox = MsgInbox::create(&dir, 1 << 16, OverrunPolicy::Backpressure).unwrap();
    let mut w = inbox.writer();
    let t = std::thread::spawn(move || {
        let mut chunk = 1usize;
        while w.position() < TOTAL {
            let at = w.position();
            let want = chunk.min((TOTAL - at) as usize);
            let buf = w.buf(want);
            if buf.is_empty() {
                std::thread::yield_now();
                continue;
            }
            let n = buf.len();
            for (i, b) in buf.iter_mut().enumerate() {
                *b = pattern(at + i as u64);
            }
            w.commit(n);
            chunk = chunk * 7 % 20011 + 1;
        }
    });
    let mut pos = 0u64;
    let mut step = 3usize;
    while pos < TOTAL {
        let avail = inbox.readable_from(pos);
        if avail == 0 {
            std::thread::yield_now();
            continue;
        }
        let n = avail.min(step);
        // SAFETY: [pos, pos+n) is written and we have not released it.
        let got = unsafe { inbox.slice(pos, n) };
        for (i, b) in got.iter().enumerate() {
            assert_eq!(*b, pattern(pos + i as u64), "stream byte {}", pos + i as u64);
        }
        pos += n as u64;
        inbox.release_to(pos);
        step = step * 5 % 30011 + 1;
    }
    t.join().unwrap();
    assert_eq!(inbox.overrun_bytes(), 0);
}

#[test]
fn outbox_records_across_threads() {
    const N: u32 = 200_000;
    let dir = ShmDir::create(&unique("othr")).unwrap();
    let outbox = MsgOutbox::create(&dir, 1 << 14).unwrap();
    let w = outbox.sender();
    let t = std::thread::spawn(move || {
        for i in 0..N {
            let len = (i as usize * 31) % 700;
            let payload: Vec<u8> = (0..len).map(|k| (i as usize + k) as u8).collect();
            let kind = if i % 3 == 0 { OutboxKind::Text } else { OutboxKind::Binary };
            loop {
                match w.push_raw(kind, (i % 2) as u16, &payload) {
                    Ok(()) => break,
                    Err(pipeline::Error::WouldBlock) => std::thread::yield_now(),
                    Err(e) => panic!("{e}"),
                }
            }
        }
    });
    let mut r = outbox.reader();
    let mut i = 0u32;
    while i < N {
        let rec = match r.peek().unwrap() {
            Some(rec) => rec,
            None => {
                std::thread::yield_now();
                continue;
            }
        };
        let len = (i as usize * 31) % 700;
        assert_eq!(rec.payload.len(), len, "record {i}");
        assert_eq!(rec.kind, Some(if i % 3 == 0 { OutboxKind::Text } else { OutboxKind::Binary }));
        assert_eq!(rec.flags, (i % 2) as u16);
        for (k, b) in rec.payload.iter().enumerate() {
            assert_eq!(*b, (i as usize + k) as u8);
        }
        r.consume();
        i += 1;
    }
    t.join().unwrap();
    assert_eq!(outbox.pending_bytes(), 0);
}

#[test]
fn outbox_limits_and_close_record() {
    let dir = ShmDir::create(&unique("olim")).unwrap();
    let outbox = MsgOutbox::create(&dir, 4096).unwrap();
    let w = outbox.sender();
    let e = w.push(OutboxKind::Binary, Piece::Whole, &vec![0; 4096]).err().unwrap().to_string();
    assert!(e.contains("exceeds the MSG_OUTBOX record limit"), "{e}");
    let mut payload = 1000u16.to_be_bytes().to_vec();
    payload.extend_from_slice(b"bye");
    w.push(OutboxKind::Close, Piece::Whole, &payload).unwrap();
    w.push(OutboxKind::Text, Piece::More, b"frag").unwrap();
    let mut r = outbox.reader();
    let rec = r.peek().unwrap().unwrap();
    assert_eq!((rec.kind, rec.payload), (Some(OutboxKind::Close), &payload[..]));
    r.consume();
    let rec = r.peek().unwrap().unwrap();
    assert_eq!((rec.kind, rec.flags, rec.payload), (Some(OutboxKind::Text), FLAG_MORE, &b"frag"[..]));
    r.consume();
    assert!(r.peek().unwrap().is_none());
    // Fill until WouldBlock, then drain and continue: the writer sees freed space.
    let mut pushed = 0;
    while w.push_raw(OutboxKind::Binary, 0, &[7u8; 100]).is_ok() {
        pushed += 1;
    }
    assert_eq!(pushed, 4096 / 112);
    r.peek().unwrap().unwrap();
    r.consume();
    w.push_raw(OutboxKind::Binary, 0, &[7u8; 100]).expect("space freed by the reader");
}

/// Many senders, one MSG_OUTBOX, no lock: every record arrives whole, each sender's in
/// its own order, and a message sent in fragments is never interleaved with another
/// message (whole messages are refused while it is open; PINGs may go between).
#[test]
fn outbox_many_senders_no_lock() {
    const THREADS: u32 = 4;
    const PER: u32 = 50_000;
    let dir = ShmDir::create(&unique("ompsc")).unwrap();
    let outbox = MsgOutbox::create(&dir, 1 << 14).unwrap();
    let mut hs = Vec::new();
    for t in 0..THREADS {
        let w = outbox.sender();
        hs.push(std::thread::spawn(move || {
            let mut refused = 0u64;
            for i in 0..PER {
                let len = 8 + (i as usize * 7 + t as usize) % 300;
                let mut payload = vec![(t as u8) ^ (i as u8); len];
                payload[..4].copy_from_slice(&t.to_le_bytes());
                payload[4..8].copy_from_slice(&i.to_le_bytes());
                // Thread 0 sends every 10th message in 3 fragments (+ a PING inside).
                let pieces: Vec<(OutboxKind, Piece, Vec<u8>)> = if t == 0 && i % 10 == 0 {
                    vec![
                        (OutboxKind::Binary, Piece::More, payload.clone()),
                        (OutboxKind::Ping, Piece::Whole, b"p".to_vec()),
                        (OutboxKind::Binary, Piece::More, payload.clone()),
                        (OutboxKind::Binary, Piece::Last, payload.clone()),
                    ]
                } else {
                    vec![(OutboxKind::Binary, Piece::Whole, payload)]
                };
                for (kind, piece, p) in pieces {
                    loop {
                        match w.push(kind, piece, &p) {
                            Ok(()) => break,
                            Err(pipeline::Error::WouldBlock) => std::thread::yield_now(),
                            // Another thread's fragmented message is open: retry.
                            Err(pipeline::Error::Config(_)) => {
                                refused += 1;
                                std::thread::yield_now();
                            }
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
            }
            refused
        }));
    }
    let mut r = outbox.reader();
    let mut next = [0u32; THREADS as usize];
    let mut open: Option<u32> = None;
    let mut records = 0u64;
    let total_data = (THREADS * PER + PER / 10 * 2) as u64;
    let mut data = 0u64;
    while data < total_data {
        let Some(rec) = r.peek().unwrap() else {
            std::thread::yield_now();
            continue;
        };
        records += 1;
        if rec.kind == Some(OutboxKind::Ping) {
            assert_eq!(open, Some(0), "a PING only inside thread 0's fragmented message");
            r.consume();
            continue;
        }
        data += 1;
        let t = u32::from_le_bytes(rec.payload[..4].try_into().unwrap());
        let i = u32::from_le_bytes(rec.payload[4..8].try_into().unwrap());
        assert!(rec.payload[8..].iter().all(|&b| b == (t as u8) ^ (i as u8)), "record {t}/{i} torn");
        if let Some(o) = open {
            assert_eq!(t, o, "thread {t}'s message inside thread {o}'s fragmented one");
        }
        let more = rec.flags & FLAG_MORE != 0;
        if more {
            open = Some(t);
        } else {
            open = None;
            assert_eq!(i, next[t as usize], "thread {t} out of order");
            next[t as usize] += 1;
        }
        r.consume();
    }
    let refused: u64 = hs.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(next, [PER; THREADS as usize]);
    assert_eq!(records, total_data + (PER / 10) as u64);
    assert_eq!(outbox.pending_bytes(), 0);
    eprintln!("{records} records from {THREADS} senders; {refused} sends retried while a fragmented message was open");
}

#[test]
fn inbox_across_forked_processes() {
    const TOTAL: u64 = 16 << 20;
    let name = unique("ifork");
    let dir = ShmDir::create(&name).unwrap();
    let inbox = MsgInbox::create(&dir, 1 << 15, OverrunPolicy::Backpressure).unwrap();
    // SAFETY: the child only uses the mapping it attaches and leaves with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        let ok = std::panic::catch_unwind(|| {
            let d = ShmDir::open(&name).unwrap();
            let ib = MsgInbox::attach(&d).unwrap();
            let mut w = ib.writer();
            let mut chunk = 1usize;
            while w.position() < TOTAL {
                let at = w.position();
                let buf = w.buf(chunk.min((TOTAL - at) as usize));
                if buf.is_empty() {
                    std::thread::yield_now();
                    continue;
                }
                let n = buf.len();
                for (i, b) in buf.iter_mut().enumerate() {
                    *b = pattern(at + i as u64);
                }
                w.commit(n);
                chunk = chunk * 7 % 16411 + 1;
            }
        })
        .is_ok();
        // SAFETY: leave the child without running the harness's destructors.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mut pos = 0u64;
    while pos < TOTAL {
        let avail = inbox.readable_from(pos);
        if avail == 0 {
            std::thread::yield_now();
            continue;
        }
        // SAFETY: written and unreleased.
        let got = unsafe { inbox.slice(pos, avail) };
        for (i, b) in got.iter().enumerate() {
            assert_eq!(*b, pattern(pos + i as u64));
        }
        pos += avail as u64;
        inbox.release_to(pos);
    }
    let mut status = 0;
    // SAFETY: our child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
}

/// The inbox's capacity masks every position: a header claiming more than the file
/// holds (or a non-power of two) is refused on attach, not trusted (issue 9, item 5).
#[test]
fn inbox_attach_refuses_a_capacity_the_file_does_not_hold() {
    use std::os::unix::fs::FileExt;
    let name = unique("hcap");
    let dir = ShmDir::create(&name).unwrap();
    let _inbox = MsgInbox::create(&dir, 4096, OverrunPolicy::Backpressure).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(dir.path().join("msg_inbox.shm")).unwrap();
    let d2 = ShmDir::open(&name).unwrap();
    for cap in [1u64 << 40, 4095, 0, 8192] {
        f.write_all_at(&cap.to_le_bytes(), 24).unwrap();
        let e = MsgInbox::attach(&d2).err().expect("hostile capacity accepted").to_string();
        assert!(e.contains("capacity"), "{cap}: {e}");
    }
}
