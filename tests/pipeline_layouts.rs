//! All three layouts deliver the same 100,000 messages in order (backoff waits),
//! by callback and by polling.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pipeline::pipeline::Pipeline;
use pipeline::runner::Layout;
use pipeline::stats::Counter;
use pipeline_testkit::synthetic::*;

const N: usize = 100_000;

fn polled(layout: Layout, tag: &str) {
    let (name, _g) = unique(tag);
    let mut p =
        Pipeline::start(config(&name, script(text_frames(N), 1500), layout)).expect("start");
    assert_eq!(p.layout(), layout);
    let mut rx = p.receiver().expect("receiver");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut i = 0;
    while i < N {
        assert!(
            Instant::now() < deadline,
            "only {i} of {N} messages after 60 s"
        );
        if let Some(f) = rx.next_frame_timeout(Duration::from_millis(100)) {
            assert_eq!(f.opcode(), 1);
            assert!(f.is_final());
            assert_eq!(f.text().unwrap(), msg(i), "message {i}");
            i += 1;
        }
    }
    assert!(rx.next_frame().is_none());
    let s = p.stats();
    assert_eq!(s.get(Counter::Messages), N as u64);
    p.stop();
    assert!(!pipeline::shm::ShmDir::path_for(&name).exists());
}

/// Shared (MAP_SHARED anonymous) memory so a callback in a forked child can report.
struct Shared(*mut AtomicU64);
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}
impl Shared {
    fn new(n: usize) -> Shared {
        // SAFETY: anonymous shared mapping, zeroed, never unmapped during the test.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                8 * n,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        Shared(p as *mut AtomicU64)
    }
    fn at(&self, i: usize) -> &AtomicU64 {
        // SAFETY: within the mapping for the indices used below.
        unsafe { &*self.0.add(i) }
    }
}

fn callback(layout: Layout, tag: &str) {
    let (name, _g) = unique(tag);
    // [0] messages in order, [1] first mismatch + 1
    let shared = Arc::new(Shared::new(2));
    let s2 = shared.clone();
    let mut expect = 0usize;
    let cb = Box::new(move |payload: &[u8], opcode: u8, fin: bool| {
        let ok = opcode == 1 && fin && payload == msg(expect).as_bytes();
        if !ok && s2.at(1).load(Ordering::Relaxed) == 0 {
            s2.at(1).store(expect as u64 + 1, Ordering::Relaxed);
        }
        expect += 1;
        s2.at(0).store(expect as u64, Ordering::Release);
    });
    let p =
        Pipeline::start_with_callback(config(&name, script(text_frames(N), 4000), layout), cb)
            .expect("start");
    let deadline = Instant::now() + Duration::from_secs(60);
    while shared.at(0).load(Ordering::Acquire) < N as u64 {
        assert!(
            Instant::now() < deadline,
            "only {} of {N} after 60 s",
            shared.at(0).load(Ordering::Acquire)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        shared.at(1).load(Ordering::Relaxed),
        0,
        "first out-of-order message (1-based)"
    );
    assert_eq!(shared.at(0).load(Ordering::Relaxed), N as u64);
    assert_eq!(p.stats().get(Counter::AppFrames), N as u64);
    p.stop();
}

#[test]
fn inline_polling() {
    polled(Layout::Inline, "inl_poll");
}

#[test]
fn threads_polling() {
    polled(Layout::Threads, "thr_poll");
}

#[test]
fn processes_polling() {
    polled(Layout::Processes, "proc_poll");
}

#[test]
fn inline_callback() {
    callback(Layout::Inline, "inl_cb");
}

#[test]
fn threads_callback() {
    callback(Layout::Threads, "thr_cb");
}

#[test]
fn processes_callback() {
    callback(Layout::Processes, "proc_cb");
}

fn thread_affinity(name: &str) -> Option<String> {
    for t in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.trim() == name {
            let st = std::fs::read_to_string(t.path().join("status")).ok()?;
            return st
                .lines()
                .find(|l| l.starts_with("Cpus_allowed_list:"))
                .map(|l| l.split_whitespace().last().unwrap_or("").to_string());
        }
    }
    None
}

#[test]
fn threads_are_pinned_to_the_cores_asked_for() {
    let ncpu = pipeline::runner::available_cores();
    let (name, _g) = unique("pinned");
    let mut c = config(&name, script(text_frames(10), 0), Layout::Threads);
    c.cores = vec![0, ncpu.saturating_sub(1)];
    let p = Pipeline::start(c).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(thread_affinity("pl-transport").as_deref(), Some("0"));
    assert_eq!(
        thread_affinity("pl-websocket"),
        Some((ncpu - 1).to_string())
    );
    p.stop();
}

