//! [`Feed`]: K legs (K [`Pipeline`]s carrying the same feed) in, one merged stream out.
//!
//! ```no_run
//! use pipeline::pipeline::{Config, Feed, FeedConfig, FeedItem, KeyExtractor, ArbiterMode};
//! let legs = vec![Config::new("wss://a.example.com/ws"), Config::new("wss://b.example.com/ws")];
//! let mut cfg = FeedConfig::new(legs, KeyExtractor::json("seq").unwrap());
//! cfg.mode = ArbiterMode::Contiguous;
//! let mut feed = Feed::start(cfg)?;
//! loop {
//!     match feed.next_timeout(std::time::Duration::from_secs(1)) {
//!         Some(FeedItem::Frame(f)) => println!("leg {}: {}", f.leg(), f.text().unwrap_or("")),
//!         Some(FeedItem::Event(e)) => eprintln!("{e}"),
//!         None => {}
//!     }
//!     if feed.finished() {
//!         break; // every leg gone for good, everything delivered
//!     }
//! }
//! # Ok::<(), pipeline::Error>(())
//! ```
//!
//! The merge step runs in the caller's thread, inside `next*()` (polling delivery; with
//! [`Feed::start_with_callback`] or [`Feed::start_published`] on a thread of its own,
//! which calls the same `next()`): for
//! each leg it takes the leg's new frames from its [`FrameReader`] (deferred release),
//! reads the key from the payload in place, and hands `(leg, key, position)` to the
//! [`Arbiter`]. `Deliver` decisions become the merged stream's frames, each borrowed
//! from its own leg's MSG_INBOX (no copy); held frames stay unreleased in their leg's
//! inbox until they are delivered or dropped. A leg's bytes go back to its transport
//! up to the oldest frame of that leg not yet finished (held, or delivered and not yet
//! dropped by the consumer), which is never past the arbiter's `release_barrier`.
//!
//! Leg state changes (down, reconnecting, up again), gaps and rotations are
//! [`FeedEvent`]s in the same stream, in order. Rotation (make before break) opens the
//! new leg on a background thread (a handshake never stalls the merged stream), feeds
//! both legs to the arbiter until the [`Rotation`] core says they are in step, then
//! stops reading the old leg and stops it once its last held frame is resolved.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::{Config, Pipeline, Receiver};
use crate::error::{Error, Result};
use crate::feed::{
    Arbiter, ArbiterConfig, ArbiterMode, Decision, Key, KeyExtractor, LegStats, Rotation,
    RotationAction, RotationConfig, LAG_BUCKETS,
};
use crate::runner::{self, WaitKind};
use crate::shm::ShmDir;
use crate::stage::{now_ns, Delivery, RawFrame};
use crate::stats::{Counter, DisconnectKind, DisconnectReason, State, StatsRegion};

/// Frames taken from one leg per turn (so legs interleave close to their arrival).
const BATCH: usize = 16;
/// WS_FRAME_INFO keeps the low 48 bits of a frame's parse time (`now_ns()`).
const STAMP_MASK: u64 = (1 << 48) - 1;
/// How often the per-leg counters are copied into the stats regions.
const STATS_EVERY_NS: u64 = 10_000_000;
/// Events kept for [`Feed::next_event`] when frames are taken with [`Feed::next_frame`]
/// (older ones are dropped and counted).
const EVENT_QUEUE: usize = 4096;

/// Everything [`Feed::start`] needs.
pub struct FeedConfig {
    /// The feed's name: its own stats region is `/dev/shm/pipeline_<name>/`, leg `i` is
    /// `<name>-<i>` (a leg config's own `name` is ignored). Default `feed<pid>-<n>`.
    pub name: Option<String>,
    /// One [`Config`] per leg (same URL, other URLs, other transports). Polling delivery
    /// and `Delivery::Messages` (a key is read from a whole message).
    pub legs: Vec<Config>,
    /// How to read a message's key ([`KeyExtractor::None`]: keyless, which only makes
    /// sense with one leg).
    pub key: KeyExtractor,
    /// `Monotonic` (default): deliver a key only if beyond the last delivered, drop the
    /// rest. `Contiguous`: hold messages ahead of a gap for `hold_window`, then a gap event.
    pub mode: ArbiterMode,
    /// Contiguous mode: how long a message ahead of a gap waits (default 1 ms).
    pub hold_window: Duration,
    /// Contiguous mode: most messages held at once (default 4096).
    pub hold_capacity: usize,
    /// The leg keyless messages come from while it is up (default 0).
    pub primary: usize,
    /// Planned rotation: `every_ns` (`--rotate-every`), the in-step timeout. Rotation on
    /// request ([`Feed::rotate`]) works with the defaults.
    pub rotation: RotationConfig,
    /// Do not print the feed's own line on stderr.
    pub quiet: bool,
}

impl FeedConfig {
    pub fn new(legs: Vec<Config>, key: KeyExtractor) -> FeedConfig {
        FeedConfig {
            name: None,
            legs,
            key,
            mode: ArbiterMode::Monotonic,
            hold_window: Duration::from_millis(1),
            hold_capacity: 4096,
            primary: 0,
            rotation: RotationConfig::default(),
            quiet: false,
        }
    }
}

