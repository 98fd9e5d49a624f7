//! A C program runs a feed through include/pipeline.h and libpipeline.so: two legs
//! (two `SeqServer`s with disjoint drops and one sequence neither sends), a JSON key,
//! contiguous mode; then one leg with a C key callback. Every sequence once and in order,
//! the gap as a PL_FEED_GAP item, legs up as PL_FEED_LEG_UP, wins split in the leg stats.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pipeline_testkit::c_program::{assert_success, CProgram};
use pipeline_testkit::feed_server::{SeqServer, SeqSpec};

/// Both programs' feed: legs argv[2] and argv[3] (inline, backoff, quiet), named
/// argv[1], JSON key "seq", contiguous with a 250 ms hold.
macro_rules! ab_config {
    () => {
        r#"
static int ab_config(PlConfig legs[2], PlFeedConfig *fc, char **argv) {
    for (int i = 0; i < 2; i++) {
        if (pl_config_init(&legs[i]) != PL_OK) return 1;
        legs[i].url = argv[2 + i];
        legs[i].layout = PL_LAYOUT_INLINE;
        legs[i].wait = PL_WAIT_BACKOFF;
        legs[i].quiet = true;
    }
    if (pl_feed_config_init(fc) != PL_OK) return 1;
    fc->legs = legs;
    fc->legs_len = 2;
    fc->name = argv[1];
    fc->key = PL_KEY_JSON;
    fc->json_field = "seq";
    fc->mode = PL_FEED_CONTIGUOUS;
    fc->hold_us = 250000;
    fc->quiet = true;
    return 0;
}
"#
    };
}

const PROGRAM: &str = concat!(
    pipeline_testkit::c_prelude!(),
    ab_config!(),
    r#"
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
    PlFeedConfig fc;
    if (ab_config(legs, &fc, argv) != 0) return 3;
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
"#
);

/// Both programs' servers: disjoint drops, 1500 on neither, starting 1.5 s from now
/// (after the compile) and going on past 3000 (the one-leg feeds read more).
fn two_servers() -> (SeqServer, SeqServer) {
    let origin = Instant::now() + Duration::from_millis(1500);
    let mut a = SeqSpec::new("A", origin, Duration::from_millis(1), 1_000_000);
    a.drop = Arc::new(|n| n % 10 == 3 || n == 1500);
    a.max_delay = Duration::from_millis(1);
    let mut b = SeqSpec::new("B", origin, Duration::from_millis(1), 1_000_000);
    b.drop = Arc::new(|n| n % 10 == 7 || n == 1500);
    b.max_delay = Duration::from_millis(2);
    b.seed = 9;
    (SeqServer::start(a), SeqServer::start(b))
}

#[test]
fn a_c_program_runs_a_feed() {
    let end = 3000u64;
    let (sa, sb) = two_servers();

    let prog = CProgram::build("plcfeed", PROGRAM, &["-std=c11", "-Wall", "-Wextra", "-Werror", "-O1"]);
    let name = format!("cf{}", std::process::id());
    let run = prog.run(&[&name, &sa.url(), &sb.url(), &end.to_string()]);
    for n in [name.clone(), format!("{name}-0"), format!("{name}-1"), format!("{name}-2"), format!("{name}_cb"), format!("{name}_cb-0"), format!("{name}_cb-1")] {
        let _ = std::fs::remove_dir_all(pipeline::shm::ShmDir::path_for(&n));
    }
    eprintln!("{}", String::from_utf8_lossy(&run.stdout));
    let out = assert_success(&run);
    assert!(out.starts_with("ok 3000 1 2 "), "{out}");
}

