//! `pl_on_message_ex`: the callback runs in the caller's process in every layout (its
//! plain, unshared state changes), it can send through the `pl_sender` it gets, and a
//! non-zero return ends the connection with PL_DISCONNECT_CALLBACK_ERROR and the reason,
//! leaving nothing in /dev/shm after pl_free.

use std::ffi::{c_void, CStr, CString};
use std::time::{Duration, Instant};

use pipeline::ffi::*;
use pipeline_testkit::ffi::{numbered_frames, ShmGuard};

/// The callback's state: a plain struct in this process (not shared memory). In the
/// processes layout a callback in a forked child would leave it at 0.
struct State {
    seen: usize,
    bad: usize,
    sent_ok: usize,
    fail_at: usize,
}

unsafe extern "C" fn on_msg(user: *mut c_void, s: *mut pl_sender, payload: *const u8, len: usize, opcode: u32) -> i32 {
    // SAFETY: `user` is the test's &mut State, used by this callback only until the
    // test reads it after the stream.
    let st = unsafe { &mut *(user as *mut State) };
    // SAFETY: the library passes `len` readable bytes.
    let p = unsafe { std::slice::from_raw_parts(payload, len) };
    if opcode != 1 || p != format!("msg {}", st.seen).as_bytes() {
        st.bad += 1;
    }
    st.seen += 1;
    if st.seen == st.fail_at {
        // SAFETY: a NUL-terminated literal.
        unsafe { pl_sender_set_error(s, c"strategy threw: position limit".as_ptr()) };
        return PL_CALLBACK_ABORT;
    }
    if st.seen % 100 == 0 {
        let t = b"ack";
        // SAFETY: the sender of this call; 3 readable bytes.
        if unsafe { pl_sender_send_text(s, t.as_ptr() as *const _, t.len()) } == PlResult::PL_OK {
            st.sent_ok += 1;
        }
    }
    PL_CALLBACK_CONTINUE
}

fn run(layout: PlLayout, tag: &str, n: usize, fail_at: usize) -> (State, PlDisconnect, String, PlStats) {
    let data = numbered_frames(n);
    let url = CString::new("wss://synthetic.test/x").unwrap();
    let name = CString::new(format!("cbx{}_{tag}", std::process::id())).unwrap();
    let _g = ShmGuard(name.to_str().unwrap().into());
    let mut st = State { seen: 0, bad: 0, sent_ok: 0, fail_at };
    // SAFETY: valid pointers that outlive the pipeline; the callback is a plain function.
    unsafe {
        let mut cfg = std::mem::zeroed::<PlConfig>();
        assert_eq!(pl_config_init_size(&mut cfg, std::mem::size_of::<PlConfig>()), PlResult::PL_OK);
        cfg.url = url.as_ptr();
        cfg.name = name.as_ptr();
        cfg.transport = PlTransport::PL_TRANSPORT_SYNTHETIC as u32;
        cfg.layout = layout as u32;
        cfg.wait = PlWait::PL_WAIT_BACKOFF as u32;
        cfg.synthetic_data = data.as_ptr();
        cfg.synthetic_len = data.len();
        cfg.synthetic_chunk = 333;
        cfg.quiet = true;
        cfg.on_message_ex = Some(on_msg);
        cfg.on_message_user = &mut st as *mut State as *mut c_void;
        let mut p: *mut pl_pipeline = std::ptr::null_mut();
        assert_eq!(pl_start(&cfg, &mut p), PlResult::PL_OK);
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut s = PlStats::default();
        loop {
            pl_get_stats(p, &mut s);
            let done = if fail_at > 0 {
                pl_wait_disconnected(p, 10) == PlResult::PL_OK
            } else {
                s.app_frames >= n as u64
            };
            if done {
                break;
            }
            assert!(Instant::now() < deadline, "{tag}: {} of {n} after 30 s", s.app_frames);
            std::thread::sleep(Duration::from_millis(5));
        }
        if fail_at == 0 {
            // The sends reach the transport (sent_messages counts them).
            while s.sent_messages < (n / 100) as u64 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
                pl_get_stats(p, &mut s);
            }
        }
        let mut d = std::mem::zeroed::<PlDisconnect>();
        let mut msg = [0 as std::ffi::c_char; 256];
        pl_stop(p);
        pl_get_disconnect(p, &mut d, msg.as_mut_ptr(), msg.len());
        pl_free(p);
        assert!(
            !pipeline::shm::ShmDir::path_for(name.to_str().unwrap()).exists(),
            "{tag}: pl_free leaves nothing in /dev/shm"
        );
        let m = CStr::from_ptr(msg.as_ptr()).to_string_lossy().into_owned();
        (st, d, m, s)
    }
}

static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn every_layout_runs_the_callback_here_and_it_can_send() {
    let _l = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    for (layout, tag) in [
        (PlLayout::PL_LAYOUT_INLINE, "inline"),
        (PlLayout::PL_LAYOUT_THREADS, "threads"),
        (PlLayout::PL_LAYOUT_PROCESSES, "processes"),
    ] {
        let n = 2000;
        let (st, _d, _m, s) = run(layout, tag, n, 0);
        assert_eq!(st.seen, n, "{tag}: the caller's own state saw every message (stats: {})", s.app_frames);
        assert_eq!(st.bad, 0, "{tag}");
        assert_eq!(st.sent_ok, n / 100, "{tag}: every send from the callback was queued");
        assert!(s.sent_messages >= (n / 100) as u64, "{tag}: sent_messages {}", s.sent_messages);
    }
}

#[test]
fn a_failing_callback_ends_the_connection_with_its_reason() {
    let _l = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    for (layout, tag) in [(PlLayout::PL_LAYOUT_INLINE, "finline"), (PlLayout::PL_LAYOUT_PROCESSES, "fprocesses")] {
        let (st, d, m, _s) = run(layout, tag, 5000, 7);
        assert_eq!(st.seen, 7, "{tag}: nothing delivered after the failure");
        assert_eq!(d.kind, PlDisconnectKind::PL_DISCONNECT_CALLBACK_ERROR as u32, "{tag}: {m}");
        assert!(m.contains("strategy threw: position limit"), "{tag}: {m}");
    }
}

#[test]
fn config_sizes_outside_the_abi_are_refused() {
    // SAFETY: a local config.
    unsafe {
        let mut cfg = std::mem::zeroed::<PlConfig>();
        assert_eq!(pl_config_init_size(&mut cfg, 16), PlResult::PL_ERR_CONFIG);
        assert_eq!(pl_config_init(&mut cfg), PlResult::PL_OK);
        cfg.struct_size = 0; // a caller that skipped pl_config_init
        let url = CString::new("ws://127.0.0.1:1/").unwrap();
        cfg.url = url.as_ptr();
        let mut p: *mut pl_pipeline = std::ptr::null_mut();
        assert_eq!(pl_start(&cfg, &mut p), PlResult::PL_ERR_CONFIG);
        assert!(p.is_null());
        assert_eq!(pl_abi_version(), PL_ABI_VERSION);
    }
}
