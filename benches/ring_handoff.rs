//! Cross-core hand-off cost of the shared-memory SPSC ring next to `std::sync::mpsc`,
//! measured side by side in one run.
//!
//! - throughput: a producer on CPU 0 streams N u64s to a consumer on CPU 1;
//!   ns per element and elements/s.
//! - ping-pong: one element goes over and comes back through a second ring/channel;
//!   half the round trip is the one-way hand-off latency.
//!
//! Both sides busy-poll (that is how the pipeline's stages run). Prints a table and
//! writes `bench-results/ring_handoff.json`. Medians of RUNS runs.
//! `cargo bench --bench ring_handoff`

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use pipeline::ring::ElemRing;
use pipeline::shm::ShmDir;

const N: u64 = 5_000_000;
/// mpsc parks and wakes its sender through futexes, ~100x slower per element here:
/// fewer elements keep a run short; the result is per element either way.
const N_MPSC: u64 = 200_000;
const PINGS: u64 = 20_000;
const RUNS: usize = 5;
/// Ping-pong stops after this much time (on a loaded 2-core box a round trip can cost a
/// scheduler slice); the figure is per completed round trip either way.
const BUDGET: std::time::Duration = std::time::Duration::from_secs(2);
const STOP: u64 = u64::MAX;
const CAP: usize = 4096;

