//! The kernel TCP socket ([`kernel::KernelSocket`]) under the pipeline's kernel
//! transports (`stage::StreamTransport` for `ws://`, `stage::TlsTransport` for
//! `wss://`). Every transport plugs into the pipeline through one trait,
//! [`crate::stage::Transport`]; our TCP over AF_XDP is `stage::XdpTransport` behind the
//! per-interface engine.

pub mod kernel;
