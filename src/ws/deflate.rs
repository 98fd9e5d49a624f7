//! permessage-deflate (RFC 7692): the offer, the response check, and the inflater and
//! deflater the pipeline's stages use, over zlib-rs (through `flate2`).
//!
//! - [`DeflateConfig`]: what we offer (`client_max_window_bits`, `server_max_window_bits`,
//!   the two `no_context_takeover` flags) and how we compress (threshold, level).
//! - [`DeflateConfig::offer`]: the `Sec-WebSocket-Extensions` value we send.
//! - [`negotiate`]: checks the server's answer against RFC 7692 §7.1 and gives the
//!   [`Negotiated`] parameters, or an error naming the parameter that is wrong.
//! - [`Inflater`]: raw inflate of RSV1 messages into the caller's buffer (MSG_INBOX),
//!   bounded by the caller's output space: a decompression bomb costs at most the space
//!   given, never more memory.
//! - [`Deflater`]: raw deflate of our messages with the negotiated window and context
//!   takeover, the `00 00 ff ff` tail removed (§7.2.1).

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use crate::error::{Error, Result};

/// The empty stored block a sync flush ends with; removed by the sender, appended by
/// the receiver (RFC 7692 §7.2.1, §7.2.2).
pub const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// What we offer and how we compress. `Default` is the offer browsers and Python
/// `websockets` make: `permessage-deflate; client_max_window_bits`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeflateConfig {
    /// Offer `client_max_window_bits`: 0 = without a value (the server may then limit
    /// our window, 8..15), 8..15 = with that value (our window is at most that).
    pub client_max_window_bits: u8,
    /// Offer `server_max_window_bits=N` (8..15) to limit the server's window (less
    /// memory for its compressor, usually worse compression); 0 = do not offer it.
    pub server_max_window_bits: u8,
    /// Offer `client_no_context_takeover`: we start every message with an empty window.
    pub client_no_context_takeover: bool,
    /// Offer `server_no_context_takeover`: ask the server to reset its window per message.
    pub server_no_context_takeover: bool,
    /// Messages with fewer payload bytes than this are sent uncompressed.
    pub threshold: usize,
    /// zlib level for what we send (0-9; 1 is fast and good on JSON).
    pub level: u8,
}

impl Default for DeflateConfig {
    fn default() -> Self {
        DeflateConfig {
            client_max_window_bits: 0,
            server_max_window_bits: 0,
            client_no_context_takeover: false,
            server_no_context_takeover: false,
            threshold: 64,
            level: 1,
        }
    }
}

fn bits_ok(b: u8) -> bool {
    (8..=15).contains(&b)
}

impl DeflateConfig {
    /// Refuse values RFC 7692 does not allow.
    pub fn validate(&self) -> Result<()> {
        if self.client_max_window_bits != 0 && !bits_ok(self.client_max_window_bits) {
            return Err(Error::Config(format!(
                "deflate client_max_window_bits {} must be 8..15 (or 0: offered without a value)",
                self.client_max_window_bits
            )));
        }
        if self.server_max_window_bits != 0 && !bits_ok(self.server_max_window_bits) {
            return Err(Error::Config(format!(
                "deflate server_max_window_bits {} must be 8..15 (or 0: not offered)",
                self.server_max_window_bits
            )));
        }
        if self.level > 9 {
            return Err(Error::Config(format!("deflate level {} must be 0..9", self.level)));
        }
        Ok(())
    }

    /// The `Sec-WebSocket-Extensions` value of our offer.
    pub fn offer(&self) -> String {
        let mut s = String::from("permessage-deflate");
        if self.client_no_context_takeover {
            s.push_str("; client_no_context_takeover");
        }
        if self.server_no_context_takeover {
            s.push_str("; server_no_context_takeover");
        }
        if self.server_max_window_bits != 0 {
            s.push_str(&format!("; server_max_window_bits={}", self.server_max_window_bits));
        }
        if self.client_max_window_bits != 0 {
            s.push_str(&format!("; client_max_window_bits={}", self.client_max_window_bits));
        } else {
            s.push_str("; client_max_window_bits");
        }
        s
    }
}

