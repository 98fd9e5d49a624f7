//! A C program runs a feed through include/pipeline.h and libpipeline.so: two legs
//! (two `SeqServer`s with disjoint drops and one sequence neither sends), a JSON key,
//! contiguous mode; then one leg with a C key callback. Every sequence once and in order,
//! the gap as a PL_FEED_GAP item, legs up as PL_FEED_LEG_UP, wins split in the leg stats.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pipeline_testkit::feed_server::{SeqServer, SeqSpec};

const PROGRAM: &str = r#"
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

/* {"seq":N,...} -> N */
static int seq_key(void *user, const uint8_t *p, size_t len, uint32_t *stream, uint64_t *seq) {
    (void)user;
    if (len < 8 || memcmp(p, "{\"seq\":", 7) != 0) return 0;
    *stream = 0;
    *seq = strtoull((const char *)p + 7, NULL, 10);
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 5) return 2;
    const char *name = argv[1];
    unsigned long long end = strtoull(argv[4], NULL, 10);
    PlConfig legs[2];
    for (int i = 0; i < 2; i++) {
        if (pl_config_init(&legs[i]) != PL_OK) return 3;
        legs[i].url = argv[2 + i];
        legs[i].layout = PL_LAYOUT_INLINE;
        legs[i].wait = PL_WAIT_BACKOFF;
        legs[i].quiet = true;
    }
    PlFeedConfig fc;
    if (pl_feed_config_init(&fc) != PL_OK) return 3;
    fc.legs = legs;
    fc.legs_len = 2;
    fc.name = name;
    fc.key = PL_KEY_JSON;
    fc.json_field = "seq";
    fc.mode = PL_FEED_CONTIGUOUS;
    fc.hold_us = 250000;
    fc.quiet = true;
    pl_feed *f = NULL;
    enum PlResult r = pl_feed_start(&fc, &f);
    if (r != PL_OK) return fail("pl_feed_start", r);
    unsigned long long next = 0, got = 0, gaps = 0, ups = 0;
    long idle = 0;
    PlFeedItem held[4];
    int nheld = 0;
    while (next <= end) {
        PlFeedItem it;
        r = pl_feed_poll(f, &it);
        if (r == PL_ERR_WOULD_BLOCK) { if (++idle > 200000) return fail("timeout", r); nap(); continue; }
        if (r != PL_OK) return fail("pl_feed_poll", r);
        idle = 0;
        if (it.kind == PL_FEED_GAP) {
            if (it.seq != 1500 || it.to != 1500 || next != 1500) { fprintf(stderr, "gap %s at %llu\n", it.text, next); return 4; }
            gaps++;
            next = it.to + 1;
            continue;
        }
        if (it.kind == PL_FEED_LEG_UP) { ups++; continue; }
        if (it.kind != PL_FEED_FRAME) { fprintf(stderr, "event: %s\n", it.text); continue; }
        unsigned long long s = strtoull((const char *)it.payload + 7, NULL, 10);
        if (!(it.flags & PL_FEED_HAS_KEY) || it.seq != s || s != next) {
            fprintf(stderr, "frame seq %llu key %llu, wanted %llu\n", s, (unsigned long long)it.seq, next);
            return 5;
        }
        next++;
        got++;
        /* Release out of order: keep up to 4, release newest first. */
        held[nheld++] = it;
        if (nheld == 4) {
            while (nheld > 0) {
                if ((r = pl_feed_release(f, &held[--nheld])) != PL_OK) return fail("pl_feed_release", r);
            }
        }
    }
    while (nheld > 0) if ((r = pl_feed_release(f, &held[--nheld])) != PL_OK) return fail("pl_feed_release", r);
    PlFeedItem bogus = held[0];
    if (pl_feed_release(f, &bogus) != PL_ERR_CONFIG) { fprintf(stderr, "a second release was accepted\n"); return 6; }
    PlStats a, b, all;
    if ((r = pl_feed_get_stats(f, 0, &a)) != PL_OK) return fail("stats 0", r);
    if ((r = pl_feed_get_stats(f, 1, &b)) != PL_OK) return fail("stats 1", r);
    if ((r = pl_feed_get_stats(f, -1, &all)) != PL_OK) return fail("stats feed", r);
    if (a.feed_won == 0 || b.feed_won == 0 || all.feed_gaps != 1 || all.feed_won != a.feed_won + b.feed_won) {
        fprintf(stderr, "won %llu %llu gaps %llu\n", (unsigned long long)a.feed_won, (unsigned long long)b.feed_won,
                (unsigned long long)all.feed_gaps);
        return 7;
    }
    pl_feed_close(f, 1000, "done");
    pl_feed_free(f);

    /* One leg, a C key callback. */
    char name2[80];
    snprintf(name2, sizeof name2, "%s_cb", name);
    fc.legs_len = 1;
    fc.name = name2;
    fc.key = PL_KEY_CALLBACK;
    fc.key_fn = seq_key;
    fc.mode = PL_FEED_MONOTONIC;
    if ((r = pl_feed_start(&fc, &f)) != PL_OK) return fail("pl_feed_start cb", r);
    unsigned long long last = 0, n = 0;
    idle = 0;
    while (n < 200) {
        PlFeedItem it;
        r = pl_feed_poll(f, &it);
        if (r == PL_ERR_WOULD_BLOCK) { if (++idle > 200000) return fail("timeout cb", r); nap(); continue; }
        if (r != PL_OK) return fail("pl_feed_poll cb", r);
        if (it.kind != PL_FEED_FRAME) continue;
        unsigned long long s = strtoull((const char *)it.payload + 7, NULL, 10);
        if (it.seq != s || (n > 0 && s <= last)) { fprintf(stderr, "cb key %llu for %llu\n", (unsigned long long)it.seq, s); return 8; }
        last = s;
        n++;
        pl_feed_release(f, &it);
    }
    pl_feed_free(f);
    printf("ok %llu %llu %llu %llu %llu\n", got, gaps, ups, (unsigned long long)a.feed_won, (unsigned long long)b.feed_won);
    return 0;
}
"#;