/// Something that happened to the feed, in stream order with its frames.
#[derive(Clone, Debug, PartialEq)]
pub enum FeedEvent {
    /// Sequences `from..=to` of `stream` came from no leg within the hold window.
    Gap { stream: u32, from: u64, to: u64 },
    /// A leg is connected (again): `generation` 0 is its first connection.
    LegUp { leg: usize, generation: u64 },
    /// A leg lost its connection: `state` is `Reconnecting { attempt, cause }` (it will
    /// come back), `Closing`, or `Disconnected { reason }` (it will not).
    LegDown { leg: usize, state: State },
    /// A rotation began: `new` is being opened to replace `old`.
    RotationStarted { old: usize, new: usize },
    /// `new` carries the feed, `old` is retired (`in_step` false only for a forced
    /// rotation whose new leg never got in step).
    RotationDone { old: usize, new: usize, in_step: bool },
    /// The new leg could not be opened or never got in step: `old` carries on.
    RotationAborted { old: usize, new: usize, why: String },
}

impl std::fmt::Display for FeedEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FeedEvent::Gap { stream, from, to } if from == to => write!(f, "gap: stream {stream} sequence {from}"),
            FeedEvent::Gap { stream, from, to } => write!(f, "gap: stream {stream} sequences {from}..={to}"),
            FeedEvent::LegUp { leg, generation } => write!(f, "leg {leg} up: generation {generation}"),
            FeedEvent::LegDown { leg, state } => match state {
                State::Reconnecting { attempt, cause } => {
                    write!(f, "leg {leg} down: reconnecting: attempt {attempt} after {}", cause.name())
                }
                State::Disconnected { reason } => write!(f, "leg {leg} down: {} ({})", reason.kind.name(), reason.message),
                s => write!(f, "leg {leg} down: {}", State::name(s.code())),
            },
            FeedEvent::RotationStarted { old, new } => write!(f, "rotation: opening leg {new} to replace leg {old}"),
            FeedEvent::RotationDone { old, new, in_step } => {
                write!(f, "rotation: leg {new} replaces leg {old}{}", if *in_step { "" } else { " (not in step)" })
            }
            FeedEvent::RotationAborted { old, new, why } => write!(f, "rotation aborted: leg {new} ({why}); leg {old} carries on"),
        }
    }
}

/// A [`FeedEvent`] as the integers the C API (`PlFeedItem`) and the published stream's
/// event records (`plc_feed_event`) carry: one mapping for both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct EventFields {
    /// `PL_FEED_GAP` (2) .. `PL_FEED_ROTATION_ABORTED` (7).
    pub kind: u32,
    /// The leg of a LEG_* event; the new leg of a ROTATION_* event.
    pub leg: u32,
    pub old_leg: u32,
    pub stream: u32,
    /// Gaps: the first missing sequence.
    pub seq: u64,
    /// Gaps: the last missing sequence.
    pub to: u64,
    /// LEG_UP: the generation; LEG_DOWN: the reconnect attempt (0: not coming back).
    pub generation: u64,
    /// LEG_DOWN: the `PL_DISCONNECT_*` kind.
    pub cause: u32,
    /// `PL_FEED_IN_STEP` (4) for a rotation done in step.
    pub flags: u32,
}

impl EventFields {
    pub(crate) const GAP: u32 = 2;
    pub(crate) const LEG_UP: u32 = 3;
    pub(crate) const LEG_DOWN: u32 = 4;
    pub(crate) const ROTATION_STARTED: u32 = 5;
    pub(crate) const ROTATION_DONE: u32 = 6;
    pub(crate) const ROTATION_ABORTED: u32 = 7;
    pub(crate) const IN_STEP: u32 = 4;