/// The agreed parameters (RFC 7692 §7.1): what the server's answer says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Negotiated {
    /// The server's LZ77 window (what we inflate with): 8..15, 15 when not limited.
    pub server_max_window_bits: u8,
    /// Our window (what we compress with): 8..15, 15 when not limited.
    pub client_max_window_bits: u8,
    /// The server resets its window after every message.
    pub server_no_context_takeover: bool,
    /// We reset our window after every message.
    pub client_no_context_takeover: bool,
}

impl Negotiated {
    /// Packed into one non-zero word (the shared-memory hand-over from the transport
    /// stage, which checks the upgrade, to the WebSocket stage, which inflates).
    pub fn to_word(self) -> u32 {
        0x100
            | self.server_max_window_bits as u32
            | (self.client_max_window_bits as u32) << 4
            | (self.server_no_context_takeover as u32) << 9
            | (self.client_no_context_takeover as u32) << 10
    }

    /// The inverse of [`to_word`](Self::to_word); `None` for a word that is not one.
    pub fn from_word(w: u32) -> Option<Negotiated> {
        if w & 0x100 == 0 {
            return None;
        }
        let n = Negotiated {
            server_max_window_bits: (w & 0xf) as u8,
            client_max_window_bits: ((w >> 4) & 0xf) as u8,
            server_no_context_takeover: w & (1 << 9) != 0,
            client_no_context_takeover: w & (1 << 10) != 0,
        };
        (bits_ok(n.server_max_window_bits) && bits_ok(n.client_max_window_bits)).then_some(n)
    }
}

fn ext_err(reason: String) -> Error {
    Error::WebSocket {
        close_code: 0,
        reason,
    }
}

