//! A scripted third-party WebSocket server for tests: tools/ws_interop_server.py on
//! Python `websockets` (venv from tools/setup.sh), over TLS with the test CA or plain.

use std::process::{Child, Command};

use pipeline_netbed::process::{port_line, spawn_announcing};

use crate::certs::certs;
use crate::python::python;

pub struct Server {
    child: Child,
    pub port: u16,
    pub tls: bool,
}

impl Server {
    /// `leaf`: None for ws://, else the test certificate to serve ("server", "expired",
    /// "wronghost", "untrusted").
    pub fn start(leaf: Option<&str>) -> Server {
        let mut cmd = Command::new(python());
        cmd.arg(pipeline_netbed::tool("ws_interop_server.py")).args(["127.0.0.1", "0"]);
        if let Some(l) = leaf {
            let (c, k) = certs().leaf(l);
            cmd.arg("--cert").arg(c).arg("--key").arg(k);
        }
        let (child, _, port) =
            spawn_announcing(&mut cmd, "ws_interop_server.py", port_line).unwrap_or_else(|e| panic!("{e}"));
        Server {
            child,
            port,
            tls: leaf.is_some(),
        }
    }

    pub fn tls() -> Server {
        Server::start(Some("server"))
    }

    pub fn url(&self, host: &str, path: &str) -> String {
        let scheme = if self.tls { "wss" } else { "ws" };
        format!("{scheme}://{host}:{}{path}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
