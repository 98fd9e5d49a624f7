//! MSG_OUTBOX: typed records from the AppClient to the transport (design §3, §12.1).
//!
//! Each record is an 8-byte header `{ len: u32, kind: u16, flags: u16 }` followed by
//! `len` payload bytes, padded to 8. The mirrored mapping keeps every record one
//! contiguous slice, so the transport frames and encrypts it in place.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::bytes::ByteRing;
use crate::error::{Error, Result};
use crate::shm::{names, ShmDir};

/// What a record asks the transport to do.
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutboxKind {
    /// Send a text message (payload: UTF-8).
    Text = 1,
    /// Send a binary message.
    Binary = 2,
    /// Start the close handshake (payload: 2-byte big-endian code + UTF-8 reason).
    Close = 3,
    /// Send a PING (payload <= 125 bytes).
    Ping = 4,
}

impl OutboxKind {
    pub fn from_u16(v: u16) -> Option<Self> {
        Some(match v {
            1 => OutboxKind::Text,
            2 => OutboxKind::Binary,
            3 => OutboxKind::Close,
            4 => OutboxKind::Ping,
            _ => return None,
        })
    }
}

/// Record flag: more fragments of this message follow (sent as a non-final frame).
pub const FLAG_MORE: u16 = 1;

const HDR: usize = 8;

fn padded(len: usize) -> usize {
    (HDR + len + 7) & !7
}

/// The shared MSG_OUTBOX.
#[derive(Clone)]
pub struct MsgOutbox {
    ring: ByteRing,
    /// The one claim counter every sender of this process shares.
    senders: Arc<SenderCore>,
}

impl MsgOutbox {
    pub fn create(dir: &ShmDir, capacity: usize) -> Result<Self> {
        Self::over(ByteRing::create(dir, names::MSG_OUTBOX, capacity)?)
    }

    pub fn attach(dir: &ShmDir) -> Result<Self> {
        Self::over(ByteRing::attach(dir, names::MSG_OUTBOX)?)
    }

    fn over(ring: ByteRing) -> Result<Self> {
        let claim = AtomicU64::new(ring.write_pos() & POS_MASK);
        Ok(MsgOutbox { senders: Arc::new(SenderCore { ring: ring.clone(), claim }), ring })
    }

    /// Largest payload one record can carry.
    pub fn max_payload(&self) -> usize {
        self.ring.capacity() / 2 - HDR
    }

    /// The producer side: cloneable, for any number of sending threads of this process
    /// (they share one claim counter, which lives in this process: senders in two
    /// processes on one outbox are not supported).
    pub fn sender(&self) -> OutboxSender {
        OutboxSender { core: self.senders.clone() }
    }

    pub fn reader(&self) -> OutboxReader {
        OutboxReader { ring: self.ring.clone(), read: self.ring.read_pos(), cached_write: self.ring.write_pos() }
    }

    /// Bytes queued and not yet taken by the transport.
    pub fn pending_bytes(&self) -> usize {
        (self.ring.write_pos() - self.ring.read_pos()) as usize
    }
}

/// Which part of a message a record is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Piece {
    /// A whole message (or a control record: PING, CLOSE).
    Whole,
    /// A fragment with more to follow (`FLAG_MORE`): opens or continues a message.
    More,
    /// The last fragment of a message opened with `More` (with none open: a whole
    /// message).
    Last,
}

/// Positions stay below 2^56 bytes (64 PiB, never reached); the top byte of the claim
/// word holds the kind of an open fragmented message (0: none).
const POS_MASK: u64 = (1 << 56) - 1;

struct SenderCore {
    ring: ByteRing,
    /// Next free position | open fragmented message's kind << 56. Senders reserve space
    /// by CAS on it, so a record's place and the fragment rule are decided in one step.
    claim: AtomicU64,
}

/// The AppClient's handle on MSG_OUTBOX: many senders, one ring. Clone it freely.
///
/// Protocol: a sender claims `[pos, pos + n)` with one CAS on `claim` (checking free
/// space against the transport's `read_pos`, Acquire), writes its record there, then
/// waits until every earlier claim is published (`write_pos == pos`) and publishes its
/// own with one Release store of `write_pos`. Records therefore appear in claim order,
/// whole, and the transport (the single reader) is unchanged. Between claim and
/// publish there is only a copy, so the wait for an earlier sender is a copy's length.
#[derive(Clone)]
pub struct OutboxSender {
    core: Arc<SenderCore>,
}

impl OutboxSender {
    /// Largest payload one record can carry.
    pub fn max_payload(&self) -> usize {
        self.core.ring.capacity() / 2 - HDR
    }

