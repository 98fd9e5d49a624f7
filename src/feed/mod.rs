//! Feeds that survive (issue 10): the sans-IO cores behind reconnect, liveness and
//! redundant A/B legs.
//!
//! Every core here is a plain state machine. None of them reads a clock, touches a
//! socket, spawns a thread or allocates after construction: the caller passes the time
//! in (`now_ns: u64`, nanoseconds from any monotonic origin — the same origin for every
//! call on one object) and acts on the values that come back. The pipeline's stages wire
//! them to the real connections; the tests drive them directly. `docs/feed.md` says
//! which stage calls what.
//!
//! - [`backoff`]: [`ReconnectPolicy`] (which ends reconnect, exponential backoff with
//!   seeded jitter, storm guard) and the [`Backoff`] state machine that applies it.
//! - [`liveness`]: [`Liveness`], a client-ping schedule and a dead-connection detector
//!   fed only by received data and pongs.
//! - [`key`]: [`KeyExtractor`], reading a message's (stream, sequence) key: a JSON integer
//!   field found by a scanner, a fixed-offset binary integer, or a callback.
//! - [`arbiter`]: [`Arbiter`], K legs in, one merged stream out, in *monotonic* or
//!   *contiguous* mode, working on `(leg, key, handle)` tuples so payloads are never copied.
//! - [`rotation`]: [`Rotation`], make-before-break replacement of a leg.

pub mod arbiter;
pub mod backoff;
pub mod key;
pub mod liveness;
pub mod rotation;

pub use arbiter::{
    Arbiter, ArbiterConfig, ArbiterMode, Decision, DropReason, LagHistogram, LegStats, LAG_BUCKETS,
};
pub use backoff::{
    Backoff, CloseCodePolicy, Decision as ReconnectDecision, DisconnectCause, GiveUpReason,
    ReconnectPolicy, SetupStep,
};
pub use key::{BinaryField, Endian, JsonField, Key, KeyExtractor, KeyFn};
pub use liveness::{Liveness, LivenessAction, LivenessConfig};
pub use rotation::{Rotation, RotationAction, RotationConfig, RotationState};

/// A configuration value the cores refuse, with what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub &'static str);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for ConfigError {}

/// SplitMix64: a tiny seeded generator for backoff jitter. Deterministic for a given
/// seed, so tests can replay a schedule; production seeds it from the OS once.
#[derive(Clone, Debug)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `[0, n)` (Lemire's multiply-shift; the tiny bias is irrelevant here).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}
