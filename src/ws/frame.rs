//! Frame-level vocabulary shared by the parser, the builder and the connection:
//! opcodes, close codes, and the events the parser reports (RFC 6455 §5.2, §7.4).

/// Largest control-frame payload (RFC 6455 §5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;
/// Largest frame header: 2 + 8 (64-bit length) + 4 (mask key).
pub const MAX_HEADER_LEN: usize = 14;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum OpCode {
    Continuation = 0x0,
    Text = 0x1,
    Binary = 0x2,
    Close = 0x8,
    Ping = 0x9,
    Pong = 0xA,
}

impl OpCode {
    /// `None` for the reserved opcodes 3-7 and B-F.
    #[inline]
    pub fn from_u8(v: u8) -> Option<OpCode> {
        Some(match v {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            _ => return None,
        })
    }

    #[inline]
    pub fn is_control(self) -> bool {
        (self as u8) & 0x8 != 0
    }
}

/// The type of a data message, which its first frame fixes for all its fragments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MessageKind {
    Text = 0x1,
    Binary = 0x2,
}

impl MessageKind {
    pub fn opcode(self) -> OpCode {
        match self {
            MessageKind::Text => OpCode::Text,
            MessageKind::Binary => OpCode::Binary,
        }
    }
}

/// Close status codes we use (RFC 6455 §7.4.1).
pub mod close_code {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const UNSUPPORTED_DATA: u16 = 1003;
    /// Never on the wire: "the close frame carried no code".
    pub const NO_STATUS: u16 = 1005;
    /// Never on the wire: "the connection dropped without a close frame".
    pub const ABNORMAL: u16 = 1006;
    pub const INVALID_PAYLOAD: u16 = 1007;
    pub const POLICY_VIOLATION: u16 = 1008;
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    pub const INTERNAL_ERROR: u16 = 1011;
}

/// May this code appear in a close frame on the wire? 1000-1003 and 1007-1014 are
/// defined or IANA-registered (1012-1014: restart, try again later, bad gateway);
/// 1004-1006 and 1015 are reserved and must never be sent; 1016-2999 are reserved
/// for future RFCs; 3000-3999 are registered libraries, 4000-4999 private use.
#[inline]
pub fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// A control frame's payload, copied out of the input (at most 125 bytes).
///
/// Control payloads are tiny and must outlive the input position they came from: a
/// PONG is sent after the caller has moved on, and message reassembly may overwrite
/// the bytes of a PING that arrived between two fragments. So they are copied, while
/// data payloads are only ever referenced by offset.
#[derive(Clone, Copy)]
pub struct ControlPayload {
    len: u8,
    data: [u8; MAX_CONTROL_PAYLOAD],
}

impl ControlPayload {
    pub const EMPTY: ControlPayload = ControlPayload {
        len: 0,
        data: [0; MAX_CONTROL_PAYLOAD],
    };

    /// `None` if `b` is longer than 125 bytes.
    pub fn new(b: &[u8]) -> Option<Self> {
        if b.len() > MAX_CONTROL_PAYLOAD {
            return None;
        }
        let mut data = [0u8; MAX_CONTROL_PAYLOAD];
        data[..b.len()].copy_from_slice(b);
        Some(ControlPayload {
            len: b.len() as u8,
            data,
        })
    }

    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        &self.data[..self.len as usize]
    }

    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl PartialEq for ControlPayload {
    fn eq(&self, o: &Self) -> bool {
        self.as_bytes() == o.as_bytes()
    }
}
impl Eq for ControlPayload {}

impl std::fmt::Debug for ControlPayload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

/// A received close frame. `code` is [`close_code::NO_STATUS`] (1005) when the frame
/// had an empty payload; `reason` is validated UTF-8 (maybe empty).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseFrame {
    pub code: u16,
    pub reason: ControlPayload,
}

impl CloseFrame {
    pub fn reason_str(&self) -> &str {
        // Validated by the parser before the frame is reported.
        std::str::from_utf8(self.reason.as_bytes()).unwrap_or("")
    }
}

/// Data payload located in the caller's buffer: `buf[offset..offset + len]`, where
/// `buf` is the slice given to the call that returned it.
///
/// In frame delivery it is one frame (or, with `FramePieces`, one piece of a frame);
/// in message delivery it is a whole, contiguous message (`first` and `last` true).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Data {
    pub kind: MessageKind,
    pub offset: usize,
    pub len: usize,
    /// These are the first payload bytes of a message.
    pub first: bool,
    /// These are the last payload bytes of a message (FIN frame, end of its payload).
    pub last: bool,
    /// These are the last payload bytes of their frame (always true except for
    /// `FramePieces` delivery).
    pub frame_end: bool,
    /// The message is compressed (RSV1 on its first frame, permessage-deflate): the
    /// payload is deflate data, not yet UTF-8 checked; see [`crate::ws::deflate`].
    pub compressed: bool,
}

impl Data {
    #[inline]
    pub fn range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.len
    }
}

/// What the parser found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Data(Data),
    /// Answer with a PONG carrying the same payload (RFC 6455 §5.5.2).
    Ping(ControlPayload),
    Pong(ControlPayload),
    /// The peer started (or answered) the closing handshake; the parser accepts no
    /// more frames after this.
    Close(CloseFrame),
}
