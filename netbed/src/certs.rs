//! Certificates from `tools/testcerts.sh`: a test CA and leaves signed by it.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A directory written by `tools/testcerts.sh`.
pub struct Certs {
    pub dir: PathBuf,
}

impl Certs {
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
    pub fn ca(&self) -> PathBuf {
        self.path("ca.pem")
    }
    /// (cert, key) of a named leaf: "server" (localhost, 127.0.0.1), "expired",
    /// "wronghost", "untrusted", "wildcard", "partialwild", "cnonly" (see
    /// tools/testcerts.sh), "veth" (valid for the bed's server address 10.200.1.1, so a
    /// client can verify it with a `wss://10.200.1.1:PORT/` URL).
    pub fn leaf(&self, name: &str) -> (PathBuf, PathBuf) {
        (self.path(&format!("{name}.pem")), self.path(&format!("{name}.key")))
    }
}

/// Whether `dir` holds every file `tools/testcerts.sh` writes that a user reads.
pub fn complete(dir: &Path) -> bool {
    [
        "ca.pem",
        "server.pem",
        "expired.pem",
        "wronghost.pem",
        "untrusted.pem",
        "untrusted.key",
        "wildcard.pem",
        "partialwild.pem",
        "cnonly.pem",
        "cnonly.key",
        "veth.pem",
        "veth.key",
        "veth2.pem",
        "veth2.key",
    ]
    .iter()
    .all(|f| dir.join(f).exists())
}

/// Run `tools/testcerts.sh` into `dir` (a fresh CA each time).
pub fn generate(dir: &Path) -> Result<Certs, String> {
    let script = crate::tool("testcerts.sh");
    let out = Command::new("sh")
        .arg(&script)
        .arg(dir)
        .output()
        .map_err(|e| format!("run {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!(
            "testcerts.sh failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(Certs { dir: dir.to_path_buf() })
}
