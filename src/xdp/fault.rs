//! The seeded RX fault hook: a testing knob that sits in the XDP poll stage between the
//! rx ring and a connection's RAW_INBOX, so the TCP code of the one data path sees
//! exactly what a faulty wire would deliver: reordered segments, duplicates, late
//! frames. (Loss is injected earlier, by the XDP program: `XdpOptions::rx_loss_percent`.)
//!
//! It works on descriptors, not bytes: a held frame stays in the UMEM, owned by the XDP
//! stage, until it is delivered, so nothing is copied and nothing allocates. The same
//! seed and the same frame sequence give the same decisions.

use super::socket::RxDesc;

/// What to inject (all per-mille; 0 = off). Off by default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultConfig {
    pub seed: u64,
    /// Per-mille of frames held back and delivered after `reorder_depth` later frames
    /// (or after `reorder_max_hold_us`, whichever comes first).
    pub reorder_permille: u32,
    pub reorder_depth: u32,
    pub reorder_max_hold_us: u64,
    /// Per-mille of frames delivered twice.
    pub duplicate_permille: u32,
    /// Per-mille of frames delayed by `delay_us`.
    pub delay_permille: u32,
    pub delay_us: u64,
}

impl FaultConfig {
    pub fn is_active(&self) -> bool {
        self.reorder_permille > 0 || self.duplicate_permille > 0 || self.delay_permille > 0
    }
}

/// What the fault hook did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultStats {
    pub frames_seen: u64,
    pub reordered: u64,
    pub duplicated: u64,
    pub delayed: u64,
    /// A frame that should have been held but every slot was busy (delivered at once).
    pub slots_full: u64,
}

/// Frames held at once, at most (each one an RX frame kept from the fill ring).
pub const HOOK_SLOTS: usize = 32;

/// What to do with an arriving frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Deliver,
    /// Deliver it, then the same frame again.
    DeliverTwice,
    /// The hook keeps it; [`FaultHook::pop_due`] gives it back later.
    Held,
}

#[derive(Clone, Copy, Default)]
struct Held {
    desc: RxDesc,
    /// Deliver after this many frames have been delivered...
    after_frames: u64,
    /// ...or at this time (µs).
    at_us: u64,
    busy: bool,
}

pub struct FaultHook {
    cfg: FaultConfig,
    rng: u64,
    slots: [Held; HOOK_SLOTS],
    delivered: u64,
    stats: FaultStats,
}

impl FaultHook {
    pub fn new(cfg: FaultConfig) -> Self {
        FaultHook {
            rng: cfg.seed ^ 0x9e37_79b9_7f4a_7c15,
            cfg,
            slots: [Held::default(); HOOK_SLOTS],
            delivered: 0,
            stats: FaultStats::default(),
        }
    }

    pub fn stats(&self) -> FaultStats {
        self.stats
    }

    fn roll(&mut self, permille: u32) -> bool {
        if permille == 0 {
            return false;
        }
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let r = self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33;
        (r % 1000) < permille as u64
    }

    fn hold(&mut self, desc: RxDesc, after_frames: u64, at_us: u64) -> bool {
        let Some(s) = self.slots.iter_mut().find(|s| !s.busy) else {
            self.stats.slots_full += 1;
            return false;
        };
        *s = Held { desc, after_frames, at_us, busy: true };
        true
    }

    /// Decide for one arriving frame. Every frame the caller delivers (now or later,
    /// once or twice) must be reported with [`FaultHook::delivered`].
    pub fn on_frame(&mut self, now_us: u64, desc: RxDesc) -> Verdict {
        self.stats.frames_seen += 1;
        let dup = self.roll(self.cfg.duplicate_permille);
        if self.roll(self.cfg.reorder_permille) {
            let after = self.delivered + self.cfg.reorder_depth.max(1) as u64;
            if self.hold(desc, after, now_us + self.cfg.reorder_max_hold_us.max(1)) {
                self.stats.reordered += 1;
                return Verdict::Held;
            }
        } else if self.roll(self.cfg.delay_permille) {
            if self.hold(desc, u64::MAX, now_us + self.cfg.delay_us) {
                self.stats.delayed += 1;
                return Verdict::Held;
            }
        } else if dup {
            self.stats.duplicated += 1;
            return Verdict::DeliverTwice;
        }
        Verdict::Deliver
    }

    /// One frame reached the connection.
    pub fn delivered(&mut self) {
        self.delivered += 1;
    }

    /// A held frame that is due now (by frame count or time), if any.
    pub fn pop_due(&mut self, now_us: u64) -> Option<RxDesc> {
        let delivered = self.delivered;
        let s = self
            .slots
            .iter_mut()
            .find(|s| s.busy && (delivered >= s.after_frames || now_us >= s.at_us))?;
        s.busy = false;
        Some(s.desc)
    }

    /// Every frame still held (the connection is going away).
    pub fn take_all(&mut self) -> impl Iterator<Item = RxDesc> + '_ {
        self.slots.iter_mut().filter(|s| s.busy).map(|s| {
            s.busy = false;
            s.desc
        })
    }

    /// Frames held right now.
    pub fn held(&self) -> usize {
        self.slots.iter().filter(|s| s.busy).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(cfg: &FaultConfig) -> Vec<u64> {
        let mut h = FaultHook::new(cfg.clone());
        let mut out = Vec::new();
        for i in 0..2000u64 {
            match h.on_frame(i, RxDesc { addr: i, len: 60 }) {
                Verdict::Deliver => {
                    out.push(i);
                    h.delivered();
                }
                Verdict::DeliverTwice => {
                    out.extend([i, i]);
                    h.delivered();
                    h.delivered();
                }
                Verdict::Held => {}
            }
            while let Some(d) = h.pop_due(i) {
                out.push(d.addr);
                h.delivered();
            }
        }
        out.extend(h.take_all().map(|d| d.addr));
        out
    }

    #[test]
    fn deterministic_and_loses_nothing() {
        let cfg = FaultConfig {
            seed: 7,
            reorder_permille: 50,
            reorder_depth: 3,
            reorder_max_hold_us: 100,
            duplicate_permille: 20,
            delay_permille: 20,
            delay_us: 50,
        };
        let a = run(&cfg);
        assert_eq!(a, run(&cfg), "same seed, same decisions");
        let mut uniq = a.clone();
        uniq.sort_unstable();
        uniq.dedup();
        assert_eq!(uniq, (0..2000).collect::<Vec<_>>(), "every frame delivered");
        assert!(a.len() > 2000, "some duplicates");
        assert!(a.windows(2).any(|w| w[1] < w[0]), "some reordering");
    }

    #[test]
    fn off_by_default() {
        assert_eq!(run(&FaultConfig::default()), (0..2000).collect::<Vec<_>>());
    }
}
