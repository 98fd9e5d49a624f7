//! The timestamp path allocates nothing per message: stamped commits into MSG_INBOX,
//! the WebSocket side's stamp lookup, and the reader taking frames with their stamps,
//! recording the four stage histograms and the server stamp's one-way latency. Counted
//! with a global allocator (as in tests/feed_noalloc.rs); one test in this binary.

use pipeline::latency::{ServerStamp, Timestamps};
use pipeline::ring::{ElemRing, MsgInbox, OverrunPolicy, StampCursor, WsFrameInfo};
use pipeline::shm::{names, ShmDir};
use pipeline::stage::{now_ns, FrameReader};
use pipeline::stats::{Latency, StatsRegion};
use pipeline_testkit::alloc::{self, CountingAlloc};
use pipeline_testkit::synthetic::unique;

#[global_allocator]
static A: CountingAlloc = CountingAlloc;

#[test]
fn no_allocation_per_stamped_message() {
    let (name, _g) = unique("lat_noalloc");
    let dir = ShmDir::create(&name).unwrap();
    let stats = StatsRegion::create(&dir).unwrap();
    let inbox = MsgInbox::create(&dir, 1 << 16, OverrunPolicy::Backpressure).unwrap();
    let (mut tx, rx) = ElemRing::<WsFrameInfo>::create(&dir, names::WS_FRAME_INFO, 256).unwrap().split();
    let mut w = inbox.writer();
    let mut cursor = StampCursor::new(&inbox);
    let mut reader = FrameReader::new(rx, inbox.clone());
    reader.record_latency(stats.clone());
    reader.record_server_stamp(&ServerStamp::JsonField { name: "E".into(), unit_ns: 1_000_000 });
    let sent_ms = (Timestamps::to_unix_ns(now_ns()) / 1_000_000 - 1).to_string();
    let mut msg = [0u8; 64];
    let body = format!("{{\"e\":\"t\",\"E\":{sent_ms},\"x\":1}}");
    msg[..body.len()].copy_from_slice(body.as_bytes());
    let msg = &msg[..body.len()];
    let n = 20_000u64;
    // Warm the thread-local and the reader once before arming.
    let _ = Timestamps::current();
    alloc::arm();
    let mut taken = 0u64;
    for i in 0..n {
        // Transport: one stamped commit per message (the worst case: a read each).
        let b = w.buf(msg.len());
        assert_eq!(b.len(), msg.len(), "inbox space at message {i}");
        b.copy_from_slice(msg);
        let pos = w.position();
        let d = now_ns();
        w.commit_stamped(msg.len(), d - 10, d);
        // WebSocket stage: the stamps for the frame's end, then the entry.
        let (arrival, decrypted) = cursor.stamps_for(pos + msg.len() as u64);
        let info = WsFrameInfo::new(pos, msg.len() as u32, now_ns(), 1, true, 0).with_stamps(arrival, decrypted);
        assert!(tx.push(info).is_ok());
        // AppClient: take with stamps, record, release.
        let f = reader.take().expect("frame");
        assert!(f.ts.arrival_ns != 0 && f.ts.delivered_ns >= f.ts.parsed_ns);
        reader.release(&f);
        taken += 1;
    }
    reader.publish();
    let allocs = alloc::disarm();
    assert_eq!(allocs, 0, "allocations on the stamped path over {n} messages");
    assert_eq!(taken, n);
    for h in Latency::ALL {
        assert_eq!(stats.histogram(h).unwrap().count, n, "{}", h.name());
    }
}
