//! `Receiver::event_fd` / `pl_event_fd`: a consumer sleeping on the eventfd gets every
//! message of a paced feed and the end of the stream in every layout (a lost wakeup
//! shows up as a poll(2) timeout with a frame ready), the producer never writes the
//! fd while the consumer is not armed, and the fd stays readable after the end.

use std::ffi::{c_int, CString};
use std::time::{Duration, Instant};

use pipeline::ffi::*;
use pipeline::pipeline::{Config, DisconnectKind, Pipeline, PipelineState};
use pipeline::runner::{Layout, WaitKind};
use pipeline_testkit::feed_server::{Ending, FeedServer};
use pipeline_testkit::ffi::{last_error, synthetic_config};
use pipeline_testkit::synthetic::*;

/// poll(2) on `fd` for up to `ms`: is it readable?
fn readable(fd: c_int, ms: i32) -> bool {
    let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: one pollfd on the stack.
    let n = unsafe { libc::poll(&mut p, 1, ms) };
    n == 1 && p.revents & libc::POLLIN != 0
}

fn sleeping_consumer(layout: Layout, tag: &str) {
    const N: usize = 400;
    let server = FeedServer::start(false, vec![(N, Ending::Close1001)], Duration::from_micros(500));
    let (name, _g) = unique(tag);
    let mut c = Config::new(&server.url());
    c.name = Some(name.clone());
    c.layout = Some(layout);
    c.wait = Some(WaitKind::Backoff);
    c.quiet = true;
    let mut p = Pipeline::start(c).expect("start");
    let mut rx = p.receiver().expect("receiver");
    let fd = rx.event_fd().expect("a polling pipeline has an event fd");
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut got, mut sleeps, mut spurious) = (0usize, 0usize, 0usize);
    loop {
        assert!(Instant::now() < deadline, "{tag}: only {got} of {N} after 30 s");
        let mut took = 0;
        while let Some(f) = rx.next_frame() {
            assert_eq!(f.text().unwrap(), format!("0-{got}"), "{tag}: message {got}");
            got += 1;
            took += 1;
        }
        if matches!(p.state(), PipelineState::Disconnected { .. }) && rx.next_frame().is_none() {
            break;
        }
        if sleeps > 0 && took == 0 {
            spurious += 1;
        }
        // Armed by the `None` above: a publish or a state change must wake us. 2 s
        // without a wakeup while a frame is ready is a lost wakeup.
        if !readable(fd, 2000) {
            assert!(rx.next_frame().is_none(), "{tag}: a frame was ready but the event fd was never signalled (lost wakeup)");
            assert!(!matches!(p.state(), PipelineState::Disconnected { .. }), "{tag}: disconnected without a wakeup");
        }
        sleeps += 1;
    }
    assert_eq!(got, N, "{tag}");
    match p.state() {
        PipelineState::Disconnected { reason } => {
            assert!(matches!(reason.kind, DisconnectKind::ServerClosed { code: 1001, .. }), "{tag}: {reason}")
        }
        s => panic!("{tag}: {s:?}"),
    }
    // The end of the stream leaves it readable: a loop that waits again returns at once.
    assert!(readable(fd, 0), "{tag}: the event fd must stay readable after the end");
    assert!(readable(fd, 0), "{tag}: ... and keep being readable");
    // At 0.5 ms per message the consumer keeps up and sleeps between most of them, and
    // it never spins: each sleep ended with a wakeup (spurious ones are allowed, but a
    // fd that is always readable would make nearly every sleep one).
    assert!(sleeps >= N / 4, "{tag}: {sleeps} sleeps for {N} paced messages: did it sleep at all?");
    assert!(spurious * 2 < sleeps, "{tag}: {spurious} of {sleeps} wakeups brought nothing");
    eprintln!("{tag}: {N} messages, {sleeps} sleeps, {spurious} spurious wakeups");
    p.stop();
}

#[test]
fn a_consumer_sleeping_on_the_event_fd_gets_everything_inline() {
    sleeping_consumer(Layout::Inline, "efd_inline");
}

#[test]
fn a_consumer_sleeping_on_the_event_fd_gets_everything_threads() {
    sleeping_consumer(Layout::Threads, "efd_threads");
}

#[test]
fn a_consumer_sleeping_on_the_event_fd_gets_everything_processes() {
    sleeping_consumer(Layout::Processes, "efd_procs");
}

/// CPU time of the calling thread, in seconds.
fn thread_cpu() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// With the event fd in use, `next_frame_timeout` sleeps on it: a second of a quiet
/// feed costs the waiting thread one poll(2) (0.0001 s measured here); the backoff it
/// replaces wakes every 50 µs and cost 0.055 s, five times the bound.
#[test]
fn next_frame_timeout_sleeps_on_the_event_fd() {
    let (name, _g) = unique("efd_timeout");
    let mut p = Pipeline::start(config(&name, script(text_frames(3), 512), Layout::Threads)).expect("start");
    let mut rx = p.receiver().expect("receiver");
    rx.event_fd().expect("event fd");
    for i in 0..3 {
        let f = rx.next_frame_timeout(Duration::from_secs(5)).expect("a message");
        assert_eq!(f.text().unwrap(), msg(i));
    }
    let (c0, t0) = (thread_cpu(), Instant::now());
    assert!(rx.next_frame_timeout(Duration::from_secs(1)).is_none());
    let (cpu, wall) = (thread_cpu() - c0, t0.elapsed());
    eprintln!("quiet second: {cpu:.4} s CPU over {wall:?}");
    assert!(wall >= Duration::from_millis(950), "{wall:?}");
    assert!(cpu < 0.01, "next_frame_timeout burned {cpu:.3} s of CPU in a quiet second");
    p.stop();
}

