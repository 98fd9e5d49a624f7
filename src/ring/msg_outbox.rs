//! MSG_OUTBOX: typed records from the AppClient to the transport (design §3, §12.1).
//!
//! Each record is an 8-byte header `{ len: u32, kind: u16, flags: u16 }` followed by
//! `len` payload bytes, padded to 8. The mirrored mapping keeps every record one
//! contiguous slice, so the transport frames and encrypts it in place.

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
}

impl MsgOutbox {
    pub fn create(dir: &ShmDir, capacity: usize) -> Result<Self> {
        Ok(MsgOutbox { ring: ByteRing::create(dir, names::MSG_OUTBOX, capacity)? })
    }

    pub fn attach(dir: &ShmDir) -> Result<Self> {
        Ok(MsgOutbox { ring: ByteRing::attach(dir, names::MSG_OUTBOX)? })
    }

    /// Largest payload one record can carry.
    pub fn max_payload(&self) -> usize {
        self.ring.capacity() / 2 - HDR
    }

    pub fn writer(&self) -> OutboxWriter {
        OutboxWriter { ring: self.ring.clone(), write: self.ring.write_pos(), cached_read: self.ring.read_pos() }
    }

    pub fn reader(&self) -> OutboxReader {
        OutboxReader { ring: self.ring.clone(), read: self.ring.read_pos(), cached_write: self.ring.write_pos() }
    }

    /// Bytes queued and not yet taken by the transport.
    pub fn pending_bytes(&self) -> usize {
        (self.ring.write_pos() - self.ring.read_pos()) as usize
    }
}

/// The AppClient's handle.
pub struct OutboxWriter {
    ring: ByteRing,
    write: u64,
    cached_read: u64,
}

impl OutboxWriter {
    /// Reserve a record of `len` payload bytes; fill the returned slice, then
    /// [`OutboxWriter::commit`]. `Err(WouldBlock)` while the transport has not drained
    /// enough; `Err(Config)` if it can never fit.
    pub fn reserve(&mut self, len: usize) -> Result<&mut [u8]> {
        let cap = self.ring.capacity() as u64;
        if len > self.ring.capacity() / 2 - HDR {
            return Err(Error::Config(format!(
                "message of {len} bytes exceeds the MSG_OUTBOX record limit of {} bytes",
                self.ring.capacity() / 2 - HDR
            )));
        }
        let need = padded(len) as u64;
        if cap - (self.write - self.cached_read) < need {
            self.cached_read = self.ring.read_pos();
            if cap - (self.write - self.cached_read) < need {
                return Err(Error::WouldBlock);
            }
        }
        // SAFETY: [write, write + need) is free space owned by this single writer.
        let rec = unsafe { self.ring.slice_mut(self.write, need as usize) };
        Ok(&mut rec[HDR..HDR + len])
    }

    /// Publish the record reserved last with its final length (<= reserved).
    pub fn commit(&mut self, kind: OutboxKind, flags: u16, len: usize) {
        // SAFETY: the header bytes belong to the reservation made by `reserve`.
        let hdr = unsafe { self.ring.slice_mut(self.write, HDR) };
        hdr[0..4].copy_from_slice(&(len as u32).to_le_bytes());
        hdr[4..6].copy_from_slice(&(kind as u16).to_le_bytes());
        hdr[6..8].copy_from_slice(&flags.to_le_bytes());
        self.write += padded(len) as u64;
        self.ring.set_write_pos(self.write);
    }

    /// Copy `payload` in as one record.
    pub fn push(&mut self, kind: OutboxKind, flags: u16, payload: &[u8]) -> Result<()> {
        let buf = self.reserve(payload.len())?;
        buf.copy_from_slice(payload);
        self.commit(kind, flags, payload.len());
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
