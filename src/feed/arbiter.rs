//! A/B arbitration: K legs carrying the same feed in, one merged stream out.
//!
//! The arbiter never sees a payload. The caller reads each message's [`Key`] (with a
//! [`KeyExtractor`](super::KeyExtractor)) and hands in `(leg, key, handle)`, where
//! `handle` is an opaque `u64` the caller maps back to the message — on the pipeline,
//! the message's 64-bit stream position in its leg's MSG_INBOX. Out come
//! [`Decision`]s, in the order the merged stream must see them:
//!
//! - `Deliver { leg, handle }`: the next message of the merged stream;
//! - `Drop { leg, handle, reason }`: a duplicate (or a keyless message from a leg that
//!   is not the primary): release it unseen;
//! - `Hold { leg, handle }` (contiguous mode): keep the payload where it is; a later
//!   `Deliver` or `Drop` for the same handle follows, always;
//! - `Gap { stream, from, to }`: the sequence numbers `from..=to` of `stream` came from
//!   no leg within the hold window; the stream continues after them.
//!
//! Every handle passed in gets exactly one final decision (`Deliver` or `Drop`),
//! possibly after a `Hold`. Decisions go to a caller's `FnMut(Decision)`, so nothing is
//! queued or allocated; every table is sized at construction.
//!
//! ## Modes
//! - [`ArbiterMode::Monotonic`]: deliver a message only if its sequence is beyond the
//!   last delivered one of its stream; anything else is dropped as a duplicate. Never
//!   holds, never reports gaps (a jump is simply delivered).
//! - [`ArbiterMode::Contiguous`]: sequences step by one. A message ahead of the next
//!   expected is held until another leg fills the gap or it has been held for
//!   `hold_window_ns`; then a `Gap` names the missing range and delivery continues.
//!   Each held message waits at most the window: when the *earliest-arrived* held
//!   message of a stream expires, the stream is advanced through it, reporting each
//!   missing range in order. When the hold is full, the earliest-arrived held message
//!   is released the same way (with its gaps) to make room.
//!
//! Where a stream starts: in monotonic mode, at its first message. In contiguous mode
//! the first messages of a stream are held like any others (the *start hold*), because
//! the leg that connected first may not bring the lowest sequence first; the stream
//! starts at the lowest sequence held when the earliest of them expires, without a gap
//! event. [`expect`](Arbiter::expect) sets the start explicitly (from a snapshot), and
//! skips the start hold. A message older than the next expected is a duplicate even if
//! no leg delivered it (its place in the stream is past).
//! [`reset_streams`](Arbiter::reset_streams) forgets every stream (for a feed whose
//! sequence restarts).
//!
//! Messages without a key come from the *primary* leg only: the configured one while it
//! is up, otherwise the next up leg after it (wrapping); when no leg is up, the
//! configured one. Keyed messages are accepted from every leg whether it is up or down
//! (a leg's last messages may be processed after its disconnect was noticed).
//!
//! ## Holding payloads
//! A held handle's bytes must stay valid until its final decision. With handles being
//! MSG_INBOX positions, the leg's consumer must not release past the oldest held handle
//! of that leg: [`release_barrier`](Arbiter::release_barrier)`(leg)` returns it (handles
//! of one leg must grow in arrival order for that to be the minimum). The hold is
//! bounded in count (`hold_capacity`) and in time (the window), so a leg's MSG_INBOX is
//! pinned at most that long; with backpressure on, the leg just reads later.
//!
//! ## Lag
//! For every duplicate, the lag behind the winning copy (`now − arrival of the first
//! copy`) goes into the losing leg's [`LagHistogram`]. First arrivals are remembered in
//! a direct-mapped cache of `lag_cache` entries; a duplicate whose first copy has been
//! evicted counts as `lag_unknown`.

use super::{ConfigError, Key};