/// The server's frames followed by its close (1000): the stream ends after them.
fn closed(mut v: Vec<u8>) -> Vec<u8> {
    pipeline::pipeline::encode_server_frame(&mut v, 0x8, true, &1000u16.to_be_bytes());
    v
}

/// A busy consumer never arms, so the producer never writes the fd: 20,000 messages
/// published and the state moved to Disconnected, and the fd is still not readable.
#[test]
fn the_producer_does_not_write_the_fd_unless_the_consumer_armed_it() {
    const N: usize = 20_000;
    let (name, _g) = unique("efd_busy");
    let mut c = config(&name, script(closed(text_frames(N)), 4096), Layout::Threads);
    c.inbox_size = 8 << 20;
    c.frame_ring = 32768;
    let mut p = Pipeline::start(c).expect("start");
    let mut rx = p.receiver().expect("receiver");
    let fd = rx.event_fd().expect("event fd");
    // Not polling at all (so not armed) while the stages publish every frame and end.
    assert!(p.wait_disconnected(Duration::from_secs(30)), "the synthetic stream did not end");
    let published = p.stats().get(pipeline::stats::Counter::Messages);
    assert_eq!(published, N as u64);
    assert!(!readable(fd, 0), "written although the consumer never armed it");
    for i in 0..N {
        let f = rx.next_frame().unwrap_or_else(|| panic!("message {i} missing"));
        assert_eq!(f.text().unwrap(), msg(i));
    }
    assert!(rx.next_frame().is_none());
    assert!(readable(fd, 0), "the end of the stream leaves it readable");
    p.stop();
}

/// The C API: `pl_event_fd` on a polling pipeline, `PL_ERR_CONFIG` with a callback,
/// `PL_ERR_NULL_ARG` for NULLs; a C-style wait loop reads everything and ends.
#[test]
fn pl_event_fd_in_a_c_style_wait_loop() {
    const N: usize = 3000;
    let (name, _g) = unique("efd_c");
    let data = closed(text_frames(N));
    let url = CString::new("wss://synthetic.test/x").unwrap();
    let cname = CString::new(name.clone()).unwrap();
    unsafe {
        let mut cfg = std::mem::zeroed::<PlConfig>();
        synthetic_config(&mut cfg, &url, &cname, &data);
        cfg.layout = PlLayout::PL_LAYOUT_PROCESSES as u32;
        let mut p: *mut pl_pipeline = std::ptr::null_mut();
        assert_eq!(pl_start(&cfg, &mut p), PlResult::PL_OK, "{}", last_error());
        assert_eq!(pl_event_fd(std::ptr::null_mut(), std::ptr::null_mut()), PlResult::PL_ERR_NULL_ARG);
        assert_eq!(pl_event_fd(p, std::ptr::null_mut()), PlResult::PL_ERR_NULL_ARG);
        let mut fd: c_int = -1;
        assert_eq!(pl_event_fd(p, &mut fd), PlResult::PL_OK);
        assert!(fd >= 0);
        let mut f = std::mem::zeroed::<PlFrame>();
        let mut got = 0usize;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            assert!(Instant::now() < deadline, "only {got} of {N}");
            match pl_poll(p, &mut f) {
                PlResult::PL_OK => {
                    let s = std::slice::from_raw_parts(f.payload, f.len);
                    assert_eq!(s, msg(got).as_bytes());
                    got += 1;
                    assert_eq!(pl_release(p, &f), PlResult::PL_OK);
                }
                PlResult::PL_ERR_WOULD_BLOCK => {
                    if !readable(fd, 2000) {
                        assert_ne!(pl_poll(p, &mut f), PlResult::PL_OK, "lost wakeup at {got}");
                    }
                }
                PlResult::PL_ERR_CLOSED => break,
                r => panic!("pl_poll: {r:?}: {}", last_error()),
            }
        }
        assert_eq!(got, N);
        assert!(readable(fd, 0), "readable after PL_ERR_CLOSED");
        pl_free(p);
    }
}

#[test]
fn pl_event_fd_is_refused_with_callback_delivery() {
    let (name, _g) = unique("efd_cb");
    let data = text_frames(10);
    let url = CString::new("wss://synthetic.test/x").unwrap();
    let cname = CString::new(name.clone()).unwrap();
    unsafe extern "C" fn on_msg(_: *mut std::ffi::c_void, _: *const u8, _: usize, _: u32) {}
    unsafe {
        let mut cfg = std::mem::zeroed::<PlConfig>();
        synthetic_config(&mut cfg, &url, &cname, &data);
        cfg.on_message = Some(on_msg);
        let mut p: *mut pl_pipeline = std::ptr::null_mut();
        assert_eq!(pl_start(&cfg, &mut p), PlResult::PL_OK, "{}", last_error());
        let mut fd: c_int = -1;
        assert_eq!(pl_event_fd(p, &mut fd), PlResult::PL_ERR_CONFIG);
        assert_eq!(fd, -1, "out parameter written on failure");
        assert!(last_error().contains("callback"), "{}", last_error());
        pl_free(p);
    }
}
