//! Zero-copy packet views and emitters: Ethernet, ARP, IPv4, TCP (+ options), and the
//! Internet checksum.
//!
//! Conventions (smoltcp-style):
//! - A view `Xxx<T: AsRef<[u8]>>` is built with `new_checked`, which validates every
//!   length once; after that all accessors are infallible and never panic.
//! - With `T: AsMut<[u8]>` the same view has setters, used to patch a header in place.
//! - A `XxxRepr` is a plain description of a header; `emit` writes it into a caller's
//!   buffer (a UMEM frame) without allocating.
//! - [`frame`] builds and parses a whole Ethernet + IPv4 + TCP frame in one call.

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod frame;
pub mod ipv4;
pub mod tcp;

pub use arp::{ArpOp, ArpPacket, ArpRepr};
pub use ethernet::{EtherType, EthernetFrame, EthernetRepr, MacAddr};
pub use frame::{
    emit_tcp_frame, emit_tcp_frame_in_place, parse_tcp_frame, tcp_frame_header_len, TcpFrame,
    TcpFrameRepr,
};
pub use ipv4::{Ipv4Packet, Ipv4Repr, IPPROTO_TCP};
pub use std::net::Ipv4Addr;
pub use tcp::{flags, SackBlocks, TcpOption, TcpOptionIter, TcpOptionsRepr, TcpRepr, TcpSegment};

use std::fmt;

/// Why a packet was rejected. `Copy` and allocation-free so the RX hot path can count
/// and drop without touching the heap; converts into [`crate::Error::Net`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// The buffer is shorter than the header (or than a length field claims).
    Truncated,
    /// IP version is not 4.
    BadVersion,
    /// IHL < 5, TCP data offset < 5, or a header longer than the packet.
    BadHeaderLen,
    /// IPv4 total length smaller than the header or larger than the buffer.
    BadTotalLen,
    /// An IPv4 fragment (MF set or offset != 0): we never reassemble.
    Fragment,
    /// A TCP option with a malformed length.
    BadOption,
    /// EtherType is not what the parser expected.
    WrongEtherType,
    /// IP protocol is not TCP.
    WrongProtocol,
    /// Header or segment checksum does not verify.
    BadChecksum,
    /// ARP for something other than Ethernet/IPv4.
    Unsupported,
    /// The output buffer is too small for what was asked to be emitted.
    BufferTooSmall,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            WireError::Truncated => "packet truncated",
            WireError::BadVersion => "IP version is not 4",
            WireError::BadHeaderLen => "bad header length",
            WireError::BadTotalLen => "bad IPv4 total length",
            WireError::Fragment => "IPv4 fragment (not supported)",
            WireError::BadOption => "malformed TCP option",
            WireError::WrongEtherType => "unexpected EtherType",
            WireError::WrongProtocol => "IP protocol is not TCP",
            WireError::BadChecksum => "bad checksum",
            WireError::Unsupported => "unsupported hardware/protocol type",
            WireError::BufferTooSmall => "output buffer too small",
        };
        f.write_str(s)
    }
}

impl std::error::Error for WireError {}

impl From<WireError> for crate::Error {
    fn from(e: WireError) -> Self {
        crate::Error::Net(e.to_string())
    }
}

#[inline(always)]
pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}
#[inline(always)]
pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
#[inline(always)]
pub(crate) fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}
#[inline(always)]
pub(crate) fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}
