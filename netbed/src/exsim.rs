//! Runs `tools/exchange_sim.py` (the TLS WebSocket feed server) inside a namespace of a
//! [`TestBed`](crate::netns::TestBed): waits for its "listening" line, and on `finish`
//! returns its JSON summary line. Killed on drop; it also exits when our end of its
//! stdin closes (`--exit-on-stdin-eof`), so a dying test takes it along.

use std::io::{BufReader, Read};
use std::path::Path;
use std::process::{Child, ChildStdout, Command};

use crate::process::spawn_announcing;

pub struct ExSim {
    child: Child,
    stdout: Option<BufReader<ChildStdout>>,
    pub port: u16,
}

impl ExSim {
    /// `ns`: network namespace to run in (None = current). `args`: extra CLI options.
    /// Panics if the venv's Python is missing or the simulator does not start (tests).
    pub fn start(ns: Option<&str>, host: &str, cert: &Path, key: &Path, args: &[&str]) -> ExSim {
        ExSim::spawn(&crate::python::python(), ns, host, cert, key, args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`ExSim::start`] with a chosen interpreter, returning what went wrong.
    pub fn spawn(
        python: &str,
        ns: Option<&str>,
        host: &str,
        cert: &Path,
        key: &Path,
        args: &[&str],
    ) -> Result<ExSim, String> {
        let script = crate::tool("exchange_sim.py");
        let mut c = match ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, python]);
                c
            }
            None => Command::new(python),
        };
        c.arg(&script)
            .args(["--host", host, "--port", "0", "--exit-on-stdin-eof", "--cert"])
            .arg(cert)
            .arg("--key")
            .arg(key)
            .args(args);
        let (child, out, port) = spawn_announcing(&mut c, "exchange_sim.py", |line| {
            line.split("\"port\":")
                .nth(1)
                .and_then(|p| p.trim().trim_end_matches('}').trim().parse::<u16>().ok())
        })?;
        Ok(ExSim {
            child,
            stdout: Some(out),
            port,
        })
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
