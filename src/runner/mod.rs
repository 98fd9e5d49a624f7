//! The runner: where stages run and how they wait.
//!
//! Layouts ([`Layout`]):
//! - `processes`: set-up runs inline (the same stage objects), then one child process
//!   per stage, forked by a supervisor thread (so `PR_SET_PDEATHSIG`, which fires when
//!   the *forking thread* dies, ties the children to the pipeline's life, not to
//!   whichever thread called `start`). Children pin themselves, check `getppid` after
//!   `prctl`, and leave with `_exit` (no destructors: the parent owns every resource).
//!   The supervisor reaps them — only them: `waitpid(pid, WNOHANG)` per child, never
//!   `waitpid(-1)`, so the application's own children and other pipelines' stages are
//!   left alone; a child that dies while the pipeline runs disconnects it with the
//!   reason ("stage websocket (pid 123) killed by signal 9").
//! - `threads`: one thread per stage in the caller's process.
//! - `inline`: every stage polled in turn from one loop on one background thread.
//!
//! Wait strategies ([`WaitKind`]): `spin` (never sleep: production, isolated cores),
//! `yield` (`sched_yield` when idle), `backoff` (spin 64 idle polls, yield 64, then
//! sleep 50 µs; reset on progress).
//!
//! Every layout stops the same way: the `running` flag in the stats region.

mod wait;

pub use wait::{Wait, WaitKind};

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::stage::{now_ns, Stage};
use crate::stats::{DisconnectKind, DisconnectReason, StageExit, State, StatsRegion};

/// Where stages run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    Processes = 0,
    Threads = 1,
    Inline = 2,
}

impl Layout {
    pub fn name(self) -> &'static str {
        match self {
            Layout::Processes => "processes",
            Layout::Threads => "threads",
            Layout::Inline => "inline",
        }
    }
    pub fn parse(s: &str) -> Result<Layout> {
        Ok(match s {
            "processes" => Layout::Processes,
            "threads" => Layout::Threads,
            "inline" => Layout::Inline,
            _ => {
                return Err(Error::Config(format!(
                    "layout {s:?}: expected processes, threads or inline"
                )))
            }
        })
    }
    pub fn from_code(c: u64) -> &'static str {
        match c {
            0 => "processes",
            1 => "threads",
            _ => "inline",
        }
    }
}

/// CPUs this process may run on.
pub fn available_cores() -> usize {
    // SAFETY: sched_getaffinity fills the set we own.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0 {
            let n = libc::CPU_COUNT(&set) as usize;
            if n > 0 {
                return n;
            }
        }
    }
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// The CPUs this process may run on (`sched_getaffinity`), ascending; when the call
/// fails, `0..available_parallelism`.
pub fn allowed_cores() -> Vec<usize> {
    // SAFETY: sched_getaffinity fills the set we own; CPU_ISSET reads it in bounds.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0 {
            let v: Vec<usize> = (0..libc::CPU_SETSIZE as usize).filter(|&c| libc::CPU_ISSET(c, &set)).collect();
            if !v.is_empty() {
                return v;
            }
        }
    }
    (0..available_cores()).collect()
}

/// The cores a placement's loops may use, for [`choose_defaults`]: with `cores` given
/// (`Config::cores`), its distinct cores that this process may run on; else all of
/// `allowed`.
pub fn usable_cores(cores: &[usize], allowed: &[usize]) -> usize {
    if cores.is_empty() {
        return allowed.len();
    }
    let mut v: Vec<usize> = cores.iter().copied().filter(|c| allowed.contains(c)).collect();
    v.sort_unstable();
    v.dedup();
    v.len()
}

/// "0-3,6": a core list the way the kernel prints one.
fn core_list(cores: &[usize]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cores.len() {
        let mut j = i;
        while j + 1 < cores.len() && cores[j + 1] == cores[j] + 1 {
            j += 1;
        }
        out.push(if j > i { format!("{}-{}", cores[i], cores[j]) } else { cores[i].to_string() });
        i = j + 1;
    }
    out.join(",")
}

