//! A synthetic transport for tests, benchmarks and `pipeline demo`: it plays a server
//! that answers the upgrade, then delivers pre-built server frames at a chosen rate and
//! in chosen chunk sizes (to split frames at every boundary), and answers a client
//! CLOSE with a CLOSE. Nothing touches the network.

use std::sync::{Arc, Mutex};

use super::transport::{Transport, TransportCounters};
use super::websocket::op;
use crate::error::{Error, Result};

/// Encode one unmasked server frame (what a server sends): `0x80|op, len, payload`.
pub fn encode_server_frame(out: &mut Vec<u8>, opcode: u8, fin: bool, payload: &[u8]) {
    out.push((fin as u8) << 7 | (opcode & 0x0f));
    let n = payload.len();
    if n < 126 {
        out.push(n as u8);
    } else if n < 65536 {
        out.push(126);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
    out.extend_from_slice(payload);
}

/// [`encode_server_frame`] with RSV1 set: the first frame of a permessage-deflate
/// message (`payload` is raw deflate data, its `00 00 ff ff` tail removed).
pub fn encode_server_frame_rsv1(out: &mut Vec<u8>, opcode: u8, fin: bool, payload: &[u8]) {
    let at = out.len();
    encode_server_frame(out, opcode, fin, payload);
    out[at] |= 0x40;
}

/// Client frames seen by the synthetic server: `(opcode, fin, unmasked payload)`.
pub type SyntheticCapture = Arc<Mutex<Vec<(u8, bool, Vec<u8>)>>>;

/// What the synthetic server sends after the upgrade.
#[derive(Clone, Default)]
pub struct SyntheticScript {
    /// Server bytes (frames built with [`encode_server_frame`]).
    pub data: Arc<Vec<u8>>,
    /// Largest read handed out (0: as much as asked). Small values split frames.
    pub chunk: usize,
    /// Delivery rate in bytes per second (0: as fast as the pipeline takes them).
    pub bytes_per_sec: u64,
    /// After the data, end the stream without a WebSocket close (a dropped connection).
    pub eof_at_end: bool,
    /// If set, receives every frame the client sends after the upgrade, unmasked, as
    /// `(opcode, fin, payload)`. Only visible in the same process (inline, threads).
    pub capture: Option<SyntheticCapture>,
    /// Never answer a client CLOSE (and keep the stream open): a server that ignores
    /// the close handshake.
    pub ignore_close: bool,
    /// Take client bytes at this rate after the upgrade (0: as fast as they come): a
    /// server that reads slowly, so our writes back up.
    pub client_bytes_per_sec: u64,
    /// Stop reading after this many client bytes after the upgrade: our writes then
    /// return 0 forever (a closed TCP window).
    pub stop_reading_after: Option<usize>,
    /// After the data, end the stream with a TCP reset (`Error::Reset`) instead.
    pub reset_at_end: bool,
    /// The scripts of the connections after this one (reconnects): connection k + 1
    /// plays `then[k]`, the last one again once they run out. Empty: this transport
    /// cannot reconnect.
    pub then: Vec<SyntheticScript>,
    /// Answer an offer of permessage-deflate with this `Sec-WebSocket-Extensions`
    /// value (e.g. `"permessage-deflate"`); `None`: decline every extension.
    pub extensions: Option<String>,
    /// `Some((offset, n))`: deliver the data up to `offset`, then hold the rest (and the
    /// end of the stream) until the client has sent `n` data messages (final frames)
    /// after the upgrade: a server that answers, so a test knows which connection got
    /// what it sent.
    pub hold_at: Option<(usize, usize)>,
}

/// The synthetic server as a [`Transport`].
pub struct SyntheticTransport {
    script: SyntheticScript,
    request: Vec<u8>,
    /// Upgrade response, then close replies: served before script data.
    priority: Vec<u8>,
    upgraded: bool,
    pos: usize,
    start_ns: u64,
    client: Vec<u8>,
    /// Client bytes taken after the upgrade (for the reading-rate knobs).
    taken: usize,
    /// Client data messages (final data frames) seen after the upgrade.
    client_messages: usize,
    eof: bool,
    counters: TransportCounters,
    /// Connections made after the first.
    reconnects: usize,
    then: Arc<Vec<SyntheticScript>>,
}

impl SyntheticTransport {
    pub fn new(mut script: SyntheticScript) -> Self {
        let then = Arc::new(std::mem::take(&mut script.then));
        SyntheticTransport {
            reconnects: 0,
            then,
            script,
            request: Vec::new(),
            priority: Vec::new(),
            upgraded: false,
            pos: 0,
            start_ns: 0,
            client: Vec::new(),
            taken: 0,
            client_messages: 0,
            eof: false,
            counters: TransportCounters::default(),
        }
    }

    fn client_frames(&mut self) {
        loop {
            let b = &self.client;
            if b.len() < 2 {
                return;
            }
            let (len, mut h) = match b[1] & 0x7f {
                126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
                127 if b.len() >= 10 => {
                    let mut a = [0u8; 8];
                    a.copy_from_slice(&b[2..10]);
                    (u64::from_be_bytes(a) as usize, 10)
                }
                126 | 127 => return,
                n => (n as usize, 2),
            };
            let masked = b[1] & 0x80 != 0;
            let mut mask = [0u8; 4];
            if masked {
                if b.len() < h + 4 {
                    return;
                }
                mask.copy_from_slice(&b[h..h + 4]);
                h += 4;
            }
            if b.len() < h + len {
                return;
            }
            let (op, fin) = (b[0] & 0x0f, b[0] & 0x80 != 0);
            let payload: Vec<u8> = b[h..h + len]
                .iter()
                .enumerate()
                .map(|(i, x)| x ^ mask[i & 3])
                .collect();
            self.client.drain(..h + len);
            if op == op::CLOSE && !self.eof && !self.script.ignore_close {
                let mut reply = Vec::new();
                encode_server_frame(
                    &mut reply,
                    op::CLOSE,
                    true,
                    &payload[..payload.len().min(2)],
                );
                self.priority.extend_from_slice(&reply);
                self.eof = true; // stream ends after the reply
            }
            if op < op::CLOSE && fin {
                self.client_messages += 1;
            }
            if let Some(c) = &self.script.capture {
                if let Ok(mut v) = c.lock() {
                    v.push((op, fin, payload));
                }
            }
        }
    }
}

impl Transport for SyntheticTransport {
    fn name(&self) -> &'static str {
        "synthetic"
    }

    fn drive(&mut self, now_ns: u64) -> Result<bool> {
        if self.start_ns == 0 {
            self.start_ns = now_ns.max(1);
        }
        Ok(false)
    }

    fn is_established(&self) -> bool {
        true
    }

    fn read(&mut self, buf: &mut [u8], now_ns: u64) -> Result<usize> {
        if !self.priority.is_empty() {
            let n = buf.len().min(self.priority.len());
            buf[..n].copy_from_slice(&self.priority[..n]);
            self.priority.drain(..n);
            return Ok(n);
        }
        if !self.upgraded {
            return Ok(0);
        }
        if self.eof {
            return Err(Error::Closed("synthetic server ended the stream".into()));
        }
        let data = &self.script.data;
        let mut end = data.len();
        if let Some((at, n)) = self.script.hold_at {
            if self.client_messages < n {
                end = end.min(at);
                if self.pos >= end {
                    return Ok(0);
                }
            }
        }
        if self.pos >= data.len() {
            if self.script.reset_at_end {
                return Err(Error::Reset("synthetic server reset the connection".into()));
            }
            if self.script.eof_at_end {
                return Err(Error::Closed("synthetic server ended the stream".into()));
            }
            return Ok(0);
        }
        let mut n = buf.len().min(end - self.pos);
        if self.script.chunk > 0 {
            n = n.min(self.script.chunk);
        }
        if self.script.bytes_per_sec > 0 {
            let elapsed = now_ns.saturating_sub(self.start_ns) as u128;
            let allowed = (elapsed * self.script.bytes_per_sec as u128 / 1_000_000_000) as usize;
            n = n.min(allowed.saturating_sub(self.pos));
        }
        buf[..n].copy_from_slice(&data[self.pos..self.pos + n]);
        self.pos += n;
        self.counters.rx_bytes += n as u64;
        Ok(n)
    }

    fn write(&mut self, data: &[u8], now_ns: u64) -> Result<usize> {
        if !self.upgraded {
            self.counters.tx_bytes += data.len() as u64;
            self.request.extend_from_slice(data);
            if let Some(end) = self.request.windows(4).position(|w| w == b"\r\n\r\n") {
                let text = String::from_utf8_lossy(&self.request[..end]).into_owned();
                let key = text
                    .split("\r\n")
                    .filter_map(|l| l.split_once(':'))
                    .find(|(n, _)| n.trim().eq_ignore_ascii_case("sec-websocket-key"))
                    .map(|(_, v)| v.trim().to_string())
                    .ok_or_else(|| Error::WebSocket {
                        close_code: 0,
                        reason: "synthetic: no Sec-WebSocket-Key".into(),
                    })?;
                let offered = text.to_ascii_lowercase().contains("permessage-deflate");
                let ext = match &self.script.extensions {
                    Some(e) if offered => format!("Sec-WebSocket-Extensions: {e}\r\n"),
                    _ => String::new(),
                };
                let resp = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n{ext}\r\n",
                    crate::ws::handshake::accept_key(&key)
                );
                self.priority.extend_from_slice(resp.as_bytes());
                let rest = self.request.split_off(end + 4);
                self.upgraded = true;
                self.client.extend_from_slice(&rest);
                self.client_frames();
            }
            return Ok(data.len());
        }
        let mut n = data.len();
        if let Some(limit) = self.script.stop_reading_after {
            n = n.min(limit.saturating_sub(self.taken));
        }
        if self.script.client_bytes_per_sec > 0 {
            let elapsed = now_ns.saturating_sub(self.start_ns) as u128;
            let allowed =
                (elapsed * self.script.client_bytes_per_sec as u128 / 1_000_000_000) as usize;
            n = n.min(allowed.saturating_sub(self.taken));
        }
        self.taken += n;
        self.counters.tx_bytes += n as u64;
        self.client.extend_from_slice(&data[..n]);
        self.client_frames();
        Ok(n)
    }

    fn shutdown(&mut self, _now_ns: u64) -> Result<()> {
        self.eof = true;
        Ok(())
    }

    fn counters(&self) -> TransportCounters {
        self.counters
    }

    fn reconnect(&mut self, _now_ns: u64) -> Result<()> {
        if self.then.is_empty() {
            return Err(Error::Config("the synthetic script has no further connections (SyntheticScript::then)".into()));
        }
        let next = self.then[self.reconnects.min(self.then.len() - 1)].clone();
        let (then, reconnects, counters) = (self.then.clone(), self.reconnects + 1, self.counters);
        *self = SyntheticTransport::new(next);
        self.then = then;
        self.reconnects = reconnects;
        self.counters = counters;
        Ok(())
    }
}
