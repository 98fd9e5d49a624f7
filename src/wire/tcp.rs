//! TCP segments (RFC 9293) and options: MSS, window scale, SACK-permitted, SACK,
//! timestamps, NOP/EOL; unknown options are skipped by their length.

use super::checksum;
use super::{be16, be32, put16, put32, WireError};
use std::net::Ipv4Addr;

pub const HEADER_LEN: usize = 20;
/// Largest TCP header (data offset 15).
pub const MAX_HEADER_LEN: usize = 60;

/// TCP flag bits (byte 13 of the header).
pub mod flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;
}

/// A checked view of a TCP segment: `new_checked` validates the data offset against the
/// buffer; every accessor afterwards is infallible.
#[derive(Debug, Clone, Copy)]
pub struct TcpSegment<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> TcpSegment<T> {
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let b = buf.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let hl = ((b[12] >> 4) as usize) * 4;
        if hl < HEADER_LEN {
            return Err(WireError::BadHeaderLen);
        }
        if hl > b.len() {
            return Err(WireError::Truncated);
        }
        Ok(TcpSegment { buf })
    }
    pub fn new_unchecked(buf: T) -> Self {
        TcpSegment { buf }
    }
    pub fn into_inner(self) -> T {
        self.buf
    }
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.as_ref()
    }
    pub fn src_port(&self) -> u16 {
        be16(self.buf.as_ref(), 0)
    }
    pub fn dst_port(&self) -> u16 {
        be16(self.buf.as_ref(), 2)
    }
    pub fn seq(&self) -> u32 {
        be32(self.buf.as_ref(), 4)
    }
    pub fn ack(&self) -> u32 {
        be32(self.buf.as_ref(), 8)
    }
    pub fn header_len(&self) -> usize {
        ((self.buf.as_ref()[12] >> 4) as usize) * 4
    }
    pub fn flags(&self) -> u8 {
        self.buf.as_ref()[13]
    }
    pub fn fin(&self) -> bool {
        self.flags() & flags::FIN != 0
    }
    pub fn syn(&self) -> bool {
        self.flags() & flags::SYN != 0
    }
    pub fn rst(&self) -> bool {
        self.flags() & flags::RST != 0
    }
    pub fn psh(&self) -> bool {
        self.flags() & flags::PSH != 0
    }
    pub fn has_ack(&self) -> bool {
        self.flags() & flags::ACK != 0
    }
    pub fn window(&self) -> u16 {
        be16(self.buf.as_ref(), 14)
    }
    pub fn checksum(&self) -> u16 {
        be16(self.buf.as_ref(), 16)
    }
    pub fn urgent(&self) -> u16 {
        be16(self.buf.as_ref(), 18)
    }
    /// Raw option bytes (between the fixed header and the data).
    pub fn options(&self) -> &[u8] {
        &self.buf.as_ref()[HEADER_LEN..self.header_len()]
    }
    pub fn option_iter(&self) -> TcpOptionIter<'_> {
        TcpOptionIter::new(self.options())
    }
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[self.header_len()..]
    }
    /// Sequence space occupied: payload + SYN + FIN.
    pub fn seq_len(&self) -> u32 {
        self.payload().len() as u32 + self.syn() as u32 + self.fin() as u32
    }
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        checksum::verify_tcp(src, dst, self.buf.as_ref())
    }
}

impl<'a> TcpSegment<&'a [u8]> {
    /// The payload with the lifetime of the underlying frame (zero copy).
    pub fn payload_ref(&self) -> &'a [u8] {
        let b: &'a [u8] = self.buf;
        &b[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpSegment<T> {
    pub fn set_seq(&mut self, v: u32) {
        put32(self.buf.as_mut(), 4, v);
    }
    pub fn set_ack(&mut self, v: u32) {
        put32(self.buf.as_mut(), 8, v);
    }
    pub fn set_flags(&mut self, f: u8) {
        self.buf.as_mut()[13] = f;
    }
    pub fn set_window(&mut self, v: u16) {
        put16(self.buf.as_mut(), 14, v);
    }
    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buf.as_mut(), 16, v);
    }
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        &mut self.buf.as_mut()[hl..]
    }
    /// Recompute the checksum over pseudo-header + the whole buffer.
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        put16(self.buf.as_mut(), 16, 0);
        let c = checksum::tcp_checksum(src, dst, self.buf.as_ref());
        put16(self.buf.as_mut(), 16, c);
    }
}