/// Refuse spinning loops that outnumber the cores they may run on.
///
/// A `spin` loop never gives its core away; two of them on one core only progress when
/// the scheduler preempts one for the other, so every hop between stages can wait a
/// time slice (milliseconds). A client measured like that (`threads` + `spin`, four
/// stage threads on one core) fell to 77k msgs/s with a 21 ms median latency. So this
/// is a configuration error, not a warning: the message names the placements that fit.
///
/// `stages`: the stage names in order (the loops of `threads` / `processes`; `inline`
/// runs them all in one loop); `cores`: `Config::cores` (stage i on `cores[i % len]`;
/// empty: unpinned); `allowed`: the CPUs this process may run on ([`allowed_cores`]).
/// A core outside `allowed` cannot be pinned to (the stage then runs unpinned, see
/// [`place`]), so such a stage counts as unpinned. Only our own loops are counted: your
/// polling thread (polling delivery) or an external consumer needs a core of its own too.
pub fn check_spin_fit(layout: Layout, wait: WaitKind, stages: &[&str], cores: &[usize], allowed: &[usize]) -> Result<()> {
    if wait != WaitKind::Spin || stages.is_empty() {
        return Ok(());
    }
    let pin = |i: usize| if cores.is_empty() { None } else { Some(cores[i % cores.len()]) };
    let loops: Vec<(String, Option<usize>)> = match layout {
        Layout::Inline => vec![(format!("the inline loop ({})", stages.join(", ")), pin(0))],
        Layout::Threads | Layout::Processes => stages.iter().enumerate().map(|(i, s)| (s.to_string(), pin(i))).collect(),
    };
    let mut per_core: std::collections::BTreeMap<usize, Vec<String>> = Default::default();
    let mut free: Vec<String> = Vec::new();
    for (name, core) in loops.iter().cloned() {
        match core {
            Some(c) if allowed.contains(&c) => per_core.entry(c).or_default().push(name),
            _ => free.push(name),
        }
    }
    let spare = allowed.len().saturating_sub(per_core.len());
    let shared: Vec<String> = per_core
        .iter()
        .filter(|(_, v)| v.len() > 1)
        .map(|(c, v)| format!("core {c} would run {} of them ({})", v.len(), v.join(", ")))
        .collect();
    if shared.is_empty() && free.len() <= spare {
        return Ok(());
    }
    let n = loops.len();
    let what = if !shared.is_empty() {
        format!(
            "layout {} with wait spin runs {n} spinning stage loops and cores {cores:?} puts several on one core: {}",
            layout.name(),
            shared.join("; ")
        )
    } else {
        format!(
            "layout {} with wait spin runs {n} spinning stage loops ({}) but they may run on {} core(s) (allowed: {}{})",
            layout.name(),
            free.join(", "),
            spare,
            core_list(allowed),
            if per_core.is_empty() { String::new() } else { format!("; {} taken by pinned stages", per_core.len()) }
        )
    };
    let last = allowed.last().copied().unwrap_or(0);
    let mut fits = vec![format!("layout inline with wait spin (one loop runs every stage; pin it with cores = [{last}])")];
    fits.push(format!("layout {} with wait backoff or yield (an idle stage gives its core away)", layout.name()));
    if layout != Layout::Inline {
        if allowed.len() >= n {
            let pick: Vec<usize> = allowed.iter().rev().take(n).rev().copied().collect();
            fits.push(format!("one core per stage, e.g. cores = {pick:?}"));
        } else {
            fits.push(format!("{n} cores this process may run on, one per stage (it has {})", allowed.len()));
        }
    }
    Err(Error::Config(format!(
        "{what}. Spinning loops that share a core only progress when the scheduler preempts one for another \
         (a time slice, milliseconds, per hop between stages). Placements that fit: {}",
        fits.join("; or ")
    )))
}

/// Defaults from the number of cores: a core per stage and spinning only when there
/// are enough cores; otherwise everything in one loop that backs off.
pub fn choose_defaults(stages: usize, cores: usize) -> (Layout, WaitKind) {
    if cores > stages {
        // One spare core for the OS and the caller.
        (Layout::Threads, WaitKind::Spin)
    } else {
        (Layout::Inline, WaitKind::Backoff)
    }
}

