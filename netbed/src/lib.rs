//! The local exchange set-up that `pipeline demo` and the tests share (one copy of it):
//!
//! - [`netns`]: two network namespaces joined by a veth pair ([`netns::TestBed`]), and
//!   the privilege check for it;
//! - [`exchange`]: the Rust TLS WebSocket feed server (the demo's and the peer
//!   benchmark's), run as a thread inside a namespace; its message check;
//! - [`exsim`]: `tools/exchange_sim.py`, the Python feed server the tests use, started
//!   inside a namespace; [`feed`]: its message format and the checks a client makes;
//! - [`plot`]: latency distributions as an SVG picture;
//! - [`certs`]: a CA and leaf certificates from `tools/testcerts.sh`;
//! - [`python`]: the interpreter that has `websockets`; [`process`]: running commands
//!   and helper servers; [`repo`]: where `tools/` is.
//!
//! It depends on `libc` and the library (for the feed server's TLS): not on the test kit,
//! so the CLI's demo can use it without pulling in test code, and the test kit
//! (`pipeline-testkit`) re-exports it.

use std::path::{Path, PathBuf};

pub mod certs;
pub mod exchange;
pub mod exsim;
pub mod feed;
pub mod netns;
pub mod plot;
pub mod process;
pub mod python;

/// The repository holding `tools/` (the simulator and certificate scripts):
/// `$PIPELINE_REPO`, else the source tree this crate was built from, else an ancestor of
/// the executable holding `tools/exchange_sim.py` (a binary copied out of its tree).
pub fn repo() -> PathBuf {
    if let Some(r) = std::env::var_os("PIPELINE_REPO") {
        return r.into();
    }
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap_or(Path::new("."));
    let has_tools = |d: &Path| d.join("tools/exchange_sim.py").exists();
    if has_tools(built_from) {
        return built_from.to_path_buf();
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(d) = exe.ancestors().skip(1).find(|d| has_tools(d)) {
            return d.to_path_buf();
        }
    }
    built_from.to_path_buf()
}

/// `repo()/tools/<name>`.
pub fn tool(name: &str) -> PathBuf {
    repo().join("tools").join(name)
}