    /// Queue one record. `Err(WouldBlock)` while the transport has not drained enough;
    /// `Err(Config)` if it can never fit, or if `piece` breaks the fragment rule: while a
    /// fragmented message is open, the only data records allowed are its own pieces
    /// (control records may go in between, as RFC 6455 §5.4 allows).
    pub fn push(&self, kind: OutboxKind, piece: Piece, payload: &[u8]) -> Result<()> {
        let data = matches!(kind, OutboxKind::Text | OutboxKind::Binary);
        if !data && piece != Piece::Whole {
            return Err(Error::Config("control records cannot be fragmented".into()));
        }
        let flags = if piece == Piece::More { FLAG_MORE } else { 0 };
        self.push_inner(kind, flags, payload, |open| {
            if !data {
                return Ok(open);
            }
            match (open, piece) {
                (0, Piece::Whole) => Ok(0),
                (0, Piece::More) => Ok(kind as u16),
                // A "last" piece with nothing open is a whole message.
                (0, Piece::Last) => Ok(0),
                (k, Piece::More) if k == kind as u16 => Ok(k),
                (k, Piece::Last) if k == kind as u16 => Ok(0),
                _ => Err("a message sent in fragments is still open: finish it with its last fragment first"),
            }
        })
    }

    /// Queue a record with raw `flags` and no fragment rule (tests, tools).
    pub fn push_raw(&self, kind: OutboxKind, flags: u16, payload: &[u8]) -> Result<()> {
        self.push_inner(kind, flags, payload, Ok)
    }

    fn push_inner(
        &self,
        kind: OutboxKind,
        flags: u16,
        payload: &[u8],
        rule: impl Fn(u16) -> std::result::Result<u16, &'static str>,
    ) -> Result<()> {
        let ring = &self.core.ring;
        let len = payload.len();
        if len > self.max_payload() {
            return Err(Error::Config(format!(
                "message of {len} bytes exceeds the MSG_OUTBOX record limit of {} bytes",
                self.max_payload()
            )));
        }
        let need = padded(len) as u64;
        let cap = ring.capacity() as u64;
        let mut c = self.core.claim.load(Ordering::Acquire);
        let pos = loop {
            let (pos, open) = (c & POS_MASK, (c >> 56) as u16);
            let open_after = rule(open).map_err(|m| Error::Config(m.into()))?;
            if cap - (pos - ring.read_pos()) < need {
                return Err(Error::WouldBlock);
            }
            let next = (pos + need) | (open_after as u64) << 56;
            match self.core.claim.compare_exchange_weak(c, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break pos,
                Err(now) => c = now,
            }
        };
        // SAFETY: [pos, pos + need) was claimed by this sender alone (the CAS above) and
        // lies in free space: the transport has released everything before
        // `pos + need - cap`, and no other sender writes inside another's claim.
        let rec = unsafe { ring.slice_mut(pos, need as usize) };
        rec[0..4].copy_from_slice(&(len as u32).to_le_bytes());
        rec[4..6].copy_from_slice(&(kind as u16).to_le_bytes());
        rec[6..8].copy_from_slice(&flags.to_le_bytes());
        rec[HDR..HDR + len].copy_from_slice(payload);
        // Publish in claim order: wait for the senders that claimed before us (each is
        // between its CAS and its store, a copy away).
        let mut spins = 0u32;
        while ring.write_pos() != pos {
            spins += 1;
            if spins < 256 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        ring.set_write_pos(pos + need);
        Ok(())
    }
}

/// One record as the transport sees it.
pub struct OutboxRecord<'a> {
    pub kind: Option<OutboxKind>,
    pub raw_kind: u16,
    pub flags: u16,
    pub payload: &'a [u8],
}

/// The transport's handle.
pub struct OutboxReader {
    ring: ByteRing,
    read: u64,
    cached_write: u64,
}

impl OutboxReader {
    /// The next record, if one is published. A header whose length cannot be right is
    /// reported as an error rather than trusted (the writer may be another process).
    pub fn peek(&mut self) -> Result<Option<OutboxRecord<'_>>> {
        if self.read == self.cached_write {
            self.cached_write = self.ring.write_pos();
            if self.read == self.cached_write {
                return Ok(None);
            }
        }
        let avail = self.cached_write - self.read;
        // SAFETY: [read, write) is published and unreleased; only this reader frees it.
        let hdr = unsafe { self.ring.slice(self.read, HDR) };
        let len = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) as usize;
        let raw_kind = u16::from_le_bytes([hdr[4], hdr[5]]);
        let flags = u16::from_le_bytes([hdr[6], hdr[7]]);
        if padded(len) as u64 > avail {
            return Err(Error::Shm(format!("MSG_OUTBOX record of {len} bytes overruns the {avail} bytes published")));
        }
        // SAFETY: as above; the record lies within the published range.
        let payload = unsafe { self.ring.slice(self.read + HDR as u64, len) };
        Ok(Some(OutboxRecord { kind: OutboxKind::from_u16(raw_kind), raw_kind, flags, payload }))
    }

    /// Drop the record returned by the last `peek` and free its space.
    pub fn consume(&mut self) {
        // SAFETY: called after a successful peek, so the header is published.
        let hdr = unsafe { self.ring.slice(self.read, HDR) };
        let len = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) as usize;
        self.read += padded(len) as u64;
        self.ring.set_read_pos(self.read);
    }
}
