//! XDP transport vs kernel transport, end to end over a veth pair, in one run:
//! TLS 1.3 (AES-128-GCM) WebSocket feed from a small Rust/OpenSSL server thread in the
//! server namespace (so the numbers measure the client, not a Python server).
//!
//! `sudo -E cargo bench --bench transport_veth` (root: namespaces, XDP). Prints a table and
//! writes `bench-results/transport_veth.json`. Env: `PL_BENCH_QUICK=1` for fewer runs.
//!
//! - throughput: 64 B, 256 B, 1 KiB messages flat out (the server writes batches of
//!   frames, 16 KiB TLS records); median of runs; messages/s measured by the client
//!   from first to last message;
//! - latency: 256 B at 20,000 msg/s, one TLS record per message, one-way latency from the
//!   server's CLOCK_MONOTONIC send timestamp to the client's receive; p50/p99/p99.9,
//!   each the median of 3 runs of 40,000 messages;
//! - CPU: the client thread's and the server thread's CPU (RUSAGE_THREAD) and all CPUs
//!   busy time from /proc/stat (includes softirq: veth/XDP copy work) per message.
//!
//! The client sleeps in ppoll/poll between frames (no busy-polling: the box is shared),
//! so the latency includes wake-ups; a production busy-polling client avoids them.

#[path = "../tests/common/certs.rs"]
mod certs;
#[path = "../tests/common/netns.rs"]
mod netns;
#[path = "../tests/common/wsmini.rs"]
mod wsmini;

use netns::TestBed;
use pipeline::tls::{TlsConfig, TlsContext, TlsVersion};
use pipeline::transport::kernel::{KernelSocket, KernelSocketOptions};
use pipeline::transport::kernel_tls::TlsStream;
use pipeline::transport::xdp::{XdpTcpConfig, XdpTcpTransport};
use pipeline::transport::ByteTransport;
use pipeline::{Error, Result};
use std::io::{Read, Write};
use std::net::{SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};
use wsmini::{mono_ns, Kind, WsClient};

const T: Duration = Duration::from_secs(20);

/// A non-blocking std TcpStream as a ByteTransport (the bench server's side).
struct StdSock(TcpStream, bool);

impl ByteTransport for StdSock {
    fn recv_into(&mut self, buf: &mut [u8]) -> Result<usize> {
        match self.0.read(buf) {
            Ok(0) => {
                self.1 = false;
                Err(Error::Closed("client closed".into()))
            }
            Ok(n) => Ok(n),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Err(Error::WouldBlock),
            Err(e) => Err(Error::io("bench server recv", e)),
        }
    }
    fn send(&mut self, d: &[u8]) -> Result<usize> {
        match self.0.write(d) {
            Ok(n) => Ok(n),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Err(Error::WouldBlock),
            Err(e) => Err(Error::io("bench server send", e)),
        }
    }
    fn close(&mut self) {
        self.1 = false;
        let _ = self.0.shutdown(std::net::Shutdown::Both);
    }
    fn is_open(&self) -> bool {
        self.1
    }
    fn wait(&mut self, writable: bool, timeout: Duration) -> Result<()> {
        let mut p = libc::pollfd { fd: self.0.as_raw_fd(), events: if writable { libc::POLLOUT } else { libc::POLLIN }, revents: 0 };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut p, 1, timeout.as_millis().clamp(1, 1000) as i32) };
        Ok(())
    }
}

fn thread_cpu_ns() -> u64 {
    // SAFETY: POD out-parameter.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    (us(ru.ru_utime) + us(ru.ru_stime)) * 1000
}

/// (busy, total) jiffies over all CPUs.
fn proc_stat() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let l = s.lines().next().unwrap_or("");
    let v: Vec<u64> = l.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    let total: u64 = v.iter().sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

// ---------------------------------------------------------------- server

