//! The pipeline's C API, driven from Rust (the C program test is ffi_c_program.rs).

use std::ffi::{c_void, CString};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use pipeline::ffi::*;
use pipeline_testkit::ffi::{last_error, numbered_frames, synthetic_config as base_config, ShmGuard};

#[test]
fn null_arguments_are_refused_and_out_params_untouched() {
    // SAFETY: exercising the null checks.
    unsafe {
        assert_eq!(
            pl_config_init(std::ptr::null_mut()),
            PlResult::PL_ERR_NULL_ARG
        );
        let mut out: *mut pl_pipeline = 0x1 as *mut _;
        assert_eq!(
            pl_start(std::ptr::null(), &mut out),
            PlResult::PL_ERR_NULL_ARG
        );
        assert_eq!(out as usize, 1, "out param written on failure");
        let mut cfg = std::mem::zeroed::<PlConfig>();
        pl_config_init(&mut cfg);
        assert_eq!(
            pl_start(&cfg, &mut out),
            PlResult::PL_ERR_NULL_ARG,
            "url NULL"
        );
        assert!(last_error().contains("cfg->url"));
        assert_eq!(out as usize, 1);
        let bad = CString::new("http://nope").unwrap();
        cfg.url = bad.as_ptr();
        assert_eq!(pl_start(&cfg, &mut out), PlResult::PL_ERR_CONFIG);
        assert!(last_error().contains("not ws or wss"), "{}", last_error());
        let mut f = std::mem::zeroed::<PlFrame>();
        assert_eq!(
            pl_poll(std::ptr::null_mut(), &mut f),
            PlResult::PL_ERR_NULL_ARG
        );
        assert_eq!(
            pl_send_text(std::ptr::null_mut(), std::ptr::null(), 0),
            PlResult::PL_ERR_NULL_ARG
        );
        pl_free(std::ptr::null_mut());
    }
}

#[test]
fn out_of_range_enum_values_are_config_errors_naming_the_field() {
    // SAFETY: valid config, strings outlive the calls.
    unsafe {
        let url = CString::new("ws://127.0.0.1:1/").unwrap();
        let name = CString::new(format!("f{}_enum", std::process::id())).unwrap();
        let _g = ShmGuard(name.to_str().unwrap().into());
        for field in ["transport", "layout", "wait", "delivery", "overrun"] {
            let mut cfg = std::mem::zeroed::<PlConfig>();
            base_config(&mut cfg, &url, &name, &[]);
            let slot = match field {
                "transport" => &mut cfg.transport,
                "layout" => &mut cfg.layout,
                "wait" => &mut cfg.wait,
                "delivery" => &mut cfg.delivery,
                _ => &mut cfg.overrun,
            };
            *slot = 9;
            let mut out: *mut pl_pipeline = std::ptr::null_mut();
            let r = pl_start(&cfg, &mut out);
            let e = last_error();
            assert_eq!(r, PlResult::PL_ERR_CONFIG, "{field}: {e}");
            assert!(out.is_null());
            assert!(e.contains(&format!("PlConfig.{field} = 9")), "{e}");
        }
        for code in [42, -1, 14, i32::MAX, i32::MIN] {
            let n = std::ffi::CStr::from_ptr(pl_result_name(code));
            assert_eq!(n.to_str().unwrap(), "unknown", "{code}");
        }
        let n = std::ffi::CStr::from_ptr(pl_result_name(PlResult::PL_ERR_PANIC as i32));
        assert_eq!(n.to_str().unwrap(), "PL_ERR_PANIC");
        for kind in [19u32, 1000, u32::MAX] {
            let n = std::ffi::CStr::from_ptr(pl_disconnect_kind_name(kind));
            assert_eq!(n.to_str().unwrap(), "unknown", "{kind}");
        }
        let n = std::ffi::CStr::from_ptr(pl_disconnect_kind_name(PlDisconnectKind::PL_DISCONNECT_TCP_RESET as u32));
        assert_eq!(n.to_str().unwrap(), "PL_DISCONNECT_TCP_RESET");
    }
}

