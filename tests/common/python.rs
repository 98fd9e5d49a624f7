//! The Python interpreter that has `websockets` (the venv `tools/setup.sh` creates),
//! for the test servers: `PL_PYTHON` if set, else `$PIPELINE_VENV/bin/python`
//! (default venv `/opt/libpipeline-venv`).

use std::path::Path;

pub fn python() -> String {
    if let Ok(p) = std::env::var("PL_PYTHON") {
        return p;
    }
    let venv = std::env::var("PIPELINE_VENV").unwrap_or_else(|_| "/opt/libpipeline-venv".into());
    let p = Path::new(&venv).join("bin/python");
    assert!(
        p.exists(),
        "{} missing: run `bash tools/setup.sh` (creates the venv with websockets) or set PL_PYTHON",
        p.display()
    );
    p.to_string_lossy().into_owned()
}