const CALLBACK_PROGRAM: &str = concat!(
    pipeline_testkit::c_prelude!(),
    ab_config!(),
    r#"
#include <stdatomic.h>

/* What the callback saw, shared with main (the callback runs on the feed's thread). */
struct seen {
    unsigned long long end, next, got, gaps, ups, bad;
    atomic_int done;
    _Atomic(pl_feed *) feed;   /* set after pl_feed_start_callback returns */
    atomic_int inside_rc;      /* pl_feed_rotate from inside the callback */
    int stop_at;               /* second feed: return non-zero at this frame */
};

static int on_item(void *user, const PlFeedItem *it) {
    struct seen *s = user;
    if (it->kind == PL_FEED_GAP) {
        if (it->seq != 1500 || it->to != 1500 || s->next != 1500) s->bad++;
        s->gaps++;
        s->next = it->to + 1;
        return PL_CALLBACK_CONTINUE;
    }
    if (it->kind == PL_FEED_LEG_UP) { s->ups++; return PL_CALLBACK_CONTINUE; }
    if (it->kind != PL_FEED_FRAME) return PL_CALLBACK_CONTINUE;
    pl_feed *f = atomic_load(&s->feed);
    if (f != NULL && atomic_load(&s->inside_rc) == -1) atomic_store(&s->inside_rc, (int)pl_feed_rotate(f, false));
    unsigned long long v = strtoull((const char *)it->payload + 7, NULL, 10);
    if (s->stop_at > 0) {
        if ((int)++s->got == s->stop_at) return 7;
        return PL_CALLBACK_CONTINUE;
    }
    if (s->next == 0) s->next = v; /* the stream starts where the legs joined it */
    if (!(it->flags & PL_FEED_HAS_KEY) || it->seq != v || v != s->next) {
        fprintf(stderr, "frame %llu key %llu, wanted %llu\n", v, (unsigned long long)it->seq, s->next);
        s->bad++;
    }
    s->next = v + 1;
    s->got++;
    if (v >= s->end) atomic_store(&s->done, 1);
    return PL_CALLBACK_CONTINUE;
}

int main(int argc, char **argv) {
    if (argc < 5) return 2;
    const char *name = argv[1];
    PlConfig legs[2];
    PlFeedConfig fc;
    if (ab_config(legs, &fc, argv) != 0) return 3;
    static struct seen s;
    s.end = strtoull(argv[4], NULL, 10);
    atomic_store(&s.inside_rc, -1);
    pl_feed *f = NULL;
    enum PlResult r;
    if (pl_feed_start_callback(&fc, NULL, &s, &f) != PL_ERR_NULL_ARG) { fprintf(stderr, "NULL on_item accepted\n"); return 4; }
    if ((r = pl_feed_start_callback(&fc, on_item, &s, &f)) != PL_OK) return fail("pl_feed_start_callback", r);
    atomic_store(&s.feed, f);
    PlFeedItem it;
    if (pl_feed_poll(f, &it) != PL_ERR_CONFIG) { fprintf(stderr, "pl_feed_poll on a callback feed\n"); return 5; }
    if ((r = pl_feed_wait(f, 10)) != PL_ERR_TIMEOUT) return fail("pl_feed_wait while streaming", r);
    for (long i = 0; !atomic_load(&s.done); i++) {
        if (i > 200000) { fprintf(stderr, "timeout at %llu\n", s.next); return 6; }
        nap();
    }
    PlStats a, b, all;
    if ((r = pl_feed_get_stats(f, 0, &a)) != PL_OK) return fail("stats 0", r);
    if ((r = pl_feed_get_stats(f, 1, &b)) != PL_OK) return fail("stats 1", r);
    if ((r = pl_feed_get_stats(f, -1, &all)) != PL_OK) return fail("stats feed", r);
    /* Closing every leg ends delivery: pl_feed_wait says PL_OK. */
    if ((r = pl_feed_close(f, 1000, "done")) != PL_OK) return fail("pl_feed_close", r);
    if ((r = pl_feed_wait(f, 10000)) != PL_OK) return fail("pl_feed_wait after close", r);
    pl_feed_free(f);
    if (s.bad || a.feed_won == 0 || b.feed_won == 0 || all.feed_gaps != 1 || all.feed_won != a.feed_won + b.feed_won) {
        fprintf(stderr, "bad %llu won %llu %llu gaps %llu\n", s.bad, (unsigned long long)a.feed_won,
                (unsigned long long)b.feed_won, (unsigned long long)all.feed_gaps);
        return 7;
    }
    if (atomic_load(&s.inside_rc) != PL_ERR_CONFIG) { fprintf(stderr, "rotate from inside: %d\n", atomic_load(&s.inside_rc)); return 8; }

    /* A non-zero return ends delivery; pl_feed_wait reports it. */
    char name2[80];
    snprintf(name2, sizeof name2, "%s_stop", name);
    fc.legs_len = 1;
    fc.name = name2;
    fc.mode = PL_FEED_MONOTONIC;
    static struct seen s2;
    s2.stop_at = 50;
    atomic_store(&s2.inside_rc, 0);
    if ((r = pl_feed_start_callback(&fc, on_item, &s2, &f)) != PL_OK) return fail("pl_feed_start_callback 2", r);
    r = pl_feed_wait(f, 10000);
    char msg[256];
    pl_last_error(msg, sizeof msg);
    if (r != PL_ERR_CLOSED || strstr(msg, "the callback returned 7") == NULL) { fprintf(stderr, "wait: %s %s\n", pl_result_name(r), msg); return 9; }
    if (s2.got != 50) { fprintf(stderr, "frames after the non-zero return: %llu\n", s2.got); return 10; }
    pl_feed_free(f);
    printf("ok %llu %llu %llu %llu %llu\n", s.got, s.gaps, s.ups, (unsigned long long)a.feed_won, (unsigned long long)b.feed_won);
    return 0;
}
"#
);