/// Check the server's `Sec-WebSocket-Extensions` answer (every such header's value,
/// joined with ", ") against our offer. `Ok(None)`: the server declined (no extension).
/// An extension we did not offer, a parameter that is unknown, repeated, missing its
/// value or out of range, or `client_max_window_bits` when we did not offer it, is an
/// error naming the parameter (RFC 7692 §7.1: the client must fail the connection).
pub fn negotiate(answer: &str, offer: Option<&DeflateConfig>) -> Result<Option<Negotiated>> {
    let exts: Vec<&str> = answer
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if exts.is_empty() {
        return Ok(None);
    }
    let Some(offer) = offer else {
        return Err(ext_err(format!(
            "server selected extension {answer:?} that we did not offer"
        )));
    };
    if exts.len() > 1 {
        return Err(ext_err(format!(
            "server selected {} extensions ({answer:?}); we offered one, permessage-deflate",
            exts.len()
        )));
    }
    let mut parts = exts[0].split(';').map(str::trim);
    let name = parts.next().unwrap_or("");
    if !name.eq_ignore_ascii_case("permessage-deflate") {
        return Err(ext_err(format!(
            "server selected extension {name:?} that we did not offer (we offered permessage-deflate)"
        )));
    }
    let mut n = Negotiated {
        server_max_window_bits: 15,
        client_max_window_bits: 15,
        server_no_context_takeover: false,
        client_no_context_takeover: offer.client_no_context_takeover,
    };
    let (mut seen_s, mut seen_c, mut seen_snct, mut seen_cnct) = (false, false, false, false);
    for p in parts {
        if p.is_empty() {
            return Err(ext_err(format!(
                "permessage-deflate response {answer:?} has an empty parameter"
            )));
        }
        let (k, v) = match p.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim().trim_matches('"'))),
            None => (p, None),
        };
        let dup = |seen: &mut bool| -> Result<()> {
            if std::mem::replace(seen, true) {
                return Err(ext_err(format!(
                    "permessage-deflate response repeats the parameter {k}"
                )));
            }
            Ok(())
        };
        let bits = |v: Option<&str>| -> Result<u8> {
            let Some(v) = v else {
                return Err(ext_err(format!(
                    "permessage-deflate response parameter {k} needs a value (8..15)"
                )));
            };
            match v.parse::<u8>() {
                Ok(b) if bits_ok(b) && v.bytes().all(|c| c.is_ascii_digit()) && !v.starts_with('0') => Ok(b),
                _ => Err(ext_err(format!(
                    "permessage-deflate response parameter {k}={v} is not a window size 8..15"
                ))),
            }
        };
        // A window the server chose: a valid size, no larger than one we offered (0: we
        // offered the parameter without a value, so any valid size).
        let chosen_bits = |name: &str, v: Option<&str>, offered: u8| -> Result<u8> {
            let b = bits(v)?;
            if offered != 0 && b > offered {
                return Err(ext_err(format!(
                    "permessage-deflate response parameter {name}={b} is larger than the {offered} we offered"
                )));
            }
            Ok(b)
        };
        let no_value = |v: Option<&str>| -> Result<()> {
            match v {
                None => Ok(()),
                Some(v) => Err(ext_err(format!(
                    "permessage-deflate response parameter {k} takes no value (got {k}={v})"
                ))),
            }
        };
        match k.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" => {
                dup(&mut seen_snct)?;
                no_value(v)?;
                n.server_no_context_takeover = true;
            }
            "client_no_context_takeover" => {
                dup(&mut seen_cnct)?;
                no_value(v)?;
                n.client_no_context_takeover = true;
            }
            "server_max_window_bits" => {
                dup(&mut seen_s)?;
                n.server_max_window_bits = chosen_bits("server_max_window_bits", v, offer.server_max_window_bits)?;
            }
            "client_max_window_bits" => {
                dup(&mut seen_c)?;
                n.client_max_window_bits = chosen_bits("client_max_window_bits", v, offer.client_max_window_bits)?;
            }
            _ => {
                return Err(ext_err(format!(
                    "permessage-deflate response has the unknown parameter {k:?}"
                )))
            }
        }
    }
    if !seen_c && offer.client_max_window_bits != 0 {
        // We offered a limit on our own window: keep to it whatever the answer.
        n.client_max_window_bits = offer.client_max_window_bits;
    }
    Ok(Some(n))
}

/// What one [`Inflater::inflate`] call did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inflated {
    /// Input bytes taken.
    pub consumed: usize,
    /// Output bytes written.
    pub produced: usize,
    /// The deflate stream ended (a block with BFINAL set): the rest of this message's
    /// input must be ignored and the next message starts a new stream.
    pub stream_end: bool,
}

/// Raw inflate of the server's messages (RFC 7692 §7.2.2).
pub struct Inflater {
    z: Decompress,
    no_context_takeover: bool,
    /// The current message's stream ended (BFINAL): ignore its remaining input.
    ended: bool,
}

impl Inflater {
    pub fn new(n: &Negotiated) -> Self {
        // Inflating with the largest window accepts every smaller one the server uses
        // (zlib cannot inflate raw data with an 8-bit window setting, but 15 reads it).
        Inflater {
            z: Decompress::new_with_window_bits(false, 15),
            no_context_takeover: n.server_no_context_takeover,
            ended: false,
        }
    }

    /// Inflate `input` (a piece of the message's payload, or [`TAIL`] at its end) into
    /// `out`. Stops when `out` is full: the caller gives more space (or fails the
    /// message with 1009) and calls again with the rest of the input. Corrupt data is
    /// `Err` with close code 1007.
    pub fn inflate(&mut self, input: &[u8], out: &mut [u8]) -> Result<Inflated> {
        if self.ended {
            return Ok(Inflated {
                consumed: input.len(),
                produced: 0,
                stream_end: true,
            });
        }
        let (i0, o0) = (self.z.total_in(), self.z.total_out());
        let st = self
            .z
            .decompress(input, out, FlushDecompress::Sync)
            .map_err(|e| Error::WebSocket {
                close_code: super::close_code::INVALID_PAYLOAD,
                reason: format!(
                    "corrupt permessage-deflate data: {}",
                    e.message().unwrap_or("invalid deflate stream")
                ),
            })?;
        let mut r = Inflated {
            consumed: (self.z.total_in() - i0) as usize,
            produced: (self.z.total_out() - o0) as usize,
            stream_end: false,
        };
        if st == Status::StreamEnd {
            self.ended = true;
            r.stream_end = true;
            r.consumed = input.len();
        }
        Ok(r)
    }

