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

//!
//! **The public API is [`pipeline`] and [`error`]**: `Pipeline`, its `Config`, frames,
//! states, disconnect reasons, errors (and the C ABI in `include/pipeline.h`). Everything
//! else is internal. The `internals` feature makes the layers public for this
//! workspace's tests, benchmarks, CLI and test kit only: they are not a stable API.
#![cfg_attr(not(feature = "internals"), allow(dead_code, unused_imports))]

/// A layer: public with the `internals` feature (tests, benches, the CLI), else private.
macro_rules! layer {
    ($($(#[$m:meta])* $name:ident),* $(,)?) => {
        $(
            $(#[$m])*
            #[cfg(feature = "internals")]
            pub mod $name;
            $(#[$m])*
            #[cfg(not(feature = "internals"))]
            mod $name;
        )*
    };
}

layer!(config, feed, latency, ring, runner, shm, stage, stats, tcp, tls, transport, wire, ws, xdp);

// Written out (not through `layer!`): it defines `#[macro_export]` macros, which may not
// come from a macro-expanded module. Its `extern "C"` functions are exported either way.
#[cfg(feature = "internals")]
pub mod ffi;
#[cfg(not(feature = "internals"))]
mod ffi;

pub mod error;
// Note for the layers: an expression path `crate::pipeline::f(..)` from inside another
// layer made rustc load the dev-dependency copy of this crate into the unit-test binary
// (two copies of every `#[no_mangle]` C function: a link error). Shared helpers live in
// their layer (e.g. `xdp::addr::next_hop_mac`), and layers do not call into `pipeline`.
pub mod pipeline;

pub use error::{Error, Result};