#[test]
fn defaults_follow_the_core_count() {
    use pipeline::runner::{choose_defaults, WaitKind};
    assert_eq!(choose_defaults(4, 2), (Layout::Inline, WaitKind::Backoff));
    assert_eq!(choose_defaults(4, 4), (Layout::Inline, WaitKind::Backoff));
    assert_eq!(choose_defaults(4, 8), (Layout::Threads, WaitKind::Spin));
    // What this box gets when nothing is asked for, and that it is recorded (not on a
    // big box, where the default would be spinning threads).
    if choose_defaults(3, pipeline::runner::available_cores()).1 == WaitKind::Spin {
        return;
    }
    let (name, _g) = unique("defaults");
    let mut c = config(&name, script(text_frames(10), 0), Layout::Inline);
    c.layout = None;
    c.wait = None;
    let p = Pipeline::start(c).unwrap();
    let (l, w) = choose_defaults(3, pipeline::runner::available_cores());
    assert_eq!((p.layout(), p.wait_kind()), (l, w));
    assert_eq!(p.stats().get(Counter::Layout), l as u64);
    assert_eq!(p.stats().get(Counter::Wait), w as u64);
    p.stop();
}

/// Spinning loops that outnumber the cores they may run on are refused (a config
/// error naming the placements that fit); every other combination passes.
#[test]
fn spinning_stages_that_outnumber_their_cores_are_refused() {
    use pipeline::runner::{check_spin_fit, WaitKind};
    use pipeline::Error;
    let four = ["xdp", "transport", "websocket", "app"];
    // threads + spin, unpinned, on 2 allowed cores: 4 spinning threads, 2 cores.
    match check_spin_fit(Layout::Threads, WaitKind::Spin, &four, &[], &[0, 1]) {
        Err(Error::Config(m)) => {
            assert!(m.contains("4 spinning stage loops"), "{m}");
            assert!(m.contains("may run on 2 core(s)"), "{m}");
            assert!(m.contains("layout inline with wait spin"), "names the layout that fits: {m}");
            assert!(m.contains("cores = [1]"), "{m}");
            assert!(m.contains("wait backoff or yield"), "{m}");
        }
        other => panic!("expected a config error, got {other:?}"),
    }
    // Every stage pinned to core 1 of an 8-core box: they share core 1.
    match check_spin_fit(Layout::Processes, WaitKind::Spin, &four, &[1], &(0..8).collect::<Vec<_>>()) {
        Err(Error::Config(m)) => {
            assert!(m.contains("core 1 would run 4 of them (xdp, transport, websocket, app)"), "{m}");
            assert!(m.contains("one core per stage, e.g. cores = [4, 5, 6, 7]"), "{m}");
        }
        other => panic!("expected a config error, got {other:?}"),
    }
    // Three stages cycled over two cores: core 0 gets transport and app.
    let three = ["transport", "websocket", "app"];
    assert!(matches!(check_spin_fit(Layout::Threads, WaitKind::Spin, &three, &[0, 1], &(0..8).collect::<Vec<_>>()), Err(Error::Config(_))));
    // Pinned to cores the process may not use: they run unpinned, on the 2 it may.
    assert!(check_spin_fit(Layout::Threads, WaitKind::Spin, &three, &[5, 6, 7], &[0, 1]).is_err());
    // What fits.
    assert!(check_spin_fit(Layout::Inline, WaitKind::Spin, &four, &[1], &[0, 1]).is_ok());
    assert!(check_spin_fit(Layout::Inline, WaitKind::Spin, &four, &[], &[0]).is_ok());
    assert!(check_spin_fit(Layout::Threads, WaitKind::Spin, &three, &[], &[0, 1, 2]).is_ok());
    assert!(check_spin_fit(Layout::Threads, WaitKind::Spin, &four, &[1, 2, 3, 4], &(0..8).collect::<Vec<_>>()).is_ok());
    for w in [WaitKind::Backoff, WaitKind::Yield] {
        assert!(check_spin_fit(Layout::Threads, w, &four, &[1], &[0, 1]).is_ok());
    }
}

/// End to end: `Pipeline::start` refuses threads + spin with every stage pinned to one
/// core before anything is created; with the wait left to the defaults it backs off.
#[test]
fn start_refuses_spinning_threads_on_one_core() {
    use pipeline::runner::WaitKind;
    let (name, _g) = unique("spinfit");
    let mut c = config(&name, script(text_frames(10), 0), Layout::Threads);
    c.wait = Some(WaitKind::Spin);
    c.cores = vec![0];
    match Pipeline::start(c.clone()) {
        Err(pipeline::Error::Config(m)) => {
            assert!(m.contains("core 0 would run 2 of them (transport, websocket)"), "{m}");
            assert!(m.contains("layout inline with wait spin"), "{m}");
        }
        Err(e) => panic!("expected a config error, got {e}"),
        Ok(_) => panic!("threads + spin with two stages on core 0 started"),
    }
    assert!(!pipeline::shm::ShmDir::path_for(&name).exists(), "refused before anything was created");
    // Not asked for: the default wait is not spin when spin would not fit.
    c.wait = None;
    let p = Pipeline::start(c).expect("start with the default wait");
    assert_eq!(p.layout(), Layout::Threads);
    assert_ne!(p.wait_kind(), WaitKind::Spin);
    p.stop();
}
