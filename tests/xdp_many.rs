//! Many connections over one AF_XDP interface, in one process, through `Pipeline`:
//! eight AF_XDP feeds (eight server ports, one on a second server address) share one
//! engine, a kernel-transport feed runs beside them, one feed is closed and reopened
//! mid-run, a kernel TCP connection with the same ports from another local address is
//! left alone, and a second process asking for the interface is told who holds it.
//! Once on a single-queue veth and once on a 4-queue veth with no steering.
//! Needs root (skipped otherwise; fails under CI).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pipeline_testkit::netns::{Side, TestBed};
use pipeline_testkit::ChildGuard;
use pipeline::pipeline::{Config, Pipeline, PipelineState, TransportKind};
use pipeline::runner::{Layout, WaitKind};
use pipeline::stats::Counter;
use pipeline_testkit::synthetic::*;

const N: usize = 20_000;
const BASE_PORT: u16 = 9500;

/// One Python process serving every feed: a connection to port P gets N messages
/// "P i <pad>" (varied sizes), then its messages echoed.
const SERVER: &str = r#"
import asyncio, sys, ssl, websockets
N = int(sys.argv[1])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[2], sys.argv[3])
def handler_for(port):
    async def handler(ws):
        for i in range(N):
            await ws.send(f"{port} {i} " + "z" * (i % 700))
        async for m in ws:
            await ws.send("echo " + m)
    return handler
async def main():
    servers = []
    for spec in sys.argv[4:]:
        host, port = spec.split(":")
        servers.append(await websockets.serve(handler_for(int(port)), host, int(port), ssl=ctx,
                                              compression=None, max_size=2**20))
    print("ready", flush=True)
    await asyncio.Future()
asyncio.run(main())
"#;

fn config(url: &str, name: String, ca: &std::path::Path, transport: TransportKind) -> Config {
    let mut cfg = Config::new(url);
    cfg.name = Some(name);
    cfg.transport = transport;
    cfg.ca_file = Some(ca.to_path_buf());
    // 2 cores and ten pipelines: one backing-off loop each.
    cfg.layout = Some(Layout::Inline);
    cfg.wait = Some(WaitKind::Backoff);
    cfg.timeout = Duration::from_secs(20);
    cfg.quiet = true;
    cfg
}

/// Read `count` messages of feed `port` in order (or stop early after `stop_after`).
fn read_feed(p: &mut Pipeline, port: u16, count: usize) -> Result<(), String> {
    let mut rx = p.receiver().ok_or("no receiver")?;
    for i in 0..count {
        let f = rx
            .next_frame_timeout(Duration::from_secs(30))
            .ok_or_else(|| format!("feed {port}: message {i} missing; state {:?}", p.state()))?;
        let want = format!("{port} {i} {}", "z".repeat(i % 700));
        if f.text() != Some(want.as_str()) {
            return Err(format!("feed {port}: message {i} is {:?}", f.text().map(|t| &t[..t.len().min(40)])));
        }
    }
    Ok(())
}

