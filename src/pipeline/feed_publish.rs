//! A merged feed published for the header-only consumer (`include/pipeline_consumer.h`):
//! [`Feed::start_published`] runs the merge on the feed's own thread (as
//! [`Feed::start_with_callback`]) and copies every item of the merged stream into a
//! MSG_INBOX and WS_FRAME_INFO of the feed's own directory, `/dev/shm/pipeline_<feed>/`,
//! the same two rings a single pipeline's external consumer reads. A reader in another
//! process attaches with `plc_open(c, "<feed>")`:
//!
//! - frames are entries with their opcode (1 text, 2 binary), whole messages;
//! - gap, leg and rotation events are entries with opcode `OP_FEED_EVENT` (0xE) whose
//!   payload is a 48-byte little-endian `plc_feed_event` record (the integers of
//!   `PlFeedItem`). `plc_next` passes over them like control frames (an old reader sees
//!   the merged frames only); `plc_next_feed` returns them.
//!
//! The copy (one `memcpy` per message into the published inbox) is the price of handing
//! the stream to other processes: the legs' own inboxes are read by the merge. With no
//! room (a reader behind, or none attached yet) the merge waits (backoff), so the legs
//! back up as a slow single pipeline's would (backpressure, never a silent drop).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::feed::EventFields;
use super::{CallbackFeed, Feed, FeedConfig, FeedItem};
use crate::error::{Error, Result};
use crate::ring::{ElemRing, InboxWriter, MsgInbox, OverrunPolicy, Producer, WsFrameInfo};
use crate::runner::{Wait, WaitKind};
use crate::shm::names;
use crate::stage::now_ns;

/// The published stream's ring sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublishConfig {
    /// MSG_INBOX bytes (power of two; default 4 MiB). The largest message must fit.
    pub inbox_size: usize,
    /// WS_FRAME_INFO entries (power of two; default 16384).
    pub frame_ring: usize,
}

impl Default for PublishConfig {
    fn default() -> Self {
        PublishConfig { inbox_size: 4 << 20, frame_ring: 1 << 14 }
    }
}

/// Bytes of one published event record (`plc_feed_event`).
pub const EVENT_RECORD_BYTES: usize = 48;

/// `EventFields` as the published record: u32 kind, leg, old_leg, stream; u64 seq, to,
/// generation; u32 cause, flags; little-endian, no padding.
fn record(f: &EventFields) -> [u8; EVENT_RECORD_BYTES] {
    let mut r = [0u8; EVENT_RECORD_BYTES];
    r[0..4].copy_from_slice(&f.kind.to_le_bytes());
    r[4..8].copy_from_slice(&f.leg.to_le_bytes());
    r[8..12].copy_from_slice(&f.old_leg.to_le_bytes());
    r[12..16].copy_from_slice(&f.stream.to_le_bytes());
    r[16..24].copy_from_slice(&f.seq.to_le_bytes());
    r[24..32].copy_from_slice(&f.to.to_le_bytes());
    r[32..40].copy_from_slice(&f.generation.to_le_bytes());
    r[40..44].copy_from_slice(&f.cause.to_le_bytes());
    r[44..48].copy_from_slice(&f.flags.to_le_bytes());
    r
}

struct Publisher {
    w: InboxWriter,
    frames: Producer<WsFrameInfo>,
    max: usize,
    stop: Arc<AtomicBool>,
}

impl Publisher {
    fn item(&mut self, item: FeedItem<'_>) -> std::result::Result<(), String> {
        match item {
            FeedItem::Frame(f) => self.put(f.payload(), f.opcode()),
            FeedItem::Event(e) => self.put(&record(&EventFields::of(&e)), WsFrameInfo::OP_FEED_EVENT),
        }
    }

    fn put(&mut self, payload: &[u8], opcode: u8) -> std::result::Result<(), String> {
        let n = payload.len();
        if n > self.max {
            return Err(format!(
                "a {n}-byte message does not fit the published MSG_INBOX of {} bytes (PublishConfig::inbox_size)",
                self.max
            ));
        }
        let mut wait = Wait::new(WaitKind::Backoff);
        while self.w.free(n) < n || self.frames.free() == 0 {
            if self.stop.load(Ordering::Acquire) {
                return Err("the feed stopped while the published stream's readers were behind".into());
            }
            wait.idle();
        }
        let pos = self.w.position();
        self.w.buf(n).copy_from_slice(payload);
        self.w.commit(n);
        // The bytes are committed before the entry that points at them is published.
        let info = WsFrameInfo::new(pos, n as u32, now_ns(), opcode, true, WsFrameInfo::FLAG_MESSAGE);
        self.frames.push(info).map_err(|_| "WS_FRAME_INFO full after it had room: a second producer?".to_string())
    }
}

impl Feed {
    /// Start like [`Feed::start`] and publish the merged stream (frames and events) into
    /// the feed's directory for header-only readers in other processes (see the module
    /// `feed_publish`). The handle controls and stops it as [`Feed::start_with_callback`]'s.
    pub fn start_published(cfg: FeedConfig, publish: PublishConfig) -> Result<CallbackFeed> {
        if !publish.inbox_size.is_power_of_two() || !publish.frame_ring.is_power_of_two() {
            return Err(Error::Config(format!(
                "PublishConfig: inbox_size ({}) and frame_ring ({}) must be powers of two",
                publish.inbox_size, publish.frame_ring
            )));
        }
        let feed = Feed::start(cfg)?;
        let inbox = MsgInbox::create(feed.dir(), publish.inbox_size, OverrunPolicy::Backpressure)?;
        let frames = ElemRing::<WsFrameInfo>::create(feed.dir(), names::WS_FRAME_INFO, publish.frame_ring)?.into_producer();
        let stop = Arc::new(AtomicBool::new(false));
        let mut out = Publisher { w: inbox.writer(), frames, max: inbox.capacity(), stop: stop.clone() };
        CallbackFeed::run(feed, Box::new(move |item| out.item(item)), stop)
    }
}