/// The affinity set holding just `core`; a config error when a `cpu_set_t` cannot
/// hold it (`CPU_SET` would index out of bounds and panic).
pub fn cpu_set_for(core: usize) -> Result<libc::cpu_set_t> {
    let max = libc::CPU_SETSIZE as usize;
    if core >= max {
        return Err(Error::Config(format!(
            "core {core}: a CPU set holds cores 0..{max} only"
        )));
    }
    // SAFETY: an all-zero cpu_set_t is the empty set; `core` is in range (checked).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        Ok(set)
    }
}

/// Pin the calling thread to `core`.
pub fn pin_to(core: usize) -> Result<()> {
    let set = cpu_set_for(core)?;
    // SAFETY: the set is ours; pid 0 = the calling thread.
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) } != 0 {
        return Err(Error::last_os(format!(
            "pin to core {core} (sched_setaffinity)"
        )));
    }
    Ok(())
}

fn poll_all(
    stages: &mut [Box<dyn Stage>],
    stats: &StatsRegion,
) -> std::result::Result<bool, Error> {
    let now = now_ns();
    stats.heartbeat(now);
    let mut moved = false;
    for s in stages.iter_mut() {
        match s.poll(now) {
            Ok(p) => moved |= p.moved(),
            Err(e) => {
                stats.disconnect(DisconnectReason::stage_error(s.name(), &e));
                return Err(e);
            }
        }
    }
    Ok(moved)
}

/// Set-up: poll every stage in turn on the caller's thread until the WebSocket is open
/// (state Connected), a stage fails, or `timeout` passes. `retrying` hears every poll
/// made while the transport stage retries a failed first connect (reconnect on).
pub fn run_setup(
    stages: &mut [Box<dyn Stage>],
    stats: &StatsRegion,
    timeout: Duration,
    retrying: &mut dyn FnMut(&StatsRegion),
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut wait = Wait::new(WaitKind::Backoff);
    loop {
        let moved = poll_all(stages, stats)?;
        match stats.state() {
            State::Connecting => {}
            // Reconnect is on and the first connect failed in a stage (the upgrade; TCP
            // or TLS over XDP): the transport stage retries with its backoff, and set-up
            // waits for it until the timeout.
            State::Reconnecting { .. } => retrying(stats),
            State::Disconnected { reason } => return Err(Error::Closed(reason.message)),
            _ => return Ok(()),
        }
        if Instant::now() >= deadline {
            let msg = format!(
                "handshake not finished after {:.1} s",
                timeout.as_secs_f64()
            );
            stats.disconnect_with(DisconnectKind::Timeout, msg.clone());
            return Err(Error::Timeout(msg));
        }
        if moved {
            wait.reset();
        } else {
            wait.idle();
        }
    }
}

/// The steady-state loop of one placement unit (a thread, a child, the inline loop).
/// After `running` drops it keeps polling until idle for a while, so frames already in
/// the rings (say, the last messages before a server's close) are still delivered.
pub fn run_loop(stages: &mut [Box<dyn Stage>], stats: &StatsRegion, kind: WaitKind) -> bool {
    let mut wait = Wait::new(kind);
    let mut ok = true;
    while stats.running() {
        match poll_all(stages, stats) {
            Ok(true) => wait.reset(),
            Ok(false) => wait.idle(),
            Err(_) => {
                ok = false;
                break;
            }
        }
    }
    let mut idle = 0;
    let mut budget = 100_000;
    while ok && idle < 64 && budget > 0 && !stats.stopping_now() {
        budget -= 1;
        match poll_all(stages, stats) {
            Ok(true) => idle = 0,
            Ok(false) => {
                idle += 1;
                std::thread::yield_now();
            }
            Err(_) => break,
        }
    }
    ok
}

/// [`run_loop`] with a panic boundary: a panicking stage (a bug, or a panicking user
/// callback) disconnects the pipeline with the panic message instead of silently
/// ending its thread.
fn guarded_loop(stages: &mut [Box<dyn Stage>], stats: &StatsRegion, kind: WaitKind) {
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_loop(stages, stats, kind)));
    if let Err(p) = r {
        let what = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        let names: Vec<&str> = stages.iter().map(|s| s.name()).collect();
        let stage = names.join("+");
        let message = format!("{stage} stage panicked: {what}");
        stats.disconnect_with(DisconnectKind::StagePanicked { stage }, message);
    }
}

