//! Runs `tools/exchange_sim.py` (the TLS WebSocket feed server) inside a namespace of a
//! [`TestBed`](super::netns::TestBed): waits for its "listening" line, and on `finish`
//! returns its JSON summary line. Killed on drop; it also exits when our end of its
//! stdin closes (`--exit-on-stdin-eof`), so a dying test takes it along.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};

use crate::common::python::python;

pub struct ExSim {
    child: Child,
    stdout: Option<BufReader<ChildStdout>>,
    pub port: u16,
}

impl ExSim {
    /// `ns`: network namespace to run in (None = current). `args`: extra CLI options.
    pub fn start(ns: Option<&str>, host: &str, cert: &Path, key: &Path, args: &[&str]) -> ExSim {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/exchange_sim.py");
        let mut c = match ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, &python()]);
                c
            }
            None => Command::new(python()),
        };
        c.arg(&script)
            .args([
                "--host",
                host,
                "--port",
                "0",
                "--exit-on-stdin-eof",
                "--cert",
            ])
            .arg(cert)
            .arg("--key")
            .arg(key)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().expect("spawn tools/exchange_sim.py");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        let n = out.read_line(&mut line).unwrap_or(0);
        let port = line
            .split("\"port\":")
            .nth(1)
            .and_then(|p| p.trim().trim_end_matches('}').trim().parse::<u16>().ok());
        match port {
            Some(port) if n > 0 => ExSim {
                child,
                stdout: Some(out),
                port,
            },
            _ => {
                let _ = child.kill();
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                let _ = child.wait();
                panic!("exchange_sim.py did not start: {line:?} {err}");
            }
        }
    }

    /// Stop the server (stdin EOF) and return its summary line.
    pub fn finish(mut self) -> String {
        drop(self.child.stdin.take());
        let mut rest = String::new();
        if let Some(mut o) = self.stdout.take() {
            let _ = o.read_to_string(&mut rest);
        }
        let _ = self.child.wait();
        rest.lines()
            .rev()
            .find(|l| l.contains("\"summary\""))
            .unwrap_or("")
            .to_string()
    }
}

/// A numeric field of a flat JSON line (good enough for the summary).
pub fn json_num(line: &str, key: &str) -> Option<f64> {
    let pat = format!("\"{key}\": ");
    let i = line.find(&pat)? + pat.len();
    let s: String = line[i..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == '-')
        .collect();
    s.parse().ok()
}

impl Drop for ExSim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
