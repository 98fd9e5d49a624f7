//! A feed server for the reconnect tests (ws:// or wss:// on 127.0.0.1): every
//! connection gets the WebSocket upgrade, then text messages `"<conn>-<i>"` every
//! `interval`, and ends the way its [`Ending`] says after `messages` of them: a TCP
//! RST, a FIN (no close frame), a close frame 1001, or a stall (the connection stays
//! open but nothing is sent or answered, PINGs included: a black hole at the WebSocket
//! level; what the client sends is read and discarded, so the connection's thread and
//! socket go when the client ends it). It records what each connection received (the subscription check)
//! and whether its TLS session was resumed.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pipeline::stage::{encode_server_frame, TlsTransport};
use pipeline::tls::{TlsContext, TlsVersion};
use pipeline::transport::kernel::KernelSocket;

use crate::certs::certs;

/// How a connection ends after its messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    Rst,
    Fin,
    Close1001,
    Stall,
    /// Keep streaming (the last connection of a test).
    Keep,
}

/// What one connection received.
#[derive(Clone, Debug, Default)]
pub struct ConnRecord {
    /// Client frames, unmasked: (opcode, payload).
    pub received: Vec<(u8, Vec<u8>)>,
    pub resumed: bool,
}

pub struct FeedServer {
    pub host: String,
    pub port: u16,
    pub tls: bool,
    plan: Arc<Mutex<VecDeque<(usize, Ending)>>>,
    conns: Arc<Mutex<Vec<Arc<Mutex<ConnRecord>>>>>,
    stop: Arc<AtomicBool>,
}

enum Io {
    Plain(TcpStream),
    Tls(Box<TlsTransport>),
}

impl Io {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Io::Plain(s) => match s.read(buf) {
                Ok(0) => Err(std::io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => Ok(n),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(0),
                Err(e) => Err(e),
            },
            Io::Tls(t) => t.poll_read(buf).map_err(|e| std::io::Error::other(e.to_string())),
        }
    }
    fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Io::Plain(s) => {
                let mut off = 0;
                let deadline = Instant::now() + Duration::from_secs(5);
                while off < data.len() {
                    match s.write(&data[off..]) {
                        Ok(n) => off += n,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_millis(1))
                        }
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            }
            Io::Tls(t) => t
                .write_all(data, Duration::from_secs(5))
                .map_err(|e| std::io::Error::other(e.to_string())),
        }
    }
    fn fd(&self) -> i32 {
        match self {
            Io::Plain(s) => s.as_raw_fd(),
            Io::Tls(t) => t.socket().as_raw_fd(),
        }
    }
}

impl FeedServer {
    /// `plan`: (messages, ending) per connection in order; after it runs out every
    /// connection is `(usize::MAX, Keep)`.
    pub fn start(tls: bool, plan: Vec<(usize, Ending)>, interval: Duration) -> FeedServer {
        Self::start_on(tls, 0, plan, interval)
    }

    /// On a given port (0: any), e.g. a server coming back where it was.
    pub fn start_on(tls: bool, port: u16, plan: Vec<(usize, Ending)>, interval: Duration) -> FeedServer {
        Self::start_at("127.0.0.1", "server", tls, port, plan, interval)
    }

    /// On `host:port` with the test CA's leaf certificate `leaf` (e.g. `"veth"` for the
    /// namespace test bed's 10.200.1.1; call it on a thread inside the server's
    /// namespace: the listener and every connection's thread stay there).
    pub fn start_at(host: &str, leaf: &str, tls: bool, port: u16, plan: Vec<(usize, Ending)>, interval: Duration) -> FeedServer {
        let l = TcpListener::bind((host, port)).unwrap();
        let port = l.local_addr().unwrap().port();
        l.set_nonblocking(true).unwrap();
        let plan = Arc::new(Mutex::new(VecDeque::from(plan)));
        let conns: Arc<Mutex<Vec<Arc<Mutex<ConnRecord>>>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let ctx = tls.then(|| {
            let (c, k) = certs().leaf(leaf);
            TlsContext::new_server(&c, &k, TlsVersion::Tls12, TlsVersion::Tls13).unwrap()
        });
        let (p, cs, st) = (plan.clone(), conns.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0usize;
            while !st.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((s, _)) => {
                        let step = p.lock().unwrap().pop_front().unwrap_or((usize::MAX, Ending::Keep));
                        let rec = Arc::new(Mutex::new(ConnRecord::default()));
                        cs.lock().unwrap().push(rec.clone());
                        let (ctx, st) = (ctx.clone(), st.clone());
                        let id = n;
                        n += 1;
                        std::thread::spawn(move || {
                            let _ = serve(s, ctx, id, step, interval, rec, st);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(1)),
                }
            }
        });
        FeedServer { host: host.to_string(), port, tls, plan, conns, stop }
    }

    pub fn url(&self) -> String {
        format!("{}://{}:{}/feed", if self.tls { "wss" } else { "ws" }, self.host, self.port)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> Vec<ConnRecord> {
        self.conns.lock().unwrap().iter().map(|c| c.lock().unwrap().clone()).collect()
    }

    /// Append to the plan.
    pub fn then(&self, messages: usize, ending: Ending) {
        self.plan.lock().unwrap().push_back((messages, ending));
    }
}

