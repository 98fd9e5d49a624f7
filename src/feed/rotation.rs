//! Planned rotation, make before break: open a new leg, wait until it delivers *in step*
//! with the old one, then retire the old one.
//!
//! ```text
//!   Idle ──begin(old, new)──► Opening ──keys overlap──► InStep ──poll──► Retire{old} ─► Idle
//!     ▲  poll: Start (timer           │ timeout: Abort{new} (or Retire{in_step: false}
//!     │  or request())                │ when forced)                      │
//!     └───────────────────────────────┴───────────────────────────────────┘
//! ```
//! Both legs feed the same [`Arbiter`](super::Arbiter) meanwhile, so duplicates are
//! dropped there; this machine only decides *when* the old leg may go. "In step" means:
//! for every stream both legs have carried since `begin`, the new leg's first sequence is
//! at most one past the old leg's last (`new_first <= old_last + 1`), and there is at
//! least one such stream. From then on the new leg covers everything the old one would
//! still bring, and everything before the new leg's first key the old leg has already
//! brought — so with a key there is no gap and no duplicate across the switch.
//!
//! A stream the old leg carried but the new one has not shown yet (a quiet symbol) is not
//! checked; if that matters, require more streams with `min_streams`. Without keys
//! nothing can be checked: the new leg is in step with its first message.
//!
//! The caller feeds [`observe`](Rotation::observe) with every message of the two legs
//! (raw arrivals, before arbitration) and calls [`poll`](Rotation::poll) each loop.

use super::Key;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationConfig {
    /// Rotate this often (`--rotate-every`), counted from the last rotation's end.
    pub every_ns: Option<u64>,
    /// Give up on a new leg that is not in step within this. Default 10 s.
    pub in_step_timeout_ns: u64,
    /// Streams that must be in step (default 1).
    pub min_streams: usize,
    /// Streams tracked during a rotation (default 64; further ones are not checked).
    pub max_streams: usize,
}