/// What a placement did, for the pipeline to stop and join.
pub enum Running {
    Inline(Option<JoinHandle<()>>),
    Threads(Vec<JoinHandle<()>>),
    /// The supervisor thread, the children's pids (stage order), and the threads of the
    /// stages that stay in this process (the XDP engine).
    Processes(Option<JoinHandle<()>>, Vec<i32>, Vec<JoinHandle<()>>),
}

/// Where to put the stages.
#[derive(Clone, Debug)]
pub struct Placement {
    pub layout: Layout,
    pub wait: WaitKind,
    /// Core per stage (in stage order, reused cyclically); empty: no pinning.
    pub cores: Vec<usize>,
    /// Prefix of thread names.
    pub name: String,
}

/// Start the stages where `p` says. Returns at once.
pub fn place(stages: Vec<Box<dyn Stage>>, p: &Placement, stats: &StatsRegion) -> Result<Running> {
    match p.layout {
        Layout::Inline => {
            let st = stats.clone();
            let (wait, core) = (p.wait, p.cores.first().copied());
            let mut stages = stages;
            let h = std::thread::Builder::new()
                .name(format!("pl-{}", short(&p.name)))
                .spawn(move || {
                    if let Some(c) = core {
                        let _ = pin_to(c);
                    }
                    guarded_loop(&mut stages, &st, wait);
                })
                .map_err(|e| Error::io("spawn the inline stage thread", e))?;
            Ok(Running::Inline(Some(h)))
        }
        Layout::Threads => Ok(Running::Threads(spawn_threads(stages.into_iter().enumerate(), p, stats)?)),
        Layout::Processes => {
            // Stages that must stay in this process run as its threads (pinned where the
            // placement says); the others are forked.
            let (stay, fork): (Vec<_>, Vec<_>) = stages.into_iter().enumerate().partition(|(_, s)| s.stays_in_process());
            let local = spawn_threads(stay.into_iter(), p, stats)?;
            let mut placement = p.clone();
            let cores: Vec<usize> = fork.iter().filter_map(|(i, _)| p.cores.get(i % p.cores.len().max(1)).copied()).collect();
            placement.cores = cores;
            let stages: Vec<Box<dyn Stage>> = fork.into_iter().map(|(_, s)| s).collect();
            let st = stats.clone();
            let (tx, rx) = std::sync::mpsc::channel::<Result<Vec<i32>>>();
            let h = std::thread::Builder::new()
                .name(format!("pl-sup-{}", short(&p.name)))
                .spawn(move || supervise(stages, placement, st, tx))
                .map_err(|e| Error::io("spawn the supervisor thread", e))?;
            match rx.recv() {
                Ok(Ok(pids)) => Ok(Running::Processes(Some(h), pids, local)),
                Ok(Err(e)) => {
                    let _ = h.join();
                    stop_threads(local, stats);
                    Err(e)
                }
                Err(_) => {
                    let _ = h.join();
                    stop_threads(local, stats);
                    Err(Error::Closed("supervisor thread died while forking".into()))
                }
            }
        }
    }
}

fn stop_threads(hs: Vec<JoinHandle<()>>, stats: &StatsRegion) {
    stats.stop_now();
    for h in hs {
        let _ = h.join();
    }
}

/// One thread per stage; `(index, stage)` pairs so pinning follows the stage order.
fn spawn_threads(
    stages: impl Iterator<Item = (usize, Box<dyn Stage>)>,
    p: &Placement,
    stats: &StatsRegion,
) -> Result<Vec<JoinHandle<()>>> {
    let mut hs = Vec::new();
    for (i, s) in stages {
        let st = stats.clone();
        let (wait, core) = (p.wait, p.cores.get(i % p.cores.len().max(1)).copied());
        let h = std::thread::Builder::new()
            .name(format!("pl-{}", s.name()))
            .spawn(move || {
                if let Some(c) = core {
                    let _ = pin_to(c);
                }
                let mut one = vec![s];
                guarded_loop(&mut one, &st, wait);
            })
            .map_err(|e| Error::io("spawn a stage thread", e))?;
        hs.push(h);
    }
    Ok(hs)
}

fn short(name: &str) -> String {
    name.chars().take(10).collect()
}

