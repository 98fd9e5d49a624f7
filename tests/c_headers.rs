//! Every public header compiles on its own as C11 and as C++17, and a C program using
//! `pipeline.h` links against `libpipeline.so` and gets sane answers.

use std::path::Path;
use std::process::Command;

use pipeline_testkit::c_program::{include_dir, CProgram};

fn compile(compiler: &str, std: &str, lang: &str, header: &Path, out: &Path) {
    let src = out.with_extension(if lang == "c" { "c" } else { "cpp" });
    std::fs::write(&src, format!("#include \"{}\"\nint pl_header_probe;\n", header.display())).unwrap();
    let o = Command::new(compiler)
        .args([&format!("-std={std}"), "-Wall", "-Wextra", "-Werror", "-pedantic", "-c", "-o"])
        .arg(out)
        .arg(&src)
        .output()
        .unwrap_or_else(|e| panic!("{compiler} not runnable: {e}"));
    assert!(
        o.status.success(),
        "{} does not compile on its own as {std}:\n{}",
        header.display(),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn every_public_header_compiles_alone_as_c11_and_cpp17() {
    let tmp = std::env::temp_dir().join(format!("plhdr{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let mut n = 0;
    for entry in std::fs::read_dir(include_dir()).unwrap() {
        let h = entry.unwrap().path();
        let stem = h.file_stem().unwrap().to_string_lossy().to_string();
        if h.extension().and_then(|e| e.to_str()) == Some("hpp") {
            // The C++ wrapper: C++17, and C++20 (where it offers std::span).
            compile("c++", "c++17", "c++", &h, &tmp.join(format!("{stem}_hpp17.o")));
            compile("c++", "c++20", "c++", &h, &tmp.join(format!("{stem}_hpp20.o")));
            n += 1;
            continue;
        }
        if h.extension().and_then(|e| e.to_str()) != Some("h") {
            continue;
        }
        compile("cc", "c11", "c", &h, &tmp.join(format!("{stem}_c.o")));
        compile("c++", "c++17", "c++", &h, &tmp.join(format!("{stem}_cpp.o")));
        n += 1;
    }
    std::fs::remove_dir_all(&tmp).ok();
    assert!(n >= 1, "no headers found in include/");
}

#[test]
fn a_c_program_links_and_reads_errors() {
    let prog = CProgram::build(
        "plhdrlink",
        r#"#include "pipeline.h"
#include <stdio.h>
#include <string.h>
int main(void) {
    if (strlen(pl_version()) == 0) return 10;
    if (strcmp(pl_result_name(PL_ERR_TLS), "PL_ERR_TLS") != 0) return 11;
    char buf[8];
    size_t n = pl_last_error(buf, sizeof buf);
    if (n != 0 || buf[0] != 0) return 12; /* no failure yet on this thread */
    if (pl_last_error(NULL, 0) != 0) return 13;
    printf("ok %s\n", pl_version());
    return 0;
}
"#,
        &["-std=c11", "-Wall", "-Werror"],
    );
    assert!(prog.run_ok::<&str>(&[]).starts_with("ok "));
}

/// Values C can put in an enum-typed slot that no enumerator names: the library takes
/// integers at the ABI and refuses them (PL_ERR_CONFIG naming the field), and
/// `pl_result_name` names unknown codes "unknown" instead of reading out of bounds.
#[test]
fn a_c_program_passing_out_of_range_enum_values_gets_errors_not_ub() {
    let prog = CProgram::build(
        "plhdrenum",
        r#"#include "pipeline.h"
#include <stdio.h>
#include <string.h>
static int check(const char *field, PlConfig *cfg) {
    pl_pipeline *p = (pl_pipeline *)0x1; /* must stay untouched */
    PlResult r = pl_start(cfg, &p);
    char msg[256];
    pl_last_error(msg, sizeof msg);
    printf("%s = 9: %s: %s\n", field, pl_result_name(r), msg);
    if (r != PL_ERR_CONFIG) return 1;
    if (p != (pl_pipeline *)0x1) return 1;
    if (!strstr(msg, field) || !strstr(msg, "9")) return 1;
    return 0;
}
int main(void) {
    printf("42: %s\n", pl_result_name(42));
    if (strcmp(pl_result_name(42), "unknown") != 0) return 10;
    if (strcmp(pl_result_name(-1), "unknown") != 0) return 11;
    if (strcmp(pl_result_name(14), "unknown") != 0) return 12;
    if (strcmp(pl_result_name(PL_ERR_PANIC), "PL_ERR_PANIC") != 0) return 13;
    int bad = 0;
    PlConfig cfg;
    /* A URL nothing listens on: a config that is wrongly accepted fails with
       PL_ERR_NET instead of PL_ERR_CONFIG. */
#define CASE(f) pl_config_init(&cfg); cfg.url = "ws://127.0.0.1:1/"; cfg.quiet = true; \
    cfg.timeout_ms = 2000; cfg.f = 9; bad |= check(#f, &cfg) << 1;
    CASE(transport)
    CASE(layout)
    CASE(wait)
    CASE(delivery)
    CASE(overrun)
    if (bad) return 20;
    printf("ok\n");
    return 0;
}
"#,
        &["-std=c11", "-Wall", "-Werror"],
    );
    assert!(prog.run_ok::<&str>(&[]).ends_with("ok\n"));
}
