//! Sans-IO WebSocket client core (RFC 6455): no sockets, no TLS — state machines fed
//! bytes, giving back events and bytes to send. The pipeline's websocket stage and
//! the handshake at set-up drive these; the tests drive them directly.
//!
//! - [`url`]: `ws://` / `wss://` URLs.
//! - [`handshake`]: the HTTP/1.1 Upgrade request and the response validator.
//! - [`parser`]: incremental, zero-copy frame parser (frames, pieces or messages).
//! - [`builder`], [`mask`]: client frame encoder with per-frame random masking.
//! - [`close`]: close payloads.
//! - [`utf8`], [`sha1`], [`rng`]: the small pieces they need.
//!
//! See `docs/websocket.md` for the delivery modes, checks and close codes.

pub mod builder;
pub mod close;
pub mod deflate;
pub mod frame;
pub mod handshake;
pub mod mask;
pub mod parser;
pub mod rng;
pub mod sha1;
pub mod url;
pub mod utf8;

pub use builder::{FrameBuilder, MaskMode};
pub use close::parse_close_payload;
pub use deflate::{DeflateConfig, Negotiated as DeflateParams};
pub use frame::{close_code, CloseFrame, ControlPayload, Data, Event, MessageKind, OpCode};
pub use handshake::{ClientHandshake, HandshakeConfig, HandshakeStatus, Upgrade};
pub use parser::{Delivery, Parser, ParserConfig};
pub use url::WsUrl;
