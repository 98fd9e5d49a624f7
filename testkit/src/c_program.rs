//! A C program built against `include/pipeline.h` and `libpipeline.so`, for the tests
//! that drive the library through its C ABI.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// target/<profile>/ of the running test binary (target/<profile>/deps/<test>-…),
/// where `cargo build --lib` puts libpipeline.so.
pub fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_path_buf()
}

/// The repository's `include/`.
pub fn include_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().join("include")
}

/// A compiled C program in a temporary directory, removed on drop.
pub struct CProgram {
    dir: PathBuf,
    /// The executable.
    pub exe: PathBuf,
}

impl CProgram {
    /// Writes `source` as `main.c` into `$TMPDIR/<tag><pid>/` and compiles it with `cc`
    /// and `flags` (e.g. `-std=c11 -Wall -Werror`) against `include/` and
    /// `-lpipeline` (rpath to [`lib_dir`]); panics with the compiler's output on failure.
    pub fn build(tag: &str, source: &str, flags: &[&str]) -> CProgram {
        let dir = std::env::temp_dir().join(format!("{tag}{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join("main.c");
        std::fs::write(&src, source).unwrap();
        let exe = dir.join("main");
        let lib = lib_dir();
        assert!(lib.join("libpipeline.so").exists(), "libpipeline.so not built in {}", lib.display());
        let o = Command::new("cc")
            .args(flags)
            .arg("-o")
            .arg(&exe)
            .arg(&src)
            .arg(format!("-I{}", include_dir().display()))
            .arg(format!("-L{}", lib.display()))
            .args(["-lpipeline", &format!("-Wl,-rpath,{}", lib.display())])
            .output()
            .unwrap();
        assert!(o.status.success(), "compile failed: {}", String::from_utf8_lossy(&o.stderr));
        CProgram { dir, exe }
    }

    /// Runs it with `args`.
    pub fn run<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Output {
        Command::new(&self.exe).args(args).output().unwrap()
    }

    /// Runs it with `args`; see [`assert_success`].
    pub fn run_ok<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> String {
        assert_success(&self.run(args))
    }
}

/// Panics (showing the program's stdout and stderr) unless it exited 0; its stdout.
pub fn assert_success(run: &Output) -> String {
    let out = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(
        run.status.success(),
        "C program failed: {:?}\nstdout: {out}\nstderr: {}",
        run.status,
        String::from_utf8_lossy(&run.stderr)
    );
    out
}

impl Drop for CProgram {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

/// The opening of a C test program, as a literal for `concat!`: `pipeline.h` and the C
/// headers it uses, `nap()` (sleep 100 µs) and `fail(what, r)` (print what failed with
/// the result's name and `pl_last_error`; returns 1).
#[macro_export]
macro_rules! c_prelude {
    () => {
        r#"
#define _POSIX_C_SOURCE 200809L
#include "pipeline.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void nap(void) { struct timespec ts = {0, 100000}; nanosleep(&ts, NULL); }

static int fail(const char *what, enum PlResult r) {
    char msg[256];
    pl_last_error(msg, sizeof msg);
    fprintf(stderr, "%s: %s: %s\n", what, pl_result_name(r), msg);
    return 1;
}
"#
    };
}

/// C helpers for the programs that run a pipeline on the synthetic transport, as a literal
/// for `concat!` after [`c_prelude!`]: `tick_frames(data, n)` (unmasked final text frames
/// "tick 0" … "tick n-1" back to back; returns their length), `synthetic_config(cfg, name,
/// data, len, chunk)` (backoff wait, 1 MiB inbox, quiet; the caller picks the layout;
/// non-zero if `pl_config_init` fails), `poll_wait(p, f, spins)` (`pl_poll`, napping while
/// it would block; `PL_ERR_TIMEOUT` once the naps counted in `*spins` pass 200000) and
/// `wait_seen(seen, n)` (naps until the callback count `*seen` reaches `n`; 0, else it
/// fails with "callback timeout").
#[macro_export]
macro_rules! c_synthetic {
    () => {
        r#"
static size_t tick_frames(unsigned char *data, size_t n) {
    size_t len = 0;
    char buf[32];
    for (size_t i = 0; i < n; i++) {
        snprintf(buf, sizeof buf, "tick %zu", i);
        size_t k = strlen(buf);
        data[len++] = 0x81;             /* FIN | text */
        data[len++] = (unsigned char)k; /* < 126, unmasked */
        memcpy(data + len, buf, k);
        len += k;
    }
    return len;
}

static int synthetic_config(PlConfig *cfg, const char *name, const unsigned char *data, size_t len, size_t chunk) {
    if (pl_config_init(cfg) != PL_OK) return -1;
    cfg->url = "wss://synthetic.test/feed";
    cfg->name = name;
    cfg->transport = PL_TRANSPORT_SYNTHETIC;
    cfg->wait = PL_WAIT_BACKOFF;
    cfg->synthetic_data = data;
    cfg->synthetic_len = len;
    cfg->synthetic_chunk = chunk;
    cfg->inbox_size = 1 << 20;
    cfg->max_message = 1 << 16;
    cfg->quiet = true;
    return 0;
}

static enum PlResult poll_wait(pl_pipeline *p, PlFrame *f, long *spins) {
    for (;;) {
        enum PlResult r = pl_poll(p, f);
        if (r != PL_ERR_WOULD_BLOCK) return r;
        if (++*spins > 200000) return PL_ERR_TIMEOUT;
        nap();
    }
}

static int wait_seen(volatile size_t *seen, size_t n) {
    long spins = 0;
    while (*seen < n) { if (++spins > 200000) return fail("callback timeout", PL_ERR_TIMEOUT); nap(); }
    return 0;
}
"#
    };
}

/// Builds `source` with `cc -std=c11 -Wall -Wextra -Werror -O1` (see [`CProgram::build`]),
/// runs it with one argument, a name unique to this process, and removes the shared-memory
/// directories of the pipelines it started as that name followed by each of `suffixes`;
/// its stdout (see [`assert_success`]).
pub fn run_named_program(tag: &str, source: &str, suffixes: &[&str]) -> String {
    let prog = CProgram::build(tag, source, &["-std=c11", "-Wall", "-Wextra", "-Werror", "-O1"]);
    let name = format!("c{}", std::process::id());
    let run = prog.run(&[&name]);
    for suffix in suffixes {
        let _ = std::fs::remove_dir_all(pipeline::shm::ShmDir::path_for(&format!("{name}{suffix}")));
    }
    assert_success(&run)
}

/// `tests/c/feed_reader.c`, the header-only reader of a published merged feed, built
/// once per test binary with `include/pipeline_consumer.h` only (no libpipeline) under
/// AddressSanitizer and UBSan (a report aborts it, so the test sees it). Run it as
/// `feed_reader NAME feed|plain END`: it prints `ok <frames> <gaps> <first gap> <legs gone>`.
pub fn feed_reader() -> PathBuf {
    static EXE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    EXE.get_or_init(|| {
        let root = include_dir().parent().unwrap().to_path_buf();
        let out = std::env::temp_dir().join(format!("plc_feed_reader{}", std::process::id()));
        let o = Command::new("cc")
            .args(["-std=c11", "-O2", "-Wall", "-Wextra", "-Werror"])
            .args(["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-g"])
            .arg("-o")
            .arg(&out)
            .arg(root.join("tests/c/feed_reader.c"))
            .arg(format!("-I{}", include_dir().display()))
            .output()
            .expect("cc");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        out
    })
    .clone()
}
