//! Running commands (`ip`, `ethtool`, `openssl`, ...) and the helper servers that
//! announce their port on their first line of output.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStdout, Command, Output, Stdio};

/// Run a command; `Err` with its status and output if it cannot start or fails.
pub fn run_checked(args: &[&str]) -> Result<Output, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("spawn {args:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(out)
}

/// Run a command; panic with its output if it fails.
pub fn run(args: &[&str]) -> Output {
    run_checked(args).unwrap_or_else(|e| panic!("{e}"))
}

/// Run a command, return success and combined output (no panic).
pub fn try_run(args: &[&str]) -> (bool, String) {
    match Command::new(args[0]).args(&args[1..]).stdin(Stdio::null()).output() {
        Ok(o) => (
            o.status.success(),
            format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)),
        ),
        Err(e) => (false, format!("spawn {args:?}: {e}")),
    }
}

/// Spawn a server with stdin, stdout and stderr piped, read its first line and take its
/// port from it with `port_of`. If it cannot start or says no port, it is killed and the
/// error names `what`, the line and its stderr. Returns the child and the rest of its
/// stdout.
pub fn spawn_announcing(
    cmd: &mut Command,
    what: &str,
    port_of: impl Fn(&str) -> Option<u16>,
) -> Result<(Child, BufReader<ChildStdout>, u16), String> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn {what}: {e}"))?;
    let mut out = BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut line = String::new();
    let n = out.read_line(&mut line).unwrap_or(0);
    match port_of(&line) {
        Some(port) if n > 0 => Ok((child, out, port)),
        _ => {
            let _ = child.kill();
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            let _ = child.wait();
            Err(format!("{what} did not start: {line:?} {err}"))
        }
    }
}

/// `PORT <n>`, the first line of tools/tls_echo_server.py and tools/ws_interop_server.py.
pub fn port_line(line: &str) -> Option<u16> {
    line.trim().strip_prefix("PORT ").and_then(|p| p.parse().ok())
}

/// A child process killed and reaped when the guard drops (also while a test panics).
pub struct ChildGuard(pub std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The calling thread's id (for /proc/self/task/<tid>/...).
pub fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

/// A task's CPU run time in ns from its `schedstat` file (first field; exact, unlike
/// the tick-sampled /proc/stat), e.g. `/proc/self/task/<tid>/schedstat`; 0 if
/// unreadable. The benchmarks' CPU per message.
pub fn schedstat(path: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|x| x.parse().ok()))
        .unwrap_or(0)
}