/// Serve one client: WebSocket upgrade, then commands "run SIZE COUNT RATE" (masked
/// text frames); answers each run with the messages and then a text frame
/// "done <server cpu ns>". Message: [seq u64][send ns u64][pattern...].
fn serve(l: TcpListener, cert: std::path::PathBuf, key: std::path::PathBuf) {
    let (s, _) = l.accept().unwrap();
    s.set_nodelay(true).unwrap();
    s.set_nonblocking(true).unwrap();
    let ctx = TlsContext::new_server(&cert, &key, TlsVersion::Tls13, TlsVersion::Tls13).unwrap();
    let mut tls = TlsStream::new(StdSock(s, true), ctx.server_session().unwrap());
    tls.handshake(T).unwrap();
    let mut inb: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 65536];
    // Upgrade.
    let end = loop {
        if let Some(p) = inb.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let n = tls.read_timeout(&mut buf, T).unwrap();
        inb.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&inb[..end]).to_string();
    inb.drain(..end);
    let key_hdr = head
        .lines()
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.trim().eq_ignore_ascii_case("sec-websocket-key")).map(|(_, v)| v.trim().to_string()))
        .unwrap();
    let accept = pipeline::ws::handshake::accept_key(&key_hdr);
    let resp = format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n");
    tls.write_all(resp.as_bytes(), T).unwrap();
    let pattern: Vec<u8> = (0..2048u32).map(|i| i as u8).collect();
    let mut out: Vec<u8> = Vec::with_capacity(1 << 20);
    loop {
        // One masked frame from the client.
        let cmd = loop {
            if inb.len() >= 6 {
                let len = (inb[1] & 0x7f) as usize;
                if inb.len() >= 6 + len {
                    let mask = [inb[2], inb[3], inb[4], inb[5]];
                    let p: Vec<u8> = inb[6..6 + len].iter().enumerate().map(|(i, b)| b ^ mask[i & 3]).collect();
                    let op = inb[0] & 0xf;
                    inb.drain(..6 + len);
                    break (op, String::from_utf8_lossy(&p).to_string());
                }
            }
            match tls.read_timeout(&mut buf, Duration::from_secs(120)) {
                Ok(n) => inb.extend_from_slice(&buf[..n]),
                Err(_) => return,
            }
        };
        if cmd.0 == 0x8 {
            tls.close();
            return;
        }
        let v: Vec<u64> = cmd.1.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
        let (size, count, rate) = (v[0] as usize, v[1], v[2]);
        let cpu0 = thread_cpu_ns();
        let frame = |out: &mut Vec<u8>, seq: u64| {
            if size < 126 {
                out.extend_from_slice(&[0x82, size as u8]);
            } else {
                out.extend_from_slice(&[0x82, 126]);
                out.extend_from_slice(&(size as u16).to_be_bytes());
            }
            out.extend_from_slice(&seq.to_le_bytes());
            out.extend_from_slice(&mono_ns().to_le_bytes());
            out.extend_from_slice(&pattern[..size - 16]);
        };
        if rate == 0 {
            // Flat out: ~16 KiB of frames per write (one TLS record each).
            let mut seq = 0;
            while seq < count {
                out.clear();
                while seq < count && out.len() + size + 4 <= 16384 {
                    frame(&mut out, seq);
                    seq += 1;
                }
                tls.write_all(&out, T).unwrap();
            }
        } else {
            // Paced: one record per message, sent when due (sleeping, not spinning).
            let t0 = Instant::now();
            for seq in 0..count {
                let due = t0 + Duration::from_nanos(seq * 1_000_000_000 / rate);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                out.clear();
                frame(&mut out, seq);
                tls.write_all(&out, T).unwrap();
            }
        }
        let done = format!("done {}", thread_cpu_ns() - cpu0);
        out.clear();
        out.extend_from_slice(&[0x81, done.len() as u8]);
        out.extend_from_slice(done.as_bytes());
        tls.write_all(&out, T).unwrap();
    }
}

// ---------------------------------------------------------------- client

#[derive(Clone, Debug, Default)]
struct Run {
    msgs_per_s: f64,
    client_cpu_ns_per_msg: f64,
    server_cpu_ns_per_msg: f64,
    all_cpu_ns_per_msg: f64,
    lat_ns: Vec<u64>,
}