impl Drop for FeedServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // The accept loop notices within a millisecond; wait so the port is free.
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads the client's upgrade request (within 5 s) and answers 101; the bytes the client
/// sent after the request.
fn accept_upgrade(io: &mut Io) -> std::io::Result<Vec<u8>> {
    let mut req = Vec::new();
    let mut buf = vec![0u8; 65536];
    let deadline = Instant::now() + Duration::from_secs(5);
    let end = loop {
        let n = io.read(&mut buf)?;
        req.extend_from_slice(&buf[..n]);
        if let Some(p) = req.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        if Instant::now() > deadline {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        std::thread::sleep(Duration::from_micros(200));
    };
    let text = String::from_utf8_lossy(&req[..end]).into_owned();
    let key = text
        .split("\r\n")
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.trim().eq_ignore_ascii_case("sec-websocket-key"))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    let resp = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        pipeline::ws::handshake::accept_key(&key)
    );
    io.write_all(resp.as_bytes())?;
    Ok(req.split_off(end + 4))
}

fn serve(
    s: TcpStream,
    ctx: Option<TlsContext>,
    id: usize,
    (messages, ending): (usize, Ending),
    interval: Duration,
    rec: Arc<Mutex<ConnRecord>>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<()> {
    s.set_nodelay(true)?;
    let mut io = match ctx {
        Some(ctx) => {
            let ks = KernelSocket::from_std(s).map_err(|e| std::io::Error::other(e.to_string()))?;
            let mut t = TlsTransport::new(ks, ctx.server_session().unwrap());
            t.handshake(Duration::from_secs(5)).map_err(|e| std::io::Error::other(e.to_string()))?;
            rec.lock().unwrap().resumed = t.session().session_reused();
            Io::Tls(Box::new(t))
        }
        None => {
            s.set_nonblocking(true)?;
            Io::Plain(s)
        }
    };
    // The upgrade.
    let mut client = accept_upgrade(&mut io)?;
    let mut buf = vec![0u8; 65536];
    let mut sent = 0usize;
    let mut next = Instant::now();
    let mut stalled = false;
    let mut closing_since: Option<Instant> = None;
    while !stop.load(Ordering::Relaxed) {
        if stalled {
            // Read and discard (PINGs unanswered), so the connection ends (and its
            // socket closes) when the client goes away.
            io.read(&mut buf)?;
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        let n = io.read(&mut buf)?;
        client.extend_from_slice(&buf[..n]);
        while let Some((op, payload, used)) = client_frame(&client) {
            client.drain(..used);
            rec.lock().unwrap().received.push((op, payload.clone()));
            let mut out = Vec::new();
            match op {
                0x9 => encode_server_frame(&mut out, 0xA, true, &payload),
                0x8 if closing_since.is_some() => return Ok(()), // our close answered
                0x8 => {
                    encode_server_frame(&mut out, 0x8, true, &payload[..payload.len().min(2)]);
                    io.write_all(&out)?;
                    return Ok(());
                }
                _ => {}
            }
            if !out.is_empty() {
                io.write_all(&out)?;
            }
        }
        if let Some(t) = closing_since {
            if t.elapsed() > Duration::from_secs(2) {
                return Ok(());
            }
        } else if sent < messages && Instant::now() >= next {
            let mut out = Vec::new();
            encode_server_frame(&mut out, 0x1, true, format!("{id}-{sent}").as_bytes());
            io.write_all(&out)?;
            sent += 1;
            next += interval;
        } else if sent >= messages {
            match ending {
                Ending::Keep => {}
                Ending::Rst => {
                    let lg = libc::linger { l_onoff: 1, l_linger: 0 };
                    // SAFETY: setsockopt on our own socket with a valid linger struct.
                    unsafe {
                        libc::setsockopt(
                            io.fd(),
                            libc::SOL_SOCKET,
                            libc::SO_LINGER,
                            &lg as *const _ as *const libc::c_void,
                            std::mem::size_of::<libc::linger>() as u32,
                        )
                    };
                    return Ok(()); // dropping the socket sends the RST
                }
                Ending::Fin => {
                    // SAFETY: shutdown of our own socket.
                    unsafe { libc::shutdown(io.fd(), libc::SHUT_WR) };
                    std::thread::sleep(Duration::from_millis(300));
                    return Ok(());
                }
                Ending::Close1001 => {
                    let mut out = Vec::new();
                    encode_server_frame(&mut out, 0x8, true, &1001u16.to_be_bytes());
                    io.write_all(&out)?;
                    closing_since = Some(Instant::now());
                }
                Ending::Stall => stalled = true,
            }
        }
        std::thread::sleep(Duration::from_micros(300));
    }
    Ok(())
}

/// One masked client frame at the start of `b`: (opcode, unmasked payload, bytes used).
fn client_frame(b: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    if b.len() < 2 {
        return None;
    }
    let (len, mut h) = match b[1] & 0x7f {
        126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
        127 if b.len() >= 10 => (u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize, 10),
        126 | 127 => return None,
        n => (n as usize, 2),
    };
    let mut mask = [0u8; 4];
    if b[1] & 0x80 != 0 {
        if b.len() < h + 4 {
            return None;
        }
        mask.copy_from_slice(&b[h..h + 4]);
        h += 4;
    }
    if b.len() < h + len {
        return None;
    }
    let payload = b[h..h + len].iter().enumerate().map(|(i, x)| x ^ mask[i & 3]).collect();
    Some((b[0] & 0x0f, payload, h + len))
}

// ------------------------------------------------------------------ sequence feeds

/// What a [`SeqServer`] streams. Every connection sends `{"seq":N,"src":"TAG"}` for
/// the *global* sequence: N is due at `origin + N * interval` (so two servers with one
/// origin carry the same feed, as two exchange gateways do), plus this server's own
/// delay for N (drawn from `[0, max_delay)` by a seeded hash; messages stay in order).
/// A connection starts at the sequence due when it opens. Sequences `drop(N)` says are
/// skipped; every `heartbeat_every` sequences a keyless `{"hb":N,"src":"TAG"}` follows.
/// After `end` the connection stays open and quiet.
#[derive(Clone)]
pub struct SeqSpec {
    pub tag: String,
    pub origin: Instant,
    pub interval: Duration,
    pub drop: Arc<dyn Fn(u64) -> bool + Send + Sync>,
    pub max_delay: Duration,
    pub seed: u64,
    pub end: u64,
    pub heartbeat_every: u64,
}

impl SeqSpec {
    pub fn new(tag: &str, origin: Instant, interval: Duration, end: u64) -> SeqSpec {
        SeqSpec {
            tag: tag.to_string(),
            origin,
            interval,
            drop: Arc::new(|_| false),
            max_delay: Duration::ZERO,
            seed: 1,
            end,
            heartbeat_every: 0,
        }
    }

    fn delay(&self, n: u64) -> Duration {
        let us = self.max_delay.as_micros() as u64;
        if us == 0 {
            return Duration::ZERO;
        }
        let mut z = (self.seed ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15)).wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Duration::from_micros((z ^ (z >> 31)) % us)
    }
}

/// A ws:// server on 127.0.0.1 (or wss:// on any address) streaming a [`SeqSpec`] to
/// every connection; it can be killed (every connection reset, the port closed) and
/// brought back on the same port.
pub struct SeqServer {
    pub host: String,
    pub port: u16,
    spec: SeqSpec,
    tls: Option<TlsContext>,
    run: Arc<AtomicBool>,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
}

impl SeqServer {
    pub fn start(spec: SeqSpec) -> SeqServer {
        Self::start_at("127.0.0.1", 0, None, spec)
    }

    /// On `host:port` (0: any), wss:// with the test CA's leaf `leaf` if given (e.g.
    /// `"veth"` for the namespace test bed's 10.200.1.1). Call it, and
    /// [`SeqServer::restart`], on a thread inside the server's namespace: the listener
    /// and every connection's thread stay there.
    pub fn start_at(host: &str, port: u16, leaf: Option<&str>, spec: SeqSpec) -> SeqServer {
        let tls = leaf.map(|leaf| {
            let (c, k) = certs().leaf(leaf);
            TlsContext::new_server(&c, &k, TlsVersion::Tls12, TlsVersion::Tls13).unwrap()
        });
        let mut s = SeqServer {
            host: host.to_string(),
            port,
            spec,
            tls,
            run: Arc::new(AtomicBool::new(false)),
            accepted: Arc::default(),
        };
        s.listen();
        s
    }

    pub fn url(&self) -> String {
        format!("{}://{}:{}/feed", if self.tls.is_some() { "wss" } else { "ws" }, self.host, self.port)
    }

    /// Connections accepted so far (over every life of the server).
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }

    fn listen(&mut self) {
        let l = TcpListener::bind((self.host.as_str(), self.port)).unwrap();
        self.port = l.local_addr().unwrap().port();
        l.set_nonblocking(true).unwrap();
        let run = Arc::new(AtomicBool::new(true));
        self.run = run.clone();
        let spec = self.spec.clone();
        let tls = self.tls.clone();
        let accepted = self.accepted.clone();
        std::thread::spawn(move || {
            while run.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((s, _)) => {
                        accepted.fetch_add(1, Ordering::Relaxed);
                        let (spec, run, tls) = (spec.clone(), run.clone(), tls.clone());
                        std::thread::spawn(move || {
                            let _ = serve_seq(s, tls, &spec, &run);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(1)),
                }
            }
        });
    }

    /// Reset every connection and stop listening (the server "dies").
    pub fn kill(&mut self) {
        self.run.store(false, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(10));
    }

    /// Listen again on the same port.
    pub fn restart(&mut self) {
        self.listen();
    }
}

