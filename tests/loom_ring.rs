//! Model-checks the SPSC index protocol of `ring::ElemRing` with loom: every
//! interleaving (within loom's bounds) of a producer and a consumer must deliver each
//! element once, in order, and never read a slot before it is written or overwrite one
//! before it is read (loom's UnsafeCell tracking flags both).
//!
//! Run: `RUSTFLAGS="--cfg pipeline_loom" cargo test --release --test loom_ring`
//! (a separate target dir avoids rebuilding the normal one:
//! `CARGO_TARGET_DIR=target/loom`).
#![cfg(pipeline_loom)]

use loom::thread;
use pipeline::ring::ElemRing;

/// Bounded preemptions keep the search finite on spin-then-yield loops while still
/// covering every ordering of the publish/release points (loom's recommended setting).
fn model<F: Fn() + Sync + Send + 'static>(f: F) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    b.check(f);
}

fn run(capacity: usize, n: u64, batch: usize) {
    model(move || {
        let ring = ElemRing::<u64>::new_heap(capacity);
        let (mut prod, mut cons) = ring.split();
        let t = thread::spawn(move || {
            let mut next = 0;
            while next < n {
                let mut staged = 0;
                while staged < batch && next < n && prod.stage(next).is_ok() {
                    next += 1;
                    staged += 1;
                }
                prod.publish();
                if staged == 0 {
                    thread::yield_now();
                }
            }
        });
        let mut expect = 0;
        while expect < n {
            let avail = cons.available();
            if avail == 0 {
                thread::yield_now();
                continue;
            }
            for i in 0..avail {
                assert_eq!(*cons.get(i).unwrap(), expect);
                expect += 1;
            }
            cons.advance(avail);
            cons.release();
        }
        t.join().unwrap();
    });
}

#[test]
fn one_by_one_wraps_a_two_slot_ring() {
    run(2, 3, 1);
}

#[test]
fn batched_publish_and_release() {
    run(2, 3, 2);
}

#[test]
fn push_pop_api() {
    model(|| {
        let ring = ElemRing::<u64>::new_heap(2);
        let (mut prod, mut cons) = ring.split();
        let t = thread::spawn(move || {
            for v in 0..3u64 {
                let mut v = v;
                loop {
                    match prod.push(v) {
                        Ok(()) => break,
                        Err(back) => {
                            v = back;
                            thread::yield_now();
                        }
                    }
                }
            }
        });
        let mut got = Vec::new();
        while got.len() < 3 {
            match cons.pop() {
                Some(v) => got.push(v),
                None => thread::yield_now(),
            }
        }
        assert_eq!(got, vec![0, 1, 2]);
        t.join().unwrap();
    });
}

// ---------------------------------------------------------------- need-wakeup protocol

use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use loom::sync::Arc;
use pipeline::ring::wakeup::{self, Signal};

/// The eventfd as a counter.
#[derive(Default)]
struct Counter(AtomicU32);

impl Signal for Counter {
    fn signal(&self) {
        self.0.fetch_add(1, Ordering::Release);
    }
    fn drain(&self) {
        self.0.store(0, Ordering::Relaxed);
    }
}

#[derive(Default)]
struct Shared {
    head: AtomicU64,
    armed: AtomicU32,
    fd: Counter,
}

/// A producer publishes and notifies; the consumer finds nothing, arms, looks again and
/// sleeps only if that look finds nothing. Every interleaving: a consumer that sleeps
/// is signalled (no lost wakeup). `notify` is the producer's side (ring::wakeup's, or a
/// broken one for the control below).
fn wakeup_model(notify: fn(&AtomicU32, &Counter)) {
    model(move || {
        let s = Arc::new(Shared::default());
        let p = s.clone();
        let t = thread::spawn(move || {
            p.head.store(1, Ordering::Release);
            notify(&p.armed, &p.fd);
        });
        let mut slept = false;
        if s.head.load(Ordering::Acquire) == 0 {
            wakeup::arm(&s.armed, &s.fd);
            if s.head.load(Ordering::Acquire) == 0 {
                slept = true;
            } else {
                wakeup::disarm(&s.armed);
            }
        }
        t.join().unwrap();
        if slept {
            assert!(s.fd.0.load(Ordering::Acquire) > 0, "lost wakeup: the consumer sleeps on a published frame");
        }
    });
}

#[test]
fn the_need_wakeup_protocol_never_loses_a_wakeup() {
    wakeup_model(|armed, fd| wakeup::notify(armed, fd));
}

/// The control: without the producer's fence the model finds the lost wakeup, so the
/// model above can fail.
#[test]
#[should_panic(expected = "lost wakeup")]
fn without_the_fence_the_model_finds_the_lost_wakeup() {
    wakeup_model(|armed, fd| {
        if armed.load(Ordering::Relaxed) != 0 && armed.swap(0, Ordering::AcqRel) != 0 {
            fd.signal();
        }
    });
}