    pub(crate) fn of(e: &FeedEvent) -> EventFields {
        let d = EventFields::default();
        match e {
            FeedEvent::Gap { stream, from, to } => EventFields { kind: Self::GAP, stream: *stream, seq: *from, to: *to, ..d },
            FeedEvent::LegUp { leg, generation } => {
                EventFields { kind: Self::LEG_UP, leg: *leg as u32, generation: *generation, ..d }
            }
            FeedEvent::LegDown { leg, state } => {
                let (cause, attempt) = match state {
                    State::Reconnecting { attempt, cause } => (cause.code(), *attempt as u64),
                    State::Disconnected { reason } => (reason.kind.code(), 0),
                    _ => (0, 0),
                };
                EventFields { kind: Self::LEG_DOWN, leg: *leg as u32, cause, generation: attempt, ..d }
            }
            FeedEvent::RotationStarted { old, new } => {
                EventFields { kind: Self::ROTATION_STARTED, leg: *new as u32, old_leg: *old as u32, ..d }
            }
            FeedEvent::RotationDone { old, new, in_step } => EventFields {
                kind: Self::ROTATION_DONE,
                leg: *new as u32,
                old_leg: *old as u32,
                flags: if *in_step { Self::IN_STEP } else { 0 },
                ..d
            },
            FeedEvent::RotationAborted { old, new, .. } => {
                EventFields { kind: Self::ROTATION_ABORTED, leg: *new as u32, old_leg: *old as u32, ..d }
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    /// With the arbiter (held, or just handed in).
    Given,
    /// Delivered: in the output queue.
    Delivered,
    /// Handed to the consumer (a `FeedFrame`, a C `PlFeedItem`).
    HandedOut,
    /// Dropped or consumed.
    Done,
}

#[derive(Clone, Copy, Debug)]
struct Pending {
    raw: RawFrame,
    key: Option<Key>,
    fate: Fate,
}

struct Leg {
    p: Pipeline,
    rx: Receiver,
    stats: StatsRegion,
    /// Frames taken and not yet finished, in arrival (= position) order.
    pending: VecDeque<Pending>,
    up: bool,
    generation: u64,
    reconnects: u64,
    /// Not read any more (rotated out, or an aborted new leg): stopped once its pending
    /// frames are finished.
    retiring: bool,
    /// The last state reported (so Disconnected is said once).
    ended: bool,
}

pub(crate) enum Out {
    Frame { leg: usize, raw: RawFrame, key: Option<Key> },
    Event(FeedEvent),
}

struct Opening {
    old: usize,
    new: usize,
    thread: std::thread::JoinHandle<Result<Pipeline>>,
}

/// K legs, one merged stream. See the module documentation.
pub struct Feed {
    name: String,
    slots: Vec<Option<Leg>>,
    /// The configuration each slot was (or will be) opened with.
    configs: Vec<Option<Config>>,
    /// When each slot's leg was opened (rotation replaces the oldest).
    opened_at: Vec<u64>,
    key: KeyExtractor,
    arbiter: Arbiter,
    rotation: Rotation,
    opening: Option<Opening>,
    /// A new leg that failed to open (its abort was said already).
    failed_opening: Option<usize>,
    /// One leg, no key: no arbiter at all.
    bypass: bool,
    out: VecDeque<Out>,
    events: VecDeque<FeedEvent>,
    events_dropped: u64,
    decisions: Vec<Decision>,
    delivered: u64,
    stats: StatsRegion,
    stats_at: u64,
    /// Threads stopping retired legs.
    stoppers: Vec<std::thread::JoinHandle<()>>,
    // Last: removed when the feed goes.
    dir: ShmDir,
}

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feed").field("name", &self.name).field("legs", &self.slots.len()).finish()
    }
}

/// A frame of the merged stream, borrowed from its leg's MSG_INBOX. Dropping it gives
/// its bytes back (as far as the leg's older frames allow).
pub struct FeedFrame<'a> {
    feed: &'a mut Feed,
    leg: usize,
    raw: RawFrame,
    key: Option<Key>,
}

impl FeedFrame<'_> {
    /// The payload, in place in the leg's MSG_INBOX (no copy).
    pub fn payload(&self) -> &[u8] {
        let leg = self.feed.slots[self.leg].as_ref().expect("a delivered frame's leg stays until it is consumed");
        // SAFETY: the frame is Delivered in its leg's pending list, so the leg releases
        // no byte at or after its position until it is dropped; the frame borrows the
        // feed mutably, so nothing else runs meanwhile.
        unsafe { leg.rx.reader.payload(&self.raw) }
    }
    /// The payload as text (for text messages).
    pub fn text(&self) -> Option<&str> {
        std::str::from_utf8(self.payload()).ok()
    }
    /// 0x1 text, 0x2 binary.
    pub fn opcode(&self) -> u8 {
        self.raw.opcode
    }
    /// The leg it came from (the one that brought it first).
    pub fn leg(&self) -> usize {
        self.leg
    }
    /// Its key, if it had one.
    pub fn key(&self) -> Option<Key> {
        self.key
    }
    /// The first frame of its leg's new connection after a reconnect.
    pub fn after_reconnect(&self) -> bool {
        self.raw.after_reconnect
    }
    /// Stream position in the leg's MSG_INBOX (the C API's handle).
    pub fn pos(&self) -> u64 {
        self.raw.pos
    }
    /// Give the bytes back now (same as dropping it).
    pub fn release(self) {}
}

impl Drop for FeedFrame<'_> {
    fn drop(&mut self) {
        self.feed.consumed(self.leg, self.raw.pos);
    }
}

/// One item of the merged stream.
pub enum FeedItem<'a> {
    Frame(FeedFrame<'a>),
    Event(FeedEvent),
}

static FEEDS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

fn leg_name(feed: &str, slot: usize) -> String {
    format!("{feed}-{slot}")
}

fn prepare(cfg: &Config, feed: &str, slot: usize) -> Result<Config> {
    if cfg.external_consumer {
        return Err(Error::Config(format!("feed leg {slot}: external_consumer: the feed reads its legs itself")));
    }
    if cfg.delivery != Delivery::Messages {
        return Err(Error::Config(format!("feed leg {slot}: the key is read from whole messages: use Delivery::Messages")));
    }
    let mut c = cfg.clone();
    c.name = Some(leg_name(feed, slot));
    Ok(c)
}

impl Leg {
    fn new(mut p: Pipeline) -> Result<Leg> {
        let mut rx = p.receiver().ok_or_else(|| Error::Config("feed leg without a polling receiver".into()))?;
        rx.reader.set_deferred();
        let stats = p.stats_region().clone();
        Ok(Leg {
            rx,
            stats: stats.clone(),
            pending: VecDeque::with_capacity(1024),
            up: false,
            generation: stats.get(Counter::Generation),
            reconnects: stats.get(Counter::Reconnects),
            retiring: false,
            ended: false,
            p,
        })
    }

    fn find(&self, pos: u64) -> Option<usize> {
        self.pending.binary_search_by_key(&pos, |p| p.raw.pos).ok()
    }

    /// Give back the bytes of every finished frame before the oldest unfinished one.
    fn release(&mut self) {
        while self.pending.front().is_some_and(|p| p.fate == Fate::Done) {
            self.pending.pop_front();
        }
        let to = match self.pending.front() {
            Some(p) => p.raw.pos,
            None => self.rx.reader.scanned(),
        };
        self.rx.reader.release_to(to);
    }

