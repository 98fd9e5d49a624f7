//! Interop: the Pipeline with permessage-deflate against Python `websockets` 17
//! (tools/ws_deflate_server.py, venv from tools/setup.sh): its default parameters over
//! wss://, `server_max_window_bits` 9..15, a server-chosen `client_max_window_bits`,
//! and both no-context-takeover flags. Every message intact in both directions:
//! echoes of compressible and incompressible payloads from 0 B to 1 MiB, server
//! streams, server-fragmented compressed messages.

use std::time::Duration;

use pipeline::pipeline::{Config, Pipeline, Receiver};
use pipeline::runner::{Layout, WaitKind};
use pipeline::stats::Counter;
use pipeline::ws::deflate::Negotiated;
use pipeline::ws::DeflateConfig;
use pipeline_testkit::certs::certs;
use pipeline_testkit::deflate_server::{pattern, DeflateServer as Server};

const T: Duration = Duration::from_secs(30);

fn start(srv: &Server, path: &str, d: DeflateConfig) -> (Pipeline, Receiver) {
    let mut c = Config::new(&srv.url(path));
    c.ca_file = Some(certs().ca().into());
    c.deflate = Some(d);
    c.max_message = 4 << 20;
    c.inbox_size = 16 << 20;
    c.outbox_size = 8 << 20;
    c.layout = Some(Layout::Inline);
    c.wait = Some(WaitKind::Backoff);
    c.quiet = true;
    let mut p = Pipeline::start(c).expect("start");
    let rx = p.receiver().expect("receiver");
    (p, rx)
}

fn next(rx: &mut Receiver) -> (u8, Vec<u8>) {
    let f = rx.next_frame_timeout(T).expect("a message within 30 s");
    (f.opcode(), f.payload().to_vec())
}

fn json(i: usize) -> String {
    format!(
        "{{\"e\":\"trade\",\"E\":{},\"s\":\"BTCUSDT\",\"t\":{},\"p\":\"{}.{:02}\",\"q\":\"0.{:03}\",\"m\":{}}}",
        1_700_000_000_000u64 + i as u64,
        4_000_000 + i,
        60_000 + i % 977,
        i % 100,
        i % 1000,
        i % 2 == 1
    )
}

/// Echo text and binary messages, compressible and not, 0 B .. 1 MiB.
fn echo_all(p: &Pipeline, rx: &mut Receiver, n: usize) {
    let mut sent: Vec<(u8, Vec<u8>)> = Vec::new();
    for i in 0..n {
        let m = format!("{} ü {}", json(i), "x".repeat(i % 300));
        p.send_text(&m).unwrap();
        sent.push((1, m.into_bytes()));
        if i % 10 == 0 {
            let b = pattern(i / 10, [0, 1, 100, 5000, 70_000][i / 10 % 5]);
            p.send_binary(&b).unwrap();
            sent.push((2, b));
        }
        // Keep MSG_OUTBOX from filling: collect the echoes as we go.
        while sent.len() > 32 {
            let (op, want) = sent.remove(0);
            assert_eq!(next(rx), (op, want));
        }
    }
    for big in [pattern(0, 1 << 20), pattern(1, 1 << 20)] {
        p.send_binary(&big).unwrap();
        sent.push((2, big));
    }
    for (i, (op, want)) in sent.into_iter().enumerate() {
        let (gop, got) = next(rx);
        assert_eq!(gop, op, "echo {i}");
        assert!(got == want, "echo {i} differs ({} vs {} bytes)", got.len(), want.len());
    }
    assert!(p.stats().get(Counter::CompressedSent) > 0);
    assert!(p.stats().get(Counter::InflatedMessages) > 0);
}

fn stream(srv: &Server, d: DeflateConfig) {
    for (kind, n, size) in [("json", 2000usize, 200usize), ("binary", 100, 20_000), ("text", 50, 100_000)] {
        let (p, mut rx) = start(srv, &format!("/stream?n={n}&size={size}&type={kind}"), d);
        for i in 0..n {
            let (op, got) = next(&mut rx);
            let want: Vec<u8> = match kind {
                "json" => {
                    let s = json(i);
                    format!("{s}{}", " ".repeat(size.saturating_sub(s.len()))).into_bytes()
                }
                "text" => (0..size).map(|j| b'a' + ((i + j) % 26) as u8).collect(),
                _ => pattern(i, size),
            };
            assert_eq!(op, if kind == "binary" { 2 } else { 1 });
            assert!(got == want, "{kind} message {i} differs");
        }
        assert!(p.wait_disconnected(T));
        assert_eq!(p.stats().get(Counter::InflatedMessages), n as u64);
    }
}

fn fragmented(srv: &Server, d: DeflateConfig) {
    let (p, mut rx) = start(srv, "/fragmented", d);
    let j: String = (0..200).map(json_padless).collect();
    assert_eq!(next(&mut rx), (1, j.into_bytes()));
    assert_eq!(next(&mut rx), (2, pattern(0, 1 << 20)));
    echo_all(&p, &mut rx, 20);
}

fn json_padless(i: usize) -> String {
    json(i)
}