/// Every C disconnect constant is the Rust kind's code, and the names agree.
#[test]
fn disconnect_kinds_match_the_rust_codes() {
    use pipeline::pipeline::DisconnectKind as K;
    let kinds = [
        (K::Unknown, PlDisconnectKind::PL_DISCONNECT_NONE),
        (K::ServerClosed { code: 1000, reason: String::new() }, PlDisconnectKind::PL_DISCONNECT_SERVER_CLOSED),
        (K::CloseCompleted { code: 1000 }, PlDisconnectKind::PL_DISCONNECT_CLOSE_COMPLETED),
        (K::CloseTimeout, PlDisconnectKind::PL_DISCONNECT_CLOSE_TIMEOUT),
        (K::ClosedAfterOurClose, PlDisconnectKind::PL_DISCONNECT_CLOSED_AFTER_OUR_CLOSE),
        (K::ProtocolError { close_code: 1002 }, PlDisconnectKind::PL_DISCONNECT_PROTOCOL_ERROR),
        (K::UpgradeFailed, PlDisconnectKind::PL_DISCONNECT_UPGRADE_FAILED),
        (K::TcpReset, PlDisconnectKind::PL_DISCONNECT_TCP_RESET),
        (K::TcpClosed, PlDisconnectKind::PL_DISCONNECT_TCP_CLOSED),
        (K::Tls, PlDisconnectKind::PL_DISCONNECT_TLS),
        (K::Network, PlDisconnectKind::PL_DISCONNECT_NETWORK),
        (K::Timeout, PlDisconnectKind::PL_DISCONNECT_TIMEOUT),
        (
            K::StageDied { stage: "app".into(), pid: 1, exit: pipeline::pipeline::StageExit::Signal(9) },
            PlDisconnectKind::PL_DISCONNECT_STAGE_DIED,
        ),
        (K::StagePanicked { stage: "app".into() }, PlDisconnectKind::PL_DISCONNECT_STAGE_PANICKED),
        (K::Stopped, PlDisconnectKind::PL_DISCONNECT_STOPPED),
        (K::Overrun, PlDisconnectKind::PL_DISCONNECT_OVERRUN),
        (K::Io, PlDisconnectKind::PL_DISCONNECT_IO),
        (K::Internal, PlDisconnectKind::PL_DISCONNECT_INTERNAL),
        (K::CallbackError, PlDisconnectKind::PL_DISCONNECT_CALLBACK_ERROR),
    ];
    assert_eq!(kinds.len(), K::NAMES.len());
    for (k, c) in kinds {
        assert_eq!(k.code(), c as u32, "{k:?}");
        // SAFETY: a static NUL-terminated string.
        let n = unsafe { std::ffi::CStr::from_ptr(pl_disconnect_kind_name(c as u32)) };
        assert_eq!(n.to_str().unwrap(), format!("PL_DISCONNECT_{}", if c as u32 == 0 { "NONE".to_string() } else { k.name().to_uppercase() }));
    }
}

#[test]
fn refused_connection_is_a_net_error() {
    // SAFETY: valid config, strings outlive the call.
    unsafe {
        let url = CString::new("wss://127.0.0.1:1/").unwrap();
        let name = CString::new(format!("f{}_k", std::process::id())).unwrap();
        let _g = ShmGuard(name.to_str().unwrap().into());
        let mut cfg = std::mem::zeroed::<PlConfig>();
        base_config(&mut cfg, &url, &name, &[]);
        cfg.transport = PlTransport::PL_TRANSPORT_KERNEL as u32;
        let mut out: *mut pl_pipeline = std::ptr::null_mut();
        let r = pl_start(&cfg, &mut out);
        assert_eq!(r, PlResult::PL_ERR_NET, "{}", last_error());
        assert!(out.is_null());
        assert!(!last_error().is_empty());
    }
}