/// One TCP option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpOption<'a> {
    EndOfList,
    Nop,
    Mss(u16),
    WindowScale(u8),
    SackPermitted,
    /// SACK blocks, raw (a multiple of 8 bytes: pairs of left/right edges).
    Sack(&'a [u8]),
    Timestamps {
        tsval: u32,
        tsecr: u32,
    },
    Unknown {
        kind: u8,
        data: &'a [u8],
    },
}

pub mod kind {
    pub const EOL: u8 = 0;
    pub const NOP: u8 = 1;
    pub const MSS: u8 = 2;
    pub const WSCALE: u8 = 3;
    pub const SACK_PERMITTED: u8 = 4;
    pub const SACK: u8 = 5;
    pub const TIMESTAMPS: u8 = 8;
}

/// Iterates over options; yields `Err(BadOption)` once (then stops) on a malformed
/// length. Stops after End-of-List.
#[derive(Debug, Clone)]
pub struct TcpOptionIter<'a> {
    rest: &'a [u8],
    done: bool,
}

impl<'a> TcpOptionIter<'a> {
    pub fn new(opts: &'a [u8]) -> Self {
        TcpOptionIter {
            rest: opts,
            done: false,
        }
    }
}

impl<'a> Iterator for TcpOptionIter<'a> {
    type Item = Result<TcpOption<'a>, WireError>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.rest.is_empty() {
            return None;
        }
        let k = self.rest[0];
        match k {
            kind::EOL => {
                self.done = true;
                return Some(Ok(TcpOption::EndOfList));
            }
            kind::NOP => {
                self.rest = &self.rest[1..];
                return Some(Ok(TcpOption::Nop));
            }
            _ => {}
        }
        let bad = |s: &mut Self| {
            s.done = true;
            Some(Err(WireError::BadOption))
        };
        if self.rest.len() < 2 {
            return bad(self);
        }
        let len = self.rest[1] as usize;
        if len < 2 || len > self.rest.len() {
            return bad(self);
        }
        let data = &self.rest[2..len];
        let opt = match (k, len) {
            (kind::MSS, 4) => TcpOption::Mss(be16(data, 0)),
            (kind::WSCALE, 3) => TcpOption::WindowScale(data[0]),
            (kind::SACK_PERMITTED, 2) => TcpOption::SackPermitted,
            (kind::SACK, l) if l >= 10 && (l - 2) % 8 == 0 => TcpOption::Sack(data),
            (kind::TIMESTAMPS, 10) => TcpOption::Timestamps {
                tsval: be32(data, 0),
                tsecr: be32(data, 4),
            },
            (
                kind::MSS | kind::WSCALE | kind::SACK_PERMITTED | kind::SACK | kind::TIMESTAMPS,
                _,
            ) => return bad(self),
            _ => TcpOption::Unknown { kind: k, data },
        };
        self.rest = &self.rest[len..];
        Some(Ok(opt))
    }
}

/// Up to four SACK blocks (RFC 2018), `[left, right)` sequence numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SackBlocks {
    pub len: u8,
    pub blocks: [(u32, u32); 4],
}

