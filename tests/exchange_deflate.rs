//! The Rust feed server's permessage-deflate (`pipeline_netbed::exchange`, the server
//! of the deflate and peer benchmarks): a kernel-transport Pipeline on loopback reads
//! compressed runs (batched and paced, small and 16 KiB messages) and checks every
//! message; the parameters the client offers are kept to; a client that offers nothing
//! gets the plain feed from the same server.

use std::net::TcpListener;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use pipeline::pipeline::{Config, Pipeline, Receiver, TransportKind};
use pipeline::runner::{Layout, WaitKind};
use pipeline::stats::Counter;
use pipeline::ws::deflate::Negotiated;
use pipeline::ws::DeflateConfig;
use pipeline_testkit::certs::certs;
use pipeline_testkit::exchange::{check, command, server_main, Pacing, ServerCtl};
use pipeline_testkit::synthetic::unique;

struct Server {
    ctl: Arc<ServerCtl>,
    port: u16,
    h: Option<std::thread::JoinHandle<pipeline::Result<()>>>,
}

impl Server {
    fn start(level: Option<u8>) -> Server {
        let ctl = match level {
            Some(l) => ServerCtl::with_deflate(None, Pacing::Sleep, l).unwrap(),
            None => ServerCtl::new(None, Pacing::Sleep),
        };
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let (c, k) = certs().leaf("server");
        let c2 = ctl.clone();
        let h = std::thread::spawn(move || server_main(l, c, k, c2));
        Server { ctl, port, h: Some(h) }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.ctl.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.h.take() {
            let _ = h.join();
        }
    }
}

fn client(srv: &Server, tag: &str, deflate: Option<DeflateConfig>) -> (Pipeline, pipeline_testkit::synthetic::ShmGuard) {
    let (name, g) = unique(tag);
    let mut c = Config::new(&format!("wss://localhost:{}/", srv.port));
    c.name = Some(name);
    c.transport = TransportKind::Kernel;
    c.ca_file = Some(certs().ca());
    c.layout = Some(Layout::Inline);
    c.wait = Some(WaitKind::Backoff);
    c.quiet = true;
    c.deflate = deflate;
    (Pipeline::start(c).expect("pipeline to the feed server"), g)
}

/// One run: every message checked (order, size, pattern), then "done". Returns the
/// bytes the transport received for it.
fn run(p: &Pipeline, rx: &mut Receiver, size: usize, count: u64, rate: u64) -> u64 {
    let rx0 = p.stats().get(Counter::RxBytes);
    p.send_text(&command(size, count, rate)).unwrap();
    for seq in 0..count {
        let f = rx.next_frame_timeout(Duration::from_secs(20)).unwrap_or_else(|| panic!("{size} B: message {seq} of {count}: none"));
        assert_eq!(f.opcode(), 0x2, "{size} B: message {seq}");
        if let Err(e) = check(seq, size, f.payload()) {
            panic!("{size} B, rate {rate}: {e}");
        }
    }
    let f = rx.next_frame_timeout(Duration::from_secs(20)).expect("done");
    assert_eq!((f.opcode(), f.payload()), (0x1, &b"done"[..]), "{size} B: the run ends with \"done\"");
    drop(f);
    p.stats().get(Counter::RxBytes) - rx0
}

#[test]
fn compressed_runs_arrive_whole_and_in_order() {
    let srv = Server::start(Some(6));
    let (mut p, _g) = client(&srv, "exdefl", Some(DeflateConfig::default()));
    let mut rx = p.receiver().unwrap();
    let n = Negotiated::from_word(p.stats().get(Counter::Deflate) as u32).expect("permessage-deflate agreed");
    assert_eq!((n.server_max_window_bits, n.server_no_context_takeover), (15, false));
    // Batched (compressed ahead, records cutting frames anywhere) and paced, at the smallest size, around the 126-byte length boundary, 256 B and
    // the largest sizes (a 16 KiB message spans records).
    let mut total = 0;
    for (size, count, rate) in [(16, 3000, 0), (140, 3000, 0), (256, 20_000, 0), (16384, 300, 0), (65535, 40, 0), (256, 300, 20_000)] {
        run(&p, &mut rx, size, count, rate);
        total += count;
    }
    assert_eq!(p.stats().get(Counter::InflatedMessages), total, "every binary message was compressed");
    p.stop();
}

#[test]
fn the_clients_offer_is_kept_to_and_a_plain_client_gets_the_plain_feed() {
    let srv = Server::start(Some(6));
    let offer = DeflateConfig { server_no_context_takeover: true, server_max_window_bits: 10, ..Default::default() };
    let (mut p, _g) = client(&srv, "exdeflnt", Some(offer));
    let mut rx = p.receiver().unwrap();
    let n = Negotiated::from_word(p.stats().get(Counter::Deflate) as u32).expect("permessage-deflate agreed");
    assert_eq!((n.server_max_window_bits, n.server_no_context_takeover), (10, true));
    let small = run(&p, &mut rx, 256, 5000, 0);
    run(&p, &mut rx, 16384, 100, 0);
    assert_eq!(p.stats().get(Counter::InflatedMessages), 5100);
    let _ = p.close(1000, "done");
    drop(rx);
    p.stop();
    drop(p);

    // The same server, a client that does not offer: nothing compressed.
    let (mut p, _g) = client(&srv, "exdeflno", None);
    let mut rx = p.receiver().unwrap();
    assert_eq!(p.stats().get(Counter::Deflate), 0, "no extension without an offer");
    let plain = run(&p, &mut rx, 256, 5000, 0);
    assert_eq!(p.stats().get(Counter::InflatedMessages), 0);
    p.stop();
    // The JSON-like pattern compresses even without context takeover (the header of
    // seq and stamp does not): well under the plain bytes.
    eprintln!("256 B x 5000: {small} B compressed (no context takeover, 1 KiB window), {plain} B plain");
    assert!(small * 10 < plain * 8, "compressed {small} B vs plain {plain} B");
}

#[test]
fn a_server_without_deflate_declines_the_offer() {
    let srv = Server::start(None);
    let (mut p, _g) = client(&srv, "exdeflof", Some(DeflateConfig::default()));
    let mut rx = p.receiver().unwrap();
    assert_eq!(p.stats().get(Counter::Deflate), 1, "offered and declined");
    run(&p, &mut rx, 256, 2000, 0);
    assert_eq!(p.stats().get(Counter::InflatedMessages), 0);
    p.stop();
}