    fn write_stats(&self, s: &LegStats) {
        let st = &self.stats;
        st.set(Counter::FeedReceived, s.received);
        st.set(Counter::FeedWon, s.won);
        st.set(Counter::FeedDups, s.dups);
        st.set(Counter::FeedKeylessWon, s.keyless_won);
        st.set(Counter::FeedKeylessDropped, s.keyless_dropped);
        st.set(Counter::FeedHeld, s.held);
        st.set(Counter::FeedUps, s.ups);
        st.set(Counter::FeedDowns, s.downs);
        st.set(Counter::FeedLagSumNs, s.lag.sum_ns);
        st.set(Counter::FeedLagMaxNs, s.lag.max_ns);
        st.set(Counter::FeedLagUnknown, s.lag_unknown);
        for b in 0..LAG_BUCKETS {
            st.set(Counter::ALL[Counter::FeedLag00 as usize + b], s.lag.counts[b]);
        }
    }
}

impl Feed {
    /// Start every leg (all at once; the first failure by leg is the error and stops
    /// the others) and the feed's stats region. With reconnect on, a leg's failed first
    /// connect is retried until its set-up timeout (see [`Pipeline::start`]); each failed
    /// attempt is a [`FeedEvent::LegDown`] with `Reconnecting { attempt, cause }` ahead
    /// of the leg's first [`FeedEvent::LegUp`].
    pub fn start(cfg: FeedConfig) -> Result<Feed> {
        let k = cfg.legs.len();
        if k == 0 {
            return Err(Error::Config("a feed needs at least one leg".into()));
        }
        // One spare slot for rotation (make before break).
        if k + 1 > crate::feed::arbiter::MAX_LEGS {
            return Err(Error::Config(format!("a feed takes at most {} legs", crate::feed::arbiter::MAX_LEGS - 1)));
        }
        let keyless = matches!(cfg.key, KeyExtractor::None);
        if keyless && k > 1 {
            return Err(Error::Config(
                "several legs need a key to arbitrate on (e.g. KeyExtractor::json(\"seq\"), --dedup-json-field seq)".into(),
            ));
        }
        let name = cfg.name.clone().unwrap_or_else(|| {
            format!("feed{}-{}", std::process::id(), FEEDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
        });
        let mut acfg = ArbiterConfig::new(k + 1, cfg.mode);
        acfg.hold_window_ns = cfg.hold_window.as_nanos().min(u64::MAX as u128) as u64;
        acfg.hold_capacity = cfg.hold_capacity;
        acfg.primary = cfg.primary;
        if cfg.primary >= k {
            return Err(Error::Config(format!("feed: primary leg {} of {k}", cfg.primary)));
        }
        let arbiter = Arbiter::new(acfg).map_err(|e| Error::Config(e.to_string()))?;
        let mut configs: Vec<Option<Config>> = Vec::with_capacity(k + 1);
        for (i, c) in cfg.legs.iter().enumerate() {
            configs.push(Some(prepare(c, &name, i)?));
        }
        configs.push(None);
        let dir = ShmDir::create(&name)?;
        let stats = StatsRegion::create(&dir)?;
        // Every leg at once: with reconnect on, a leg whose first connect fails retries
        // until its set-up timeout, and the others need not wait behind it. Each failed
        // attempt becomes a LegDown(Reconnecting) event at the head of the stream.
        let (tx, attempts) = std::sync::mpsc::channel::<(usize, State)>();
        let starting: Vec<_> = configs
            .iter()
            .flatten()
            .cloned()
            .enumerate()
            .map(|(leg, c)| {
                let tx = tx.clone();
                std::thread::spawn(move || {
                    Pipeline::start_reporting(c, &mut |s, _| {
                        let _ = tx.send((leg, s.clone()));
                    })
                })
            })
            .collect();
        drop(tx);
        let started: Vec<Result<Pipeline>> = starting
            .into_iter()
            .map(|t| t.join().unwrap_or_else(|_| Err(Error::Closed("the thread starting a feed leg panicked".into()))))
            .collect();
        let mut slots: Vec<Option<Leg>> = Vec::with_capacity(k + 1);
        for p in started {
            slots.push(Some(Leg::new(p?)?)); // the first failure (by leg); the rest stop as they drop
        }
        slots.push(None);
        let now = now_ns();
        stats.advance_state(&State::Connected);
        if !cfg.quiet {
            eprintln!(
                "pipeline feed {name}: {k} leg(s) ({}), {} mode{}",
                (0..k).map(|i| leg_name(&name, i)).collect::<Vec<_>>().join(", "),
                match cfg.mode {
                    ArbiterMode::Monotonic => "monotonic",
                    ArbiterMode::Contiguous => "contiguous",
                },
                match cfg.rotation.every_ns {
                    Some(e) => format!(", rotation every {:.1} s", e as f64 / 1e9),
                    None => String::new(),
                }
            );
        }
        let hold = cfg.hold_capacity;
        let rotation_every = cfg.rotation.every_ns;
        let mut f = Feed {
            name,
            slots,
            configs,
            opened_at: vec![now; k + 1],
            key: cfg.key,
            arbiter,
            rotation: Rotation::new(cfg.rotation, now),
            opening: None,
            failed_opening: None,
            bypass: k == 1 && keyless && rotation_every.is_none(),
            out: VecDeque::with_capacity(hold + BATCH * (k + 1) + 64),
            events: VecDeque::with_capacity(64),
            events_dropped: 0,
            decisions: Vec::with_capacity(hold + 64),
            delivered: 0,
            stats,
            stats_at: now,
            stoppers: Vec::new(),
            dir,
        };
        for (leg, state) in attempts.try_iter() {
            f.out.push_back(Out::Event(FeedEvent::LegDown { leg, state }));
        }
        f.check_legs(now);
        Ok(f)
    }

    /// The feed's name (its stats region: `pipeline stat NAME`; legs `NAME-<i>`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Leg slots (legs given + one spare for rotation).
    pub fn slots(&self) -> usize {
        self.slots.len()
    }

    /// The pipeline in slot `leg`, if one is there (to send on it, read its state).
    pub fn leg(&self, leg: usize) -> Option<&Pipeline> {
        self.slots.get(leg)?.as_ref().map(|l| &l.p)
    }

    /// Legs in use (not retiring).
    pub fn active_legs(&self) -> Vec<usize> {
        (0..self.slots.len())
            .filter(|&i| self.slots[i].as_ref().is_some_and(|l| !l.retiring))
            .collect()
    }

    /// The arbiter's counters of slot `leg` (won, dups, lag histogram ...). A slot
    /// reused by a rotation keeps counting.
    pub fn leg_stats(&self, leg: usize) -> LegStats {
        *self.arbiter.stats(leg)
    }

    /// Gap events so far and the sequence numbers they named.
    pub fn gaps(&self) -> (u64, u64) {
        self.arbiter.gaps()
    }

    /// Rotations completed and aborted.
    pub fn rotations(&self) -> (u64, u64) {
        self.rotation.counts()
    }

    /// Messages delivered on the merged stream.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// Messages held now (contiguous mode).
    pub fn held(&self) -> usize {
        self.arbiter.held()
    }

    /// The feed's own stats region (feed-wide counters).
    pub fn stats_region(&self) -> &StatsRegion {
        &self.stats
    }

    /// The feed's shared-memory directory (the published stream's rings go there).
    pub(crate) fn dir(&self) -> &ShmDir {
        &self.dir
    }

    /// Ask for a rotation now (make before break): a new leg is opened like the oldest
    /// one and replaces it once in step.
    pub fn rotate(&mut self) {
        self.bypass = false;
        self.rotation.request(false);
    }

    /// The hook for a server's shutdown notice (e.g. Binance's `serverShutdown`): rotate
    /// now, and replace the old leg even if the new one never gets in step (the old one
    /// is going away anyway).
    pub fn shutdown_notice(&mut self) {
        self.bypass = false;
        self.rotation.request(true);
    }

    /// Set where `stream` starts (from a snapshot): see [`Arbiter::expect`].
    pub fn expect(&mut self, stream: u32, next: u64) -> bool {
        let mut ds = std::mem::take(&mut self.decisions);
        let ok = self.arbiter.expect(stream, next, &mut |d| ds.push(d));
        self.apply(&mut ds);
        self.decisions = ds;
        ok
    }

    /// Every leg is gone for good (disconnected without reconnecting) and everything
    /// they brought was delivered.
    pub fn finished(&mut self) -> bool {
        self.out.is_empty()
            && self.opening.is_none()
            && self.arbiter.held() == 0
            && self.slots.iter_mut().flatten().all(|l| l.ended && l.rx.reader.backlog() == 0)
    }

    /// The next item of the merged stream (frame or event), if one is ready.
    #[allow(clippy::should_implement_trait)] // items borrow the feed: not an Iterator
    pub fn next(&mut self) -> Option<FeedItem<'_>> {
        if self.out.is_empty() {
            self.pump();
        }
        match self.out.pop_front()? {
            Out::Event(e) => Some(FeedItem::Event(e)),
            Out::Frame { leg, raw, key } => {
                self.hand_out(leg, raw.pos);
                Some(FeedItem::Frame(FeedFrame { feed: self, leg, raw, key }))
            }
        }
    }

