//! Starts `tools/tls_echo_server.py` on 127.0.0.1 with a free port; killed on drop
//! (also on panic), and it exits by itself when our end of its stdin closes.

use std::path::Path;
use std::process::{Child, Command};

use pipeline_netbed::process::{port_line, spawn_announcing};

pub struct EchoServer {
    child: Child,
    pub port: u16,
}

impl EchoServer {
    /// `tls`: "1.2", "1.3" or "any". `extra`: e.g. `&["--garbage"]`.
    pub fn start(cert: &Path, key: &Path, tls: &str, extra: &[&str]) -> EchoServer {
        let mut cmd = Command::new("python3");
        cmd.arg(pipeline_netbed::tool("tls_echo_server.py"))
            .args(["127.0.0.1", "0"])
            .arg(cert)
            .arg(key)
            .args(["--tls", tls])
            .args(extra);
        let (child, _, port) =
            spawn_announcing(&mut cmd, "echo server", port_line).unwrap_or_else(|e| panic!("{e}"));
        EchoServer { child, port }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