fn pin(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; sched_setaffinity on the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu % num_cpus(), &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Online CPUs of the machine (not `available_parallelism`, which shrinks to 1 once
/// this thread has pinned itself and would then put both sides on one core).
fn num_cpus() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if n < 1 {
        1
    } else {
        n as usize
    }
}

fn name(tag: &str) -> String {
    static C: AtomicU32 = AtomicU32::new(0);
    format!("bench{}_{tag}_{}", std::process::id(), C.fetch_add(1, Ordering::Relaxed))
}

fn ring_throughput() -> f64 {
    let dir = ShmDir::create(&name("tp")).unwrap();
    let (mut p, mut c) = ElemRing::<u64>::create(&dir, "raw_inbox.shm", CAP).unwrap().split();
    let t0 = Instant::now();
    let prod = std::thread::spawn(move || {
        pin(0);
        let mut v = 0u64;
        while v < N {
            let mut k = 0;
            while k < 64 && v < N && p.stage(v).is_ok() {
                v += 1;
                k += 1;
            }
            p.publish();
            if k == 0 {
                std::hint::spin_loop();
            }
        }
    });
    pin(1);
    let mut expect = 0u64;
    while expect < N {
        let n = c.available();
        for i in 0..n {
            let v = *c.get(i).unwrap();
            debug_assert_eq!(v, expect + i as u64);
            std::hint::black_box(v);
        }
        expect += n as u64;
        c.advance(n);
        c.release();
        if n == 0 {
            std::hint::spin_loop();
        }
    }
    prod.join().unwrap();
    t0.elapsed().as_nanos() as f64 / N as f64
}

fn mpsc_throughput() -> f64 {
    let (tx, rx) = mpsc::sync_channel::<u64>(CAP);
    let t0 = Instant::now();
    let prod = std::thread::spawn(move || {
        pin(0);
        for v in 0..N_MPSC {
            tx.send(v).unwrap();
        }
    });
    pin(1);
    let mut expect = 0u64;
    while expect < N_MPSC {
        match rx.try_recv() {
            Ok(v) => {
                debug_assert_eq!(v, expect);
                expect += 1;
            }
            Err(_) => std::hint::spin_loop(),
        }
    }
    prod.join().unwrap();
    t0.elapsed().as_nanos() as f64 / N_MPSC as f64
}

/// Round trips of 0, 1, ... (PINGS, or until BUDGET) through `send` and the echo that
/// `recv` spins on; ns per one-way handoff.
fn time_pingpong(mut send: impl FnMut(u64), mut recv: impl FnMut() -> Option<u64>) -> f64 {
    let t0 = Instant::now();
    let mut done = 0u64;
    for v in 0..PINGS {
        send(v);
        loop {
            if let Some(r) = recv() {
                assert_eq!(r, v);
                break;
            }
            std::hint::spin_loop();
        }
        done += 1;
        if v % 256 == 0 && t0.elapsed() > BUDGET {
            break;
        }
    }
    t0.elapsed().as_nanos() as f64 / done as f64 / 2.0
}

fn ring_pingpong() -> f64 {
    let dir = ShmDir::create(&name("pp")).unwrap();
    let (mut pa, mut ca) = ElemRing::<u64>::create(&dir, "raw_inbox.shm", 64).unwrap().split();
    let (mut pb, mut cb) = ElemRing::<u64>::create(&dir, "raw_outbox.shm", 64).unwrap().split();
    let echo = std::thread::spawn(move || {
        pin(0);
        let (c, p) = (&mut ca, &mut pb);
        loop {
            if let Some(v) = c.pop() {
                while p.push(v).is_err() {}
                if v == STOP {
                    break;
                }
            } else {
                std::hint::spin_loop();
            }
        }
    });
    pin(1);
    let (p, c) = (&mut pa, &mut cb);
    let ns = time_pingpong(|v| p.push(v).unwrap(), || c.pop());
    p.push(STOP).unwrap();
    echo.join().unwrap();
    ns
}

fn mpsc_pingpong() -> f64 {
    let (tx_a, rx_a) = mpsc::sync_channel::<u64>(64);
    let (tx_b, rx_b) = mpsc::sync_channel::<u64>(64);
    let echo = std::thread::spawn(move || {
        pin(0);
        loop {
            if let Ok(v) = rx_a.try_recv() {
                tx_b.send(v).unwrap();
                if v == STOP {
                    break;
                }
            } else {
                std::hint::spin_loop();
            }
        }
    });
    pin(1);
    let ns = time_pingpong(|v| tx_a.send(v).unwrap(), || rx_b.try_recv().ok());
    tx_a.send(STOP).unwrap();
    echo.join().unwrap();
    ns
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return; // run only under `cargo bench` (which passes --bench), never from `cargo test`
    }
    let mut rt = Vec::new();
    let mut mt = Vec::new();
    let mut rp = Vec::new();
    let mut mp = Vec::new();
    // Interleave the contenders run by run so drift on a shared machine hits both.
    for _ in 0..RUNS {
        rt.push(ring_throughput());
        mt.push(mpsc_throughput());
        rp.push(ring_pingpong());
        mp.push(mpsc_pingpong());
    }
    let (rt, mt, rp, mp) = (median(rt), median(mt), median(rp), median(mp));
    println!("cross-core hand-off, {} cpus, medians of {RUNS} runs", num_cpus());
    println!("| contender | streaming ns/elem | elements/s | one-way latency ns (ping-pong/2) |");
    println!("|---|---:|---:|---:|");
    println!("| shm SPSC ring (batch 64) | {rt:.2} | {:.1} M | {rp:.0} |", 1e3 / rt);
    println!("| std::sync::mpsc::sync_channel | {mt:.2} | {:.1} M | {mp:.0} |", 1e3 / mt);
    println!("ratio mpsc/ring: streaming {:.1}x, latency {:.1}x", mt / rt, mp / rp);
    std::fs::create_dir_all("bench-results").ok();
    let json = format!(
        "{{\"bench\":\"ring_handoff\",\"cpus\":{},\"runs\":{RUNS},\"elements\":{N},\
         \"ring_ns_per_elem\":{rt:.3},\"mpsc_ns_per_elem\":{mt:.3},\
         \"ring_oneway_ns\":{rp:.1},\"mpsc_oneway_ns\":{mp:.1}}}\n",
        num_cpus()
    );
    std::fs::write("bench-results/ring_handoff.json", json).ok();
}