fn negotiated(srv: &Server, d: DeflateConfig) -> (String, Negotiated) {
    let (p, mut rx) = start(srv, "/negotiated", d);
    let (_, h) = next(&mut rx);
    let n = Negotiated::from_word(p.stats().get(Counter::Deflate) as u32).expect("negotiated");
    echo_all(&p, &mut rx, 60);
    (String::from_utf8(h).unwrap(), n)
}

#[test]
fn websockets_default_parameters_over_tls() {
    let srv = Server::start(true, &[]);
    let d = DeflateConfig::default();
    let (h, n) = negotiated(&srv, d);
    assert!(h.contains("server_max_window_bits=12") && h.contains("client_max_window_bits=12"), "{h}");
    assert_eq!((n.server_max_window_bits, n.client_max_window_bits), (12, 12));
    let (p, mut rx) = start(&srv, "/echo", d);
    echo_all(&p, &mut rx, 600);
    stream(&srv, d);
    fragmented(&srv, d);
}

#[test]
fn server_max_window_bits_9_to_15() {
    for bits in 9..=15u8 {
        let b = bits.to_string();
        let srv = Server::start(false, &["--server-max-window-bits", &b]);
        let (h, n) = negotiated(&srv, DeflateConfig::default());
        assert!(h.contains(&format!("server_max_window_bits={bits}")), "{h}");
        assert_eq!(n.server_max_window_bits, bits);
        stream(&srv, DeflateConfig::default());
    }
    // The limit offered by us, answered with a smaller one.
    let srv = Server::start(false, &["--server-max-window-bits", "10"]);
    let (_, n) = negotiated(&srv, DeflateConfig { server_max_window_bits: 11, ..Default::default() });
    assert_eq!(n.server_max_window_bits, 10);
}

#[test]
fn server_chosen_client_window() {
    for bits in [9u8, 11, 15] {
        let b = bits.to_string();
        let srv = Server::start(false, &["--client-max-window-bits", &b]);
        let (h, n) = negotiated(&srv, DeflateConfig::default());
        assert!(h.contains(&format!("client_max_window_bits={bits}")), "{h}");
        assert_eq!(n.client_max_window_bits, bits);
        fragmented(&srv, DeflateConfig::default());
    }
}

#[test]
fn both_no_context_takeover_flags() {
    let srv = Server::start(
        true,
        &["--server-no-context-takeover", "--client-no-context-takeover", "--server-max-window-bits", "11"],
    );
    let (h, n) = negotiated(&srv, DeflateConfig::default());
    assert!(h.contains("server_no_context_takeover") && h.contains("client_no_context_takeover"), "{h}");
    assert!(n.server_no_context_takeover && n.client_no_context_takeover);
    stream(&srv, DeflateConfig::default());
    fragmented(&srv, DeflateConfig::default());
    // Offered by us, and the server told to honour it.
    let d = DeflateConfig {
        client_no_context_takeover: true,
        server_no_context_takeover: true,
        ..Default::default()
    };
    let (h, _) = negotiated(&srv, d);
    assert!(h.contains("server_no_context_takeover"), "{h}");
    stream(&srv, d);
}

/// Reconnect with deflate on, over wss:// against websockets: `/stream` sends its
/// messages compressed and closes with 1000, which the default policy reconnects on;
/// every connection negotiates again (and resumes TLS), its server compressor starts
/// fresh, and the client's inflater, parser and WIRE_INBOX position start at the new
/// connection. Five connections' streams arrive intact, the first message of each
/// after the first flagged; then an echo round on a last connection.
#[test]
fn reconnects_keep_compressed_streams_intact() {
    let srv = Server::start(true, &["--server-max-window-bits", "11"]);
    let (n, size) = (300usize, 700usize);
    let mut c = Config::new(&srv.url(&format!("/stream?n={n}&size={size}&type=json")));
    c.ca_file = Some(certs().ca().into());
    c.deflate = Some(DeflateConfig::default());
    c.inbox_size = 1 << 20;
    c.max_message = 1 << 16;
    c.layout = Some(Layout::Threads);
    c.wait = Some(WaitKind::Backoff);
    c.quiet = true;
    c.reconnect = pipeline::pipeline::ReconnectPolicy {
        initial_ns: 5_000_000,
        max_ns: 50_000_000,
        jitter: 0.0,
        ..pipeline::pipeline::ReconnectPolicy::standard()
    };
    let mut p = Pipeline::start(c).expect("start");
    let mut rx = p.receiver().expect("receiver");
    for round in 0..5 {
        for i in 0..n {
            let f = rx
                .next_frame_timeout(T)
                .unwrap_or_else(|| panic!("round {round} message {i}: {:?}", p.state()));
            let s = json(i);
            let want = format!("{s}{}", " ".repeat(size.saturating_sub(s.len())));
            assert_eq!(f.text(), Some(want.as_str()), "round {round} message {i}");
            assert_eq!(f.after_reconnect(), round > 0 && i == 0, "round {round} message {i} flag");
        }
    }
    let st = p.stats();
    assert!(st.get(Counter::Reconnects) >= 4, "{}", st.get(Counter::Reconnects));
    assert!(st.get(Counter::InflatedMessages) >= 5 * n as u64);
    let neg = Negotiated::from_word(st.get(Counter::Deflate) as u32).expect("negotiated");
    assert_eq!(neg.server_max_window_bits, 11);
    p.stop();
}