fn lib_dir() -> PathBuf {
    std::env::current_exe().unwrap().parent().unwrap().parent().unwrap().to_path_buf()
}

#[test]
fn a_c_program_runs_a_feed() {
    let origin = Instant::now() + Duration::from_millis(1500); // after the compile
    let end = 3000u64;
    // The servers go on past `end` (the second, one-leg feed reads 200 more).
    let mut a = SeqSpec::new("A", origin, Duration::from_millis(1), 1_000_000);
    a.drop = Arc::new(|n| n % 10 == 3 || n == 1500);
    a.max_delay = Duration::from_millis(1);
    let mut b = SeqSpec::new("B", origin, Duration::from_millis(1), 1_000_000);
    b.drop = Arc::new(|n| n % 10 == 7 || n == 1500);
    b.max_delay = Duration::from_millis(2);
    b.seed = 9;
    let (sa, sb) = (SeqServer::start(a), SeqServer::start(b));

    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let tmp = std::env::temp_dir().join(format!("plcfeed{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let src = tmp.join("main.c");
    std::fs::write(&src, PROGRAM).unwrap();
    let exe = tmp.join("main");
    let lib = lib_dir();
    let o = Command::new("cc")
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-O1", "-o"])
        .arg(&exe)
        .arg(&src)
        .arg(format!("-I{}", root.join("include").display()))
        .arg(format!("-L{}", lib.display()))
        .args(["-lpipeline", &format!("-Wl,-rpath,{}", lib.display())])
        .output()
        .unwrap();
    assert!(o.status.success(), "compile failed: {}", String::from_utf8_lossy(&o.stderr));
    let name = format!("cf{}", std::process::id());
    let run = Command::new(&exe).args([&name, &sa.url(), &sb.url(), &end.to_string()]).output().unwrap();
    for n in [format!("{name}"), format!("{name}-0"), format!("{name}-1"), format!("{name}-2"), format!("{name}_cb"), format!("{name}_cb-0"), format!("{name}_cb-1")] {
        let _ = std::fs::remove_dir_all(pipeline::shm::ShmDir::path_for(&n));
    }
    std::fs::remove_dir_all(&tmp).ok();
    let out = String::from_utf8_lossy(&run.stdout);
    eprintln!("{out}");
    assert!(
        run.status.success(),
        "C program failed: {:?}\nstdout: {out}\nstderr: {}",
        run.status,
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(out.starts_with("ok 3000 1 2 "), "{out}");
}
