//! Starts `tools/tls_echo_server.py` on 127.0.0.1 with a free port; killed on drop
//! (also on panic), and it exits by itself when our end of its stdin closes.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};

pub struct EchoServer {
    child: Child,
    pub port: u16,
}

impl EchoServer {
    /// `tls`: "1.2", "1.3" or "any". `extra`: e.g. `&["--garbage"]`.
    pub fn start(cert: &Path, key: &Path, tls: &str, extra: &[&str]) -> EchoServer {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/tls_echo_server.py");
        let mut child = Command::new("python3")
            .arg(&script)
            .args(["127.0.0.1", "0"])
            .arg(cert)
            .arg(key)
            .args(["--tls", tls])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn python3 tools/tls_echo_server.py");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        let n = BufReader::new(stdout).read_line(&mut line).unwrap_or(0);
        let port = line.trim().strip_prefix("PORT ").and_then(|p| p.parse().ok());
        match port {
            Some(port) if n > 0 => EchoServer { child, port },
            _ => {
                let _ = child.kill();
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                let _ = child.wait();
                panic!("echo server did not start: {line:?} {err}");
            }
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
