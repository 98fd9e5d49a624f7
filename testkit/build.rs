// No build step: having a build script gives the crate an OUT_DIR (inside the target
// directory), where `certs()` keeps the test certificates shared by every test binary.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
}
