//! Rough receive throughput of `Pipeline` over plain ws:// on loopback (kernel
//! transport): an in-process server thread writes N unmasked binary frames of SIZE
//! bytes (pre-built, big writes); the pipeline's stages run where LAYOUT says (default
//! `inline`: one runner thread) and this thread polls the receiver (busy-polling, as a
//! trading loop would).
//!
//! ```text
//! cargo run --release --example pipeline_throughput -- [SIZE] [N] [inline|threads]   # default 64 5000000 inline
//! ```
//! Loopback + both ends on a 2-core box: a smoke number for spotting regressions in
//! the receive path (transport -> MSG_INBOX -> WebSocket stage -> WS_FRAME_INFO ->
//! receiver), not the benchmark (`benches/transport_veth.rs`: TLS over veth, against
//! AF_XDP).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Instant;

use pipeline::pipeline::{Config, Pipeline, PipelineState};
use pipeline::runner::{Layout, WaitKind};

fn main() {
    let mut args = std::env::args().skip(1);
    let size: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(64);
    let n: usize = args
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5_000_000);
    let layout = match args.next().as_deref() {
        None | Some("inline") => Layout::Inline,
        Some("threads") => Layout::Threads,
        Some(o) => panic!("layout {o:?}: inline or threads"),
    };
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        pipeline_testkit::upgrade::accept(&mut s, "");
        let mut frame = vec![0x82u8];
        if size < 126 {
            frame.push(size as u8);
        } else {
            frame.push(126);
            frame.extend_from_slice(&(size as u16).to_be_bytes());
        }
        frame.extend(std::iter::repeat(b'x').take(size));
        let per = (1 << 20) / frame.len() + 1;
        let chunk: Vec<u8> = frame.repeat(per);
        let mut left = n;
        while left > 0 {
            let k = left.min(per);
            s.write_all(&chunk[..k * frame.len()]).unwrap();
            left -= k;
        }
        s.write_all(&[0x88, 2, 0x03, 0xe8]).unwrap();
        let _ = s.read(&mut [0u8; 1]);
    });
    let mut c = Config::new(&format!("ws://127.0.0.1:{port}/"));
    c.layout = Some(layout);
    c.wait = Some(WaitKind::Backoff);
    c.quiet = true;
    let mut p = Pipeline::start(c).expect("connect");
    let mut rx = p.receiver().expect("polling receiver");
    let t0 = Instant::now();
    let (mut msgs, mut bytes) = (0usize, 0usize);
    loop {
        if let Some(f) = rx.next_frame() {
            msgs += 1;
            bytes += f.payload().len();
            continue;
        }
        // Disconnected by the server's close after the last message: every frame before
        // that close was published before the state changed; drain them, then stop.
        if matches!(p.state(), PipelineState::Disconnected { .. }) {
            while let Some(f) = rx.next_frame() {
                msgs += 1;
                bytes += f.payload().len();
            }
            break;
        }
        std::hint::spin_loop();
    }
    let dt = t0.elapsed().as_secs_f64();
    assert_eq!(msgs, n, "{:?}", p.state());
    println!(
        "{n} messages of {size} B in {dt:.3} s ({}, backoff): {:.2} M msg/s, {:.2} GB/s payload",
        layout.name(),
        msgs as f64 / dt / 1e6,
        bytes as f64 / dt / 1e9
    );
    server.join().unwrap();
}
