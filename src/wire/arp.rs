//! ARP for Ethernet/IPv4 (RFC 826).

use super::ethernet::{self, EtherType, EthernetRepr, MacAddr};
use super::{be16, put16, WireError};
use std::net::Ipv4Addr;

pub const PACKET_LEN: usize = 28;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArpOp {
    Request,
    Reply,
    Other(u16),
}
impl ArpOp {
    fn from_u16(v: u16) -> ArpOp {
        match v {
            1 => ArpOp::Request,
            2 => ArpOp::Reply,
            x => ArpOp::Other(x),
        }
    }
    fn to_u16(self) -> u16 {
        match self {
            ArpOp::Request => 1,
            ArpOp::Reply => 2,
            ArpOp::Other(x) => x,
        }
    }
}

/// A checked view of an Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, Copy)]
pub struct ArpPacket<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// Validates length (28 bytes) and that it is htype 1 / ptype IPv4 / hlen 6 / plen 4.
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let b = buf.as_ref();
        if b.len() < PACKET_LEN {
            return Err(WireError::Truncated);
        }
        if be16(b, 0) != 1 || be16(b, 2) != 0x0800 || b[4] != 6 || b[5] != 4 {
            return Err(WireError::Unsupported);
        }
        Ok(ArpPacket { buf })
    }
    pub fn operation(&self) -> ArpOp {
        ArpOp::from_u16(be16(self.buf.as_ref(), 6))
    }
    pub fn sender_mac(&self) -> MacAddr {
        MacAddr::from_slice(&self.buf.as_ref()[8..14])
    }
    pub fn sender_ip(&self) -> Ipv4Addr {
        let b = self.buf.as_ref();
        Ipv4Addr::new(b[14], b[15], b[16], b[17])
    }
    pub fn target_mac(&self) -> MacAddr {
        MacAddr::from_slice(&self.buf.as_ref()[18..24])
    }
    pub fn target_ip(&self) -> Ipv4Addr {
        let b = self.buf.as_ref();
        Ipv4Addr::new(b[24], b[25], b[26], b[27])
    }
}

/// An ARP packet description.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpRepr {
    pub op: ArpOp,
    pub sender_mac: MacAddr,
    pub sender_ip: Ipv4Addr,
    pub target_mac: MacAddr,
    pub target_ip: Ipv4Addr,
}

impl ArpRepr {
    pub fn parse<T: AsRef<[u8]>>(p: &ArpPacket<T>) -> Self {
        ArpRepr {
            op: p.operation(),
            sender_mac: p.sender_mac(),
            sender_ip: p.sender_ip(),
            target_mac: p.target_mac(),
            target_ip: p.target_ip(),
        }
    }

    /// A who-has request for `target_ip`.
    pub fn request(our_mac: MacAddr, our_ip: Ipv4Addr, target_ip: Ipv4Addr) -> Self {
        ArpRepr {
            op: ArpOp::Request,
            sender_mac: our_mac,
            sender_ip: our_ip,
            target_mac: MacAddr::ZERO,
            target_ip,
        }
    }

    /// Write the 28-byte ARP body.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        if buf.len() < PACKET_LEN {
            return Err(WireError::BufferTooSmall);
        }
        put16(buf, 0, 1);
        put16(buf, 2, 0x0800);
        buf[4] = 6;
        buf[5] = 4;
        put16(buf, 6, self.op.to_u16());
        buf[8..14].copy_from_slice(&self.sender_mac.0);
        buf[14..18].copy_from_slice(&self.sender_ip.octets());
        buf[18..24].copy_from_slice(&self.target_mac.0);
        buf[24..28].copy_from_slice(&self.target_ip.octets());
        Ok(PACKET_LEN)
    }

    /// Write a whole Ethernet frame carrying this ARP packet (broadcast for requests),
    /// zero-padded to the 60-byte Ethernet minimum. Returns the frame length.
    pub fn emit_frame(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        const MIN: usize = 60;
        if buf.len() < MIN {
            return Err(WireError::BufferTooSmall);
        }
        let dst = match self.op {
            ArpOp::Request => MacAddr::BROADCAST,
            _ => self.target_mac,
        };
        let h = EthernetRepr {
            src: self.sender_mac,
            dst,
            ethertype: EtherType::ARP,
        }
        .emit(buf)?;
        let n = self.emit(&mut buf[h..])?;
        buf[h + n..MIN].fill(0);
        debug_assert_eq!(h, ethernet::HEADER_LEN);
        Ok(MIN)
    }
}