    /// The message is complete (its tail inflated): reset the window if the server
    /// does not take over its context, or if its stream ended with BFINAL.
    pub fn end_message(&mut self) {
        if self.no_context_takeover || self.ended {
            self.z.reset(false);
        }
        self.ended = false;
    }
}

/// Raw deflate of our messages (RFC 7692 §7.2.1).
pub struct Deflater {
    z: Option<Compress>,
    no_context_takeover: bool,
    threshold: usize,
}

impl Deflater {
    /// `None` compressor when the negotiated window is 8 bits: zlib cannot produce raw
    /// deflate with a 256-byte window, and sending uncompressed is always allowed.
    pub fn new(n: &Negotiated, cfg: &DeflateConfig) -> Self {
        let z = (n.client_max_window_bits >= 9).then(|| {
            Compress::new_with_window_bits(
                Compression::new(cfg.level as u32),
                false,
                n.client_max_window_bits,
            )
        });
        Deflater {
            z,
            no_context_takeover: n.client_no_context_takeover,
            threshold: cfg.threshold,
        }
    }

    /// Compress this message (whose first fragment has `first_len` payload bytes)?
    pub fn wants(&self, first_len: usize) -> bool {
        self.z.is_some() && first_len >= self.threshold
    }

    /// The largest output [`compress`](Self::compress) can produce for `n` input bytes.
    /// zlib's own compressBound assumes dynamic Huffman codes; level 1 in zlib-rs
    /// (zlib-ng's "quick" strategy) uses the fixed codes, 9 bits per literal byte, so
    /// incompressible input grows by up to 1/8 (1 MiB of random bytes: 1,105,884 B).
    /// This is zlib's conservative bound (deflateBound for non-default parameters)
    /// plus room for the sync-flush marker and the final empty block.
    pub const fn bound(n: usize) -> usize {
        n + ((n + 7) >> 3) + ((n + 63) >> 6) + 64
    }