fn describe(exit: StageExit) -> String {
    match exit {
        StageExit::Signal(s) => format!("killed by signal {s}"),
        StageExit::Exited(s) => format!("exited with status {s}"),
        StageExit::CollectedElsewhere => {
            "ended (its exit status was collected elsewhere in this process)".into()
        }
        StageExit::Other(status) => format!("ended (status {status:#x})"),
    }
}

/// The supervisor thread of the `processes` layout: forks one child per stage, then
/// watches them; at stop, waits for them (SIGKILL after 2 s) and only then drops the
/// parent's copies of the stage objects (sockets, UMEM) — never under a live child.
fn supervise(
    mut stages: Vec<Box<dyn Stage>>,
    p: Placement,
    stats: StatsRegion,
    started: std::sync::mpsc::Sender<Result<Vec<i32>>>,
) {
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    // Everything a child needs before its loop is made here, before any fork: the
    // child may not allocate, format or lock (see child_main).
    let mut pins = Vec::with_capacity(stages.len());
    for (i, stage) in stages.iter().enumerate() {
        let pin = match p.cores.get(i % p.cores.len().max(1)) {
            None => None,
            Some(&core) => match cpu_set_for(core) {
                Ok(set) => Some(ChildPin {
                    set,
                    msg: format!(
                        "pipeline {}: {} stage: could not pin to core {core} (sched_setaffinity errno ",
                        p.name,
                        stage.name()
                    )
                    .into_bytes(),
                }),
                Err(e) => {
                    stats.disconnect(DisconnectReason::new(DisconnectKind::from_error(&e), e.to_string()));
                    let _ = started.send(Err(e));
                    return;
                }
            },
        };
        pins.push(pin);
    }
    let mut children: Vec<(libc::pid_t, &'static str)> = Vec::with_capacity(stages.len());
    for (stage, pin) in stages.iter_mut().zip(pins.iter()) {
        let name = stage.name();
        // SAFETY: fork in a multi-threaded process. Another thread may hold a lock
        // (malloc's, stderr's, any mutex) at this instant, and in the child nobody will
        // ever release it; so until its stage loop runs the child makes only
        // async-signal-safe calls on memory prepared before the fork (child_main), and
        // it leaves with _exit.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            let e = Error::last_os(format!("fork the {name} stage"));
            stats.disconnect(DisconnectReason::new(DisconnectKind::from_error(&e), e.to_string()));
            reap(&mut children, &stats, Duration::from_secs(2));
            let _ = started.send(Err(e));
            return;
        }
        if pid == 0 {
            child_main(stage, &stats, p.wait, pin.as_ref(), me);
        }
        children.push((pid, name));
    }
    let _ = started.send(Ok(children.iter().map(|c| c.0).collect()));
    // Watch. Only our own pids, one `waitpid(pid, WNOHANG)` each: `waitpid(-1)` would
    // collect the embedding application's children (losing their exit statuses) and
    // another pipeline's stages (which then never learns that its stage died).
    while stats.running() && !children.is_empty() {
        let mut k = 0;
        while k < children.len() {
            let (pid, name) = children[k];
            let mut status = 0;
            // SAFETY: waitpid on one of our own children, non-blocking.
            let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if r == 0 {
                k += 1;
                continue;
            }
            children.swap_remove(k);
            if stats.running() {
                let exit = if r == pid {
                    StageExit::from_wait_status(status)
                } else {
                    // ECHILD: someone else collected it (the application called
                    // waitpid(-1), or set SIGCHLD to SIG_IGN). It is gone all the same.
                    StageExit::CollectedElsewhere
                };
                let how = describe(exit);
                stats.disconnect_with(
                    DisconnectKind::StageDied { stage: name.to_string(), pid, exit },
                    format!("stage {name} (pid {pid}) {how}"),
                );
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    reap(&mut children, &stats, Duration::from_secs(2));
    drop(stages);
}

fn reap(children: &mut Vec<(libc::pid_t, &'static str)>, stats: &StatsRegion, grace: Duration) {
    stats.stop_running();
    let deadline = Instant::now() + grace;
    while !children.is_empty() {
        children.retain(|&(pid, _)| {
            let mut status = 0;
            // SAFETY: waitpid on our own child, non-blocking.
            unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) == 0 }
        });
        if Instant::now() >= deadline {
            for &(pid, _) in children.iter() {
                // SAFETY: our own child, which has not been reaped yet.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, std::ptr::null_mut(), 0);
                }
            }
            children.clear();
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A child's core, resolved before the fork, and the start of its failure message.
struct ChildPin {
    set: libc::cpu_set_t,
    /// "pipeline NAME: STAGE stage: could not pin to core N (sched_setaffinity errno "
    msg: Vec<u8>,
}

/// `n` in decimal into `buf`, without allocating (for the child before its loop).
fn decimal(mut n: u32, buf: &mut [u8; 10]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// A forked stage process. Until `run_loop` starts, only async-signal-safe system
/// calls (prctl, getppid, sched_setaffinity, writev, _exit) on data made before the
/// fork: no allocation, no formatting, no `eprintln!` (stderr's lock), no mutex — a
/// lock some other parent thread held at the fork stays locked forever here.
fn child_main(
    stage: &mut Box<dyn Stage>,
    stats: &StatsRegion,
    wait: WaitKind,
    pin: Option<&ChildPin>,
    parent: libc::pid_t,
) -> ! {
    // SAFETY: prctl/getppid/_exit are plain system calls with no memory preconditions.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        );
        if libc::getppid() != parent {
            libc::_exit(0);
        }
    }
    if let Some(pin) = pin {
        // SAFETY: the set was built before the fork; pid 0 = this (only) thread.
        let rc = unsafe {
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &pin.set)
        };
        if rc != 0 {
            // Not fatal (as in the other layouts): say so on stderr and run unpinned.
            // last_os_error reads errno without allocating.
            let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
            let mut digits = [0u8; 10];
            let d = decimal(errno as u32, &mut digits);
            // One writev(2): the stage processes start together, and three writes each
            // interleaved their lines mid-message. A single write of under PIPE_BUF
            // bytes to a pipe is atomic.
            let iov = [&pin.msg[..], d, b")\n"].map(|part| libc::iovec {
                iov_base: part.as_ptr() as *mut libc::c_void,
                iov_len: part.len(),
            });
            // SAFETY: writev(2) on fd 2 from buffers that live across the call; a
            // short or failed write only loses the message.
            unsafe { libc::writev(2, iov.as_ptr(), iov.len() as libc::c_int) };
        }
    }
    // From here on the stage loop runs as it does in the other layouts. (Its error and
    // panic paths format messages; that allocation is the loop's, after set-up.)
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run_loop(std::slice::from_mut(stage), stats, wait)
    }));
    let code = match r {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(p) => {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            let name = stage.name();
            stats.disconnect_with(
                DisconnectKind::StagePanicked { stage: name.to_string() },
                format!("{name} stage panicked: {what}"),
            );
            101
        }
    };
    // SAFETY: leave without running destructors or atexit handlers of the parent's image.
    unsafe { libc::_exit(code) }
}

