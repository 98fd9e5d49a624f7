//! The library's own WebSocket core (`pipeline::ws`: handshake, parser in `Messages`
//! mode, builder, closing handshake) over TLS over our TCP over AF_XDP, against
//! `tools/exchange_sim.py` in the server namespace: the full chain with no test-side
//! WebSocket code. 100,000 mixed messages (fragmented ones joined by the parser), an
//! echo, a server ping answered by the auto-PONG, and the server's close.

mod common;
#[path = "common/certs.rs"]
mod certs;
#[path = "common/exsim.rs"]
mod exsim;
#[allow(dead_code)]
#[path = "common/wsmini.rs"]
mod wsmini;

use common::netns::TestBed;
use exsim::{json_num, ExSim};
use pipeline::tls::{TlsConfig, TlsContext};
use pipeline::transport::kernel_tls::TlsStream;
use pipeline::transport::xdp::{XdpTcpConfig, XdpTcpTransport};
use pipeline::ws::{
    ClientHandshake, Connection, ConnectionConfig, Delivery, Event, HandshakeConfig, HandshakeStatus, MessageKind,
    ParserConfig, WsUrl,
};
use pipeline::Error;
use std::net::SocketAddrV4;
use std::time::{Duration, Instant};
use wsmini::{check_message, mixed_size};

const T: Duration = Duration::from_secs(10);

struct Client {
    tls: TlsStream<XdpTcpTransport>,
    ws: Connection,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Client {
    fn flush(&mut self) {
        let out = self.ws.pending_output().to_vec();
        if !out.is_empty() {
            self.tls.write_all(&out, T).unwrap();
            self.ws.consume_output(out.len());
        }
    }
    fn fill(&mut self, timeout: Duration) -> pipeline::Result<()> {
        if self.buf.len() - self.end < 65536 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.buf.len() - self.end < 65536 {
                let l = self.buf.len();
                self.buf.resize(l * 2, 0);
            }
        }
        match self.tls.read_timeout(&mut self.buf[self.end..], timeout) {
            Ok(n) => {
                self.end += n;
                Ok(())
            }
            Err(Error::Timeout(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[test]
fn pipeline_ws_feed_echo_ping_close_over_xdp() {
    let Some(bed) = TestBed::new_or_skip("pipeline::ws over XDP") else { return };
    let (c, k) = certs::certs().leaf("server");
    let count: u64 = 100_000;
    let n = count.to_string();
    let srv = ExSim::start(Some(&bed.server_ns), &bed.server_ip.to_string(), &c, &k, &["--count", &n, "--fragment-every", "13", "--once"]);
    let port = srv.port;
    bed.in_client(|| {
        let mut cfg = XdpTcpConfig::new(SocketAddrV4::new(bed.server_ip, port));
        cfg.connect_timeout = T;
        let t = XdpTcpTransport::connect(&cfg).expect("TCP over XDP");
        let ctx = TlsContext::new(&TlsConfig { ca_file: Some(certs::certs().ca()), ..TlsConfig::default() }).unwrap();
        let mut tls = TlsStream::new(t, ctx.client_session("feed.test").unwrap());
        tls.handshake(T).expect("TLS");
        // Upgrade with the library's handshake.
        let url = WsUrl::parse(&format!("wss://feed.test:{port}/feed")).unwrap();
        let mut hs = ClientHandshake::new(&url, &HandshakeConfig::default()).unwrap();
        tls.write_all(hs.request(), T).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let mut end = 0;
        let consumed = loop {
            let k = tls.read_timeout(&mut buf[end..], T).expect("upgrade response");
            end += k;
            match hs.feed(&buf[end - k..end]).expect("valid upgrade") {
                HandshakeStatus::NeedMore => {}
                HandshakeStatus::Done { consumed, .. } => break end - k + consumed,
            }
        };
        let ws = Connection::new(ConnectionConfig {
            parser: ParserConfig { delivery: Delivery::Messages, ..ParserConfig::default() },
            ..ConnectionConfig::default()
        })
        .unwrap();
        let mut cl = Client { tls, ws, buf, start: consumed, end };
        let t0 = Instant::now();
        let mut seq = 0u64;
        let mut phase = 0; // 0 feed, 1 echo, 2 ping, 3 close
        let mut closed = None;
        let deadline = Instant::now() + Duration::from_secs(240);
        while closed.is_none() {
            assert!(Instant::now() < deadline, "timed out at message {seq}, phase {phase}");
            let mut events = Vec::new();
            {
                let Client { ws, buf, start, end, .. } = &mut cl;
                loop {
                    let slice = &mut buf[*start..*end];
                    match ws.next_event(slice).expect("ws") {
                        None => break,
                        Some(Event::Data(d)) => {
                            assert!(d.first && d.last, "Messages mode delivers whole messages");
                            events.push((Some(d.kind), slice[d.offset..d.offset + d.len].to_vec()));
                        }
                        Some(Event::Ping(p)) => events.push((None, p.as_bytes().to_vec())),
                        Some(Event::Pong(_)) => {}
                        Some(Event::Close(f)) => {
                            closed = Some((f.code, String::from_utf8_lossy(f.reason.as_bytes()).to_string()));
                            break;
                        }
                    }
                }
                *start += ws.release();
            }
            for (kind, data) in events {
                match (phase, kind) {
                    (0, Some(MessageKind::Binary)) => {
                        check_message(seq, mixed_size(seq), &data).unwrap();
                        seq += 1;
                        if seq == count {
                            eprintln!("pipeline::ws feed: {count} messages in {:?}", t0.elapsed());
                            phase = 1;
                            cl.ws.send_text("hello from pipeline::ws").unwrap();
                        }
                    }
                    (1, Some(MessageKind::Text)) => {
                        assert_eq!(data, b"hello from pipeline::ws");
                        phase = 2;
                        cl.ws.send_text("cmd:ping").unwrap();
                    }
                    (2, None) => {} // the server's ping; auto-PONG queued
                    (2, Some(MessageKind::Text)) => {
                        assert!(data.starts_with(b"pong-ok "), "{:?}", String::from_utf8_lossy(&data));
                        phase = 3;
                        cl.ws.send_text("cmd:close").unwrap();
                    }
                    (p, k) => panic!("phase {p}: unexpected {k:?} ({} bytes)", data.len()),
                }
            }
            cl.flush();
            if closed.is_none() {
                cl.fill(Duration::from_millis(50)).expect("read");
            }
        }
        cl.flush(); // our close reply
        assert_eq!(closed, Some((1000, "closing on request".to_string())));
        assert_eq!(seq, count);
        cl.tls.close_graceful(T).unwrap();
    });
    let sum = srv.finish();
    eprintln!("server: {sum}");
    assert_eq!(json_num(&sum, "echoed"), Some(1.0), "{sum}");
    assert_eq!(json_num(&sum, "pongs"), Some(1.0), "{sum}");
}
