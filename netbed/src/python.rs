//! The Python interpreter that has `websockets` (the venv `tools/setup.sh` creates),
//! for the simulator and the test servers: `PL_PYTHON` if set, else
//! `$PIPELINE_VENV/bin/python` (default venv `/opt/libpipeline-venv`).

use std::path::Path;

/// The interpreter, or why there is none (the venv is missing).
pub fn find() -> Result<String, String> {
    if let Ok(p) = std::env::var("PL_PYTHON") {
        return Ok(p);
    }
    let venv = std::env::var("PIPELINE_VENV").unwrap_or_else(|_| "/opt/libpipeline-venv".into());
    let p = Path::new(&venv).join("bin/python");
    if !p.exists() {
        return Err(format!(
            "{} missing: run `bash tools/setup.sh` (creates the venv with websockets) or set PL_PYTHON",
            p.display()
        ));
    }
    Ok(p.to_string_lossy().into_owned())
}

/// [`find`], panicking with its message (tests).
pub fn python() -> String {
    find().unwrap_or_else(|e| panic!("{e}"))
}