#[test]
fn poll_release_send_close_state_stats() {
    let n = 5000;
    let data = numbered_frames(n);
    let url = CString::new("wss://synthetic.test/x").unwrap();
    let name = CString::new(format!("f{}_poll", std::process::id())).unwrap();
    let _g = ShmGuard(name.to_str().unwrap().into());
    // SAFETY: valid pointers throughout; the handle is freed once.
    unsafe {
        let mut cfg = std::mem::zeroed::<PlConfig>();
        base_config(&mut cfg, &url, &name, &data);
        let mut p: *mut pl_pipeline = std::ptr::null_mut();
        assert_eq!(pl_start(&cfg, &mut p), PlResult::PL_OK, "{}", last_error());
        let mut st = PlState::PL_STATE_CONNECTING;
        assert_eq!(
            pl_get_state(p, &mut st, std::ptr::null_mut(), 0),
            PlResult::PL_OK
        );
        assert_eq!(st, PlState::PL_STATE_CONNECTED);
        let (d, msg) = disconnect_of(p);
        assert_eq!((d.kind, d.close_code, msg.as_str()), (0, 0, ""), "not disconnected yet");
        let mut got = 0;
        let deadline = Instant::now() + Duration::from_secs(20);
        while got < n {
            let mut f = std::mem::zeroed::<PlFrame>();
            match pl_poll(p, &mut f) {
                PlResult::PL_OK => {
                    let s = std::slice::from_raw_parts(f.payload, f.len);
                    assert_eq!(s, format!("msg {got}").as_bytes());
                    assert_eq!(f.opcode, 1);
                    assert_eq!(pl_release(p, &f), PlResult::PL_OK);
                    got += 1;
                }
                PlResult::PL_ERR_WOULD_BLOCK => {
                    assert!(Instant::now() < deadline);
                    std::thread::sleep(Duration::from_micros(100));
                }
                r => panic!("pl_poll: {r:?} {}", last_error()),
            }
        }
        let hello = "hello";
        assert_eq!(
            pl_send_text(p, hello.as_ptr() as *const _, hello.len()),
            PlResult::PL_OK
        );
        assert_eq!(pl_send_binary(p, [1u8, 2].as_ptr(), 2), PlResult::PL_OK);
        let mut s = PlStats::default();
        assert_eq!(pl_get_stats(p, &mut s), PlResult::PL_OK);
        assert_eq!(s.messages, n as u64);
        assert_eq!(s.state, 1);
        assert_eq!(s.layout, 2, "inline");
        assert_eq!(s.wait, 2, "backoff");
        let bye = CString::new("bye").unwrap();
        assert_eq!(
            pl_close(p, 999, bye.as_ptr()),
            PlResult::PL_ERR_CONFIG,
            "invalid close code"
        );
        assert_eq!(pl_close(p, 1000, bye.as_ptr()), PlResult::PL_OK);
        assert_eq!(pl_wait_disconnected(p, 10_000), PlResult::PL_OK);
        let mut reason = [0 as std::ffi::c_char; 128];
        assert_eq!(
            pl_get_state(p, &mut st, reason.as_mut_ptr(), reason.len()),
            PlResult::PL_OK
        );
        assert_eq!(st, PlState::PL_STATE_DISCONNECTED);
        let r = std::ffi::CStr::from_ptr(reason.as_ptr()).to_string_lossy().into_owned();
        let (d, msg) = disconnect_of(p);
        assert_eq!(d.kind, PlDisconnectKind::PL_DISCONNECT_CLOSE_COMPLETED as u32, "{r}");
        assert_eq!(d.close_code, 1000, "{r}");
        assert_eq!(msg, r, "the same message as pl_get_state");
        let mut f = std::mem::zeroed::<PlFrame>();
        assert_eq!(pl_poll(p, &mut f), PlResult::PL_ERR_CLOSED);
        assert_eq!(
            pl_send_text(p, hello.as_ptr() as *const _, hello.len()),
            PlResult::PL_ERR_CLOSED
        );
        assert_eq!(pl_get_stats(p, &mut s), PlResult::PL_OK);
        assert_eq!(s.sent_messages, 2);
        let mut nb = [0 as std::ffi::c_char; 64];
        let len = pl_get_name(p, nb.as_mut_ptr(), nb.len());
        assert_eq!(len, name.as_bytes().len());
        assert_eq!(pl_stop(p), PlResult::PL_OK);
        assert!(!pipeline::shm::ShmDir::path_for(name.to_str().unwrap()).exists());
        assert_eq!(pl_stop(p), PlResult::PL_OK, "idempotent");
        pl_free(p);
    }
}