    /// [`Feed::next`], waiting up to `timeout` (backoff); `None` early once
    /// [`Feed::finished`].
    pub fn next_timeout(&mut self, timeout: Duration) -> Option<FeedItem<'_>> {
        if !self.wait_ready(timeout) {
            return None;
        }
        self.next()
    }

    /// The next frame (events are kept for [`Feed::next_event`]).
    pub fn next_frame(&mut self) -> Option<FeedFrame<'_>> {
        if self.out.is_empty() {
            self.pump();
        }
        loop {
            match self.out.pop_front()? {
                Out::Event(e) => self.keep_event(e),
                Out::Frame { leg, raw, key } => {
                    self.hand_out(leg, raw.pos);
                    return Some(FeedFrame { feed: self, leg, raw, key });
                }
            }
        }
    }

    /// [`Feed::next_frame`], waiting up to `timeout` (backoff); `None` early once
    /// [`Feed::finished`].
    pub fn next_frame_timeout(&mut self, timeout: Duration) -> Option<FeedFrame<'_>> {
        let deadline = Instant::now() + timeout;
        let mut w = runner::Wait::new(WaitKind::Backoff);
        loop {
            if self.out.is_empty() {
                self.pump();
            }
            while matches!(self.out.front(), Some(Out::Event(_))) {
                if let Some(Out::Event(e)) = self.out.pop_front() {
                    self.keep_event(e);
                }
            }
            if !self.out.is_empty() {
                return self.next_frame();
            }
            if Instant::now() >= deadline || self.finished() {
                return None;
            }
            w.idle();
        }
    }

    /// The next event: those passed over by [`Feed::next_frame`] first, then any at the
    /// front of the stream.
    pub fn next_event(&mut self) -> Option<FeedEvent> {
        if let Some(e) = self.events.pop_front() {
            return Some(e);
        }
        if self.out.is_empty() {
            self.pump();
        }
        let i = self.out.iter().position(|o| matches!(o, Out::Event(_)))?;
        match self.out.remove(i) {
            Some(Out::Event(e)) => Some(e),
            _ => None,
        }
    }

    /// Events [`Feed::next_frame`] had to drop because nobody took them (more than 4096).
    pub fn events_dropped(&self) -> u64 {
        self.events_dropped
    }

    /// The C API's poll: the next item as positions (no borrow). A frame must be given
    /// back with [`Feed::release_raw`]; until then its payload stays valid.
    pub(crate) fn next_raw(&mut self) -> Option<Out> {
        if self.out.is_empty() {
            self.pump();
        }
        let o = self.out.pop_front()?;
        if let Out::Frame { leg, raw, .. } = &o {
            self.hand_out(*leg, raw.pos);
        }
        Some(o)
    }

    fn hand_out(&mut self, leg: usize, pos: u64) {
        if let Some(l) = self.slots[leg].as_mut() {
            if let Some(i) = l.find(pos) {
                l.pending[i].fate = Fate::HandedOut;
            }
        }
    }

    /// The payload of a frame from [`Feed::next_raw`].
    ///
    /// # Safety
    /// The frame must have come from `next_raw` and not be released yet.
    pub(crate) unsafe fn payload_raw(&self, leg: usize, raw: &RawFrame) -> Option<&[u8]> {
        let l = self.slots.get(leg)?.as_ref()?;
        // SAFETY: the caller's contract; the frame is Delivered in its leg's pending list.
        Some(unsafe { l.rx.reader.payload(raw) })
    }

    /// The C API's release, in any order: false if `(leg, pos)` is not a frame handed
    /// out and not yet released.
    pub(crate) fn release_raw(&mut self, leg: usize, pos: u64) -> bool {
        let ok = self
            .slots
            .get(leg)
            .and_then(|l| l.as_ref())
            .and_then(|l| l.find(pos).map(|i| l.pending[i].fate == Fate::HandedOut))
            .unwrap_or(false);
        if ok {
            self.consumed(leg, pos);
        }
        ok
    }

    fn keep_event(&mut self, e: FeedEvent) {
        if self.events.len() >= EVENT_QUEUE {
            self.events.pop_front();
            self.events_dropped += 1;
        }
        self.events.push_back(e);
    }

    /// Pump until something is ready, `timeout` passes or the feed is finished.
    fn wait_ready(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut w = runner::Wait::new(WaitKind::Backoff);
        loop {
            if self.out.is_empty() {
                self.pump();
            }
            if !self.out.is_empty() {
                return true;
            }
            if Instant::now() >= deadline || self.finished() {
                return false;
            }
            w.idle();
        }
    }

    /// Close every leg (the close handshake; they do not reconnect).
    pub fn close(&self, code: u16, reason: &str) -> Result<()> {
        let mut first = Ok(());
        for l in self.slots.iter().flatten() {
            if let Err(e) = l.p.close(code, reason) {
                if first.is_ok() && !matches!(l.p.state(), State::Disconnected { .. }) {
                    first = Err(e);
                }
            }
        }
        first
    }

    /// Send a text message on every active leg.
    pub fn send_text_all(&self, text: &str) -> Result<()> {
        for l in self.slots.iter().flatten().filter(|l| !l.retiring) {
            l.p.send_text(text)?;
        }
        Ok(())
    }

    /// Stop every leg and remove the shared memory (also on drop).
    pub fn stop(&mut self) {
        if let Some(o) = self.opening.take() {
            let _ = o.thread.join();
        }
        self.out.clear();
        self.publish_stats();
        for s in self.slots.iter_mut() {
            if let Some(l) = s.take() {
                l.p.stop();
            }
        }
        for t in self.stoppers.drain(..) {
            let _ = t.join();
        }
        self.stats.advance_state(&State::Disconnected {
            reason: DisconnectReason::new(DisconnectKind::Stopped, "stopped by the application"),
        });
    }

    // ------------------------------------------------------------------ the merge step

    /// One round: leg states, rotation, each leg's new frames through the arbiter, the
    /// hold window, releases.
    fn pump(&mut self) {
        let real = now_ns();
        let now = self.seen_until(real);
        self.check_legs(now);
        self.drive_rotation(now);
        let mut ds = std::mem::take(&mut self.decisions);
        for slot in 0..self.slots.len() {
            for _ in 0..BATCH {
                let (raw, key) = {
                    let Some(leg) = self.slots[slot].as_mut() else { break };
                    if leg.retiring {
                        break;
                    }
                    let Some(raw) = leg.rx.next_raw() else { break };
                    if self.bypass {
                        leg.pending.push_back(Pending { raw, key: None, fate: Fate::Delivered });
                        self.out.push_back(Out::Frame { leg: slot, raw, key: None });
                        continue;
                    }
                    // SAFETY: just taken; its bytes are released only once it is
                    // finished (it is pending from here).
                    let key = self.key.key(unsafe { leg.rx.reader.payload(&raw) });
                    leg.pending.push_back(Pending { raw, key, fate: Fate::Given });
                    (raw, key)
                };
                self.rotation.observe(slot, key);
                // Its hold runs from now (when the merge takes it: never shorter than the
                // window after it reached us); expiry goes by what every leg was read up to
                // (`now`, see `seen_until`), so a fill still unread in another leg counts.
                self.arbiter.on_message_at(slot, key, raw.pos, real, now, &mut |d| ds.push(d));
                self.apply(&mut ds);
            }
        }
        self.arbiter.poll(now, &mut |d| ds.push(d));
        self.apply(&mut ds);
        self.decisions = ds;
        for l in self.slots.iter_mut().flatten() {
            l.release();
        }
        self.finish_retired();
        if real.saturating_sub(self.stats_at) >= STATS_EVERY_NS {
            self.stats_at = real;
            self.publish_stats();
        }
    }

    /// The arbiter's clock for this round: now, or, if a leg still has frames the merge
    /// has not taken, when the oldest of them arrived. A hold window must not expire
    /// while the fill may be waiting unread in another leg's ring: after a stall of the
    /// merge (a descheduled consumer) every leg has a backlog, and the first batch of one
    /// leg would otherwise declare gaps that the next leg's batch fills.
    fn seen_until(&mut self, real: u64) -> u64 {
        let mut t = real;
        for l in self.slots.iter_mut().flatten().filter(|l| !l.retiring) {
            if let Some(stamp) = l.rx.reader.next_stamp() {
                let age = real.wrapping_sub(stamp) & STAMP_MASK;
                t = t.min(real - age.min(real));
            }
        }
        t
    }

    /// Decisions → output queue and pending fates.
    fn apply(&mut self, ds: &mut Vec<Decision>) {
        for d in ds.drain(..) {
            match d {
                Decision::Deliver { leg, handle } => {
                    if let Some(l) = self.slots[leg].as_mut() {
                        if let Some(i) = l.find(handle) {
                            let p = &mut l.pending[i];
                            p.fate = Fate::Delivered;
                            self.out.push_back(Out::Frame { leg, raw: p.raw, key: p.key });
                        }
                    }
                }
                Decision::Drop { leg, handle, .. } => {
                    if let Some(l) = self.slots[leg].as_mut() {
                        if let Some(i) = l.find(handle) {
                            l.pending[i].fate = Fate::Done;
                        }
                    }
                }
                Decision::Hold { .. } => {}
                Decision::Gap { stream, from, to } => {
                    self.out.push_back(Out::Event(FeedEvent::Gap { stream, from, to }));
                }
            }
        }
    }

    /// The consumer is done with a delivered frame.
    fn consumed(&mut self, leg: usize, pos: u64) {
        self.delivered += 1;
        if let Some(l) = self.slots[leg].as_mut() {
            if let Some(i) = l.find(pos) {
                l.pending[i].fate = Fate::Done;
            }
            if l.pending.front().is_some_and(|p| p.raw.pos == pos) {
                l.release();
            }
        }
    }

    /// Leg state changes → events and the arbiter's up/down.
    fn check_legs(&mut self, _now: u64) {
        for slot in 0..self.slots.len() {
            let Some(l) = self.slots[slot].as_mut() else { continue };
            if l.ended {
                continue;
            }
            let code = l.stats.state_code();
            let generation = l.stats.get(Counter::Generation);
            let reconnects = l.stats.get(Counter::Reconnects);
            let up = code == 1;
            let mut evs: [Option<FeedEvent>; 3] = [None, None, None];
            if reconnects != l.reconnects || generation != l.generation {
                // Lost and (maybe) back since we looked.
                if l.up {
                    l.up = false;
                    self.arbiter.leg_down(slot);
                    evs[0] = Some(FeedEvent::LegDown {
                        leg: slot,
                        state: State::Reconnecting {
                            attempt: l.stats.get(Counter::ReconnectAttempt).max(1) as u32,
                            cause: l.stats.state_from_cause(),
                        },
                    });
                }
                l.reconnects = reconnects;
                l.generation = generation;
            }
            if up && !l.up {
                l.up = true;
                if !l.retiring {
                    self.arbiter.leg_up(slot);
                }
                evs[1] = Some(FeedEvent::LegUp { leg: slot, generation });
            } else if !up && l.up {
                l.up = false;
                self.arbiter.leg_down(slot);
                evs[1] = Some(FeedEvent::LegDown { leg: slot, state: l.stats.state() });
            }
            if code == 3 {
                l.ended = true;
                if evs[1].is_none() && !l.retiring {
                    evs[2] = Some(FeedEvent::LegDown { leg: slot, state: l.stats.state() });
                }
            }
            for e in evs.into_iter().flatten() {
                self.out.push_back(Out::Event(e));
            }
        }
    }

    fn drive_rotation(&mut self, now: u64) {
        // A new leg being opened on its thread.
        if self.opening.as_ref().is_some_and(|o| o.thread.is_finished()) {
            let o = self.opening.take().expect("checked");
            match o.thread.join() {
                Ok(Ok(p)) => match Leg::new(p) {
                    Ok(l) => {
                        self.opened_at[o.new] = now;
                        self.slots[o.new] = Some(l);
                    }
                    Err(e) => self.abort_opening(o.old, o.new, e.to_string()),
                },
                Ok(Err(e)) => self.abort_opening(o.old, o.new, e.to_string()),
                Err(_) => self.abort_opening(o.old, o.new, "the thread opening it panicked".into()),
            }
        }
        match self.rotation.poll(now) {
            RotationAction::Nothing => {}
            RotationAction::Start => self.start_rotation(now),
            RotationAction::Retire { old, new, in_step } => {
                self.retire(old);
                self.out.push_back(Out::Event(FeedEvent::RotationDone { old, new, in_step }));
            }
            RotationAction::Abort { old, new } => {
                if self.failed_opening.take() == Some(new) {
                    return; // said when the opening failed
                }
                if let Some(o) = self.opening.take() {
                    // Still handshaking: wait for it on a stopper thread.
                    self.stoppers.push(std::thread::spawn(move || {
                        let _ = o.thread.join();
                    }));
                }
                self.retire(new);
                self.out.push_back(Out::Event(FeedEvent::RotationAborted {
                    old,
                    new,
                    why: "not in step within the timeout".into(),
                }));
            }
        }
    }

    fn abort_opening(&mut self, old: usize, new: usize, why: String) {
        // The Rotation core is in Opening: it aborts at its timeout; say it now.
        self.configs[new] = None;
        self.failed_opening = Some(new);
        self.out.push_back(Out::Event(FeedEvent::RotationAborted { old, new, why }));
    }

    fn start_rotation(&mut self, now: u64) {
        if self.opening.is_some() {
            return;
        }
        // The oldest active leg goes; the new one takes a free slot.
        let Some(old) = (0..self.slots.len())
            .filter(|&i| self.slots[i].as_ref().is_some_and(|l| !l.retiring && !l.ended))
            .min_by_key(|&i| self.opened_at[i])
        else {
            return;
        };
        let Some(new) = (0..self.slots.len()).find(|&i| self.slots[i].is_none()) else {
            return; // the spare is still draining a retired leg: the timer asks again
        };
        let Some(base) = self.configs[old].clone() else { return };
        let mut cfg = base;
        cfg.name = Some(leg_name(&self.name, new));
        cfg.quiet = true;
        self.configs[new] = Some(cfg.clone());
        if !self.rotation.begin(old, new, now) {
            return;
        }
        self.opening = Some(Opening {
            old,
            new,
            thread: std::thread::spawn(move || Pipeline::start(cfg)),
        });
        self.out.push_back(Out::Event(FeedEvent::RotationStarted { old, new }));
    }

    /// Stop reading `leg`; it is stopped once its pending frames are finished.
    fn retire(&mut self, leg: usize) {
        if let Some(l) = self.slots[leg].as_mut() {
            l.retiring = true;
            if l.up {
                self.arbiter.leg_down(leg);
            }
            // Frames it had not yet handed in are not needed: the new leg brings them.
        }
    }

    /// Retired legs whose frames are all finished: stop them (on a thread: joining the
    /// stage threads takes a moment) and free the slot.
    fn finish_retired(&mut self) {
        for slot in 0..self.slots.len() {
            let done = self.slots[slot]
                .as_ref()
                .is_some_and(|l| l.retiring && l.pending.iter().all(|p| p.fate == Fate::Done));
            if done {
                if let Some(l) = self.slots[slot].take() {
                    self.configs[slot] = None;
                    self.stoppers.retain(|t| !t.is_finished());
                    self.stoppers.push(std::thread::spawn(move || {
                        let _ = l.p.close(1000, "rotated");
                        l.p.wait_disconnected(Duration::from_millis(500));
                        drop(l);
                    }));
                }
            }
        }
    }

    /// Copy the arbiter's counters into the stats regions now (the merge step does it
    /// every 10 ms, and at stop).
    pub fn publish_stats(&self) {
        for (i, l) in self.slots.iter().enumerate() {
            if let Some(l) = l {
                l.write_stats(self.arbiter.stats(i));
            }
        }
        let s = &self.stats;
        let (g, gs) = self.arbiter.gaps();
        let (r, ra) = self.rotation.counts();
        s.set(Counter::FeedDelivered, self.delivered);
        s.set(Counter::FeedGaps, g);
        s.set(Counter::FeedGapSeqs, gs);
        s.set(Counter::FeedRotations, r);
        s.set(Counter::FeedRotationAborts, ra);
        s.set(Counter::FeedLegsUp, self.slots.iter().flatten().filter(|l| l.up).count() as u64);
        s.set(Counter::FeedHeldNow, self.arbiter.held() as u64);
        // The feed's region also sums its legs (for one `pipeline stat FEED`).
        let mut sum = LegStats::default();
        for i in 0..self.slots.len() {
            let t = self.arbiter.stats(i);
            sum.received += t.received;
            sum.won += t.won;
            sum.dups += t.dups;
            sum.keyless_won += t.keyless_won;
            sum.keyless_dropped += t.keyless_dropped;
            sum.held += t.held;
            sum.ups += t.ups;
            sum.downs += t.downs;
        }
        s.set(Counter::FeedReceived, sum.received);
        s.set(Counter::FeedWon, sum.won);
        s.set(Counter::FeedDups, sum.dups);
        s.set(Counter::FeedKeylessWon, sum.keyless_won);
        s.set(Counter::FeedKeylessDropped, sum.keyless_dropped);
        s.set(Counter::FeedHeld, sum.held);
        s.set(Counter::FeedUps, sum.ups);
        s.set(Counter::FeedDowns, sum.downs);
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.stop();
    }
}
