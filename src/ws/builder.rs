//! Client frame encoder (RFC 6455 §5.2-5.3): header, masking key, masked payload,
//! written into the caller's buffer — no allocation.
//!
//! Two ways to emit a frame:
//! - [`FrameBuilder::encode`] copies the payload into `out` and masks it in the same
//!   pass;
//! - [`FrameBuilder::encode_in_place`] for a payload already sitting in the output
//!   buffer with [`MAX_HEADER_LEN`] bytes of headroom before it: the header is written
//!   right before the payload and the payload is masked where it is, so an outbox
//!   message goes to TLS without being copied.

use crate::error::{Error, Result};

use super::frame::{is_valid_close_code, OpCode, MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN};
use super::mask::{apply_mask, mask_copy};
use super::rng::WyRand;

/// Where masking keys come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MaskMode {
    /// A fresh pseudo-random key per frame (RFC 6455 §5.3). The default.
    #[default]
    Random,
    /// Key 00 00 00 00: the payload goes out unchanged and masking costs nothing.
    /// Legal framing, but it gives up the protection masking exists for (an
    /// intermediary cannot be fed attacker-chosen bytes); only for a trusted path
    /// where the caller has decided the saving matters. Never chosen implicitly.
    Zero,
}

/// Header length of a client (masked) frame carrying `payload_len` bytes.
#[inline]
pub const fn header_len(payload_len: usize) -> usize {
    if payload_len < 126 {
        6
    } else if payload_len <= 0xFFFF {
        8
    } else {
        14
    }
}

/// Total encoded size of a client frame with `payload_len` payload bytes.
#[inline]
pub const fn frame_len(payload_len: usize) -> usize {
    header_len(payload_len) + payload_len
}

/// Write a masked header into `out` (which must hold `header_len(len)` bytes).
#[inline]
fn write_header(out: &mut [u8], opcode: OpCode, fin: bool, len: usize, key: [u8; 4]) -> usize {
    out[0] = (u8::from(fin) << 7) | opcode as u8;
    let n = if len < 126 {
        out[1] = 0x80 | len as u8;
        2
    } else if len <= 0xFFFF {
        out[1] = 0x80 | 126;
        out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        out[1] = 0x80 | 127;
        out[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    };
    out[n..n + 4].copy_from_slice(&key);
    n + 4
}

#[derive(Debug, Clone)]
pub struct FrameBuilder {
    rng: WyRand,
    mode: MaskMode,
}

impl FrameBuilder {
    /// Random masking, PRNG seeded from `getrandom(2)`.
    pub fn new() -> Result<Self> {
        Ok(FrameBuilder {
            rng: WyRand::from_os()?,
            mode: MaskMode::Random,
        })
    }

    /// Reproducible keys, for tests and benchmarks.
    pub fn with_seed(seed: u64) -> Self {
        FrameBuilder {
            rng: WyRand::from_seed(seed),
            mode: MaskMode::Random,
        }
    }

    pub fn mask_mode(mut self, mode: MaskMode) -> Self {
        self.mode = mode;
        self
    }

    #[inline]
    pub fn next_key(&mut self) -> [u8; 4] {
        match self.mode {
            MaskMode::Random => self.rng.next_u32().to_ne_bytes(),
            MaskMode::Zero => [0; 4],
        }
    }

    fn check(opcode: OpCode, fin: bool, len: usize) -> Result<()> {
        if opcode.is_control() && (!fin || len > MAX_CONTROL_PAYLOAD) {
            return Err(Error::Config(format!(
                "control frame {opcode:?} must be final and at most 125 bytes (got {len}, fin={fin})"
            )));
        }
        Ok(())
    }

    /// Encode one frame (payload copied and masked) into `out`; returns the bytes
    /// written. `fin = false` and [`OpCode::Continuation`] build fragmented messages.
    /// Text payloads are not re-validated: the caller promises UTF-8 across the message.
    #[inline]
    pub fn encode(
        &mut self,
        opcode: OpCode,
        fin: bool,
        payload: &[u8],
        out: &mut [u8],
    ) -> Result<usize> {
        Self::check(opcode, fin, payload.len())?;
        let total = frame_len(payload.len());
        if out.len() < total {
            return Err(Error::Overrun(format!(
                "frame needs {total} bytes, buffer has {}",
                out.len()
            )));
        }
        let key = self.next_key();
        let h = write_header(out, opcode, fin, payload.len(), key);
        mask_copy(payload, &mut out[h..], key, 0);
        Ok(total)
    }

    /// Frame the payload `buf[payload_start..]` where it lies: write the header into
    /// the headroom just before it and mask in place. Returns the frame's start; the
    /// frame is `buf[start..]`. Needs `payload_start >= header_len(payload len)`
    /// (reserving [`MAX_HEADER_LEN`] always suffices).
    pub fn encode_in_place(
        &mut self,
        opcode: OpCode,
        fin: bool,
        buf: &mut [u8],
        payload_start: usize,
    ) -> Result<usize> {
        let Some(len) = buf.len().checked_sub(payload_start) else {
            return Err(Error::Config(format!(
                "payload start {payload_start} beyond buffer of {}",
                buf.len()
            )));
        };
        Self::check(opcode, fin, len)?;
        let h = header_len(len);
        let Some(start) = payload_start.checked_sub(h) else {
            return Err(Error::Config(format!(
                "{h} bytes of headroom needed before the payload, have {payload_start}"
            )));
        };
        let key = self.next_key();
        write_header(&mut buf[start..payload_start], opcode, fin, len, key);
        apply_mask(&mut buf[payload_start..], key, 0);
        Ok(start)
    }

    /// A close frame: `None` for an empty payload, else code + reason (≤123 bytes).
    pub fn close(&mut self, code: Option<u16>, reason: &str, out: &mut [u8]) -> Result<usize> {
        let mut p = [0u8; MAX_CONTROL_PAYLOAD];
        let n = match code {
            None if reason.is_empty() => 0,
            None => return Err(Error::Config("a close reason needs a close code".into())),
            Some(c) if !is_valid_close_code(c) => {
                return Err(Error::Config(format!("close code {c} may not be sent")))
            }
            Some(c) => {
                if reason.len() > MAX_CONTROL_PAYLOAD - 2 {
                    return Err(Error::Config(format!(
                        "close reason is {} bytes, at most 123 allowed",
                        reason.len()
                    )));
                }
                p[..2].copy_from_slice(&c.to_be_bytes());
                p[2..2 + reason.len()].copy_from_slice(reason.as_bytes());
                2 + reason.len()
            }
        };
        self.encode(OpCode::Close, true, &p[..n], out)
    }
}

const _: () = assert!(header_len(usize::MAX) == MAX_HEADER_LEN);