#[test]
fn a_c_program_runs_a_feed_by_callback() {
    let end = 3000u64;
    let (sa, sb) = two_servers();

    let prog = CProgram::build("plcfeedcb", CALLBACK_PROGRAM, &["-std=c11", "-Wall", "-Wextra", "-Werror", "-O1", "-pthread"]);
    let name = format!("cfcb{}", std::process::id());
    let run = prog.run(&[&name, &sa.url(), &sb.url(), &end.to_string()]);
    for n in [name.clone(), format!("{name}-0"), format!("{name}-1"), format!("{name}-2"), format!("{name}_stop"), format!("{name}_stop-0"), format!("{name}_stop-1")] {
        let _ = std::fs::remove_dir_all(pipeline::shm::ShmDir::path_for(&n));
    }
    eprintln!("{}", String::from_utf8_lossy(&run.stdout));
    let out = assert_success(&run);
    // Every sequence from the first to 3000 but 1500 (the gap), both legs up.
    let f: Vec<u64> = out.split_whitespace().skip(1).map(|x| x.parse().unwrap()).collect();
    assert_eq!(&f[1..3], &[1, 2], "one gap, two legs up: {out}");
    assert!(f[0] >= 2000, "most of the stream delivered by callback: {out}");
}

const PUBLISHED_PROGRAM: &str = concat!(
    "#define _GNU_SOURCE\n",
    pipeline_testkit::c_prelude!(),
    "#include \"pipeline_consumer.h\"\n",
    ab_config!(),
    r#"
int main(int argc, char **argv) {
    if (argc < 5) return 2;
    unsigned long long end = strtoull(argv[4], NULL, 10);
    PlConfig legs[2];
    PlFeedConfig fc;
    if (ab_config(legs, &fc, argv) != 0) return 3;
    pl_feed *f = NULL;
    enum PlResult r;
    if (pl_feed_start_published(&fc, 3000, 0, &f) != PL_ERR_CONFIG) { fprintf(stderr, "3000-byte inbox accepted\n"); return 4; }
    if ((r = pl_feed_start_published(&fc, 0, 0, &f)) != PL_OK) return fail("pl_feed_start_published", r);
    PlFeedItem it;
    if (pl_feed_poll(f, &it) != PL_ERR_CONFIG) { fprintf(stderr, "pl_feed_poll on a published feed\n"); return 5; }
    /* The reader: header only, as another process would (here a part of this one). */
    plc_consumer c;
    if (plc_open(&c, argv[1]) != PLC_OK) { fprintf(stderr, "plc_open: %s\n", c.error); return 6; }
    unsigned long long next = 0, got = 0, gaps = 0, downs = 0;
    int closed = 0;
    for (long idle = 0; downs < 2;) {
        plc_frame fr;
        plc_feed_event ev;
        int k = plc_next_feed(&c, &fr, &ev);
        if (k == PLC_EMPTY) { if (++idle > 200000) { fprintf(stderr, "timeout at %llu\n", next); return 7; } nap(); continue; }
        idle = 0;
        if (k == PLC_FEED_EVENT) {
            if (ev.kind == PLC_FEED_GAP) {
                if (ev.seq != 1500 || ev.to != 1500 || next != 1500) { fprintf(stderr, "gap %llu at %llu\n", (unsigned long long)ev.seq, next); return 8; }
                gaps++;
                next = ev.to + 1;
            }
            if (ev.kind == PLC_FEED_LEG_DOWN && ev.generation == 0) downs++;
            continue;
        }
        if (k != PLC_OK) { fprintf(stderr, "plc_next_feed %d: %s\n", k, c.error); return 9; }
        unsigned long long v = strtoull((const char *)fr.payload + 7, NULL, 10);
        if (next != 0 && v != next) { fprintf(stderr, "frame %llu, wanted %llu\n", v, next); return 10; }
        next = v + 1;
        got++;
        plc_release(&c, &fr);
        if (v >= end && !closed) {
            closed = 1; /* the legs' ends come through as events */
            if ((r = pl_feed_close(f, 1000, "done")) != PL_OK) return fail("pl_feed_close", r);
        }
    }
    plc_close(&c);
    if ((r = pl_feed_wait(f, 10000)) != PL_OK) return fail("pl_feed_wait", r);
    PlStats all;
    if ((r = pl_feed_get_stats(f, -1, &all)) != PL_OK) return fail("stats", r);
    pl_feed_free(f);
    printf("ok %llu %llu %llu %llu\n", got, gaps, downs, (unsigned long long)all.feed_delivered);
    return 0;
}
"#
);

#[test]
fn a_c_program_publishes_a_feed_and_reads_it_header_only() {
    let end = 3000u64;
    let (sa, sb) = two_servers();
    let prog = CProgram::build("plcfeedpub", PUBLISHED_PROGRAM, &["-std=c11", "-Wall", "-Wextra", "-Werror", "-O1"]);
    let name = format!("cfpub{}", std::process::id());
    let run = prog.run(&[&name, &sa.url(), &sb.url(), &end.to_string()]);
    for n in [name.clone(), format!("{name}-0"), format!("{name}-1"), format!("{name}-2")] {
        let _ = std::fs::remove_dir_all(pipeline::shm::ShmDir::path_for(&n));
    }
    let out = assert_success(&run);
    let f: Vec<u64> = out.split_whitespace().skip(1).map(|x| x.parse().unwrap()).collect();
    assert_eq!(&f[1..3], &[1, 2], "one gap, both legs' ends: {out}");
    assert!(f[0] >= 2000, "{out}");
    assert!(f[3] >= f[0], "the feed delivered at least what the reader read: {out}");
}
