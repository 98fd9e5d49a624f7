//! Helpers of the `Pipeline` tests: scripts for the library's synthetic transport
//! (`TransportKind::Synthetic`), a config for it, and shared-memory clean-up guards.

use std::sync::Arc;

use pipeline::pipeline::{Config, TransportKind};
use pipeline::runner::{Layout, WaitKind};
use pipeline::shm::ShmDir;
use pipeline::stage::{encode_server_frame, SyntheticScript};

/// Removes `/dev/shm/pipeline_<name>` when dropped, even when the test panics.
pub struct ShmGuard(pub String);

impl Drop for ShmGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(ShmDir::path_for(&self.0));
    }
}

/// A unique pipeline name for this test process, and its guard.
pub fn unique(tag: &str) -> (String, ShmGuard) {
    let n = format!("t{}_{tag}", std::process::id());
    (n.clone(), ShmGuard(n))
}

/// The text of message `i` (varied lengths, crossing the 125/126 header boundary).
pub fn msg(i: usize) -> String {
    let pad = "x".repeat(i % 200);
    format!("m{i:07} {pad}")
}

/// `n` text frames, message i = `msg(i)`.
pub fn text_frames(n: usize) -> Vec<u8> {
    let mut v = Vec::new();
    for i in 0..n {
        encode_server_frame(&mut v, 0x1, true, msg(i).as_bytes());
    }
    v
}

pub fn script(data: Vec<u8>, chunk: usize) -> SyntheticScript {
    SyntheticScript {
        data: Arc::new(data),
        chunk,
        ..Default::default()
    }
}

/// A config for the synthetic transport with the given placement.
pub fn config(name: &str, s: SyntheticScript, layout: Layout) -> Config {
    let mut c = Config::new("wss://synthetic.test/feed");
    c.name = Some(name.to_string());
    c.transport = TransportKind::Synthetic(s);
    c.layout = Some(layout);
    c.wait = Some(WaitKind::Backoff);
    c.inbox_size = 1 << 20;
    c.max_message = 1 << 18;
    c.frame_ring = 4096;
    c.quiet = true;
    c
}
