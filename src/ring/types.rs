//! The fixed-size elements that travel on the element rings (design document §4).
//! All `#[repr(C)]` with asserted sizes: the header-only C consumer and other
//! processes read them straight out of shared memory.

use static_assertions::const_assert_eq;

/// Marker for types that may live in a shared-memory ring: plain old data, no
/// pointers, valid for any bit pattern a well-behaved producer writes.
///
/// # Safety
/// Implementors must be `#[repr(C)]`, contain no pointers or references, and have no
/// invalid bit patterns among values a producer can store.
pub unsafe trait RingElement: Copy + 'static {}

/// Which UMEM pool a frame belongs to (design §2).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameType {
    Rx = 0,
    Ack = 1,
    Pong = 2,
    Msg = 3,
}

/// A UMEM frame handed between the XDP stage and the transport (design §4.1).
#[repr(C, align(32))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UmemFrameDescriptor {
    pub umem_addr: u64,
    pub frame_len: u16,
    pub payload_offset: u16,
    pub payload_len: u16,
    pub reserved1: u16,
    pub tcp_seq: u32,
    pub tcp_ack: u32,
    /// bits 0..48 hardware/receive timestamp (ns, truncated), 48..56 TCP flags,
    /// 56..64 [`FrameType`] — the seed's bit-fields, packed explicitly so C and Rust
    /// agree without relying on a compiler's bit-field layout.
    pub meta: u64,
}
const_assert_eq!(std::mem::size_of::<UmemFrameDescriptor>(), 32);

const TS_MASK: u64 = (1 << 48) - 1;

impl UmemFrameDescriptor {
    pub fn timestamp_ns(&self) -> u64 {
        self.meta & TS_MASK
    }
    pub fn tcp_flags(&self) -> u8 {
        (self.meta >> 48) as u8
    }
    pub fn frame_type(&self) -> u8 {
        (self.meta >> 56) as u8
    }
    pub fn set_meta(&mut self, timestamp_ns: u64, tcp_flags: u8, frame_type: FrameType) {
        self.meta = (timestamp_ns & TS_MASK) | (tcp_flags as u64) << 48 | (frame_type as u64) << 56;
    }
}

// SAFETY: repr(C), integers only.
unsafe impl RingElement for UmemFrameDescriptor {}

/// One parsed WebSocket frame (or reassembled message) for the AppClient (design §4.2).
///
/// 32 bytes: the seed's 16 plus the message's arrival and decrypt stamps (issue 14).
/// The parse stamp stays in `meta`'s 48 bits; it is never earlier than the arrival and
/// never 2^48 ns (78 hours) later, so [`WsFrameInfo::parsed_ns`] rebuilds it in full.
#[repr(C, align(16))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WsFrameInfo {
    /// Low 32 bits of the payload's MSG_INBOX stream position; the payload is
    /// contiguous (the inbox is mirror-mapped) at `data + (offset & (capacity - 1))`.
    pub msg_inbox_offset: u32,
    pub payload_len: u32,
    /// bits 0..48 parse timestamp (CLOCK_MONOTONIC ns, low bits), 48..56 opcode, bit 56
    /// is_final, bits 57..64 flags ([`WsFrameInfo::FLAG_MESSAGE`] ...).
    pub meta: u64,
    /// CLOCK_MONOTONIC ns: the packet completing the frame arrived (0: unknown).
    pub arrival_ns: u64,
    /// CLOCK_MONOTONIC ns: its plaintext was committed to MSG_INBOX (0: unknown).
    pub decrypted_ns: u64,
}
const_assert_eq!(std::mem::size_of::<WsFrameInfo>(), 32);

impl WsFrameInfo {
    /// The entry is a whole reassembled message rather than one frame.
    pub const FLAG_MESSAGE: u8 = 1;
    /// The entry reports that MSG_INBOX was overrun before this point (data lost).
    pub const FLAG_OVERRUN: u8 = 2;
    /// The first data entry of a new connection after a reconnect (the previous
    /// connection's unfinished message, if any, was dropped).
    pub const FLAG_RECONNECT: u8 = 4;
    /// Opcode of a release-only entry that ends a connection generation: the readers
    /// pass over it (like control-frame entries), releasing the old connection's
    /// unparsed tail up to the new connection's first byte.
    pub const OP_GENERATION: u8 = 0xF;
    /// Opcode of an event record in a published feed's stream (`Feed::start_published`):
    /// `plc_next` passes over it like a control frame, `plc_next_feed` returns it.
    pub const OP_FEED_EVENT: u8 = 0xE;

