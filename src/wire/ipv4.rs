//! IPv4 headers (RFC 791). Options are accepted (skipped via IHL) but never emitted.

use super::checksum;
use super::{be16, put16, WireError};
use std::net::Ipv4Addr;

pub const IPPROTO_TCP: u8 = 6;
pub const HEADER_LEN: usize = 20;

/// A checked view of an IPv4 packet. The constructor validates version, IHL, and total
/// length against the buffer; `payload()` ends at the total length, so Ethernet padding
/// after a short packet is never mistaken for data.
#[derive(Debug, Clone, Copy)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let b = buf.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if b[0] >> 4 != 4 {
            return Err(WireError::BadVersion);
        }
        let hl = ((b[0] & 0x0f) as usize) * 4;
        if hl < HEADER_LEN {
            return Err(WireError::BadHeaderLen);
        }
        if hl > b.len() {
            return Err(WireError::Truncated);
        }
        let tl = be16(b, 2) as usize;
        if tl < hl {
            return Err(WireError::BadTotalLen);
        }
        if tl > b.len() {
            return Err(WireError::Truncated);
        }
        Ok(Ipv4Packet { buf })
    }
    pub fn new_unchecked(buf: T) -> Self {
        Ipv4Packet { buf }
    }
    pub fn into_inner(self) -> T {
        self.buf
    }
    pub fn version(&self) -> u8 {
        self.buf.as_ref()[0] >> 4
    }
    pub fn header_len(&self) -> usize {
        ((self.buf.as_ref()[0] & 0x0f) as usize) * 4
    }
    pub fn dscp_ecn(&self) -> u8 {
        self.buf.as_ref()[1]
    }
    pub fn total_len(&self) -> usize {
        be16(self.buf.as_ref(), 2) as usize
    }
    pub fn ident(&self) -> u16 {
        be16(self.buf.as_ref(), 4)
    }
    pub fn dont_frag(&self) -> bool {
        self.buf.as_ref()[6] & 0x40 != 0
    }
    pub fn more_frags(&self) -> bool {
        self.buf.as_ref()[6] & 0x20 != 0
    }
    /// Fragment offset in bytes.
    pub fn frag_offset(&self) -> usize {
        ((be16(self.buf.as_ref(), 6) & 0x1fff) as usize) * 8
    }
    /// True for any fragment (MF set or non-zero offset). We never reassemble.
    pub fn is_fragment(&self) -> bool {
        self.more_frags() || self.frag_offset() != 0
    }
    pub fn ttl(&self) -> u8 {
        self.buf.as_ref()[8]
    }
    pub fn protocol(&self) -> u8 {
        self.buf.as_ref()[9]
    }
    pub fn checksum(&self) -> u16 {
        be16(self.buf.as_ref(), 10)
    }
    pub fn src(&self) -> Ipv4Addr {
        let b = self.buf.as_ref();
        Ipv4Addr::new(b[12], b[13], b[14], b[15])
    }
    pub fn dst(&self) -> Ipv4Addr {
        let b = self.buf.as_ref();
        Ipv4Addr::new(b[16], b[17], b[18], b[19])
    }
    pub fn header(&self) -> &[u8] {
        &self.buf.as_ref()[..self.header_len()]
    }
    /// The payload, from the end of the header to the total length.
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[self.header_len()..self.total_len()]
    }
    pub fn verify_checksum(&self) -> bool {
        checksum::sum(self.header()) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    pub fn set_total_len(&mut self, v: u16) {
        put16(self.buf.as_mut(), 2, v);
    }
    pub fn set_ident(&mut self, v: u16) {
        put16(self.buf.as_mut(), 4, v);
    }
    pub fn set_ttl(&mut self, v: u8) {
        self.buf.as_mut()[8] = v;
    }
    pub fn set_src(&mut self, a: Ipv4Addr) {
        self.buf.as_mut()[12..16].copy_from_slice(&a.octets());
    }
    pub fn set_dst(&mut self, a: Ipv4Addr) {
        self.buf.as_mut()[16..20].copy_from_slice(&a.octets());
    }
    /// Recompute the header checksum.
    pub fn fill_checksum(&mut self) {
        let hl = self.header_len();
        let b = self.buf.as_mut();
        put16(b, 10, 0);
        let c = checksum::checksum(&b[..hl]);
        put16(b, 10, c);
    }
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (hl, tl) = (self.header_len(), self.total_len());
        &mut self.buf.as_mut()[hl..tl]
    }
}

/// An IPv4 header description (20 bytes, no options, DF set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Repr {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    pub payload_len: usize,
    pub ttl: u8,
    pub ident: u16,
}

impl Ipv4Repr {
    /// Write a 20-byte header with checksum at the start of `buf`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        if buf.len() < HEADER_LEN {
            return Err(WireError::BufferTooSmall);
        }
        let total = HEADER_LEN + self.payload_len;
        if total > u16::MAX as usize {
            return Err(WireError::BadTotalLen);
        }
        buf[0] = 0x45;
        buf[1] = 0;
        put16(buf, 2, total as u16);
        put16(buf, 4, self.ident);
        put16(buf, 6, 0x4000); // DF, offset 0
        buf[8] = self.ttl;
        buf[9] = self.protocol;
        put16(buf, 10, 0);
        buf[12..16].copy_from_slice(&self.src.octets());
        buf[16..20].copy_from_slice(&self.dst.octets());
        let c = checksum::checksum(&buf[..HEADER_LEN]);
        put16(buf, 10, c);
        Ok(HEADER_LEN)
    }
}
