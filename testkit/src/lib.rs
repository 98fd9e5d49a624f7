//! Test support for libpipeline: what the integration tests (`tests/`), the benchmarks
//! (`benches/`) and the CLI's tests (`cli/tests/`) share. A dev-dependency only: the
//! library and the `pipeline` binary never link it.
//!
//! | module | holds |
//! | --- | --- |
//! | [`netns`], [`exchange`], [`exsim`], [`feed`] | re-exported from `pipeline-netbed` (the one copy, shared with `pipeline demo`): the veth pair between two namespaces, the Rust feed server, the exchange simulator, its feed format |
//! | [`ab`] | the A/B feed run (two sequence servers, disjoint drops, one killed and back) and its checks, for any leg transport and either delivery |
//! | [`alloc`] | a counting global allocator for the no-allocation tests |
//! | [`certs`] | the test CA and leaves, generated once per target directory |
//! | [`python`] | the venv interpreter that has `websockets` |
//! | [`tls_memory`] | a client and a server `TlsSession` connected in memory (benchmarks) |
//! | [`tls_server`], [`ws_server`] | a TLS echo server and a scripted third-party WebSocket server (Python) |
//! | [`deflate_server`] | a permessage-deflate WebSocket server (Python `websockets`) with chosen parameters |
//! | [`synthetic`] | `Pipeline` configs and scripts for the synthetic transport, shm clean-up guards |
//! | [`ws_frames`] | server-frame encoding, a simulated MSG_INBOX driving the parser, an independent client-frame decoder |
//! | [`xdp_frames`] | hand-made Ethernet/IPv4/TCP frames (independent of `pipeline::wire`), raw sockets |
//! | [`tcp_sim`] | a deterministic TCP peer, lossy link and harness around `pipeline::tcp::Connection` |
//! | [`pipeline_bin`] | where the `pipeline` binary is, for tests outside `cli/` |
//!
//! What is *not* here: the synthetic transport (`pipeline::stage::synthetic`) is part of
//! the library, because users reach it — `pipeline connect --synthetic N`, the C API's
//! `PL_TRANSPORT_SYNTHETIC` — to try layouts and the stats tool without a network.

pub use pipeline_netbed::process::{gettid, schedstat, ChildGuard};
pub use pipeline_netbed::{exchange, exsim, feed, netns, plot};

pub mod ab;
pub mod alloc;
pub mod c_program;
pub mod certs;
pub mod deflate_server;
pub mod feed_server;
pub mod reconnect;
pub mod ffi;
pub mod synthetic;
pub mod tcp_sim;
pub mod tls_memory;
pub mod tls_server;
pub mod upgrade;
pub mod ws_frames;
pub mod ws_server;
pub mod xdp_frames;

/// The Python interpreter for the test servers.
pub mod python {
    pub use pipeline_netbed::python::{find, python};
}

mod locate;
pub use locate::pipeline_bin;