/// Most legs one arbiter takes.
pub const MAX_LEGS: usize = 16;
/// Buckets of [`LagHistogram`].
pub const LAG_BUCKETS: usize = 24;
const NIL: u32 = u32::MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArbiterMode {
    Monotonic,
    Contiguous,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArbiterConfig {
    /// Number of legs, 1..=16.
    pub legs: usize,
    pub mode: ArbiterMode,
    /// Contiguous mode: how long a message ahead of a gap waits. Default 1 ms.
    pub hold_window_ns: u64,
    /// Contiguous mode: most messages held at once (1..=2^24). Default 4096.
    pub hold_capacity: usize,
    /// Most distinct streams (1..=2^20); the keys of further streams are ignored and
    /// their messages treated as keyless. Default 1024.
    pub max_streams: usize,
    /// The leg keyless messages come from while it is up. Default 0.
    pub primary: usize,
    /// Entries of the first-arrival cache for lag measurement (a power of two, or 0
    /// for no lag measurement). Default 4096.
    pub lag_cache: usize,
}

impl ArbiterConfig {
    pub fn new(legs: usize, mode: ArbiterMode) -> Self {
        ArbiterConfig {
            legs,
            mode,
            hold_window_ns: 1_000_000,
            hold_capacity: 4096,
            max_streams: 1024,
            primary: 0,
            lag_cache: 4096,
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.legs == 0 || self.legs > MAX_LEGS {
            return Err(ConfigError("arbiter: 1 to 16 legs"));
        }
        if self.primary >= self.legs {
            return Err(ConfigError("arbiter: the primary leg does not exist"));
        }
        if self.hold_capacity == 0 || self.hold_capacity > 1 << 24 {
            return Err(ConfigError(
                "arbiter: hold capacity must be 1 to 16M messages",
            ));
        }
        if self.max_streams == 0 || self.max_streams > 1 << 20 {
            return Err(ConfigError("arbiter: max streams must be 1 to 1M"));
        }
        if self.lag_cache != 0 && !self.lag_cache.is_power_of_two() {
            return Err(ConfigError(
                "arbiter: the lag cache size must be a power of two",
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The key is not beyond the last delivered of its stream, or is already held.
    Duplicate,
    /// A keyless message from a leg that is not the primary.
    NotPrimary,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Deliver {
        leg: usize,
        handle: u64,
    },
    Hold {
        leg: usize,
        handle: u64,
    },
    Drop {
        leg: usize,
        handle: u64,
        reason: DropReason,
    },
    /// Sequences `from..=to` of `stream` never arrived within the hold window.
    Gap {
        stream: u32,
        from: u64,
        to: u64,
    },
}

/// How far a leg's duplicates trailed the winning copy. Bucket 0 is < 1 µs, bucket
/// `b` in 1..=22 is `[2^(b−1), 2^b)` µs, bucket 23 is ≥ 2^22 µs (≈ 4.2 s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LagHistogram {
    pub counts: [u64; LAG_BUCKETS],
    pub sum_ns: u64,
    pub max_ns: u64,
}

impl Default for LagHistogram {
    fn default() -> Self {
        LagHistogram {
            counts: [0; LAG_BUCKETS],
            sum_ns: 0,
            max_ns: 0,
        }
    }
}

impl LagHistogram {
    #[inline]
    pub fn bucket_of(lag_ns: u64) -> usize {
        let us = lag_ns / 1000;
        if us == 0 {
            0
        } else {
            ((64 - us.leading_zeros()) as usize).min(LAG_BUCKETS - 1)
        }
    }

    /// Upper bound of bucket `b` in ns (`u64::MAX` for the last).
    pub fn bucket_upper_ns(b: usize) -> u64 {
        if b + 1 >= LAG_BUCKETS {
            u64::MAX
        } else {
            1000u64 << b
        }
    }

    #[inline]
    fn record(&mut self, lag_ns: u64) {
        self.counts[Self::bucket_of(lag_ns)] += 1;
        self.sum_ns = self.sum_ns.saturating_add(lag_ns);
        self.max_ns = self.max_ns.max(lag_ns);
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Upper bound (bucket edge) below which `q` (0..=1) of the samples lie.
    pub fn quantile_upper_ns(&self, q: f64) -> Option<u64> {
        let n = self.total();
        if n == 0 {
            return None;
        }
        let want = ((n as f64) * q).ceil().max(1.0) as u64;
        let mut acc = 0;
        for (b, &c) in self.counts.iter().enumerate() {
            acc += c;
            if acc >= want {
                return Some(Self::bucket_upper_ns(b));
            }
        }
        Some(u64::MAX)
    }
}

/// Counters of one leg. At any time `received == won + dups + keyless_won +
/// keyless_dropped + held_now`; with nothing held, without the last term.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LegStats {
    pub received: u64,
    /// Keyed messages of this leg delivered (it brought them first).
    pub won: u64,
    /// Keyed messages of this leg dropped as duplicates.
    pub dups: u64,
    pub keyless_won: u64,
    pub keyless_dropped: u64,
    /// Messages of this leg that were held at some point (contiguous mode).
    pub held: u64,
    pub ups: u64,
    pub downs: u64,
    pub up: bool,
    pub lag: LagHistogram,
    /// Duplicates whose first copy was no longer in the lag cache.
    pub lag_unknown: u64,
}

#[derive(Debug, Clone, Copy)]
struct Stream {
    id: u32,
    /// Something was delivered (or [`Arbiter::expect`] set the start).
    started: bool,
    /// The next sequence expected (monotonic: the smallest still deliverable).
    next: u64,
    /// Held messages of this stream, ascending by sequence.
    head: u32,
    tail: u32,
    /// The slot last inserted or found (searches start there).
    finger: u32,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    seq: u64,
    handle: u64,
    arrival: u64,
    stream: u32,
    leg: u16,
    live: bool,
    /// Stream list (by sequence).
    s_prev: u32,
    s_next: u32,
    /// Arrival list (all held, oldest first); `a_next` doubles as the free list link.
    a_prev: u32,
    a_next: u32,
}

const EMPTY_SLOT: Slot = Slot {
    seq: 0,
    handle: 0,
    arrival: 0,
    stream: 0,
    leg: 0,
    live: false,
    s_prev: NIL,
    s_next: NIL,
    a_prev: NIL,
    a_next: NIL,
};

#[derive(Debug, Clone, Copy)]
struct Seen {
    stream: u32,
    seq: u64,
    at: u64,
    valid: bool,
}

/// The merged stream of K legs. See the module comment.
#[derive(Debug)]
pub struct Arbiter {
    cfg: ArbiterConfig,
    legs: [LegStats; MAX_LEGS],
    active_primary: usize,
    /// Stream table: `index[h]` is an index into `streams` or NIL (open addressing).
    index: Box<[u32]>,
    streams: Vec<Stream>, // capacity reserved at construction, never grows past it
    slots: Box<[Slot]>,
    free: u32,
    a_head: u32,
    a_tail: u32,
    held_now: usize,
    seen: Box<[Seen]>,
    clock: u64,
    /// When the message being judged arrived (`on_message_at`; else the clock): its
    /// hold's start and its lag sample.
    arrival: u64,
    gaps: u64,
    gap_seqs: u64,
    stream_overflow: u64,
}

impl Arbiter {
    pub fn new(cfg: ArbiterConfig) -> Result<Self, ConfigError> {
        cfg.validate()?;
        let index_len = (cfg.max_streams * 2).next_power_of_two();
        let hold = if cfg.mode == ArbiterMode::Contiguous {
            cfg.hold_capacity
        } else {
            0
        };
        let mut slots = vec![EMPTY_SLOT; hold].into_boxed_slice();
        for (i, s) in slots.iter_mut().enumerate() {
            s.a_next = if i + 1 < hold { (i + 1) as u32 } else { NIL };
        }
        let mut legs = [LegStats::default(); MAX_LEGS];
        for l in legs.iter_mut() {
            l.up = false;
        }
        Ok(Arbiter {
            cfg,
            legs,
            active_primary: cfg.primary,
            index: vec![NIL; index_len].into_boxed_slice(),
            streams: Vec::with_capacity(cfg.max_streams),
            slots,
            free: if hold > 0 { 0 } else { NIL },
            a_head: NIL,
            a_tail: NIL,
            held_now: 0,
            seen: vec![
                Seen {
                    stream: 0,
                    seq: 0,
                    at: 0,
                    valid: false
                };
                cfg.lag_cache
            ]
            .into_boxed_slice(),
            clock: 0,
            arrival: 0,
            gaps: 0,
            gap_seqs: 0,
            stream_overflow: 0,
        })
    }

    pub fn config(&self) -> &ArbiterConfig {
        &self.cfg
    }
    pub fn stats(&self, leg: usize) -> &LegStats {
        &self.legs[leg]
    }
    /// Messages held right now.
    pub fn held(&self) -> usize {
        self.held_now
    }
    /// Gap events so far, and the sequence numbers they named.
    pub fn gaps(&self) -> (u64, u64) {
        (self.gaps, self.gap_seqs)
    }
    /// Keys ignored because `max_streams` streams were already known.
    pub fn stream_overflow(&self) -> u64 {
        self.stream_overflow
    }
    /// The leg keyless messages are taken from now.
    pub fn primary(&self) -> usize {
        self.active_primary
    }
    /// The next sequence the arbiter expects (would deliver) on `stream`.
    pub fn next_expected(&self, stream: u32) -> Option<u64> {
        let i = self.find_stream(stream)?;
        let s = &self.streams[i as usize];
        s.started.then_some(s.next)
    }

    /// Set where `stream` starts (or resumes): `next` is the first sequence to deliver,
    /// e.g. from a snapshot (Binance: `lastUpdateId + 1`). Held messages of the stream
    /// below it are dropped, those from it on delivered as far as they are contiguous.
    /// Returns false if the stream table is full.
    pub fn expect(&mut self, stream: u32, next: u64, out: &mut impl FnMut(Decision)) -> bool {
        let Some(si) = self.stream_index(stream) else {
            return false;
        };
        {
            let st = &mut self.streams[si as usize];
            st.started = true;
            st.next = next;
        }
        loop {
            let st = self.streams[si as usize];
            if st.head == NIL || self.slots[st.head as usize].seq >= next {
                break;
            }
            let h = self.remove(st.head);
            let leg = usize::from(h.leg);
            self.legs[leg].dups += 1;
            self.legs[leg].lag_unknown += 1;
            out(Decision::Drop {
                leg,
                handle: h.handle,
                reason: DropReason::Duplicate,
            });
        }
        self.flush_stream(si, out);
        true
    }

    fn choose_primary(&mut self) {
        let k = self.cfg.legs;
        self.active_primary = (0..k)
            .map(|i| (self.cfg.primary + i) % k)
            .find(|&l| self.legs[l].up)
            .unwrap_or(self.cfg.primary);
    }

    /// Leg `leg` is connected and ready. Panics if `leg` is out of range.
    pub fn leg_up(&mut self, leg: usize) {
        let l = &mut self.legs[..self.cfg.legs][leg];
        if !l.up {
            l.up = true;
            l.ups += 1;
        }
        self.choose_primary();
    }

    /// Leg `leg` went down. Its held messages stay held (their payloads must stay valid).
    pub fn leg_down(&mut self, leg: usize) {
        let l = &mut self.legs[..self.cfg.legs][leg];
        if l.up {
            l.up = false;
            l.downs += 1;
        }
        self.choose_primary();
    }

    /// When `poll` must next run to honour the hold window.
    pub fn next_deadline(&self) -> Option<u64> {
        (self.a_head != NIL).then(|| {
            self.slots[self.a_head as usize]
                .arrival
                .saturating_add(self.cfg.hold_window_ns)
        })
    }

    /// The smallest handle of `leg` still held (its payload must stay valid); all of the
    /// leg's handles below it may be released. Handles of a leg must grow with arrival.
    pub fn release_barrier(&self, leg: usize) -> Option<u64> {
        let mut i = self.a_head;
        while i != NIL {
            let s = &self.slots[i as usize];
            if usize::from(s.leg) == leg {
                return Some(s.handle);
            }
            i = s.a_next;
        }
        None
    }

    #[inline]
    fn hash(stream: u32) -> usize {
        (u64::from(stream).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as usize
    }

    fn find_stream(&self, id: u32) -> Option<u32> {
        let mask = self.index.len() - 1;
        let mut h = Self::hash(id) & mask;
        loop {
            let i = self.index[h];
            if i == NIL {
                return None;
            }
            if self.streams[i as usize].id == id {
                return Some(i);
            }
            h = (h + 1) & mask;
        }
    }

    /// The stream's index, creating it if there is room.
    #[inline]
    fn stream_index(&mut self, id: u32) -> Option<u32> {
        let mask = self.index.len() - 1;
        let mut h = Self::hash(id) & mask;
        loop {
            let i = self.index[h];
            if i == NIL {
                break;
            }
            if self.streams[i as usize].id == id {
                return Some(i);
            }
            h = (h + 1) & mask;
        }
        if self.streams.len() == self.cfg.max_streams {
            return None;
        }
        let i = self.streams.len() as u32;
        // Within the capacity reserved in `new`: no allocation.
        self.streams.push(Stream {
            id,
            started: false,
            next: 0,
            head: NIL,
            tail: NIL,
            finger: NIL,
        });
        self.index[h] = i;
        Some(i)
    }

    #[inline]
    fn seen_slot(&self, key: Key) -> usize {
        (key.seq
            .wrapping_add(u64::from(key.stream).wrapping_mul(0x9e37_79b9_7f4a_7c15))
            as usize)
            & (self.seen.len() - 1)
    }

    #[inline]
    fn remember(&mut self, key: Key, at: u64) {
        if !self.seen.is_empty() {
            let i = self.seen_slot(key);
            self.seen[i] = Seen {
                stream: key.stream,
                seq: key.seq,
                at,
                valid: true,
            };
        }
    }

    #[inline]
    fn lag_of_dup(&mut self, leg: usize, key: Key, first_at: Option<u64>) {
        let now = self.arrival;
        let at = first_at.or_else(|| {
            if self.seen.is_empty() {
                return None;
            }
            let s = self.seen[self.seen_slot(key)];
            (s.valid && s.stream == key.stream && s.seq == key.seq).then_some(s.at)
        });
        let l = &mut self.legs[leg];
        match at {
            Some(t) => l.lag.record(now.saturating_sub(t)),
            None => l.lag_unknown += 1,
        }
    }

    #[inline]
    fn deliver(
        &mut self,
        leg: usize,
        handle: u64,
        key: Key,
        first_at: u64,
        out: &mut impl FnMut(Decision),
    ) {
        self.legs[leg].won += 1;
        self.remember(key, first_at);
        out(Decision::Deliver { leg, handle });
    }

    #[inline]
    fn drop_dup(
        &mut self,
        leg: usize,
        handle: u64,
        key: Key,
        first_at: Option<u64>,
        out: &mut impl FnMut(Decision),
    ) {
        self.legs[leg].dups += 1;
        self.lag_of_dup(leg, key, first_at);
        out(Decision::Drop {
            leg,
            handle,
            reason: DropReason::Duplicate,
        });
    }

    fn keyless(&mut self, leg: usize, handle: u64, out: &mut impl FnMut(Decision)) {
        if leg == self.active_primary {
            self.legs[leg].keyless_won += 1;
            out(Decision::Deliver { leg, handle });
        } else {
            self.legs[leg].keyless_dropped += 1;
            out(Decision::Drop {
                leg,
                handle,
                reason: DropReason::NotPrimary,
            });
        }
    }

    /// One message from `leg` (its key, if it has one, and the caller's handle), received
    /// at `now_ns`. Decisions for it — and for held messages it releases or that expire
    /// by `now_ns` — go to `out` in stream order. Panics if `leg` is out of range.
    pub fn on_message(
        &mut self,
        leg: usize,
        key: Option<Key>,
        handle: u64,
        now_ns: u64,
        out: &mut impl FnMut(Decision),
    ) {
        let arrival = self.clock.max(now_ns);
        self.on_message_at(leg, key, handle, arrival, now_ns, out)
    }

    /// [`on_message`](Self::on_message) for a message that arrived at `arrival_ns`,
    /// judged at `now_ns`: its hold window runs from its arrival, while expiry (of it
    /// and of the others) goes by `now_ns`. A caller merging queued streams passes each
    /// message's own arrival stamp and, as `now_ns`, the time up to which it has read
    /// every leg, so a fill still queued in another leg is never declared missing.
    pub fn on_message_at(
        &mut self,
        leg: usize,
        key: Option<Key>,
        handle: u64,
        arrival_ns: u64,
        now_ns: u64,
        out: &mut impl FnMut(Decision),
    ) {
        assert!(
            leg < self.cfg.legs,
            "arbiter: leg {leg} of {}",
            self.cfg.legs
        );
        self.clock = self.clock.max(now_ns);
        self.arrival = arrival_ns;
        self.legs[leg].received += 1;
        let Some(key) = key else {
            self.keyless(leg, handle, out);
            self.expire(out);
            return;
        };
        let Some(si) = self.stream_index(key.stream) else {
            self.stream_overflow += 1;
            self.keyless(leg, handle, out);
            self.expire(out);
            return;
        };
        match self.cfg.mode {
            ArbiterMode::Monotonic => {
                let s = &mut self.streams[si as usize];
                if !s.started || key.seq >= s.next {
                    s.started = true;
                    s.next = key.seq.saturating_add(1);
                    let now = self.arrival;
                    self.deliver(leg, handle, key, now, out);
                } else {
                    self.drop_dup(leg, handle, key, None, out);
                }
            }
            ArbiterMode::Contiguous => {
                self.contiguous(leg, si, key, handle, out);
                self.expire(out);
            }
        }
    }

    fn contiguous(
        &mut self,
        leg: usize,
        si: u32,
        key: Key,
        handle: u64,
        out: &mut impl FnMut(Decision),
    ) {
        let now = self.arrival;
        let s = self.streams[si as usize];
        // A stream that has not started holds its first messages too (the start hold):
        // another leg may bring a lower sequence within the window; the stream starts at
        // the lowest one held when the earliest of them expires.
        if s.started {
            if key.seq < s.next {
                self.drop_dup(leg, handle, key, None, out);
                return;
            }
            if key.seq == s.next {
                self.streams[si as usize].next = key.seq.saturating_add(1);
                self.deliver(leg, handle, key, now, out);
                self.flush_stream(si, out);
                return;
            }
        }
        // Ahead of the next expected (or not started yet): already held?
        let (pos, found) = self.search(si, key.seq);
        if found {
            let first_at = self.slots[pos as usize].arrival;
            self.drop_dup(leg, handle, key, Some(first_at), out);
            return;
        }
        if self.free == NIL {
            // Full: release the earliest-arrived held message (with its gaps), then
            // judge this message again against the advanced stream.
            let oldest = self.a_head;
            self.expire_through(oldest, out);
            self.contiguous(leg, si, key, handle, out);
            return;
        }
        self.insert(si, pos, key.seq, leg, handle, now);
        self.legs[leg].held += 1;
        out(Decision::Hold { leg, handle });
    }

    /// Find `seq` in the stream's held list: `(slot, true)` if held, else `(neighbour,
    /// false)` where `neighbour` is the slot to insert after (NIL = at the head).
    fn search(&mut self, si: u32, seq: u64) -> (u32, bool) {
        let st = self.streams[si as usize];
        let mut c = if st.finger != NIL { st.finger } else { st.tail };
        if c == NIL {
            return (NIL, false);
        }
        let r = loop {
            let cs = self.slots[c as usize];
            if cs.seq == seq {
                break (c, true);
            }
            if cs.seq < seq {
                if cs.s_next == NIL || self.slots[cs.s_next as usize].seq > seq {
                    break (c, false);
                }
                c = cs.s_next;
            } else {
                if cs.s_prev == NIL {
                    break (NIL, false);
                }
                c = cs.s_prev;
                if self.slots[c as usize].seq < seq {
                    break (c, false);
                }
            }
        };
        if r.0 != NIL {
            self.streams[si as usize].finger = r.0;
        }
        r
    }

    fn insert(&mut self, si: u32, after: u32, seq: u64, leg: usize, handle: u64, now: u64) {
        let n = self.free;
        self.free = self.slots[n as usize].a_next;
        let st = &mut self.streams[si as usize];
        let next = if after == NIL {
            st.head
        } else {
            self.slots[after as usize].s_next
        };
        if after == NIL {
            st.head = n;
        } else {
            self.slots[after as usize].s_next = n;
        }
        if next == NIL {
            st.tail = n;
        } else {
            self.slots[next as usize].s_prev = n;
        }
        st.finger = n;
        let a_prev = self.a_tail;
        if a_prev == NIL {
            self.a_head = n;
        } else {
            self.slots[a_prev as usize].a_next = n;
        }
        self.a_tail = n;
        self.slots[n as usize] = Slot {
            seq,
            handle,
            arrival: now,
            stream: si,
            leg: leg as u16,
            live: true,
            s_prev: after,
            s_next: next,
            a_prev,
            a_next: NIL,
        };
        self.held_now += 1;
    }

    fn remove(&mut self, n: u32) -> Slot {
        let s = self.slots[n as usize];
        debug_assert!(s.live);
        let st = &mut self.streams[s.stream as usize];
        if s.s_prev == NIL {
            st.head = s.s_next;
        } else {
            self.slots[s.s_prev as usize].s_next = s.s_next;
        }
        if s.s_next == NIL {
            st.tail = s.s_prev;
        } else {
            self.slots[s.s_next as usize].s_prev = s.s_prev;
        }
        if st.finger == n {
            st.finger = if s.s_next != NIL { s.s_next } else { s.s_prev };
        }
        if s.a_prev == NIL {
            self.a_head = s.a_next;
        } else {
            self.slots[s.a_prev as usize].a_next = s.a_next;
        }
        if s.a_next == NIL {
            self.a_tail = s.a_prev;
        } else {
            self.slots[s.a_next as usize].a_prev = s.a_prev;
        }
        self.slots[n as usize] = Slot {
            a_next: self.free,
            ..EMPTY_SLOT
        };
        self.free = n;
        self.held_now -= 1;
        s
    }

    /// Deliver the stream's held messages that are next in sequence.
    fn flush_stream(&mut self, si: u32, out: &mut impl FnMut(Decision)) {
        loop {
            let st = self.streams[si as usize];
            if !st.started || st.head == NIL || self.slots[st.head as usize].seq != st.next {
                return;
            }
            let s = self.remove(st.head);
            self.streams[si as usize].next = s.seq.saturating_add(1);
            let id = st.id;
            self.deliver(
                usize::from(s.leg),
                s.handle,
                Key::new(id, s.seq),
                s.arrival,
                out,
            );
        }
    }

    /// Advance slot `e`'s stream through `e`: each missing range before a held message
    /// becomes a `Gap`, each held message in between is delivered.
    fn expire_through(&mut self, e: u32, out: &mut impl FnMut(Decision)) {
        let target = self.slots[e as usize].seq;
        let si = self.slots[e as usize].stream;
        loop {
            let st = self.streams[si as usize];
            if st.head == NIL || (st.started && st.next > target) {
                return;
            }
            let h = self.slots[st.head as usize];
            let from = st.next;
            if st.started && h.seq > from {
                self.gaps += 1;
                self.gap_seqs = self.gap_seqs.saturating_add(h.seq - from);
                out(Decision::Gap {
                    stream: st.id,
                    from,
                    to: h.seq - 1,
                });
            }
            let s = self.remove(st.head);
            let stm = &mut self.streams[si as usize];
            stm.started = true;
            stm.next = s.seq.saturating_add(1);
            self.deliver(
                usize::from(s.leg),
                s.handle,
                Key::new(st.id, s.seq),
                s.arrival,
                out,
            );
            self.flush_stream(si, out);
        }
    }

    fn expire(&mut self, out: &mut impl FnMut(Decision)) {
        while self.a_head != NIL {
            let h = self.a_head;
            if self.slots[h as usize]
                .arrival
                .saturating_add(self.cfg.hold_window_ns)
                > self.clock
            {
                return;
            }
            self.expire_through(h, out);
        }
    }

    /// Release held messages whose window has passed by `now_ns`. Call when
    /// [`next_deadline`](Self::next_deadline) is due (messages arriving do it too).
    pub fn poll(&mut self, now_ns: u64, out: &mut impl FnMut(Decision)) {
        self.clock = self.clock.max(now_ns);
        self.expire(out);
    }

    /// Release everything held now, with its gaps (e.g. before stopping).
    pub fn flush(&mut self, out: &mut impl FnMut(Decision)) {
        while self.a_head != NIL {
            let h = self.a_head;
            self.expire_through(h, out);
        }
    }

    /// Flush, then forget every stream: the next message of each stream starts it anew.
    pub fn reset_streams(&mut self, out: &mut impl FnMut(Decision)) {
        self.flush(out);
        self.streams.clear();
        for i in self.index.iter_mut() {
            *i = NIL;
        }
        for s in self.seen.iter_mut() {
            s.valid = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: u64 = 1000;

    fn run(a: &mut Arbiter, leg: usize, seq: Option<u64>, h: u64, now: u64) -> Vec<Decision> {
        let mut v = Vec::new();
        a.on_message(leg, seq.map(|s| Key::new(0, s)), h, now, &mut |d| v.push(d));
        v
    }

    fn contiguous(legs: usize) -> Arbiter {
        Arbiter::new(ArbiterConfig::new(legs, ArbiterMode::Contiguous)).unwrap()
    }

    fn start(a: &mut Arbiter, stream: u32, next: u64) {
        assert!(a.expect(stream, next, &mut |d| panic!("{d:?}")));
    }

    use Decision::*;

    #[test]
    fn monotonic_dedups() {
        let mut a = Arbiter::new(ArbiterConfig::new(2, ArbiterMode::Monotonic)).unwrap();
        assert_eq!(
            run(&mut a, 0, Some(1), 10, 0),
            [Deliver { leg: 0, handle: 10 }]
        );
        assert_eq!(
            run(&mut a, 1, Some(1), 20, 5 * US),
            [Drop {
                leg: 1,
                handle: 20,
                reason: DropReason::Duplicate
            }]
        );
        assert_eq!(
            run(&mut a, 1, Some(3), 21, 6 * US),
            [Deliver { leg: 1, handle: 21 }],
            "jumps are delivered"
        );
        assert_eq!(
            run(&mut a, 0, Some(2), 11, 7 * US),
            [Drop {
                leg: 0,
                handle: 11,
                reason: DropReason::Duplicate
            }]
        );
        assert_eq!(a.stats(1).lag.total(), 1);
        assert_eq!(a.stats(1).lag.max_ns, 5 * US);
        assert_eq!(
            a.stats(0).lag_unknown,
            1,
            "2 was never delivered: no first copy"
        );
        assert_eq!(a.held(), 0);
        assert_eq!(a.next_deadline(), None);
    }

    #[test]
    fn contiguous_fill_from_other_leg() {
        let mut a = contiguous(2);
        start(&mut a, 0, 100);
        assert_eq!(
            run(&mut a, 0, Some(100), 1, 0),
            [Deliver { leg: 0, handle: 1 }]
        );
        assert_eq!(
            run(&mut a, 0, Some(102), 2, 10),
            [Hold { leg: 0, handle: 2 }]
        );
        assert_eq!(
            run(&mut a, 0, Some(103), 3, 20),
            [Hold { leg: 0, handle: 3 }]
        );
        assert_eq!(a.release_barrier(0), Some(2));
        assert_eq!(a.next_deadline(), Some(10 + 1_000_000));
        assert_eq!(
            run(&mut a, 1, Some(102), 50, 30),
            [Drop {
                leg: 1,
                handle: 50,
                reason: DropReason::Duplicate
            }],
            "a copy of a held message is a duplicate"
        );
        assert_eq!(
            run(&mut a, 1, Some(101), 51, 40),
            [
                Deliver { leg: 1, handle: 51 },
                Deliver { leg: 0, handle: 2 },
                Deliver { leg: 0, handle: 3 }
            ]
        );
        assert_eq!(a.release_barrier(0), None);
        assert_eq!(
            run(&mut a, 1, Some(103), 52, 50),
            [Drop {
                leg: 1,
                handle: 52,
                reason: DropReason::Duplicate
            }]
        );
        assert_eq!(a.gaps(), (0, 0));
        assert_eq!(a.stats(1).lag.total(), 2);
        assert_eq!(
            a.stats(1).lag.max_ns,
            30,
            "103 first came at 20, the copy at 50"
        );
    }

    #[test]
    fn contiguous_gap_after_window() {
        let mut a = contiguous(2);
        start(&mut a, 0, 1);
        run(&mut a, 0, Some(1), 1, 0);
        assert_eq!(
            run(&mut a, 0, Some(4), 4, 100),
            [Hold { leg: 0, handle: 4 }]
        );
        assert_eq!(
            run(&mut a, 0, Some(7), 7, 200),
            [Hold { leg: 0, handle: 7 }]
        );
        let mut v = Vec::new();
        a.poll(100 + 999_999, &mut |d| v.push(d));
        assert!(v.is_empty(), "not before the window");
        a.poll(100 + 1_000_000, &mut |d| v.push(d));
        assert_eq!(
            v,
            [
                Gap {
                    stream: 0,
                    from: 2,
                    to: 3
                },
                Deliver { leg: 0, handle: 4 }
            ]
        );
        v.clear();
        // 5 arrives late from the other leg within 7's window: delivered.
        assert_eq!(
            run(&mut a, 1, Some(5), 5, 300),
            [Deliver { leg: 1, handle: 5 }]
        );
        // A stale clock does not expire anything.
        a.poll(0, &mut |d| v.push(d));
        assert!(v.is_empty());
        a.poll(200 + 1_000_000, &mut |d| v.push(d));
        assert_eq!(
            v,
            [
                Gap {
                    stream: 0,
                    from: 6,
                    to: 6
                },
                Deliver { leg: 0, handle: 7 }
            ]
        );
        assert_eq!(a.gaps(), (2, 3));
        // A message from inside a reported gap is late: dropped.
        assert_eq!(
            run(&mut a, 1, Some(3), 3, 2_000_000),
            [Drop {
                leg: 1,
                handle: 3,
                reason: DropReason::Duplicate
            }]
        );
    }

    #[test]
    fn earliest_arrival_expires_first() {
        let mut a = contiguous(1);
        start(&mut a, 0, 1);
        run(&mut a, 0, Some(1), 1, 0);
        run(&mut a, 0, Some(10), 10, 0); // arrives first
        run(&mut a, 0, Some(5), 5, 500_000); // arrives later, lower sequence
        let mut v = Vec::new();
        a.poll(1_000_000, &mut |d| v.push(d));
        assert_eq!(
            v,
            [
                Gap {
                    stream: 0,
                    from: 2,
                    to: 4
                },
                Deliver { leg: 0, handle: 5 },
                Gap {
                    stream: 0,
                    from: 6,
                    to: 9
                },
                Deliver { leg: 0, handle: 10 },
            ]
        );
        assert_eq!(a.held(), 0);
    }

    #[test]
    fn full_hold_releases_oldest_with_gap() {
        let mut cfg = ArbiterConfig::new(2, ArbiterMode::Contiguous);
        cfg.hold_capacity = 3;
        let mut a = Arbiter::new(cfg).unwrap();
        start(&mut a, 0, 1);
        run(&mut a, 0, Some(1), 1, 0);
        for s in [3, 4, 5] {
            assert_eq!(run(&mut a, 0, Some(s), s, s), [Hold { leg: 0, handle: s }]);
        }
        assert_eq!(a.held(), 3);
        assert_eq!(
            run(&mut a, 0, Some(7), 7, 10),
            [
                Gap {
                    stream: 0,
                    from: 2,
                    to: 2
                },
                Deliver { leg: 0, handle: 3 },
                Deliver { leg: 0, handle: 4 },
                Deliver { leg: 0, handle: 5 },
                Hold { leg: 0, handle: 7 },
            ]
        );
        // Full again with far-ahead keys: the new one may become deliverable after the
        // forced release.
        run(&mut a, 0, Some(9), 9, 11);
        run(&mut a, 0, Some(11), 11, 12);
        assert_eq!(
            run(&mut a, 0, Some(8), 8, 13),
            [
                Gap {
                    stream: 0,
                    from: 6,
                    to: 6
                },
                Deliver { leg: 0, handle: 7 },
                Deliver { leg: 0, handle: 8 },
                Deliver { leg: 0, handle: 9 }
            ]
        );
        assert_eq!(a.held(), 1);
    }

    #[test]
    fn zero_window_never_waits() {
        let mut cfg = ArbiterConfig::new(1, ArbiterMode::Contiguous);
        cfg.hold_window_ns = 0;
        let mut a = Arbiter::new(cfg).unwrap();
        start(&mut a, 0, 1);
        run(&mut a, 0, Some(1), 1, 5);
        assert_eq!(
            run(&mut a, 0, Some(3), 3, 5),
            [
                Hold { leg: 0, handle: 3 },
                Gap {
                    stream: 0,
                    from: 2,
                    to: 2
                },
                Deliver { leg: 0, handle: 3 }
            ]
        );
    }

    #[test]
    fn keyless_from_primary_only() {
        let mut cfg = ArbiterConfig::new(3, ArbiterMode::Monotonic);
        cfg.primary = 1;
        let mut a = Arbiter::new(cfg).unwrap();
        assert_eq!(a.primary(), 1, "no leg up: the configured one");
        for l in 0..3 {
            a.leg_up(l);
        }
        assert_eq!(run(&mut a, 1, None, 1, 0), [Deliver { leg: 1, handle: 1 }]);
        assert_eq!(
            run(&mut a, 0, None, 2, 0),
            [Drop {
                leg: 0,
                handle: 2,
                reason: DropReason::NotPrimary
            }]
        );
        a.leg_down(1);
        assert_eq!(a.primary(), 2, "the next up leg after the primary");
        a.leg_down(2);
        assert_eq!(a.primary(), 0, "wrapping");
        assert_eq!(run(&mut a, 0, None, 3, 0), [Deliver { leg: 0, handle: 3 }]);
        a.leg_up(1);
        assert_eq!(a.primary(), 1, "back to the configured primary");
        a.leg_up(1);
        let s = a.stats(1);
        assert_eq!(
            (s.ups, s.downs, s.up),
            (2, 1, true),
            "a repeated up is not a transition"
        );
        assert_eq!(a.stats(0).keyless_dropped, 1);
    }

    #[test]
    fn streams_are_independent_and_bounded() {
        let mut cfg = ArbiterConfig::new(2, ArbiterMode::Contiguous);
        cfg.max_streams = 2;
        let mut a = Arbiter::new(cfg).unwrap();
        start(&mut a, 7, 1);
        start(&mut a, 9, 1);
        let mut v = Vec::new();
        let mut m = |a: &mut Arbiter, leg, s, q, h| {
            v.clear();
            a.on_message(leg, Some(Key::new(s, q)), h, 0, &mut |d| v.push(d));
            v.clone()
        };
        assert_eq!(m(&mut a, 0, 7, 1, 1), [Deliver { leg: 0, handle: 1 }]);
        assert_eq!(
            m(&mut a, 0, 9, 1, 2),
            [Deliver { leg: 0, handle: 2 }],
            "same seq, other stream"
        );
        assert_eq!(m(&mut a, 0, 7, 3, 3), [Hold { leg: 0, handle: 3 }]);
        assert_eq!(m(&mut a, 0, 9, 2, 4), [Deliver { leg: 0, handle: 4 }]);
        assert_eq!(
            m(&mut a, 1, 7, 2, 5),
            [Deliver { leg: 1, handle: 5 }, Deliver { leg: 0, handle: 3 }]
        );
        // A third stream does not fit: treated as keyless (leg 0 is the primary).
        assert_eq!(
            m(&mut a, 1, 11, 1, 6),
            [Drop {
                leg: 1,
                handle: 6,
                reason: DropReason::NotPrimary
            }]
        );
        assert_eq!(m(&mut a, 0, 11, 1, 7), [Deliver { leg: 0, handle: 7 }]);
        assert_eq!(a.stream_overflow(), 2);
        assert_eq!(a.next_expected(7), Some(4));
        assert_eq!(a.next_expected(11), None);
    }

    #[test]
    fn reset_and_flush() {
        let mut a = contiguous(1);
        start(&mut a, 0, 10);
        run(&mut a, 0, Some(10), 1, 0);
        run(&mut a, 0, Some(12), 2, 0);
        let mut v = Vec::new();
        a.reset_streams(&mut |d| v.push(d));
        assert_eq!(
            v,
            [
                Gap {
                    stream: 0,
                    from: 11,
                    to: 11
                },
                Deliver { leg: 0, handle: 2 }
            ]
        );
        assert_eq!(a.next_expected(0), None);
        // A restarted sequence starts afresh (through the start hold).
        assert_eq!(run(&mut a, 0, Some(1), 3, 0), [Hold { leg: 0, handle: 3 }]);
        v.clear();
        a.flush(&mut |d| v.push(d));
        assert_eq!(v, [Deliver { leg: 0, handle: 3 }]);
    }

    #[test]
    fn start_hold_takes_the_lowest_sequence_within_the_window() {
        let mut a = contiguous(2);
        assert_eq!(run(&mut a, 0, Some(5), 5, 0), [Hold { leg: 0, handle: 5 }]);
        assert_eq!(
            run(&mut a, 1, Some(4), 14, 100),
            [Hold { leg: 1, handle: 14 }]
        );
        assert_eq!(
            run(&mut a, 0, Some(6), 6, 200),
            [Hold { leg: 0, handle: 6 }]
        );
        assert_eq!(
            run(&mut a, 1, Some(5), 15, 300),
            [Drop {
                leg: 1,
                handle: 15,
                reason: DropReason::Duplicate
            }]
        );
        assert_eq!(a.next_expected(0), None);
        let mut v = Vec::new();
        a.poll(999_999, &mut |d| v.push(d));
        assert!(v.is_empty());
        a.poll(1_000_000, &mut |d| v.push(d));
        assert_eq!(
            v,
            [
                Deliver { leg: 1, handle: 14 },
                Deliver { leg: 0, handle: 5 },
                Deliver { leg: 0, handle: 6 }
            ]
        );
        assert_eq!(a.next_expected(0), Some(7));
        assert_eq!(a.gaps(), (0, 0), "the start is not a gap");
        assert_eq!(
            run(&mut a, 1, Some(7), 17, 1_000_001),
            [Deliver { leg: 1, handle: 17 }]
        );
    }

    #[test]
    fn expect_sets_the_start_and_drops_held_below_it() {
        let mut a = contiguous(2);
        run(&mut a, 0, Some(3), 3, 0);
        run(&mut a, 0, Some(5), 5, 0);
        run(&mut a, 0, Some(6), 6, 0);
        let mut v = Vec::new();
        assert!(a.expect(0, 5, &mut |d| v.push(d)));
        assert_eq!(
            v,
            [
                Drop {
                    leg: 0,
                    handle: 3,
                    reason: DropReason::Duplicate
                },
                Deliver { leg: 0, handle: 5 },
                Deliver { leg: 0, handle: 6 }
            ]
        );
        assert_eq!(a.held(), 0);
        let s = a.stats(0);
        assert_eq!(s.won + s.dups, s.received);
    }

    #[test]
    fn histogram_buckets() {
        assert_eq!(LagHistogram::bucket_of(0), 0);
        assert_eq!(LagHistogram::bucket_of(999), 0);
        assert_eq!(LagHistogram::bucket_of(1000), 1);
        assert_eq!(LagHistogram::bucket_of(1999), 1);
        assert_eq!(LagHistogram::bucket_of(2000), 2);
        assert_eq!(LagHistogram::bucket_of(1_000_000), 10);
        assert_eq!(LagHistogram::bucket_of(u64::MAX), LAG_BUCKETS - 1);
        for b in 0..LAG_BUCKETS - 1 {
            assert_eq!(
                LagHistogram::bucket_of(LagHistogram::bucket_upper_ns(b) - 1),
                b
            );
            assert_eq!(
                LagHistogram::bucket_of(LagHistogram::bucket_upper_ns(b)),
                b + 1
            );
        }
        let mut h = LagHistogram::default();
        for l in [500, 1500, 1500, 3000] {
            h.record(l);
        }
        assert_eq!(h.quantile_upper_ns(0.5), Some(2000));
        assert_eq!(h.quantile_upper_ns(1.0), Some(4000));
    }

    #[test]
    fn config_checked() {
        let ok = ArbiterConfig::new(2, ArbiterMode::Contiguous);
        assert!(ok.validate().is_ok());
        for bad in [
            ArbiterConfig { legs: 0, ..ok },
            ArbiterConfig { legs: 17, ..ok },
            ArbiterConfig { primary: 2, ..ok },
            ArbiterConfig {
                hold_capacity: 0,
                ..ok
            },
            ArbiterConfig {
                max_streams: 0,
                ..ok
            },
            ArbiterConfig {
                lag_cache: 1000,
                ..ok
            },
        ] {
            assert!(Arbiter::new(bad).is_err(), "{bad:?}");
        }
        let mut a = Arbiter::new(ArbiterConfig {
            lag_cache: 0,
            mode: ArbiterMode::Monotonic,
            ..ok
        })
        .unwrap();
        run(&mut a, 0, Some(1), 1, 0);
        run(&mut a, 1, Some(1), 2, 0);
        assert_eq!(a.stats(1).lag_unknown, 1);
    }
}
