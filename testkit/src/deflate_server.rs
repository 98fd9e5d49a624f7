//! A permessage-deflate WebSocket server for tests: tools/ws_deflate_server.py on
//! Python `websockets` (venv from tools/setup.sh), over TLS with the test CA or plain,
//! with the deflate parameters given as its command-line options (none: websockets'
//! defaults). Paths: `/echo`, `/stream?n=N&size=S&type=T` (then close 1000),
//! `/fragmented`, `/negotiated` (see the script's header).

use std::process::{Child, Command};

use pipeline_netbed::process::{port_line, spawn_announcing};

use crate::certs::certs;
use crate::python::python;

pub struct DeflateServer {
    child: Child,
    pub port: u16,
    pub tls: bool,
}

impl DeflateServer {
    /// `tls`: serve the test CA's "server" leaf; `args`: the script's deflate options
    /// (`--server-max-window-bits N`, `--client-max-window-bits N`,
    /// `--server-no-context-takeover`, `--client-no-context-takeover`).
    pub fn start(tls: bool, args: &[&str]) -> DeflateServer {
        let mut cmd = Command::new(python());
        cmd.arg(pipeline_netbed::tool("ws_deflate_server.py")).args(["127.0.0.1", "0"]).args(args);
        if tls {
            let (c, k) = certs().leaf("server");
            cmd.arg("--cert").arg(c).arg("--key").arg(k);
        }
        let (child, _, port) =
            spawn_announcing(&mut cmd, "ws_deflate_server.py", port_line).unwrap_or_else(|e| panic!("{e}"));
        DeflateServer { child, port, tls }
    }

    /// `wss://localhost:PORT/path` (the leaf's name) or `ws://127.0.0.1:PORT/path`.
    pub fn url(&self, path: &str) -> String {
        let (scheme, host) = if self.tls { ("wss", "localhost") } else { ("ws", "127.0.0.1") };
        format!("{scheme}://{host}:{}{path}", self.port)
    }
}

impl Drop for DeflateServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Message `i` of `size` bytes of the server's `/stream?type=binary` (as the script's
/// `pattern`): a xorshift stream seeded with `i` (poorly compressible) for odd `i`,
/// `(i + j) % 251` for even `i`.
pub fn pattern(i: usize, size: usize) -> Vec<u8> {
    if i % 2 == 1 {
        let mut x = ((i as u64 * 2654435761 + 1) & 0xffff_ffff) as u32;
        (0..size)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect()
    } else {
        (0..size).map(|j| ((i + j) % 251) as u8).collect()
    }
}
