//! Whole Ethernet + IPv4 + TCP frames: build into a UMEM frame, parse from one.

use super::ethernet::{self, EtherType, EthernetFrame, EthernetRepr, MacAddr};
use super::ipv4::{self, Ipv4Packet, Ipv4Repr, IPPROTO_TCP};
use super::tcp::{TcpRepr, TcpSegment};
use super::{checksum, put16, WireError};
use std::net::Ipv4Addr;

/// Everything needed to build one TCP/IPv4/Ethernet frame's headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpFrameRepr {
    pub src_mac: MacAddr,
    pub dst_mac: MacAddr,
    pub src_ip: Ipv4Addr,
    pub dst_ip: Ipv4Addr,
    pub ip_ident: u16,
    pub ttl: u8,
    pub tcp: TcpRepr,
}

/// Bytes of Ethernet + IPv4 + TCP headers for these options: the payload offset.
pub fn tcp_frame_header_len(tcp: &TcpRepr) -> usize {
    ethernet::HEADER_LEN + ipv4::HEADER_LEN + tcp.header_len()
}

/// Build a frame whose payload is already in place at
/// `buf[tcp_frame_header_len(..)..][..payload_len]` (e.g. TLS wrote its ciphertext
/// straight into the UMEM frame). Writes all headers and both checksums; returns the
/// frame length. No allocation.
pub fn emit_tcp_frame_in_place(
    buf: &mut [u8],
    r: &TcpFrameRepr,
    payload_len: usize,
) -> Result<usize, WireError> {
    let hl = tcp_frame_header_len(&r.tcp);
    let total = hl + payload_len;
    if buf.len() < total {
        return Err(WireError::BufferTooSmall);
    }
    let tcp_len = r.tcp.header_len() + payload_len;
    EthernetRepr {
        src: r.src_mac,
        dst: r.dst_mac,
        ethertype: EtherType::IPV4,
    }
    .emit(buf)?;
    Ipv4Repr {
        src: r.src_ip,
        dst: r.dst_ip,
        protocol: IPPROTO_TCP,
        payload_len: tcp_len,
        ttl: r.ttl,
        ident: r.ip_ident,
    }
    .emit(&mut buf[ethernet::HEADER_LEN..])?;
    let t0 = ethernet::HEADER_LEN + ipv4::HEADER_LEN;
    let seg = &mut buf[t0..total];
    r.tcp.emit_header(seg)?;
    let c = checksum::tcp_checksum(r.src_ip, r.dst_ip, seg);
    put16(seg, 16, c);
    Ok(total)
}

/// Build a frame, copying `payload` after the headers. Returns the frame length.
pub fn emit_tcp_frame(
    buf: &mut [u8],
    r: &TcpFrameRepr,
    payload: &[u8],
) -> Result<usize, WireError> {
    let hl = tcp_frame_header_len(&r.tcp);
    if buf.len() < hl + payload.len() {
        return Err(WireError::BufferTooSmall);
    }
    buf[hl..hl + payload.len()].copy_from_slice(payload);
    emit_tcp_frame_in_place(buf, r, payload.len())
}

/// A parsed, validated TCP/IPv4 frame: views borrow the frame (zero copy).
#[derive(Debug, Clone, Copy)]
pub struct TcpFrame<'a> {
    pub src_mac: MacAddr,
    pub dst_mac: MacAddr,
    pub ip: Ipv4Packet<&'a [u8]>,
    pub tcp: TcpSegment<&'a [u8]>,
}

/// Parse an Ethernet frame as IPv4/TCP. Rejects other EtherTypes, fragments, non-TCP,
/// bad lengths; with `verify_checksums` also bad IPv4 header and TCP checksums.
pub fn parse_tcp_frame(frame: &[u8], verify_checksums: bool) -> Result<TcpFrame<'_>, WireError> {
    let eth = EthernetFrame::new_checked(frame)?;
    if eth.ethertype() != EtherType::IPV4 {
        return Err(WireError::WrongEtherType);
    }
    let ip = Ipv4Packet::new_checked(&frame[ethernet::HEADER_LEN..])?;
    if ip.is_fragment() {
        return Err(WireError::Fragment);
    }
    if ip.protocol() != IPPROTO_TCP {
        return Err(WireError::WrongProtocol);
    }
    let ip_bytes: &[u8] = ip.into_inner();
    let ip = Ipv4Packet::new_unchecked(ip_bytes);
    let seg_bytes = &ip_bytes[ip.header_len()..ip.total_len()];
    let tcp = TcpSegment::new_checked(seg_bytes)?;
    if verify_checksums && (!ip.verify_checksum() || !tcp.verify_checksum(ip.src(), ip.dst())) {
        return Err(WireError::BadChecksum);
    }
    Ok(TcpFrame {
        src_mac: eth.src(),
        dst_mac: eth.dst(),
        ip,
        tcp,
    })
}
