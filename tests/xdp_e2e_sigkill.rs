//! SIGKILL of a client process that is mid-connection over XDP (TCP + TLS + WebSocket,
//! feed streaming): afterwards the client namespace's interface has no XDP program
//! (`ip -d link show`), and a new connection on the same interface works at once.
//! The child is this test binary re-executed inside the client namespace.

mod common;
#[path = "common/certs.rs"]
mod certs;
#[path = "common/exsim.rs"]
mod exsim;
#[path = "common/wsmini.rs"]
mod wsmini;

use common::netns::{Side, TestBed};
use exsim::ExSim;
use pipeline::tls::{TlsConfig, TlsContext};
use pipeline::transport::kernel_tls::TlsStream;
use pipeline::transport::xdp::{XdpTcpConfig, XdpTcpTransport};
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use wsmini::{check_message, mixed_size, Kind, WsClient};

const CHILD_ENV: &str = "PL_XDP_E2E_CHILD";
const T: Duration = Duration::from_secs(10);

fn open(server: SocketAddrV4, ca: &std::path::Path) -> WsClient<XdpTcpTransport> {
    let t = XdpTcpTransport::connect(&XdpTcpConfig::new(server)).expect("TCP over XDP");
    let ctx = TlsContext::new(&TlsConfig { ca_file: Some(ca.to_path_buf()), ..TlsConfig::default() }).unwrap();
    let mut tls = TlsStream::new(t, ctx.client_session("feed.test").unwrap());
    tls.handshake(T).expect("TLS over XDP");
    WsClient::connect(tls, "feed.test", "/", T).expect("upgrade")
}

/// Read `n` feed messages starting at 0; panics on any gap or corruption.
fn read_n(ws: &mut WsClient<XdpTcpTransport>, n: u64) {
    let mut seq = 0;
    while seq < n {
        match ws.next(T).expect("feed") {
            Kind::Binary => {
                check_message(seq, mixed_size(seq), ws.payload()).unwrap();
                seq += 1;
            }
            k => panic!("unexpected {k:?}"),
        }
    }
}

/// The child: connect, read some messages, say READY, keep reading until killed.
#[test]
fn child_entry() {
    let Ok(spec) = std::env::var(CHILD_ENV) else { return };
    let mut it = spec.split('|');
    let ip: Ipv4Addr = it.next().unwrap().parse().unwrap();
    let port: u16 = it.next().unwrap().parse().unwrap();
    let ca = std::path::PathBuf::from(it.next().unwrap());
    eprintln!("child: connecting to {ip}:{port}");
    let mut ws = open(SocketAddrV4::new(ip, port), &ca);
    eprintln!("child: connected");
    read_n(&mut ws, 100);
    eprintln!("READY {}", ws.tls.transport().socket().mode());
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let _ = ws.next(Duration::from_millis(100));
    }
}

#[test]
fn sigkill_mid_connection_leaves_no_xdp_program_and_next_run_works() {
    let Some(bed) = TestBed::new_or_skip("XDP transport SIGKILL") else { return };
    let (c, k) = certs::certs().leaf("server");
    // Streams until each client goes away; serves any number of connections.
    let srv = ExSim::start(Some(&bed.server_ns), &bed.server_ip.to_string(), &c, &k, &["--count", "-1", "--rate", "2000"]);
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new("ip")
        .args(["netns", "exec", &bed.client_ns])
        .arg(&exe)
        .args(["--exact", "child_entry", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, format!("{}|{}|{}", bed.server_ip, srv.port, certs::certs().ca().display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if l.starts_with("READY") {
                let _ = tx.send(l);
            } else {
                eprintln!("  child| {l}");
            }
        }
    });
    let ready = rx.recv_timeout(Duration::from_secs(30));
    assert!(ready.is_ok(), "child did not get the feed running");
    eprintln!("child: {}", ready.unwrap());
    assert!(bed.has_xdp(Side::Client), "XDP program should be attached while the child runs");
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let st = child.wait().unwrap();
    eprintln!("child ended: {st:?}");
    // The bpf_link went with the process: no program on the interface.
    let details = bed.link_details(Side::Client);
    assert!(!bed.has_xdp(Side::Client), "XDP program left attached after SIGKILL:\n{details}");
    // A new run on the same interface works at once (no EBUSY, no stale program).
    let t0 = Instant::now();
    let ca = certs::certs().ca();
    let server = SocketAddrV4::new(bed.server_ip, srv.port);
    bed.in_client(|| {
        let mut ws = open(server, &ca);
        read_n(&mut ws, 1000);
        ws.send_text("cmd:close").unwrap();
    });
    eprintln!("second run connected and read 1000 messages in {:?}", t0.elapsed());
    let sum = srv.finish();
    eprintln!("server: {sum}");
    assert!(exsim::json_num(&sum, "connections").unwrap_or(0.0) >= 2.0, "{sum}");
}
