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
    let mut client: Vec<u8> = req.split_off(end + 4);
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