    /// Compress one fragment (or a whole message) into `out`, which must hold
    /// [`bound`](Self::bound)`(input.len())` bytes. `fin`: the message ends here (the
    /// sync-flush tail is removed and, without context takeover, the window reset).
    pub fn compress(&mut self, input: &[u8], out: &mut [u8], fin: bool) -> Result<usize> {
        let Some(z) = self.z.as_mut() else {
            return Err(Error::Config("permessage-deflate: no compressor".into()));
        };
        let o0 = z.total_out();
        let i0 = z.total_in();
        loop {
            let done_in = (z.total_in() - i0) as usize;
            let done_out = (z.total_out() - o0) as usize;
            z.compress(&input[done_in..], &mut out[done_out..], FlushCompress::Sync)
                .map_err(|e| Error::Config(format!("deflate failed: {e}")))?;
            let done_in = (z.total_in() - i0) as usize;
            let done_out = (z.total_out() - o0) as usize;
            // Done when all input is taken and the flush left room (zlib fills `out`
            // exactly only if it may have more to write).
            if done_in == input.len() && done_out < out.len() {
                break;
            }
            if done_out == out.len() {
                return Err(Error::Overrun("deflate output larger than its bound".into()));
            }
        }
        let mut n = (z.total_out() - o0) as usize;
        if fin {
            if n >= 4 && out[n - 4..n] == TAIL {
                n -= 4;
            }
            if self.no_context_takeover {
                z.reset();
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn neg(ans: &str, offer: &DeflateConfig) -> Result<Option<Negotiated>> {
        negotiate(ans, Some(offer))
    }

    #[test]
    fn offers() {
        assert_eq!(
            DeflateConfig::default().offer(),
            "permessage-deflate; client_max_window_bits"
        );
        let c = DeflateConfig {
            client_max_window_bits: 12,
            server_max_window_bits: 10,
            client_no_context_takeover: true,
            server_no_context_takeover: true,
            ..Default::default()
        };
        assert_eq!(
            c.offer(),
            "permessage-deflate; client_no_context_takeover; server_no_context_takeover; server_max_window_bits=10; client_max_window_bits=12"
        );
    }

    #[test]
    fn accepts_what_rfc7692_allows() {
        let d = DeflateConfig::default();
        assert_eq!(neg("", &d).unwrap(), None);
        let n = neg("permessage-deflate", &d).unwrap().unwrap();
        assert_eq!((n.server_max_window_bits, n.client_max_window_bits), (15, 15));
        let n = neg(
            "permessage-deflate; server_max_window_bits=9; client_max_window_bits=8; server_no_context_takeover; client_no_context_takeover",
            &d,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            n,
            Negotiated {
                server_max_window_bits: 9,
                client_max_window_bits: 8,
                server_no_context_takeover: true,
                client_no_context_takeover: true
            }
        );
        assert_eq!(Negotiated::from_word(n.to_word()), Some(n));
        // Quoted values and case in names are allowed.
        let n = neg("Permessage-Deflate; Server_Max_Window_Bits=\"12\"", &d).unwrap().unwrap();
        assert_eq!(n.server_max_window_bits, 12);
        // We offered a limit on our window, the server said nothing: keep the limit.
        let c = DeflateConfig { client_max_window_bits: 10, ..d };
        assert_eq!(neg("permessage-deflate", &c).unwrap().unwrap().client_max_window_bits, 10);
    }

    #[test]
    fn refuses_what_it_does_not() {
        let d = DeflateConfig::default();
        let e = |a: &str, c: &DeflateConfig| format!("{}", neg(a, c).unwrap_err());
        assert!(e("x-webkit-deflate-frame", &d).contains("x-webkit-deflate-frame"));
        assert!(e("permessage-deflate, permessage-deflate", &d).contains("2 extensions"));
        assert!(e("permessage-deflate; server_max_window_bits", &d).contains("server_max_window_bits needs a value"));
        assert!(e("permessage-deflate; server_max_window_bits=16", &d).contains("server_max_window_bits=16"));
        assert!(e("permessage-deflate; server_max_window_bits=7", &d).contains("server_max_window_bits=7"));
        assert!(e("permessage-deflate; client_max_window_bits=012", &d).contains("client_max_window_bits=012"));
        assert!(e("permessage-deflate; client_no_context_takeover=1", &d).contains("takes no value"));
        assert!(e("permessage-deflate; foo", &d).contains("unknown parameter \"foo\""));
        assert!(e("permessage-deflate; server_no_context_takeover; server_no_context_takeover", &d).contains("repeats the parameter server_no_context_takeover"));
        let c = DeflateConfig { server_max_window_bits: 10, client_max_window_bits: 11, ..d };
        assert!(e("permessage-deflate; server_max_window_bits=11", &c).contains("larger than the 10 we offered"));
        assert!(e("permessage-deflate; client_max_window_bits=12", &c).contains("larger than the 11 we offered"));
        assert!(format!("{}", negotiate("permessage-deflate", None).unwrap_err()).contains("did not offer"));
    }

    fn roundtrip(n: Negotiated, msgs: &[Vec<u8>]) {
        let cfg = DeflateConfig { threshold: 0, ..Default::default() };
        let mut d = Deflater::new(&n, &cfg);
        // The inflater resets when the compressor does (the server's flag on its side).
        let mut i = Inflater::new(&Negotiated {
            server_no_context_takeover: n.client_no_context_takeover,
            ..n
        });
        for m in msgs {
            let mut c = vec![0; Deflater::bound(m.len())];
            let k = d.compress(m, &mut c, true).unwrap();
            c.truncate(k);
            c.extend_from_slice(&TAIL);
            let mut out = vec![0; m.len() + 16];
            let r = i.inflate(&c, &mut out).unwrap();
            assert_eq!(r.consumed, c.len());
            assert_eq!(&out[..r.produced], &m[..]);
            i.end_message();
        }
    }

    /// Incompressible input fits the bound at every window size (level 1 uses the fixed
    /// Huffman codes: random bytes grow by ~5 %, past zlib's compressBound).
    #[test]
    fn random_bytes_fit_the_bound_at_every_window() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let random: Vec<u8> = (0..1 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        for bits in [9u8, 11, 15] {
            let n = Negotiated {
                server_max_window_bits: bits,
                client_max_window_bits: bits,
                server_no_context_takeover: false,
                client_no_context_takeover: false,
            };
            roundtrip(n, &[random.clone(), random[..70_000].to_vec(), b"small".to_vec()]);
        }
    }

    #[test]
    fn roundtrips_every_window_and_takeover() {
        let msgs: Vec<Vec<u8>> = (0..20)
            .map(|k| {
                format!("{{\"e\":\"trade\",\"s\":\"BTCUSDT\",\"p\":\"{}.{k}\",\"q\":\"0.0{k}\"}}", 60000 + k)
                    .repeat(1 + k * 13)
                    .into_bytes()
            })
            .chain(std::iter::once(Vec::new()))
            .collect();
        for bits in 9..=15 {
            for (snct, cnct) in [(false, false), (true, false), (false, true), (true, true)] {
                roundtrip(
                    Negotiated {
                        server_max_window_bits: bits,
                        client_max_window_bits: bits,
                        server_no_context_takeover: snct,
                        client_no_context_takeover: cnct,
                    },
                    &msgs,
                );
            }
        }
    }

    #[test]
    fn rfc7692_examples() {
        let n = neg("permessage-deflate", &DeflateConfig::default()).unwrap().unwrap();
        let mut i = Inflater::new(&n);
        // §7.2.3.1: "Hello" compressed, then again with the window (context takeover).
        for m in [&[0xf2u8, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00][..], &[0xf2, 0x00, 0x11, 0x00, 0x00]] {
            let mut out = [0u8; 16];
            let r = i.inflate(m, &mut out).unwrap();
            let r2 = i.inflate(&TAIL, &mut out[r.produced..]).unwrap();
            assert_eq!(&out[..r.produced + r2.produced], b"Hello");
            i.end_message();
        }
        // §7.2.3.3: a stored block; §7.2.3.4: BFINAL set, then a fresh stream.
        for m in [&[0x00u8, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00][..], &[0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00]] {
            let mut out = [0u8; 16];
            let mut input = m.to_vec();
            input.extend_from_slice(&TAIL);
            let r = i.inflate(&input, &mut out).unwrap();
            assert_eq!(&out[..r.produced], b"Hello");
            i.end_message();
        }
        // Corrupt data: 1007.
        let mut out = [0u8; 16];
        match i.inflate(&[0xff, 0xff, 0xff, 0xff], &mut out) {
            Err(Error::WebSocket { close_code, .. }) => assert_eq!(close_code, 1007),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bomb_stops_at_the_space_given() {
        let n = neg("permessage-deflate", &DeflateConfig::default()).unwrap().unwrap();
        let zeros = vec![0u8; 8 << 20];
        let mut d = Deflater::new(&n, &DeflateConfig { threshold: 0, ..Default::default() });
        let mut c = vec![0; Deflater::bound(zeros.len())];
        let k = d.compress(&zeros, &mut c, true).unwrap();
        assert!(k < 128 << 10, "{k}");
        let mut i = Inflater::new(&n);
        let mut out = vec![0u8; 1 << 20];
        let r = i.inflate(&c[..k], &mut out).unwrap();
        assert_eq!(r.produced, 1 << 20);
        assert!(r.consumed < k);
    }
}
