//! Wait strategies for idle polls.

use std::time::Duration;

use crate::error::{Error, Result};

/// How a loop waits when a poll moved nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitKind {
    /// Busy-poll: lowest latency, burns the core (pinned, isolated cores only).
    Spin = 0,
    /// `sched_yield` between idle polls.
    Yield = 1,
    /// Spin [`Wait::SPINS`] idle polls, yield [`Wait::YIELDS`], then sleep 50 µs each.
    Backoff = 2,
}

impl WaitKind {
    pub fn name(self) -> &'static str {
        match self {
            WaitKind::Spin => "spin",
            WaitKind::Yield => "yield",
            WaitKind::Backoff => "backoff",
        }
    }
    pub fn parse(s: &str) -> Result<WaitKind> {
        Ok(match s {
            "spin" => WaitKind::Spin,
            "yield" => WaitKind::Yield,
            "backoff" => WaitKind::Backoff,
            _ => {
                return Err(Error::Config(format!(
                    "wait {s:?}: expected spin, yield or backoff"
                )))
            }
        })
    }
    pub fn from_code(c: u64) -> &'static str {
        match c {
            0 => "spin",
            1 => "yield",
            _ => "backoff",
        }
    }
}

/// Idle-poll counter of one loop.
pub struct Wait {
    kind: WaitKind,
    idle: u32,
}

impl Wait {
    pub const SPINS: u32 = 64;
    pub const YIELDS: u32 = 64;
    pub const SLEEP: Duration = Duration::from_micros(50);

    pub fn new(kind: WaitKind) -> Wait {
        Wait { kind, idle: 0 }
    }

    /// Something moved: spin again.
    #[inline]
    pub fn reset(&mut self) {
        self.idle = 0;
    }

    /// Nothing moved: wait according to the strategy.
    #[inline]
    pub fn idle(&mut self) {
        match self.kind {
            WaitKind::Spin => std::hint::spin_loop(),
            WaitKind::Yield => std::thread::yield_now(),
            WaitKind::Backoff => {
                self.idle = self.idle.saturating_add(1);
                if self.idle <= Self::SPINS {
                    std::hint::spin_loop();
                } else if self.idle <= Self::SPINS + Self::YIELDS {
                    std::thread::yield_now();
                } else {
                    std::thread::sleep(Self::SLEEP);
                }
            }
        }
    }
}