    pub fn new(pos: u64, len: u32, stamp: u64, opcode: u8, is_final: bool, flags: u8) -> Self {
        WsFrameInfo {
            msg_inbox_offset: pos as u32,
            payload_len: len,
            meta: (stamp & TS_MASK) | (opcode as u64) << 48 | (is_final as u64) << 56 | ((flags as u64) & 0x7f) << 57,
            arrival_ns: 0,
            decrypted_ns: 0,
        }
    }
    /// With the arrival and decrypt stamps of the bytes that completed the frame.
    pub fn with_stamps(mut self, arrival_ns: u64, decrypted_ns: u64) -> Self {
        self.arrival_ns = arrival_ns;
        self.decrypted_ns = decrypted_ns;
        self
    }
    /// The full parse stamp: `meta`'s low 48 bits placed at or after the arrival (or
    /// after the decrypt stamp when the arrival is unknown). 0 when no stamp was set.
    pub fn parsed_ns(&self) -> u64 {
        let low = self.parse_stamp();
        let base = if self.arrival_ns != 0 { self.arrival_ns } else { self.decrypted_ns };
        if low == 0 && base == 0 {
            return 0;
        }
        let mut t = (base & !TS_MASK) | low;
        if t < base {
            t += 1 << 48;
        }
        t
    }
    pub fn parse_stamp(&self) -> u64 {
        self.meta & TS_MASK
    }
    pub fn opcode(&self) -> u8 {
        (self.meta >> 48) as u8
    }
    pub fn is_final(&self) -> bool {
        (self.meta >> 56) & 1 == 1
    }
    pub fn flags(&self) -> u8 {
        (self.meta >> 57) as u8
    }
}

// SAFETY: repr(C), integers only.
unsafe impl RingElement for WsFrameInfo {}

/// A control frame payload from the WebSocket stage to the transport (design §4.3).
///
/// The seed's PongFrame carries only a PONG payload; ours also carries the opcode, so the
/// WebSocket stage can hand the transport the CLOSE reply of §12.1 on this ring. (The
/// seed routed that through MSG_OUTBOX, which would give MSG_OUTBOX two producers.)
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PongFrame {
    pub payload: [u8; 125],
    pub payload_len: u8,
    /// 0x0A PONG (default), 0x08 CLOSE.
    pub opcode: u8,
    /// Low byte of the connection generation the entry belongs to (the transport drops
    /// entries of an older connection after a reconnect).
    pub generation: u8,
}
const_assert_eq!(std::mem::size_of::<PongFrame>(), 128);

impl PongFrame {
    /// Build from a payload of at most 125 bytes (RFC 6455 §5.5); longer is truncated
    /// by the caller's validation, never here silently: returns None.
    pub fn new(opcode: u8, payload: &[u8]) -> Option<PongFrame> {
        if payload.len() > 125 {
            return None;
        }
        let mut p = PongFrame { payload: [0; 125], payload_len: payload.len() as u8, opcode, generation: 0 };
        p.payload[..payload.len()].copy_from_slice(payload);
        Some(p)
    }
    pub fn bytes(&self) -> &[u8] {
        &self.payload[..(self.payload_len as usize).min(125)]
    }
}

impl Default for PongFrame {
    fn default() -> Self {
        PongFrame { payload: [0; 125], payload_len: 0, opcode: 0x0A, generation: 0 }
    }
}

// SAFETY: repr(C), bytes only.
unsafe impl RingElement for PongFrame {}

// Plain integers are handy for tests and counters.
// SAFETY: integers have no invalid bit patterns.
unsafe impl RingElement for u64 {}
// SAFETY: as above.
unsafe impl RingElement for u32 {}
