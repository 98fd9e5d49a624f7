//! Where the `pipeline` binary is, for the library's tests that run it as a second
//! process (`pipeline stat`, a second AF_XDP process). The binary belongs to the
//! `pipeline-cli` package, so Cargo gives only that package's tests
//! `CARGO_BIN_EXE_pipeline`; elsewhere we look next to the running test binary.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::SystemTime;

/// The `pipeline` binary: `$PIPELINE_BIN` if set, else `pipeline` in the profile
/// directory of the running test (`target/debug/deps/<test>` →
/// `target/debug/pipeline`). Panics, saying what to run, when it is missing or older
/// than a source file it is built from (the library, `cli/`, `netbed/`, the manifests):
/// `cargo test --test X` builds only X, so a stale binary would otherwise be tested
/// silently. `cargo build --bins`, or any `cargo test` of the whole workspace, builds it.
pub fn pipeline_bin() -> &'static str {
    static BIN: OnceLock<String> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("PIPELINE_BIN") {
            return p.to_string_lossy().into_owned();
        }
        let exe = std::env::current_exe().expect("current_exe");
        let dir = exe.parent().expect("test binary directory");
        let profile_dir = if dir.ends_with("deps") { dir.parent().unwrap_or(dir) } else { dir };
        let bin = profile_dir.join("pipeline");
        let built = std::fs::metadata(&bin).and_then(|m| m.modified()).unwrap_or_else(|e| {
            panic!(
                "{}: {e}: build the CLI first (`cargo build --bins` at the repository root) or set PIPELINE_BIN",
                bin.display()
            )
        });
        if let Some(newer) = newer_source(built) {
            panic!(
                "{} is older than {}: rebuild it (`cargo build --bins`) or set PIPELINE_BIN",
                bin.display(),
                newer.display()
            );
        }
        bin.to_string_lossy().into_owned()
    })
}

/// A source file of the binary modified after `built`, if any.
fn newer_source(built: SystemTime) -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent()?;
    let mut todo: Vec<PathBuf> = ["Cargo.toml", "Cargo.lock", "build.rs", "src", "cli", "netbed"]
        .iter()
        .map(|p| root.join(p))
        .collect();
    while let Some(p) = todo.pop() {
        let Ok(meta) = std::fs::metadata(&p) else { continue };
        if meta.is_dir() {
            // A test of the CLI does not change the binary.
            if p.file_name().is_some_and(|n| n == "tests" || n == "target") {
                continue;
            }
            todo.extend(std::fs::read_dir(&p).into_iter().flatten().flatten().map(|e| e.path()));
        } else if p.extension().is_some_and(|e| e == "rs" || e == "toml")
            || p.file_name().is_some_and(|n| n == "Cargo.lock")
        {
            if meta.modified().is_ok_and(|m| m > built) {
                return Some(p);
            }
        }
    }
    None
}
