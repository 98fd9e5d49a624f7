//! libpipeline: a TLS WebSocket client built as a pipeline of stages joined by
//! lock-free rings in shared memory.
//!
//! Layers, bottom up (each a folder):
//! - [`config`], [`error`]: build-time constants, runtime config, the one error type.
//! - [`shm`], [`ring`]: shared-memory regions and the SPSC rings between stages.
//! - [`wire`], [`tcp`], [`xdp`]: packets, the userspace TCP state machine, AF_XDP.
//! - [`tls`], [`ws`]: sans-IO TLS (OpenSSL over memory BIOs) and WebSocket cores.
//! - [`transport`]: the kernel TCP socket under the kernel transports.
//! - [`stage`], [`runner`]: the pipeline's stages (every transport behind one
//!   `stage::Transport` trait, the kernel TLS glue included) and where they run.
//! - [`pipeline`]: [`pipeline::Pipeline`], the one way to run a connection — also as a
//!   simple blocking client (`docs/pipeline.md`).
//! - [`ffi`]: the C ABI, nothing else.

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
