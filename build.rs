//! Compile-time configuration (the design document's "Compile-time Configuration").
//!
//! Every knob is an environment variable read here and written as a `const` into
//! `$OUT_DIR/build_config.rs`; `src/config.rs` includes that file and checks the
//! combination with static assertions, so an impossible layout fails the build
//! instead of corrupting a UMEM at run time.
//!
//! | variable                      | default | meaning                                        |
//! |-------------------------------|---------|------------------------------------------------|
//! | `PIPELINE_UMEM_FRAMES`        | 4096    | total UMEM frames (power of two)               |
//! | `PIPELINE_FRAME_SIZE`         | 4096    | bytes per UMEM frame (2048 or 4096)            |
//! | `PIPELINE_UMEM_SPLIT`         | 4,1,1,2 | RX,ACK,PONG,MSG shares of the UMEM, in eighths |
//! | `PIPELINE_PATH_MTU`           | 1500    | path MTU assumed when the interface says more  |

use std::env;
use std::fs;
use std::path::PathBuf;

fn num(name: &str, default: u64) -> u64 {
    println!("cargo:rerun-if-env-changed={name}");
    match env::var(name) {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| {
            panic!("{name}={v:?} is not a whole number");
        }),
        Err(_) => default,
    }
}

fn main() {
    let frames = num("PIPELINE_UMEM_FRAMES", 4096);
    let frame_size = num("PIPELINE_FRAME_SIZE", 4096);
    let mtu = num("PIPELINE_PATH_MTU", 1500);
    println!("cargo:rerun-if-env-changed=PIPELINE_UMEM_SPLIT");
    let split = env::var("PIPELINE_UMEM_SPLIT").unwrap_or_else(|_| "4,1,1,2".into());
    let parts: Vec<u64> = split
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .unwrap_or_else(|_| panic!("PIPELINE_UMEM_SPLIT={split:?}: {s:?} is not a number"))
        })
        .collect();
    if parts.len() != 4 {
        panic!("PIPELINE_UMEM_SPLIT={split:?} needs four shares: RX,ACK,PONG,MSG (in eighths)");
    }
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("build_config.rs");
    let text = format!(
        "/// Total UMEM frames (`PIPELINE_UMEM_FRAMES`).\n\
         pub const TOTAL_UMEM_FRAMES: usize = {frames};\n\
         /// Bytes per UMEM frame (`PIPELINE_FRAME_SIZE`).\n\
         pub const FRAME_SIZE: usize = {frame_size};\n\
         /// Path MTU assumed at build time (`PIPELINE_PATH_MTU`).\n\
         pub const PATH_MTU: usize = {mtu};\n\
         /// UMEM shares in eighths: RX, ACK, PONG, MSG (`PIPELINE_UMEM_SPLIT`).\n\
         pub const UMEM_SPLIT_EIGHTHS: [usize; 4] = [{}, {}, {}, {}];\n",
        parts[0], parts[1], parts[2], parts[3]
    );
    fs::write(out, text).unwrap();
    soname();
    println!("cargo:rerun-if-changed=build.rs");
}

/// The installed name of the shared library (docs/c-api.md, "Names"): Debian's man-db
/// owns `libpipeline.so.1`, so ours is `libwspipe.so.<ABI>`. Cargo still writes
/// `libpipeline.so` (the crate's name); this sets its SONAME, and, so that programs
/// linked in-tree (tests, cpp_examples) find what their NEEDED entry names, puts the
/// `libwspipe.so.<ABI>` and `libwspipe.so` links next to it (the install step makes
/// real files and links of its own).
fn soname() {
    const ABI: &str = "0"; // = PL_ABI_VERSION in src/ffi/abi.rs
    let so = format!("libwspipe.so.{ABI}");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,{so}");
    // OUT_DIR is <target>/<profile>/build/<pkg>-<hash>/out.
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    if let Some(dir) = out.ancestors().nth(3) {
        for link in [so.as_str(), "libwspipe.so"] {
            let p = dir.join(link);
            if fs::symlink_metadata(&p).is_err() {
                let _ = std::os::unix::fs::symlink("libpipeline.so", &p);
            }
        }
    }
}