impl SackBlocks {
    pub fn as_slice(&self) -> &[(u32, u32)] {
        &self.blocks[..(self.len as usize).min(4)]
    }
    /// Append a block; false when full.
    pub fn push(&mut self, left: u32, right: u32) -> bool {
        if self.len as usize >= 4 {
            return false;
        }
        self.blocks[self.len as usize] = (left, right);
        self.len += 1;
        true
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The options we understand, parsed or to be emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpOptionsRepr {
    pub mss: Option<u16>,
    pub window_scale: Option<u8>,
    pub sack_permitted: bool,
    pub timestamps: Option<(u32, u32)>,
    /// SACK blocks. When emitting, at most 3 fit with timestamps (4 without); extra
    /// blocks are left out.
    pub sack: SackBlocks,
}

impl TcpOptionsRepr {
    /// Parse option bytes; unknown options and SACK blocks are skipped, malformed
    /// lengths rejected.
    pub fn parse(opts: &[u8]) -> Result<Self, WireError> {
        let mut r = TcpOptionsRepr::default();
        // Data segments usually carry none (no timestamps negotiated): skip the iterator.
        if opts.is_empty() {
            return Ok(r);
        }
        for o in TcpOptionIter::new(opts) {
            match o? {
                TcpOption::Mss(m) => r.mss = Some(m),
                TcpOption::WindowScale(s) => r.window_scale = Some(s),
                TcpOption::SackPermitted => r.sack_permitted = true,
                TcpOption::Timestamps { tsval, tsecr } => r.timestamps = Some((tsval, tsecr)),
                TcpOption::Sack(b) => {
                    r.sack = SackBlocks::default();
                    for blk in b.chunks_exact(8).take(4) {
                        r.sack.push(be32(blk, 0), be32(blk, 4));
                    }
                }
                _ => {}
            }
        }
        Ok(r)
    }

    /// SACK blocks that fit next to the other options (40-byte option space).
    fn sack_fit(&self) -> usize {
        let used = self.len_without_sack();
        let room = (40usize.saturating_sub(used + 4)) / 8;
        (self.sack.len as usize).min(4).min(room)
    }

    fn len_without_sack(&self) -> usize {
        let mut n = 0;
        if self.mss.is_some() {
            n += 4;
        }
        if self.timestamps.is_some() {
            n += 12;
        } else if self.sack_permitted {
            n += 4;
        }
        if self.window_scale.is_some() {
            n += 4;
        }
        n
    }

    /// Bytes `emit` will write (always a multiple of 4, at most 40).
    pub fn len(&self) -> usize {
        let k = self.sack_fit();
        self.len_without_sack() + if k > 0 { 4 + 8 * k } else { 0 }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Emit in Linux's order: MSS, SACK-permitted+timestamps (or NOP,NOP,TS /
    /// NOP,NOP,SACKP), NOP+window scale, then NOP,NOP,SACK blocks. Returns bytes written.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let n = self.len();
        if buf.len() < n {
            return Err(WireError::BufferTooSmall);
        }
        let mut i = 0;
        if let Some(m) = self.mss {
            buf[i] = kind::MSS;
            buf[i + 1] = 4;
            put16(buf, i + 2, m);
            i += 4;
        }
        match (self.timestamps, self.sack_permitted) {
            (Some((v, e)), sp) => {
                if sp {
                    buf[i] = kind::SACK_PERMITTED;
                    buf[i + 1] = 2;
                } else {
                    buf[i] = kind::NOP;
                    buf[i + 1] = kind::NOP;
                }
                buf[i + 2] = kind::TIMESTAMPS;
                buf[i + 3] = 10;
                put32(buf, i + 4, v);
                put32(buf, i + 8, e);
                i += 12;
            }
            (None, true) => {
                buf[i] = kind::NOP;
                buf[i + 1] = kind::NOP;
                buf[i + 2] = kind::SACK_PERMITTED;
                buf[i + 3] = 2;
                i += 4;
            }
            (None, false) => {}
        }
        if let Some(s) = self.window_scale {
            buf[i] = kind::NOP;
            buf[i + 1] = kind::WSCALE;
            buf[i + 2] = 3;
            buf[i + 3] = s;
            i += 4;
        }
        let k = self.sack_fit();
        if k > 0 {
            buf[i] = kind::NOP;
            buf[i + 1] = kind::NOP;
            buf[i + 2] = kind::SACK;
            buf[i + 3] = (2 + 8 * k) as u8;
            i += 4;
            for &(l, r) in &self.sack.blocks[..k] {
                put32(buf, i, l);
                put32(buf, i + 4, r);
                i += 8;
            }
        }
        debug_assert_eq!(i, n);
        Ok(i)
    }
}

/// A TCP header description.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpRepr {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    pub options: TcpOptionsRepr,
}

impl TcpRepr {
    pub fn header_len(&self) -> usize {
        HEADER_LEN + self.options.len()
    }

    /// Write the header (checksum field zero) at the start of `buf`; returns its length.
    /// The caller fills the checksum once the payload is in place.
    pub fn emit_header(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let hl = self.header_len();
        if buf.len() < hl {
            return Err(WireError::BufferTooSmall);
        }
        put16(buf, 0, self.src_port);
        put16(buf, 2, self.dst_port);
        put32(buf, 4, self.seq);
        put32(buf, 8, self.ack);
        buf[12] = ((hl / 4) as u8) << 4;
        buf[13] = self.flags;
        put16(buf, 14, self.window);
        put16(buf, 16, 0);
        put16(buf, 18, 0);
        self.options.emit(&mut buf[HEADER_LEN..hl])?;
        Ok(hl)
    }

    /// Parse a checked segment's header (options included).
    pub fn parse<T: AsRef<[u8]>>(s: &TcpSegment<T>) -> Result<Self, WireError> {
        Ok(TcpRepr {
            src_port: s.src_port(),
            dst_port: s.dst_port(),
            seq: s.seq(),
            ack: s.ack(),
            flags: s.flags(),
            window: s.window(),
            options: TcpOptionsRepr::parse(s.options())?,
        })
    }
}
