//! A decompression bomb over a real TCP connection: a server (a thread of this test
//! with a kernel socket on 127.0.0.1) negotiates permessage-deflate and sends one
//! ~1 MiB compressed message that inflates to 1 GiB. The Pipeline (kernel transport,
//! default `max_message` 1 MiB) must close with 1009 within a second, its RSS growing
//! by less than 2 x max_message: inflation stops after max_message + 1 bytes.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use pipeline::pipeline::{Config, DisconnectKind, Pipeline, PipelineState};
use pipeline::runner::{Layout, WaitKind};
use pipeline::ws::deflate::{Deflater, Negotiated};
use pipeline::ws::DeflateConfig;
use pipeline_testkit::upgrade;

fn status_kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// 1 GiB of zeros, raw deflate at level 9 (about 1 MiB), the sync-flush tail removed.
fn bomb() -> Vec<u8> {
    let n = Negotiated {
        server_max_window_bits: 15,
        client_max_window_bits: 15,
        server_no_context_takeover: false,
        client_no_context_takeover: false,
    };
    let mut d = Deflater::new(&n, &DeflateConfig { threshold: 0, level: 9, ..Default::default() });
    let chunk = vec![0u8; 16 << 20];
    let mut out = Vec::new();
    let mut buf = vec![0u8; Deflater::bound(chunk.len())];
    for i in 0..64 {
        let k = d.compress(&chunk, &mut buf, i == 63).unwrap();
        out.extend_from_slice(&buf[..k]);
    }
    out
}

#[test]
fn one_gib_bomb_is_closed_with_1009_within_a_second() {
    let data = bomb();
    assert!(data.len() < 1_200_000, "bomb is {} bytes", data.len());
    let mut frame = vec![0xc2u8, 127]; // FIN + RSV1 + binary, 64-bit length
    frame.extend_from_slice(&(data.len() as u64).to_be_bytes());
    frame.extend_from_slice(&data);
    drop(data);
    let frame_len = frame.len();

    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let (sent_tx, sent_rx) = mpsc::channel::<Instant>();
    let (close_tx, close_rx) = mpsc::channel::<(Instant, u16)>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let server = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let req = upgrade::read_request(&mut s);
        assert!(req.contains("permessage-deflate"), "{req}");
        let resp = upgrade::response(upgrade::request_key(&req), "Sec-WebSocket-Extensions: permessage-deflate\r\n");
        s.write_all(resp.as_bytes()).unwrap();
        // Read the client's frames on another thread while the bomb goes out.
        let mut r = s.try_clone().unwrap();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut b = [0u8; 4096];
            loop {
                // A masked close frame: 0x88, 0x80|len, key[4], code (masked).
                if got.len() >= 8 && got[0] == 0x88 {
                    let code = u16::from_be_bytes([got[6] ^ got[2], got[7] ^ got[3]]);
                    let _ = close_tx.send((Instant::now(), code));
                    return;
                }
                match r.read(&mut b) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => got.extend_from_slice(&b[..n]),
                }
            }
        });
        go_rx.recv().unwrap(); // the client has measured its baseline
        sent_tx.send(Instant::now()).unwrap();
        let _ = s.write_all(&frame); // the client may close before taking it all
        reader.join().unwrap();
        let _ = s.shutdown(std::net::Shutdown::Both);
    });

    let mut c = Config::new(&format!("ws://127.0.0.1:{port}/bomb"));
    c.deflate = Some(DeflateConfig::default());
    c.layout = Some(Layout::Inline);
    c.wait = Some(WaitKind::Backoff);
    c.quiet = true;
    let max_message = c.max_message;
    assert_eq!(max_message, 1 << 20);
    // Baseline after the handshake's allocations: start, then reset the peak.
    let rss0 = status_kib("VmRSS:");
    let p = Pipeline::start(c).unwrap();
    let rss_started = status_kib("VmRSS:");
    let _ = std::fs::write("/proc/self/clear_refs", "5"); // reset VmHWM to the current RSS
    go_tx.send(()).unwrap();
    let t_sent = sent_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let (t_close, code) = close_rx.recv_timeout(Duration::from_secs(10)).expect("our close frame");
    let took = t_close - t_sent;
    assert!(p.wait_disconnected(Duration::from_secs(10)));
    let peak = status_kib("VmHWM:");
    eprintln!(
        "end: VmRSS {} KiB, RssShmem {} KiB, RssAnon {} KiB",
        status_kib("VmRSS:"),
        status_kib("RssShmem:"),
        status_kib("RssAnon:")
    );
    let reason = match p.state() {
        PipelineState::Disconnected { reason } => reason,
        s => panic!("{s:?}"),
    };
    let growth = peak.saturating_sub(rss_started) * 1024;
    eprintln!(
        "bomb: {} compressed bytes -> 1 GiB; close {code} after {:?}; RSS before start {} KiB, after start {} KiB, peak {} KiB (+{} KiB, limit {} KiB); {reason}",
        frame_len,
        took,
        rss0,
        rss_started,
        peak,
        growth / 1024,
        2 * max_message / 1024
    );
    assert_eq!(code, 1009, "{reason}");
    assert_eq!(reason.kind, DisconnectKind::ProtocolError { close_code: 1009 }, "{reason}");
    assert!(took < Duration::from_secs(1), "closed after {took:?}");
    assert!(growth < 2 * max_message as u64, "RSS grew by {growth} bytes");
    drop(p);
    server.join().unwrap();
}