impl Drop for SeqServer {
    fn drop(&mut self) {
        self.run.store(false, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn reset(s: &TcpStream) {
    let lg = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: setsockopt on our own socket with a valid linger struct.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &lg as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as u32,
        )
    };
}

fn serve_seq(s: TcpStream, tls: Option<TlsContext>, spec: &SeqSpec, run: &AtomicBool) -> std::io::Result<()> {
    s.set_nodelay(true)?;
    s.set_nonblocking(true)?;
    let mut io = match tls {
        Some(ctx) => {
            let ks = KernelSocket::from_std(s.try_clone()?).map_err(|e| std::io::Error::other(e.to_string()))?;
            let mut t = TlsTransport::new(ks, ctx.server_session().map_err(|e| std::io::Error::other(e.to_string()))?);
            t.handshake(Duration::from_secs(5)).map_err(|e| std::io::Error::other(e.to_string()))?;
            Io::Tls(Box::new(t))
        }
        None => Io::Plain(s.try_clone()?),
    };
    let mut client = accept_upgrade(&mut io)?;
    let mut buf = vec![0u8; 65536];
    let now = Instant::now();
    let mut n = if now > spec.origin {
        (now.duration_since(spec.origin).as_nanos() / spec.interval.as_nanos().max(1)) as u64
    } else {
        0
    };
    let mut not_before = now;
    let mut out = Vec::with_capacity(1 << 16);
    loop {
        if !run.load(Ordering::Relaxed) {
            reset(&s);
            return Ok(());
        }
        // The client: PING -> PONG, CLOSE -> reply and end.
        let got = io.read(&mut buf)?;
        client.extend_from_slice(&buf[..got]);
        while let Some((op, payload, used)) = client_frame(&client) {
            client.drain(..used);
            match op {
                0x9 => encode_server_frame(&mut out, 0xA, true, &payload),
                0x8 => {
                    encode_server_frame(&mut out, 0x8, true, &payload[..payload.len().min(2)]);
                    io.write_all(&out)?;
                    std::thread::sleep(Duration::from_millis(50));
                    return Ok(());
                }
                _ => {}
            }
        }
        // Everything due by now, in one write.
        let now = Instant::now();
        while n <= spec.end {
            let due = (spec.origin + spec.interval * (n as u32) + spec.delay(n)).max(not_before);
            if due > now {
                break;
            }
            not_before = due;
            if !(spec.drop)(n) {
                encode_server_frame(&mut out, 0x1, true, format!("{{\"seq\":{n},\"src\":\"{}\"}}", spec.tag).as_bytes());
            }
            if spec.heartbeat_every > 0 && n % spec.heartbeat_every == spec.heartbeat_every - 1 {
                encode_server_frame(&mut out, 0x1, true, format!("{{\"hb\":{n},\"src\":\"{}\"}}", spec.tag).as_bytes());
            }
            n += 1;
        }
        if !out.is_empty() {
            io.write_all(&out)?;
            out.clear();
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}
