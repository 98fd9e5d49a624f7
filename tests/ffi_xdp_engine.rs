//! The C API over AF_XDP: a second `pl_start` on the same interface joins the running
//! engine (one XDP program, one UMEM), both handles deliver their feeds complete, and
//! the last `pl_free` takes the engine down. Needs root (skipped otherwise; with `CI`
//! set, a failure).

use std::ffi::CString;
use std::time::{Duration, Instant};

use pipeline::ffi::*;
use pipeline_testkit::certs;
use pipeline_testkit::exsim::ExSim;
use pipeline_testkit::netns::{Side, TestBed};
use pipeline_testkit::synthetic::unique;

const N: usize = 5_000;

/// Poll `p` until `n` data frames arrived (checking none is empty) or 60 s pass.
///
/// # Safety
/// `p` is a live handle from `pl_start`.
unsafe fn drain(p: *mut pl_pipeline, n: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut got = 0;
    while got < n && Instant::now() < deadline {
        let mut f = std::mem::zeroed::<PlFrame>();
        // SAFETY: `p` is live; `f` is ours.
        match unsafe { pl_poll(p, &mut f) } {
            PlResult::PL_OK => {
                assert!(f.len > 0 && !f.payload.is_null(), "an empty frame");
                got += 1;
                // SAFETY: the frame came from pl_poll on this handle.
                assert_eq!(unsafe { pl_release(p, &f) }, PlResult::PL_OK);
            }
            PlResult::PL_ERR_WOULD_BLOCK => std::thread::sleep(Duration::from_micros(200)),
            r => panic!("pl_poll: {r:?}"),
        }
    }
    got
}

#[test]
fn a_second_pl_start_on_the_interface_joins_the_engine() {
    let Some(bed) = TestBed::new_or_skip("C API over AF_XDP") else { return };
    let (cert, key) = certs::certs().leaf("veth");
    let count = N.to_string();
    let ip = bed.server_ip.to_string();
    let a = ExSim::start(Some(&bed.server_ns), &ip, &cert, &key, &["--count", &count, "--once"]);
    let b = ExSim::start(Some(&bed.server_ns), &ip, &cert, &key, &["--count", &count, "--once"]);
    let ca = CString::new(certs::certs().ca().to_str().unwrap()).unwrap();
    let iface = CString::new(bed.client_if.clone()).unwrap();
    let (na, _ga) = unique("ffixa");
    let (nb, _gb) = unique("ffixb");
    let (got_a, got_b, attached_while_both) = bed.in_client(|| {
        let start = |port: u16, name: &str| -> *mut pl_pipeline {
            let url = CString::new(format!("wss://{ip}:{port}/feed")).unwrap();
            let name = CString::new(name).unwrap();
            // SAFETY: every pointer in cfg outlives pl_start (it copies what it keeps).
            unsafe {
                let mut cfg = std::mem::zeroed::<PlConfig>();
                assert_eq!(pl_config_init(&mut cfg), PlResult::PL_OK);
                cfg.url = url.as_ptr();
                cfg.name = name.as_ptr();
                cfg.transport = PlTransport::PL_TRANSPORT_XDP as u32;
                cfg.iface = iface.as_ptr();
                cfg.ca_file = ca.as_ptr();
                cfg.layout = PlLayout::PL_LAYOUT_INLINE as u32;
                cfg.wait = PlWait::PL_WAIT_BACKOFF as u32;
                cfg.quiet = true;
                let mut p = std::ptr::null_mut();
                let r = pl_start(&cfg, &mut p);
                assert_eq!(r, PlResult::PL_OK, "pl_start to port {port}");
                p
            }
        };
        let pa = start(a.port, &na);
        let pb = start(b.port, &nb);
        let both = bed.has_xdp(Side::Client);
        // SAFETY: live handles; freed once, after the last use.
        unsafe {
            let ga = drain(pa, N);
            let gb = drain(pb, N);
            pl_free(pa);
            // The engine stays for the remaining connection...
            assert!(bed.has_xdp(Side::Client), "the first pl_free took the engine down");
            pl_free(pb);
            (ga, gb, both)
        }
    });
    assert!(attached_while_both, "no XDP program while both connections ran");
    assert_eq!((got_a, got_b), (N, N), "messages delivered per handle");
    // ...and goes with the last one.
    assert!(!bed.has_xdp(Side::Client), "XDP program left after the last pl_free");
    drop((a, b));
}