fn run<X: ByteTransport>(ws: &mut WsClient<X>, size: usize, count: u64, rate: u64, latency: bool) -> Run {
    ws.send_text(&format!("run {size} {count} {rate}")).unwrap();
    let hz = 100.0; // USER_HZ
    let (b0, _) = proc_stat();
    let c0 = thread_cpu_ns();
    let mut got = 0u64;
    let mut t_first = None;
    let mut lat = Vec::with_capacity(if latency { count as usize } else { 0 });
    let server_cpu;
    loop {
        match ws.next(T).unwrap() {
            Kind::Binary => {
                let p = ws.payload();
                let seq = u64::from_le_bytes(p[0..8].try_into().unwrap());
                assert_eq!(seq, got, "out of order");
                assert_eq!(p.len(), size);
                if latency {
                    let ts = u64::from_le_bytes(p[8..16].try_into().unwrap());
                    lat.push(mono_ns().saturating_sub(ts));
                }
                if t_first.is_none() {
                    t_first = Some(Instant::now());
                }
                got += 1;
            }
            Kind::Text => {
                let s = String::from_utf8_lossy(ws.payload()).to_string();
                server_cpu = s.strip_prefix("done ").and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
                break;
            }
            k => panic!("{k:?}"),
        }
    }
    assert_eq!(got, count);
    let el = t_first.map(|t| t.elapsed().as_secs_f64()).unwrap_or(1.0);
    let c1 = thread_cpu_ns();
    let (b1, _) = proc_stat();
    Run {
        msgs_per_s: (count - 1) as f64 / el,
        client_cpu_ns_per_msg: (c1 - c0) as f64 / count as f64,
        server_cpu_ns_per_msg: server_cpu as f64 / count as f64,
        all_cpu_ns_per_msg: (b1 - b0) as f64 / hz * 1e9 / count as f64,
        lat_ns: lat,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn pct(v: &mut [u64], p: f64) -> f64 {
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i] as f64 / 1000.0
}

struct Row {
    name: String,
    tput: Vec<(usize, f64, f64, f64, f64)>, // size, msg/s, client ns, server ns, all-cpu ns
    lat: (f64, f64, f64, f64, f64),          // p50, p99, p99.9 (µs), client ns/msg, all ns/msg
}

fn summarize(name: &str, tput_runs: &[(usize, Vec<Run>)], lat_runs: &mut [Run]) -> Row {
    let mut tput = Vec::new();
    for (size, rs) in tput_runs {
        let r = (
            *size,
            median(rs.iter().map(|r| r.msgs_per_s).collect()),
            median(rs.iter().map(|r| r.client_cpu_ns_per_msg).collect()),
            median(rs.iter().map(|r| r.server_cpu_ns_per_msg).collect()),
            median(rs.iter().map(|r| r.all_cpu_ns_per_msg).collect()),
        );
        eprintln!("  {name}: {size} B flat out: {:.0} msg/s (client {:.0} ns/msg, server {:.0} ns/msg, all CPUs {:.0} ns/msg); runs: {:?}", r.1, r.2, r.3, r.4,
            rs.iter().map(|r| (r.msgs_per_s / 1e3).round() as u64).collect::<Vec<_>>());
        tput.push(r);
    }
    let lr: Vec<(f64, f64, f64, f64, f64)> = lat_runs
        .iter_mut()
        .map(|r| (pct(&mut r.lat_ns, 0.5), pct(&mut r.lat_ns, 0.99), pct(&mut r.lat_ns, 0.999), r.client_cpu_ns_per_msg, r.all_cpu_ns_per_msg))
        .collect();
    let lat = (
        median(lr.iter().map(|x| x.0).collect()),
        median(lr.iter().map(|x| x.1).collect()),
        median(lr.iter().map(|x| x.2).collect()),
        median(lr.iter().map(|x| x.3).collect()),
        median(lr.iter().map(|x| x.4).collect()),
    );
    eprintln!("  {name}: 256 B at 20k/s: p50 {:.1} µs p99 {:.1} µs p99.9 {:.1} µs; runs (p50, p99): {:?}", lat.0, lat.1, lat.2,
        lr.iter().map(|x| (x.0.round() as u64, x.1.round() as u64)).collect::<Vec<_>>());
    Row { name: name.to_string(), tput, lat }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` (debug) only builds this.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("transport_veth: not run (use `cargo bench --bench transport_veth`, as root)");
        return;
    }
    if !netns::require_root("transport_veth benchmark") {
        return;
    }
    let runs = if std::env::var_os("PL_BENCH_QUICK").is_some() { 1 } else { 5 };
    let bed = TestBed::new();
    let (cert, key) = certs::certs().leaf("server");
    let ca = certs::certs().ca();
    let client_cfg = TlsConfig {
        ca_file: Some(ca),
        min_version: TlsVersion::Tls13,
        max_version: TlsVersion::Tls13,
        ciphersuites: Some("TLS_AES_128_GCM_SHA256".into()),
        ..TlsConfig::default()
    };
    // Both clients connected at once (two server threads), runs interleaved x, k, x, k
    // so both see the same background load on this shared box.
    let mut servers = Vec::new();
    let mut ports = Vec::new();
    for _ in 0..2 {
        let ip = bed.server_ip;
        let l = bed.in_server(move || TcpListener::bind((ip, 0)).unwrap());
        ports.push(l.local_addr().unwrap().port());
        let (c2, k2) = (cert.clone(), key.clone());
        servers.push(bed.spawn_in(netns::Side::Server, move || serve(l, c2, k2)));
    }
    let cfg = client_cfg.clone();
    let rows = bed.in_client(|| {
        let ctx = TlsContext::new(&cfg).unwrap();
        let t = XdpTcpTransport::connect(&XdpTcpConfig::new(SocketAddrV4::new(bed.server_ip, ports[0]))).unwrap();
        eprintln!("xdp: {}", t.socket().mode());
        let mut tls = TlsStream::new(t, ctx.client_session("feed.test").unwrap());
        tls.handshake(T).unwrap();
        let mut wx = WsClient::connect(tls, "feed.test", "/", T).unwrap();
        let io = KernelSocket::connect(&bed.server_ip.to_string(), ports[1], &KernelSocketOptions::default()).unwrap();
        let mut tls = TlsStream::new(io, ctx.client_session("feed.test").unwrap());
        tls.handshake(T).unwrap();
        let mut wk = WsClient::connect(tls, "feed.test", "/", T).unwrap();
        let (mut tx, mut tk) = (Vec::new(), Vec::new());
        for (size, count) in [(64usize, 400_000u64), (256, 200_000), (1024, 100_000)] {
            run(&mut wx, size, count / 10, 0, false); // warm-up
            run(&mut wk, size, count / 10, 0, false);
            let (mut rx, mut rk) = (Vec::new(), Vec::new());
            for _ in 0..runs {
                rx.push(run(&mut wx, size, count, 0, false));
                rk.push(run(&mut wk, size, count, 0, false));
            }
            tx.push((size, rx));
            tk.push((size, rk));
        }
        let (mut lx, mut lk) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            lx.push(run(&mut wx, 256, 40_000, 20_000, true));
            lk.push(run(&mut wk, 256, 40_000, 20_000, true));
        }
        let s = wx.tls.transport().tcp_stats();
        eprintln!(
            "xdp tcp: retransmits {} dup segments {} ooo {} zero windows {} acks {} segs in {}; transport {:?}",
            s.retransmits, s.dup_segments_received, s.ooo_segments_buffered, s.zero_windows_advertised, s.acks_sent, s.segs_in,
            wx.tls.transport().stats()
        );
        let rows = vec![summarize("xdp (AF_XDP + our TCP)", &tx, &mut lx), summarize("kernel (TCP socket)", &tk, &mut lk)];
        let _ = wx.send_frame(0x8, &1000u16.to_be_bytes(), Duration::from_secs(1));
        let _ = wk.send_frame(0x8, &1000u16.to_be_bytes(), Duration::from_secs(1));
        rows
    });
    for s in servers {
        let _ = s.join();
    }
    drop(bed);

    println!("\ntransport_veth: TLS 1.3 AES-128-GCM WebSocket over veth, Rust/OpenSSL server thread; medians of {runs} runs");
    println!("| transport | 64 B msg/s | 256 B msg/s | 1 KiB msg/s | 256 B @ 20k/s p50 / p99 / p99.9 (µs) |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for r in &rows {
        println!(
            "| {} | {:.2} M | {:.2} M | {:.2} M | {:.1} / {:.1} / {:.1} |",
            r.name,
            r.tput[0].1 / 1e6,
            r.tput[1].1 / 1e6,
            r.tput[2].1 / 1e6,
            r.lat.0,
            r.lat.1,
            r.lat.2
        );
    }
    println!("\nCPU per message (ns): client thread / server thread / all CPUs (/proc/stat, both cores)");
    println!("| transport | 64 B | 256 B | 1 KiB | 256 B @ 20k/s (client / all) |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for r in &rows {
        let c = |i: usize| format!("{:.0} / {:.0} / {:.0}", r.tput[i].2, r.tput[i].3, r.tput[i].4);
        println!("| {} | {} | {} | {} | {:.0} / {:.0} |", r.name, c(0), c(1), c(2), r.lat.3, r.lat.4);
    }
    let mut j = String::from("{\n  \"bench\": \"transport_veth\",\n  \"runs\": ");
    j += &format!("{runs},\n  \"results\": [\n");
    for (i, r) in rows.iter().enumerate() {
        j += &format!("    {{\"transport\": \"{}\", \"throughput\": [", r.name);
        for (k, t) in r.tput.iter().enumerate() {
            j += &format!(
                "{}{{\"size\": {}, \"msgs_per_s\": {:.0}, \"client_cpu_ns_per_msg\": {:.0}, \"server_cpu_ns_per_msg\": {:.0}, \"all_cpu_ns_per_msg\": {:.0}}}",
                if k > 0 { ", " } else { "" },
                t.0,
                t.1,
                t.2,
                t.3,
                t.4
            );
        }
        j += &format!(
            "], \"latency_256B_20k\": {{\"p50_us\": {:.1}, \"p99_us\": {:.1}, \"p999_us\": {:.1}, \"client_cpu_ns_per_msg\": {:.0}, \"all_cpu_ns_per_msg\": {:.0}}}}}{}\n",
            r.lat.0,
            r.lat.1,
            r.lat.2,
            r.lat.3,
            r.lat.4,
            if i + 1 < rows.len() { "," } else { "" }
        );
    }
    j += "  ]\n}\n";
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bench-results");
    let _ = std::fs::create_dir_all(&dir);
    std::fs::write(dir.join("transport_veth.json"), j).unwrap();
    println!("\nwrote bench-results/transport_veth.json");
}
