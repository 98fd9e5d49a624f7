//! Test certificates from `tools/testcerts.sh`, generated once per build directory and
//! shared by every test binary and benchmark.

use std::path::PathBuf;
use std::sync::OnceLock;

pub use pipeline_netbed::certs::Certs;
use pipeline_netbed::certs::{complete, generate};

/// The certificate directory (created on first use, in the target directory).
pub fn certs() -> &'static Certs {
    static CERTS: OnceLock<Certs> = OnceLock::new();
    CERTS.get_or_init(|| {
        let base = PathBuf::from(env!("OUT_DIR"));
        let dir = base.join("tls-certs");
        if !complete(&dir) {
            let tmp = base.join(format!("tls-certs.tmp.{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&tmp);
            generate(&tmp).unwrap_or_else(|e| panic!("{e}"));
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
