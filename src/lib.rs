//! libpipeline: a TLS WebSocket client built as a pipeline of stages joined by
//! lock-free rings in shared memory.
//!
//! Layers, bottom up (each a folder):
//! - [`config`], [`error`]: build-time constants, runtime config, the one error type.
//! - [`shm`], [`ring`]: shared-memory regions and the SPSC rings between stages.
//! - [`wire`], [`tcp`], [`xdp`]: packets, the userspace TCP state machine, AF_XDP.
//! - [`tls`], [`ws`]: sans-IO TLS (OpenSSL over memory BIOs) and WebSocket cores.
//! - [`transport`]: byte transports of the kernel path (socket, TLS glue).
//! - [`client`]: a complete `ws://` / `wss://` client over any byte transport.
//! - [`stage`], [`runner`]: the pipeline's stages and where they run.
//! - [`ffi`]: the C ABI, nothing else.

pub mod client;
pub mod config;
pub mod error;
pub mod feed;
pub mod ffi;
pub mod ring;
pub mod runner;
pub mod shm;
pub mod stage;
pub mod tcp;
pub mod tls;
pub mod transport;
pub mod wire;
pub mod ws;
pub mod xdp;

pub use error::{Error, Result};
pub mod pipeline;
pub mod stats;
