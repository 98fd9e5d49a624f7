//! A scripted third-party WebSocket server for tests: tools/ws_interop_server.py on
//! Python `websockets` (venv from tools/setup.sh), over TLS with the test CA or plain.
//! Include with `#[path = "common/ws_server.rs"] mod ws_server;` next to
//! `mod common;` and `#[path = "common/certs.rs"] mod certs;`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::certs::certs;
use crate::common::python::python;

pub struct Server {
    child: Child,
    pub port: u16,
    pub tls: bool,
}

impl Server {
    /// `leaf`: None for ws://, else the test certificate to serve ("server", "expired",
    /// "wronghost", "untrusted").
    pub fn start(leaf: Option<&str>) -> Server {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/ws_interop_server.py");
        let mut cmd = Command::new(python());
        cmd.arg(&script).args(["127.0.0.1", "0"]);
        if let Some(l) = leaf {
            let (c, k) = certs().leaf(l);
            cmd.arg("--cert").arg(c).arg("--key").arg(k);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tools/ws_interop_server.py");
        let mut line = String::new();
        let n = BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .unwrap_or(0);
        match line
            .trim()
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
        {
            Some(port) if n > 0 => Server {
                child,
                port,
                tls: leaf.is_some(),
            },
            _ => {
                let _ = child.kill();
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                let _ = child.wait();
                panic!("ws_interop_server.py did not start: {line:?} {err}");
            }
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