impl Running {
    /// Stop every stage and wait for them.
    pub fn stop(&mut self, stats: &StatsRegion) {
        stats.stop_now();
        match self {
            Running::Inline(h) => {
                if let Some(h) = h.take() {
                    let _ = h.join();
                }
            }
            Running::Processes(h, _, local) => {
                // Children first (the supervisor reaps them), then this process's stages.
                if let Some(h) = h.take() {
                    let _ = h.join();
                }
                for h in local.drain(..) {
                    let _ = h.join();
                }
            }
            Running::Threads(hs) => {
                for h in hs.drain(..) {
                    let _ = h.join();
                }
            }
        }
    }

    /// Child pids (processes layout), in stage order.
    pub fn child_pids(&self) -> Vec<i32> {
        match self {
            Running::Processes(_, p, _) => p.clone(),
            _ => Vec::new(),
        }
    }

    /// Have all placement units ended?
    pub fn finished(&self) -> bool {
        match self {
            Running::Inline(h) => h.as_ref().map(|h| h.is_finished()).unwrap_or(true),
            Running::Processes(h, _, local) => {
                h.as_ref().map(|h| h.is_finished()).unwrap_or(true) && local.iter().all(|h| h.is_finished())
            }
            Running::Threads(hs) => hs.iter().all(|h| h.is_finished()),
        }
    }
}