impl Default for RotationConfig {
    fn default() -> Self {
        RotationConfig {
            every_ns: None,
            in_step_timeout_ns: 10_000_000_000,
            min_streams: 1,
            max_streams: 64,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotationState {
    Idle,
    Opening {
        old: usize,
        new: usize,
        since_ns: u64,
    },
    InStep {
        old: usize,
        new: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotationAction {
    Nothing,
    /// Time to rotate (the timer, or [`request`](Rotation::request)): open a new leg and
    /// call [`begin`](Rotation::begin).
    Start,
    /// Close `old`; `new` carries the feed. `in_step` is false only for a forced
    /// rotation that timed out.
    Retire {
        old: usize,
        new: usize,
        in_step: bool,
    },
    /// The new leg never got in step: close `new`, keep `old`.
    Abort {
        old: usize,
        new: usize,
    },
}

#[derive(Debug, Clone, Copy, Default)]
struct Track {
    stream: u32,
    old_last: Option<u64>,
    new_first: Option<u64>,
}

#[derive(Debug)]
pub struct Rotation {
    cfg: RotationConfig,
    state: RotationState,
    forced: bool,
    requested: bool,
    last_done: u64,
    tracks: Box<[Track]>,
    n: usize,
    new_keyless: bool,
    rotations: u64,
    aborts: u64,
}

impl Rotation {
    pub fn new(cfg: RotationConfig, now_ns: u64) -> Self {
        Rotation {
            cfg,
            state: RotationState::Idle,
            forced: false,
            requested: false,
            last_done: now_ns,
            tracks: vec![Track::default(); cfg.max_streams.max(1)].into_boxed_slice(),
            n: 0,
            new_keyless: false,
            rotations: 0,
            aborts: 0,
        }
    }

    pub fn state(&self) -> RotationState {
        self.state
    }
    /// Completed rotations (`Retire` returned) and aborted ones.
    pub fn counts(&self) -> (u64, u64) {
        (self.rotations, self.aborts)
    }

    /// Ask for a rotation at the next `poll` (on request, or from a hook that saw the
    /// server's shutdown notice). `forced`: the old leg is going away anyway, so a new
    /// leg that never gets in step replaces it rather than being aborted.
    pub fn request(&mut self, forced: bool) {
        self.requested = true;
        self.forced |= forced;
    }

    /// The new leg is being opened. Returns false (and does nothing) unless idle or
    /// when `old == new`.
    pub fn begin(&mut self, old: usize, new: usize, now_ns: u64) -> bool {
        if self.state != RotationState::Idle || old == new {
            return false;
        }
        self.requested = false;
        self.n = 0;
        self.new_keyless = false;
        self.state = RotationState::Opening {
            old,
            new,
            since_ns: now_ns,
        };
        true
    }

    /// A message of any leg arrived (only the two legs of a rotation in progress count).
    #[inline]
    pub fn observe(&mut self, leg: usize, key: Option<Key>) {
        let RotationState::Opening { old, new, .. } = self.state else {
            return;
        };
        if leg != old && leg != new {
            return;
        }
        let Some(k) = key else {
            if leg == new {
                self.new_keyless = true;
                if self.in_step() {
                    self.state = RotationState::InStep { old, new };
                }
            }
            return;
        };
        let t = match self.tracks[..self.n]
            .iter()
            .position(|t| t.stream == k.stream)
        {
            Some(i) => i,
            None if self.n < self.cfg.max_streams => {
                self.tracks[self.n] = Track {
                    stream: k.stream,
                    old_last: None,
                    new_first: None,
                };
                self.n += 1;
                self.n - 1
            }
            None => return,
        };
        let t = &mut self.tracks[t];
        if leg == old {
            t.old_last = Some(t.old_last.map_or(k.seq, |l| l.max(k.seq)));
        } else if t.new_first.is_none() {
            t.new_first = Some(k.seq);
        }
        if self.in_step() {
            self.state = RotationState::InStep { old, new };
        }
    }

    fn in_step(&self) -> bool {
        let mut overlapped = 0;
        let mut keyed = false;
        for t in &self.tracks[..self.n] {
            keyed |= t.old_last.is_some() || t.new_first.is_some();
            if let (Some(last), Some(first)) = (t.old_last, t.new_first) {
                if first > last.saturating_add(1) {
                    return false;
                }
                overlapped += 1;
            }
        }
        if !keyed {
            return self.new_keyless;
        }
        overlapped >= self.cfg.min_streams.max(1)
    }

    pub fn poll(&mut self, now_ns: u64) -> RotationAction {
        match self.state {
            RotationState::Idle => {
                let due = self
                    .cfg
                    .every_ns
                    .is_some_and(|e| now_ns.saturating_sub(self.last_done) >= e);
                if self.requested || due {
                    // Asked once; the timer asks again an interval later if begin never came.
                    self.requested = false;
                    self.last_done = now_ns.max(self.last_done);
                    return RotationAction::Start;
                }
                RotationAction::Nothing
            }
            RotationState::InStep { old, new } => {
                self.finish(now_ns);
                self.rotations += 1;
                RotationAction::Retire {
                    old,
                    new,
                    in_step: true,
                }
            }
            RotationState::Opening { old, new, since_ns } => {
                if now_ns.saturating_sub(since_ns) < self.cfg.in_step_timeout_ns {
                    return RotationAction::Nothing;
                }
                let forced = self.forced;
                self.finish(now_ns);
                if forced {
                    self.rotations += 1;
                    RotationAction::Retire {
                        old,
                        new,
                        in_step: false,
                    }
                } else {
                    self.aborts += 1;
                    RotationAction::Abort { old, new }
                }
            }
        }
    }

    fn finish(&mut self, now_ns: u64) {
        self.state = RotationState::Idle;
        self.forced = false;
        self.last_done = now_ns.max(self.last_done);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn k(seq: u64) -> Option<Key> {
        Some(Key::new(0, seq))
    }

    #[test]
    fn timer_and_in_step() {
        let mut r = Rotation::new(
            RotationConfig {
                every_ns: Some(2 * S),
                ..Default::default()
            },
            0,
        );
        assert_eq!(r.poll(S), RotationAction::Nothing);
        assert_eq!(r.poll(2 * S), RotationAction::Start);
        assert_eq!(
            r.poll(2 * S + 1),
            RotationAction::Nothing,
            "Start is said once"
        );
        assert!(r.begin(0, 1, 2 * S));
        assert!(!r.begin(0, 2, 2 * S), "one rotation at a time");
        for s in 100..110 {
            r.observe(0, k(s));
        }
        r.observe(2, k(500)); // another leg: ignored
        r.observe(1, k(112)); // new leg starts ahead: not yet in step
        assert!(matches!(r.state(), RotationState::Opening { .. }));
        assert_eq!(r.poll(2 * S + 10), RotationAction::Nothing);
        r.observe(0, k(110));
        r.observe(1, k(113));
        assert!(matches!(r.state(), RotationState::Opening { .. }));
        r.observe(0, k(111)); // old reached new_first - 1: covered
        assert_eq!(r.state(), RotationState::InStep { old: 0, new: 1 });
        assert_eq!(
            r.poll(2 * S + 20),
            RotationAction::Retire {
                old: 0,
                new: 1,
                in_step: true
            }
        );
        assert_eq!(r.state(), RotationState::Idle);
        assert_eq!(r.poll(3 * S), RotationAction::Nothing);
        assert_eq!(
            r.poll(4 * S + 20),
            RotationAction::Start,
            "every 2 s from the last end"
        );
        assert_eq!(r.counts(), (1, 0));
    }

    #[test]
    fn new_leg_behind_is_in_step_at_once() {
        let mut r = Rotation::new(RotationConfig::default(), 0);
        r.begin(1, 0, 0);
        r.observe(1, k(50));
        r.observe(0, k(40)); // behind: everything from 40 on is covered by the new leg
        assert_eq!(
            r.poll(1),
            RotationAction::Retire {
                old: 1,
                new: 0,
                in_step: true
            }
        );
    }

    #[test]
    fn every_common_stream_must_overlap() {
        let mut r = Rotation::new(
            RotationConfig {
                min_streams: 2,
                ..Default::default()
            },
            0,
        );
        r.begin(0, 1, 0);
        r.observe(0, Some(Key::new(1, 10)));
        r.observe(1, Some(Key::new(1, 10)));
        assert!(
            matches!(r.state(), RotationState::Opening { .. }),
            "min_streams 2"
        );
        r.observe(0, Some(Key::new(2, 5)));
        r.observe(1, Some(Key::new(2, 9)));
        assert!(
            matches!(r.state(), RotationState::Opening { .. }),
            "stream 2 not covered"
        );
        r.observe(1, Some(Key::new(3, 1))); // only on the new leg: not checked
        for s in 6..=8 {
            r.observe(0, Some(Key::new(2, s)));
        }
        assert_eq!(r.state(), RotationState::InStep { old: 0, new: 1 });
    }

    #[test]
    fn timeout_aborts_or_forces() {
        let cfg = RotationConfig {
            in_step_timeout_ns: S,
            ..Default::default()
        };
        let mut r = Rotation::new(cfg, 0);
        r.request(false);
        assert_eq!(r.poll(0), RotationAction::Start);
        r.begin(0, 1, 0);
        r.observe(0, k(1));
        assert_eq!(r.poll(S - 1), RotationAction::Nothing);
        assert_eq!(r.poll(S), RotationAction::Abort { old: 0, new: 1 });
        r.request(true);
        assert_eq!(r.poll(S), RotationAction::Start);
        r.begin(0, 1, S);
        assert_eq!(
            r.poll(2 * S),
            RotationAction::Retire {
                old: 0,
                new: 1,
                in_step: false
            }
        );
        assert_eq!(r.counts(), (1, 1));
    }

    #[test]
    fn keyless_feed() {
        let mut r = Rotation::new(RotationConfig::default(), 0);
        r.begin(0, 1, 0);
        r.observe(0, None);
        assert!(matches!(r.state(), RotationState::Opening { .. }));
        r.observe(1, None);
        assert_eq!(
            r.poll(1),
            RotationAction::Retire {
                old: 0,
                new: 1,
                in_step: true
            }
        );
    }
}
