//! Test certificates from `tools/testcerts.sh`, generated once per build directory.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

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
    /// (cert, key) of a named leaf: "server", "expired", "wronghost", "untrusted",
    /// "wildcard", "partialwild", "cnonly" (see tools/testcerts.sh), "veth" (valid for
    /// the veth TestBed's server address 10.200.1.1, so a client can verify it with a
    /// `wss://10.200.1.1:PORT/` URL).
    pub fn leaf(&self, name: &str) -> (PathBuf, PathBuf) {
        (self.path(&format!("{name}.pem")), self.path(&format!("{name}.key")))
    }
}

fn complete(dir: &Path) -> bool {
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
    ]
        .iter()
        .all(|f| dir.join(f).exists())
}

/// The certificate directory (created on first use; shared by all test binaries).
pub fn certs() -> &'static Certs {
    static CERTS: OnceLock<Certs> = OnceLock::new();
    CERTS.get_or_init(|| {
        let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let dir = base.join("tls-certs");
        if !complete(&dir) {
            let tmp = base.join(format!("tls-certs.tmp.{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&tmp);
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/testcerts.sh");
            let out = Command::new("sh").arg(&script).arg(&tmp).output().expect("run tools/testcerts.sh");
            assert!(
                out.status.success(),
                "testcerts.sh failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            // Atomic publish; if another test binary won the race, use theirs. A
            // directory left by an older tools/testcerts.sh (fewer certificates) is
            // replaced: rename cannot overwrite a non-empty directory.
            if std::fs::rename(&tmp, &dir).is_err() {
                if !complete(&dir) {
                    let _ = std::fs::remove_dir_all(&dir);
                    let _ = std::fs::rename(&tmp, &dir);
                }
                let _ = std::fs::remove_dir_all(&tmp);
            }
            assert!(complete(&dir), "certificates missing in {}", dir.display());
        }
        Certs { dir }
    })
}
