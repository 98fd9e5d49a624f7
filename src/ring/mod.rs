//! The rings between stages (design document §3), all in shared memory.
//!
//! | ring | producer → consumer | type |
//! |---|---|---|
//! | RAW_INBOX | XDP poll → transport | [`ElemRing`]`<`[`UmemFrameDescriptor`]`>` |
//! | RAW_OUTBOX, ACK_OUTBOX, PONG_OUTBOX | transport → XDP poll | [`ElemRing`]`<`[`UmemFrameDescriptor`]`>` |
//! | MSG_INBOX | transport → WebSocket, AppClient | [`MsgInbox`] (bytes) |
//! | MSG_OUTBOX | AppClient → transport | [`MsgOutbox`] (typed records) |
//! | PONGS | WebSocket → transport | [`ElemRing`]`<`[`PongFrame`]`>` |
//! | WS_FRAME_INFO_RING | WebSocket → AppClient | [`ElemRing`]`<`[`WsFrameInfo`]`>` |

mod bytes;
mod msg_inbox;
mod msg_outbox;
mod spsc;
mod types;
#[cfg(not(pipeline_loom))]
pub(crate) mod wakeup;
// Public under loom only, for its model in tests/loom_ring.rs.
#[cfg(pipeline_loom)]
pub mod wakeup;

pub use bytes::ByteRing;
pub use msg_inbox::{InboxWriter, MsgInbox, OverrunPolicy, StampCursor};
pub use msg_outbox::{MsgOutbox, OutboxKind, OutboxReader, OutboxRecord, OutboxSender, Piece, FLAG_MORE};
pub use spsc::{Consumer, ElemRing, Producer};
pub use types::{FrameType, PongFrame, RingElement, UmemFrameDescriptor, WsFrameInfo};