fn many_connections(queues: u32) {
    if !pipeline_testkit::netns::require_root("many AF_XDP connections") {
        return;
    }
    let bed = TestBed::with_queues(queues);
    let server2 = Ipv4Addr::new(10, 200, 1, 11);
    let client2 = Ipv4Addr::new(10, 200, 1, 12);
    bed.add_addr(Side::Server, server2);
    bed.add_addr(Side::Client, client2);
    // The test CA's leaf for both server addresses; the pipelines verify against the CA.
    let (cert, key) = pipeline_testkit::certs::certs().leaf("veth2");
    let ca = pipeline_testkit::certs::certs().ca();

    // Feeds 0..7 over AF_XDP (feed 7 on the second server address), feed 8 kernel.
    let feeds: Vec<(Ipv4Addr, u16)> = (0..9u16)
        .map(|k| (if k == 7 { server2 } else { bed.server_ip }, BASE_PORT + k))
        .collect();
    let py = pipeline_testkit::python::python();
    let mut srv = Command::new("ip");
    srv.args(["netns", "exec", &bed.server_ns, &py, "-c", SERVER, &N.to_string()]).arg(&cert).arg(&key);
    for (ip, port) in &feeds {
        srv.arg(format!("{ip}:{port}"));
    }
    let mut srv = ChildGuard(srv.stdout(Stdio::piped()).spawn().unwrap());
    let mut line = String::new();
    BufReader::new(srv.0.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");

    let ifname = bed.client_if.clone();
    let client_ns = bed.client_ns.clone();
    let result = bed.in_client(|| -> Result<(), String> {
        // Open all nine.
        let mut pipes = Vec::new();
        for (k, (ip, port)) in feeds.iter().enumerate() {
            let (name, g) = unique(&format!("m{queues}_{k}"));
            let kind = if k < 8 { TransportKind::Xdp } else { TransportKind::Kernel };
            let mut cfg = config(&format!("wss://{ip}:{port}/"), name, &ca, kind);
            if k < 8 {
                cfg.iface = Some(ifname.clone());
            }
            let p = Pipeline::start(cfg).map_err(|e| format!("start feed {port}: {e}"))?;
            pipes.push((p, g, *port));
        }

        // A second process asking for the interface fails at once, naming the holder.
        let t0 = Instant::now();
        let out = Command::new("ip")
            .args(["netns", "exec", &client_ns, pipeline_testkit::pipeline_bin(), "connect"])
            .arg(format!("wss://{}:{}/", feeds[0].0, feeds[0].1))
            .args(["--transport", "xdp", "--iface", &ifname, "--count", "1", "--timeout", "20"])
            .output()
            .map_err(|e| e.to_string())?;
        let err = String::from_utf8_lossy(&out.stderr);
        let me = std::process::id().to_string();
        if out.status.success() || !err.contains("held by pipeline") || !err.contains(&me) {
            return Err(format!("second process: {:?}: {err}", out.status));
        }
        if t0.elapsed() > Duration::from_secs(10) {
            return Err(format!("second process took {:?} to fail", t0.elapsed()));
        }
        eprintln!("second process refused in {:?}: {}", t0.elapsed(), err.lines().last().unwrap_or(""));

        // A kernel connection from the second local address with the same ports as
        // feed 2 (server ip:port and local port) is not redirected: it connects, and
        // the TLS server answers its garbage with an alert or closes it.
        let local = pipes[2].0.local_addr().ok_or("no local address")?;
        let target = SocketAddrV4::new(feeds[2].0, feeds[2].1);
        let bystander = std::thread::spawn(move || kernel_bystander(client2, local.port(), target));

        // Read everything, each feed on its own thread; feed 3 is closed after 5,000
        // messages and reopened, and must then get its 20,000 again.
        let mut handles = Vec::new();
        for (k, (mut p, g, port)) in pipes.into_iter().enumerate() {
            let ca = ca.clone();
            let ifname = ifname.clone();
            let (ip, _) = feeds[k];
            handles.push(std::thread::spawn(move || -> Result<(u64, u64), String> {
                let _g = g;
                if k == 3 {
                    {
                        let mut rx = p.receiver().ok_or("no receiver")?;
                        for _ in 0..5_000 {
                            rx.next_frame_timeout(Duration::from_secs(30)).ok_or("feed 3: early message missing")?;
                        }
                    }
                    p.close(1000, "reopen").map_err(|e| e.to_string())?;
                    p.wait_disconnected(Duration::from_secs(10));
                    p.stop();
                    let (name, _g2) = unique(&format!("m{queues}_3b"));
                    let mut cfg = config(&format!("wss://{ip}:{port}/"), name, &ca, TransportKind::Xdp);
                    cfg.iface = Some(ifname);
                    p = Pipeline::start(cfg).map_err(|e| format!("reopen feed {port}: {e}"))?;
                    read_feed(&mut p, port, N)?;
                    let s = p.stats();
                    p.stop();
                    return Ok((s.get(Counter::RxPackets), s.get(Counter::Retransmits)));
                }
                read_feed(&mut p, port, N)?;
                let s = p.stats();
                match p.state() {
                    PipelineState::Connected => {}
                    st => return Err(format!("feed {port} after its messages: {st:?}")),
                }
                p.stop();
                Ok((s.get(Counter::RxPackets), s.get(Counter::Retransmits)))
            }));
        }
        let mut errors = Vec::new();
        for (k, h) in handles.into_iter().enumerate() {
            match h.join() {
                Ok(Ok((rx, rtx))) => eprintln!("feed {k}: rx_packets {rx}, retransmits {rtx}"),
                Ok(Err(e)) => errors.push(e),
                Err(_) => errors.push(format!("feed {k} thread panicked")),
            }
        }
        match bystander.join() {
            Ok(Ok(n)) => eprintln!("bystander kernel connection: connected, got {n} bytes back"),
            Ok(Err(e)) => errors.push(format!("bystander: {e}")),
            Err(_) => errors.push("bystander panicked".into()),
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("\n"))
        }
    });
    // The engine is gone with the last connection: nothing left on the interface.
    let detached = !bed.has_xdp(Side::Client);
    drop(srv);
    result.unwrap();
    assert!(detached, "XDP program still attached after every pipeline stopped");
}