static SEEN: AtomicUsize = AtomicUsize::new(0);
static BAD: AtomicUsize = AtomicUsize::new(0);

unsafe extern "C" fn on_msg(user: *mut c_void, payload: *const u8, len: usize, opcode: u32) {
    let i = SEEN.load(Ordering::Relaxed);
    // SAFETY: the library passes `len` readable bytes.
    let s = unsafe { std::slice::from_raw_parts(payload, len) };
    if opcode != 1 || s != format!("msg {i}").as_bytes() || user as usize != 0xfeed {
        BAD.fetch_add(1, Ordering::Relaxed);
    }
    SEEN.store(i + 1, Ordering::Release);
}

#[test]
fn callback_delivery_and_poll_refused() {
    let n = 3000;
    let data = numbered_frames(n);
    let url = CString::new("wss://synthetic.test/x").unwrap();
    let name = CString::new(format!("f{}_cb", std::process::id())).unwrap();
    let _g = ShmGuard(name.to_str().unwrap().into());
    // SAFETY: valid pointers; the callback is a plain function.
    unsafe {
        let mut cfg = std::mem::zeroed::<PlConfig>();
        base_config(&mut cfg, &url, &name, &data);
        cfg.layout = PlLayout::PL_LAYOUT_THREADS as u32;
        cfg.on_message = Some(on_msg);
        cfg.on_message_user = 0xfeed as *mut c_void;
        let mut p: *mut pl_pipeline = std::ptr::null_mut();
        assert_eq!(pl_start(&cfg, &mut p), PlResult::PL_OK, "{}", last_error());
        let deadline = Instant::now() + Duration::from_secs(20);
        while SEEN.load(Ordering::Acquire) < n {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(BAD.load(Ordering::Relaxed), 0);
        let mut f = std::mem::zeroed::<PlFrame>();
        assert_eq!(
            pl_poll(p, &mut f),
            PlResult::PL_ERR_CONFIG,
            "no polling with a callback"
        );
        let mut s = PlStats::default();
        pl_get_stats(p, &mut s);
        assert_eq!(s.app_frames, n as u64);
        pl_free(p);
        assert!(
            !pipeline::shm::ShmDir::path_for(name.to_str().unwrap()).exists(),
            "pl_free stops and cleans up"
        );
    }
}

static STATES: std::sync::Mutex<Vec<(PlState, String)>> = std::sync::Mutex::new(Vec::new());

/// `pl_get_disconnect`: the kind and details, and the message.
///
/// # Safety
/// `p` from `pl_start`, not freed.
unsafe fn disconnect_of(p: *mut pl_pipeline) -> (PlDisconnect, String) {
    let mut d = std::mem::zeroed::<PlDisconnect>();
    let mut msg = [0 as std::ffi::c_char; 256];
    assert_eq!(pl_get_disconnect(std::ptr::null_mut(), &mut d, msg.as_mut_ptr(), msg.len()), PlResult::PL_ERR_NULL_ARG);
    assert_eq!(pl_get_disconnect(p, &mut d, msg.as_mut_ptr(), msg.len()), PlResult::PL_OK);
    (d, std::ffi::CStr::from_ptr(msg.as_ptr()).to_string_lossy().into_owned())
}

unsafe extern "C" fn on_state(user: *mut c_void, state: PlState, reason: *const std::ffi::c_char) {
    assert_eq!(user as usize, 0xbeef);
    // SAFETY: the library passes a NUL-terminated string valid during the call.
    let r = unsafe { std::ffi::CStr::from_ptr(reason) }.to_string_lossy().into_owned();
    STATES.lock().unwrap().push((state, r));
}

#[test]
fn state_changes_reach_the_state_callback_with_the_reason() {
    let data = numbered_frames(10);
    let url = CString::new("wss://synthetic.test/x").unwrap();
    let name = CString::new(format!("f{}_state", std::process::id())).unwrap();
    let _g = ShmGuard(name.to_str().unwrap().into());
    // SAFETY: valid pointers throughout; the handle is freed once.
    let (d, msg) = unsafe {
        let mut cfg = std::mem::zeroed::<PlConfig>();
        base_config(&mut cfg, &url, &name, &data);
        let mut p: *mut pl_pipeline = std::ptr::null_mut();
        assert_eq!(pl_start(&cfg, &mut p), PlResult::PL_OK, "{}", last_error());
        assert_eq!(pl_set_on_state(std::ptr::null_mut(), Some(on_state), std::ptr::null_mut()), PlResult::PL_ERR_NULL_ARG);
        assert_eq!(pl_set_on_state(p, Some(on_state), 0xbeef as *mut c_void), PlResult::PL_OK);
        let bye = CString::new("bye").unwrap();
        assert_eq!(pl_close(p, 1000, bye.as_ptr()), PlResult::PL_OK);
        assert_eq!(pl_wait_disconnected(p, 10_000), PlResult::PL_OK);
        let (d, msg) = disconnect_of(p);
        // The watcher looks once per millisecond; stop joins it after its last report.
        assert_eq!(pl_stop(p), PlResult::PL_OK);
        pl_free(p);
        (d, msg)
    };
    let states = STATES.lock().unwrap().clone();
    let last = states.last().cloned().expect("no state change reported");
    assert_eq!(last.0, PlState::PL_STATE_DISCONNECTED, "{states:?}");
    assert_eq!(d.kind, PlDisconnectKind::PL_DISCONNECT_CLOSE_COMPLETED as u32, "{states:?}");
    assert_eq!(last.1, msg, "the callback gets the reason's message");
    assert_eq!(states.iter().filter(|s| s.0 == PlState::PL_STATE_DISCONNECTED).count(), 1, "{states:?}");
}

/// The handle shared between threads, as a C program would.
#[derive(Clone, Copy)]
struct Handle(*mut pl_pipeline);
// SAFETY: the test only uses the handle through calls documented as callable from
// several threads at once, and frees it after joining them.
unsafe impl Send for Handle {}

unsafe extern "C" fn on_state_noop(_: *mut c_void, _: PlState, _: *const std::ffi::c_char) {}

/// pl_poll/pl_release from two threads while others send, read state and stats and
/// replace the state callback: every frame reaches exactly one poller. (With `&mut`
/// made from the handle in pl_poll, the two pollers raced on the reader's position and
/// frames came out twice or not at all.)
#[test]
fn overlapping_calls_on_one_handle_never_duplicate_or_lose_frames() {
    let n = 20_000;
    let data = numbered_frames(n);
    let url = CString::new("wss://synthetic.test/x").unwrap();
    let name = CString::new(format!("f{}_mt", std::process::id())).unwrap();
    let _g = ShmGuard(name.to_str().unwrap().into());
    // SAFETY: valid pointers throughout; the handle is freed once, after every thread.
    unsafe {
        let mut cfg = std::mem::zeroed::<PlConfig>();
        base_config(&mut cfg, &url, &name, &data);
        cfg.inbox_size = 4 << 20; // every frame fits: releases never race the writer
        let mut p: *mut pl_pipeline = std::ptr::null_mut();
        assert_eq!(pl_start(&cfg, &mut p), PlResult::PL_OK, "{}", last_error());
        let h = Handle(p);
        let total = std::sync::Arc::new(AtomicUsize::new(0));
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut pollers = Vec::new();
        for _ in 0..2 {
            let (total, done) = (total.clone(), done.clone());
            pollers.push(std::thread::spawn(move || {
                let h = h;
                let mut seen = Vec::new();
                let deadline = Instant::now() + Duration::from_secs(30);
                while total.load(Ordering::Acquire) < n && Instant::now() < deadline {
                    let mut f = std::mem::zeroed::<PlFrame>();
                    match pl_poll(h.0, &mut f) {
                        PlResult::PL_OK => {
                            let s = std::slice::from_raw_parts(f.payload, f.len);
                            let i: usize = std::str::from_utf8(s).unwrap()[4..].parse().unwrap();
                            seen.push(i);
                            assert_eq!(pl_release(h.0, &f), PlResult::PL_OK);
                            total.fetch_add(1, Ordering::AcqRel);
                        }
                        PlResult::PL_ERR_WOULD_BLOCK => std::thread::yield_now(),
                        r => panic!("pl_poll: {r:?} {}", last_error()),
                    }
                }
                done.store(true, Ordering::Release);
                seen
            }));
        }
        let others = {
            let done = done.clone();
            std::thread::spawn(move || {
                let h = h;
                let mut s = PlStats::default();
                let mut st = PlState::PL_STATE_CONNECTING;
                while !done.load(Ordering::Acquire) {
                    let r = pl_send_text(h.0, "ping".as_ptr() as *const _, 4);
                    assert!(matches!(r, PlResult::PL_OK | PlResult::PL_ERR_WOULD_BLOCK), "{r:?}");
                    assert_eq!(pl_get_stats(h.0, &mut s), PlResult::PL_OK);
                    assert_eq!(pl_get_state(h.0, &mut st, std::ptr::null_mut(), 0), PlResult::PL_OK);
                    std::thread::yield_now();
                }
            })
        };
        for _ in 0..20 {
            assert_eq!(pl_set_on_state(p, Some(on_state_noop), std::ptr::null_mut()), PlResult::PL_OK);
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut all: Vec<usize> = Vec::new();
        for t in pollers {
            all.extend(t.join().expect("poller"));
        }
        others.join().expect("sender");
        let got = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(
            (got, all.len()),
            (n, n),
            "frames delivered / distinct (each of {n} must come out exactly once)"
        );
        assert_eq!(pl_stop(p), PlResult::PL_OK);
        pl_free(p);
    }
}

/// pl_send_text checks the MSG_OUTBOX limit before it looks at the bytes: a huge
/// `len` is refused without being scanned as UTF-8 (nor made into a slice).
#[test]
fn send_text_checks_the_size_limit_before_scanning_the_bytes() {
    let url = CString::new("wss://synthetic.test/x").unwrap();
    let name = CString::new(format!("f{}_big", std::process::id())).unwrap();
    let _g = ShmGuard(name.to_str().unwrap().into());
    let data = numbered_frames(1);
    // SAFETY: valid pointers; the mapping outlives its use; the handle is freed once.
    unsafe {
        let mut cfg = std::mem::zeroed::<PlConfig>();
        base_config(&mut cfg, &url, &name, &data);
        let mut p: *mut pl_pipeline = std::ptr::null_mut();
        assert_eq!(pl_start(&cfg, &mut p), PlResult::PL_OK, "{}", last_error());
        // Readable but too long, invalid UTF-8 at the end: the answer is the limit.
        let mut big = vec![b'a'; 4 << 20];
        *big.last_mut().unwrap() = 0xff;
        let r = pl_send_text(p, big.as_ptr() as *const _, big.len());
        let e = last_error();
        assert_eq!(r, PlResult::PL_ERR_CONFIG, "{e}");
        assert!(e.contains("exceeds the MSG_OUTBOX record limit"), "{e}");
        // One readable page, then a PROT_NONE page, and a len far beyond both: the
        // call must not read past the first byte it needs (it needs none).
        let page = 4096;
        let m = libc::mmap(
            std::ptr::null_mut(),
            2 * page,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        assert_ne!(m, libc::MAP_FAILED);
        std::ptr::write_bytes(m as *mut u8, b'a', page);
        assert_eq!(libc::mprotect((m as *mut u8).add(page) as *mut _, page, libc::PROT_NONE), 0);
        let r = pl_send_text(p, m as *const _, 1 << 40);
        let e = last_error();
        assert_eq!(r, PlResult::PL_ERR_CONFIG, "{e}");
        assert!(e.contains("exceeds the MSG_OUTBOX record limit"), "{e}");
        let r = pl_send_binary(p, m as *const u8, usize::MAX);
        assert_eq!(r, PlResult::PL_ERR_CONFIG, "{}", last_error());
        // A text within the limit is still validated.
        let r = pl_send_text(p, [0xffu8].as_ptr() as *const _, 1);
        assert_eq!(r, PlResult::PL_ERR_CONFIG);
        assert!(last_error().contains("UTF-8"), "{}", last_error());
        libc::munmap(m, 2 * page);
        assert_eq!(pl_stop(p), PlResult::PL_OK);
        pl_free(p);
    }
}

/// `PlStats` grows like `PlConfig`: the plain `pl_get_stats` symbol (what a program
/// built before the sized call links) writes the 0.1 layout and not a byte past it;
/// `pl_get_stats_size` writes exactly the caller's size; sizes outside the 0.1 layout
/// to this library's, or not whole counters, are `PL_ERR_CONFIG`.
#[test]
fn stats_fill_only_the_callers_size() {
    let data = numbered_frames(10);
    let url = CString::new("wss://synthetic.test/x").unwrap();
    let name = CString::new(format!("f{}_statsz", std::process::id())).unwrap();
    let _g = ShmGuard(name.to_str().unwrap().into());
    let full = std::mem::size_of::<PlStats>();
    let v01 = std::mem::offset_of!(PlStats, deflate);
    const CANARY: u64 = 0xa5a5_a5a5_a5a5_a5a5;
    // SAFETY: valid pointers throughout; the buffer outlives every call; freed once.
    unsafe {
        let mut cfg = std::mem::zeroed::<PlConfig>();
        base_config(&mut cfg, &url, &name, &data);
        let mut p: *mut pl_pipeline = std::ptr::null_mut();
        assert_eq!(pl_start(&cfg, &mut p), PlResult::PL_OK, "{}", last_error());
        let mut buf = vec![CANARY; full / 8 + 4];
        let out = buf.as_mut_ptr() as *mut PlStats;
        assert_eq!(pl_get_stats(p, out), PlResult::PL_OK);
        assert_eq!(buf[0], 1, "state: connected");
        assert!(buf[v01 / 8..].iter().all(|&w| w == CANARY), "pl_get_stats wrote past the 0.1 layout");
        buf.fill(CANARY);
        assert_eq!(pl_get_stats_size(p, out, full), PlResult::PL_OK);
        assert_eq!(buf[0], 1);
        assert_ne!(buf[v01 / 8], CANARY, "the counter after the 0.1 layout is written");
        assert!(buf[full / 8..].iter().all(|&w| w == CANARY), "wrote past the caller's size");
        for bad in [0, v01 - 8, full + 8, v01 + 4] {
            assert_eq!(pl_get_stats_size(p, out, bad), PlResult::PL_ERR_CONFIG, "size {bad}");
            assert!(last_error().contains("PlStats size"), "{}", last_error());
        }
        pl_free(p);
    }
}