/// A kernel TCP connection from `local_ip:local_port` to `server`; returns the bytes the
/// server sent back before closing (its TLS alert for our non-TLS hello).
fn kernel_bystander(local_ip: Ipv4Addr, local_port: u16, server: SocketAddrV4) -> Result<usize, String> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket/bind/connect on a fd we own; the sockaddr_in values live on
    // the stack for the duration of each call.
    let stream = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error().to_string());
        }
        let sa = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(ip.octets()) },
            sin_zero: [0; 8],
        };
        let l = sa(local_ip, local_port);
        let len = std::mem::size_of::<libc::sockaddr_in>() as u32;
        if libc::bind(fd, &l as *const _ as *const libc::sockaddr, len) != 0 {
            let e = std::io::Error::last_os_error();
            libc::close(fd);
            return Err(format!("bind {local_ip}:{local_port}: {e}"));
        }
        let tv = libc::timeval { tv_sec: 5, tv_usec: 0 };
        libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_SNDTIMEO, &tv as *const _ as *const libc::c_void, std::mem::size_of::<libc::timeval>() as u32);
        let r = sa(*server.ip(), server.port());
        if libc::connect(fd, &r as *const _ as *const libc::sockaddr, len) != 0 {
            let e = std::io::Error::last_os_error();
            libc::close(fd);
            return Err(format!("connect {local_ip}:{local_port} -> {server}: {e} (redirected to AF_XDP?)"));
        }
        std::net::TcpStream::from_raw_fd(fd)
    };
    let mut s = stream;
    // The answer comes from the simulator's one asyncio loop, which is busy streaming
    // eight feeds: on a loaded 2-core box 5 s was once not enough (CI).
    s.set_read_timeout(Some(Duration::from_secs(30))).map_err(|e| e.to_string())?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").map_err(|e| e.to_string())?;
    let mut buf = [0u8; 512];
    let mut got = 0;
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Ok(got),
            Ok(n) => got += n,
            Err(_) if got > 0 => return Ok(got),
            Err(e) => return Err(format!("read: {e} (no answer: redirected to AF_XDP?)")),
        }
    }
}

#[test]
fn eight_xdp_feeds_and_a_kernel_feed_on_a_single_queue_veth() {
    many_connections(1);
}

#[test]
fn eight_xdp_feeds_and_a_kernel_feed_on_a_four_queue_veth_without_steering() {
    many_connections(4);
}
