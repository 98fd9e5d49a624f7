//! Reconnect policy: which ends reconnect, and when the next attempt starts.
//!
//! [`ReconnectPolicy`] is configuration (plain data, `Copy`). [`Backoff`] is the state
//! machine a connection's supervisor keeps across its lifetime:
//!
//! ```text
//!           connected(now)                 on_disconnect(cause, now)
//!  Connecting ────────────► Up ───────────────────────────────┐
//!      ▲                                                       ▼
//!      │ poll(now) == Some(attempt)           Decision::Reconnect { attempt, at_ns, .. }
//!      └───────────────────────── Waiting ◄────────────────────┤
//!                                                              ▼
//!                                                 Decision::GiveUp(reason)  → GaveUp
//! ```
//! A set-up failure while `Connecting` is another `on_disconnect` with
//! [`DisconnectCause::SetupFailed`]. The attempt counter counts consecutive attempts
//! without a *healthy* connection: merely connecting does not reset it, a connection
//! that stayed up for `healthy_after_ns` does. So a server that accepts and then drops us
//! at once gets an ever longer backoff instead of a reconnect storm.
//!
//! The storm guard is independent of that counter: if `storm_attempts` attempts were
//! already scheduled within the trailing `storm_window_ns`, the next delay is
//! `max_ns` whatever the backoff says.

use super::{ConfigError, SplitMix64};
use std::fmt;

/// Which part of setting a connection up failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SetupStep {
    /// Name resolution.
    Resolve,
    /// TCP connect (refused, timed out, unreachable).
    Connect,
    /// TLS handshake (including certificate verification).
    Tls,
    /// The WebSocket upgrade (HTTP status, `Sec-WebSocket-Accept`).
    Upgrade,
}

/// Why a connection ended: the input to the reconnect decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DisconnectCause {
    /// The peer reset the connection (TCP RST, `ECONNRESET`).
    Reset,
    /// The peer closed its side (TCP FIN) without a WebSocket close frame.
    Fin,
    /// A TLS error after set-up: an alert, a record that does not decrypt, a bad MAC.
    Tls,
    /// A WebSocket close frame ended the connection: the code of the first close frame
    /// on the connection, whichever side sent it (1005 when the frame had no code).
    Close(u16),
    /// [`Liveness`](super::Liveness) declared the connection dead (no data, no pong).
    LivenessTimeout,
    /// A (re)connect attempt failed before the connection was ready.
    SetupFailed(SetupStep),
    /// The application asked to stop: never reconnects.
    Stopped,
}

impl fmt::Display for DisconnectCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DisconnectCause::Reset => f.write_str("connection reset by peer"),
            DisconnectCause::Fin => f.write_str("connection closed by peer without a close frame"),
            DisconnectCause::Tls => f.write_str("TLS error"),
            DisconnectCause::Close(c) => write!(f, "close frame with code {c}"),
            DisconnectCause::LivenessTimeout => {
                f.write_str("no data and no pong within the liveness timeout")
            }
            DisconnectCause::SetupFailed(s) => write!(f, "set-up failed at {s:?}"),
            DisconnectCause::Stopped => f.write_str("stopped by the application"),
        }
    }
}

/// Which WebSocket close codes reconnect.
///
/// Defaults: reconnect on 1000 (normal: the server ended the session, the feed goes on),
/// 1001 (going away), 1005 (no code), 1006 (abnormal), 1011 (internal error), 1012
/// (service restart), 1013 (try again later), 1014 (bad gateway). Do not reconnect on
/// 1002 (protocol error), 1003 (unsupported data), 1007 (invalid payload), 1008 (policy
/// violation), 1009 (too big), 1010 (missing extension), 1015, the reserved codes, or the
/// private range 3000–4999 — a close that will repeat on every new connection is the
/// start of a storm. Any code can be overridden with [`set`](Self::set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseCodePolicy {
    /// Bit `i`: code `1000 + i` reconnects (1000..=1031).
    standard: u32,
    /// Codes 3000..=4999 not overridden.
    private_default: bool,
    overrides: [(u16, bool); CloseCodePolicy::MAX_OVERRIDES],
    n_overrides: u8,
}

impl Default for CloseCodePolicy {
    fn default() -> Self {
        let mut standard = 0u32;
        for c in [1000u16, 1001, 1005, 1006, 1011, 1012, 1013, 1014] {
            standard |= 1 << (c - 1000);
        }
        CloseCodePolicy {
            standard,
            private_default: false,
            overrides: [(0, false); Self::MAX_OVERRIDES],
            n_overrides: 0,
        }
    }
}

impl CloseCodePolicy {
    /// Codes outside 1000..=1031 that can be set individually.
    pub const MAX_OVERRIDES: usize = 16;

    /// Does a close with `code` reconnect?
    pub fn reconnects(&self, code: u16) -> bool {
        for &(c, r) in &self.overrides[..usize::from(self.n_overrides)] {
            if c == code {
                return r;
            }
        }
        match code {
            1000..=1031 => self.standard & (1 << (code - 1000)) != 0,
            3000..=4999 => self.private_default,
            _ => false,
        }
    }

    /// Make `code` reconnect (`true`) or end the feed (`false`).
    pub fn set(&mut self, code: u16, reconnect: bool) -> Result<(), ConfigError> {
        if (1000..=1031).contains(&code) {
            let bit = 1u32 << (code - 1000);
            if reconnect {
                self.standard |= bit;
            } else {
                self.standard &= !bit;
            }
            return Ok(());
        }
        let n = usize::from(self.n_overrides);
        if let Some(e) = self.overrides[..n].iter_mut().find(|e| e.0 == code) {
            e.1 = reconnect;
            return Ok(());
        }
        if n == Self::MAX_OVERRIDES {
            return Err(ConfigError(
                "too many individual close codes (at most 16 outside 1000-1031)",
            ));
        }
        self.overrides[n] = (code, reconnect);
        self.n_overrides += 1;
        Ok(())
    }

    /// Whether private codes (3000–4999) without an individual setting reconnect.
    pub fn set_private_default(&mut self, reconnect: bool) {
        self.private_default = reconnect;
    }
}

/// Reconnect configuration of one connection. [`Default`] is *off* (the issue: "off
/// unless asked for") with the standard numbers filled in; [`standard`](Self::standard)
/// is the same, switched on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReconnectPolicy {
    pub enabled: bool,
    /// Delay before the first attempt after a disconnect (> 0). Default 100 ms.
    pub initial_ns: u64,
    /// Each further consecutive attempt waits this much longer (≥ 1). Default 2.
    pub multiplier: f64,
    /// Cap on the delay (≥ `initial_ns`). Default 10 s.
    pub max_ns: u64,
    /// Fraction of the delay drawn at random: the delay is uniform in
    /// `[d·(1 − jitter), d]`. 0 = none, 1 = "full jitter". Default 0.25.
    pub jitter: f64,
    /// Give up after this many consecutive attempts without a healthy connection;
    /// `None` = never. Default `None`.
    pub max_attempts: Option<u32>,
    pub on_reset: bool,
    pub on_fin: bool,
    pub on_tls_error: bool,
    pub on_liveness_timeout: bool,
    pub on_setup_failure: bool,
    pub close_codes: CloseCodePolicy,
    /// Storm guard: at most this many attempts within `storm_window_ns`; more are
    /// delayed by `max_ns`. 0 switches the guard off. Default 10 (at most 1024).
    pub storm_attempts: u32,
    /// Default 60 s.
    pub storm_window_ns: u64,
    /// A connection that stayed up this long resets the backoff. Default 10 s.
    pub healthy_after_ns: u64,
}

const MS: u64 = 1_000_000;
const S: u64 = 1_000_000_000;

impl Default for ReconnectPolicy {
    fn default() -> Self {
        ReconnectPolicy {
            enabled: false,
            initial_ns: 100 * MS,
            multiplier: 2.0,
            max_ns: 10 * S,
            jitter: 0.25,
            max_attempts: None,
            on_reset: true,
            on_fin: true,
            on_tls_error: true,
            on_liveness_timeout: true,
            on_setup_failure: true,
            close_codes: CloseCodePolicy::default(),
            storm_attempts: 10,
            storm_window_ns: 60 * S,
            healthy_after_ns: 10 * S,
        }
    }
}

impl ReconnectPolicy {
    /// The defaults, switched on.
    pub fn standard() -> Self {
        ReconnectPolicy {
            enabled: true,
            ..Default::default()
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.initial_ns == 0 {
            return Err(ConfigError("reconnect: the initial delay must be > 0"));
        }
        if !(self.multiplier.is_finite() && self.multiplier >= 1.0) {
            return Err(ConfigError(
                "reconnect: the multiplier must be a finite number >= 1",
            ));
        }
        if self.max_ns < self.initial_ns {
            return Err(ConfigError(
                "reconnect: the maximum delay is below the initial delay",
            ));
        }
        if !(self.jitter >= 0.0 && self.jitter <= 1.0) {
            return Err(ConfigError("reconnect: jitter must be within 0..=1"));
        }
        if self.max_attempts == Some(0) {
            return Err(ConfigError(
                "reconnect: max attempts 0 (use enabled = false)",
            ));
        }
        if self.storm_attempts > 1024 {
            return Err(ConfigError(
                "reconnect: storm guard attempts must be <= 1024",
            ));
        }
        if self.storm_attempts > 0 && self.storm_window_ns == 0 {
            return Err(ConfigError("reconnect: storm guard window must be > 0"));
        }
        Ok(())
    }

    /// Does a connection that ended this way reconnect (ignoring `enabled` and attempts)?
    pub fn reconnects(&self, cause: DisconnectCause) -> bool {
        match cause {
            DisconnectCause::Reset => self.on_reset,
            DisconnectCause::Fin => self.on_fin,
            DisconnectCause::Tls => self.on_tls_error,
            DisconnectCause::Close(code) => self.close_codes.reconnects(code),
            DisconnectCause::LivenessTimeout => self.on_liveness_timeout,
            DisconnectCause::SetupFailed(_) => self.on_setup_failure,
            DisconnectCause::Stopped => false,
        }
    }
}

/// Why the feed does not reconnect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveUpReason {
    /// The policy is off.
    Disabled,
    /// This end does not reconnect under the policy (e.g. close 1008).
    NotReconnectable(DisconnectCause),
    /// `max_attempts` consecutive attempts failed to give a healthy connection.
    AttemptsExhausted { attempts: u32 },
}

impl fmt::Display for GiveUpReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GiveUpReason::Disabled => f.write_str("reconnect is off"),
            GiveUpReason::NotReconnectable(c) => write!(f, "{c}: does not reconnect"),
            GiveUpReason::AttemptsExhausted { attempts } => {
                write!(f, "gave up after {attempts} reconnect attempts")
            }
        }
    }
}

/// The answer to a disconnect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Start attempt number `attempt` (1-based, consecutive) at `at_ns` = now + `delay_ns`.
    /// `storm` says the storm guard set the delay.
    Reconnect {
        attempt: u32,
        delay_ns: u64,
        at_ns: u64,
        storm: bool,
    },
    GiveUp(GiveUpReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the first connection is up (the first connect is not a reconnect).
    Connecting {
        attempt: u32,
    },
    Up {
        since: u64,
    },
    Waiting {
        attempt: u32,
        delay_ns: u64,
        at_ns: u64,
        storm: bool,
    },
    GaveUp(GiveUpReason),
}

/// The reconnect state machine of one connection. See the module comment.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: ReconnectPolicy,
    rng: SplitMix64,
    state: State,
    /// Consecutive attempts since the last healthy connection.
    attempt: u32,
    /// Delay of the next attempt before jitter.
    base_ns: u64,
    /// Scheduled start times of the last `storm_attempts` attempts (a ring).
    history: Box<[u64]>,
    hist_pos: usize,
    hist_len: usize,
    attempts_total: u64,
    storm_delays: u64,
}

impl Backoff {
    /// `seed` makes the jitter reproducible; production passes a random one.
    pub fn new(policy: ReconnectPolicy, seed: u64) -> Result<Self, ConfigError> {
        policy.validate()?;
        Ok(Backoff {
            policy,
            rng: SplitMix64::new(seed),
            state: State::Connecting { attempt: 0 },
            attempt: 0,
            base_ns: policy.initial_ns,
            history: vec![0u64; policy.storm_attempts as usize].into_boxed_slice(),
            hist_pos: 0,
            hist_len: 0,
            attempts_total: 0,
            storm_delays: 0,
        })
    }

    pub fn policy(&self) -> &ReconnectPolicy {
        &self.policy
    }

    /// Consecutive attempts since the last healthy connection (0 once healthy).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Every attempt ever scheduled (the `reconnects` counter).
    pub fn attempts_total(&self) -> u64 {
        self.attempts_total
    }

    /// Attempts whose delay the storm guard raised to the maximum.
    pub fn storm_delays(&self) -> u64 {
        self.storm_delays
    }

    pub fn is_up(&self) -> bool {
        matches!(self.state, State::Up { .. })
    }

    pub fn gave_up(&self) -> Option<GiveUpReason> {
        match self.state {
            State::GaveUp(r) => Some(r),
            _ => None,
        }
    }

    /// When `poll` will next return an attempt, if one is scheduled.
    pub fn next_deadline(&self) -> Option<u64> {
        match self.state {
            State::Waiting { at_ns, .. } => Some(at_ns),
            _ => None,
        }
    }

    /// The connection is ready (handshakes done, subscriptions sent). Does not by itself
    /// reset the backoff: staying up for `healthy_after_ns` does.
    pub fn connected(&mut self, now_ns: u64) {
        if !matches!(self.state, State::GaveUp(_)) {
            self.state = State::Up { since: now_ns };
        }
    }

    fn reset_if_healthy(&mut self, now_ns: u64) {
        if let State::Up { since } = self.state {
            if now_ns.saturating_sub(since) >= self.policy.healthy_after_ns {
                self.attempt = 0;
                self.base_ns = self.policy.initial_ns;
            }
        }
    }

    /// Once a scheduled attempt is due, returns its number (once) and moves to
    /// `Connecting`; the caller then resolves the host again and connects.
    pub fn poll(&mut self, now_ns: u64) -> Option<u32> {
        match self.state {
            State::Waiting { attempt, at_ns, .. } if now_ns >= at_ns => {
                self.state = State::Connecting { attempt };
                Some(attempt)
            }
            State::Up { .. } => {
                self.reset_if_healthy(now_ns);
                None
            }
            _ => None,
        }
    }

    /// The connection (or an attempt at one) ended: reconnect, and when?
    pub fn on_disconnect(&mut self, cause: DisconnectCause, now_ns: u64) -> Decision {
        match self.state {
            State::GaveUp(r) => return Decision::GiveUp(r),
            // Reported twice before the attempt started: the same answer.
            State::Waiting {
                attempt,
                delay_ns,
                at_ns,
                storm,
            } if cause != DisconnectCause::Stopped => {
                return Decision::Reconnect {
                    attempt,
                    delay_ns,
                    at_ns,
                    storm,
                };
            }
            _ => {}
        }
        self.reset_if_healthy(now_ns);
        let give_up = if !self.policy.enabled {
            Some(GiveUpReason::Disabled)
        } else if !self.policy.reconnects(cause) {
            Some(GiveUpReason::NotReconnectable(cause))
        } else if self.policy.max_attempts.is_some_and(|m| self.attempt >= m) {
            Some(GiveUpReason::AttemptsExhausted {
                attempts: self.attempt,
            })
        } else {
            None
        };
        if let Some(r) = give_up {
            self.state = State::GaveUp(r);
            return Decision::GiveUp(r);
        }

        let base = self.base_ns;
        let span = (base as f64 * self.policy.jitter) as u64;
        let mut delay = base - self.rng.below(span.saturating_add(1)).min(base);
        let mut storm = false;
        let n = self.history.len();
        if n > 0 && self.hist_len == n {
            let oldest = self.history[self.hist_pos];
            if now_ns.saturating_sub(oldest) < self.policy.storm_window_ns {
                delay = self.policy.max_ns;
                storm = true;
                self.storm_delays += 1;
            }
        }
        let at_ns = now_ns.saturating_add(delay);
        if n > 0 {
            // Record the decision time: "attempts decided within the window".
            self.history[self.hist_pos] = now_ns;
            self.hist_pos = (self.hist_pos + 1) % n;
            self.hist_len = (self.hist_len + 1).min(n);
        }
        let next = base as f64 * self.policy.multiplier;
        self.base_ns = if next >= self.policy.max_ns as f64 {
            self.policy.max_ns
        } else {
            next as u64
        };
        self.attempt += 1;
        self.attempts_total += 1;
        self.state = State::Waiting {
            attempt: self.attempt,
            delay_ns: delay,
            at_ns,
            storm,
        };
        Decision::Reconnect {
            attempt: self.attempt,
            delay_ns: delay,
            at_ns,
            storm,
        }
    }

    /// Re-arm after giving up (an explicit user request): the next disconnect is judged
    /// afresh and the backoff starts from the initial delay.
    pub fn rearm(&mut self) {
        self.state = State::Connecting { attempt: 0 };
        self.attempt = 0;
        self.base_ns = self.policy.initial_ns;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_jitter() -> ReconnectPolicy {
        ReconnectPolicy {
            jitter: 0.0,
            storm_attempts: 0,
            ..ReconnectPolicy::standard()
        }
    }

    fn schedule(b: &mut Backoff, cause: DisconnectCause, now: u64) -> (u32, u64, bool) {
        match b.on_disconnect(cause, now) {
            Decision::Reconnect {
                attempt,
                delay_ns,
                at_ns,
                storm,
            } => {
                assert_eq!(at_ns, now + delay_ns);
                (attempt, delay_ns, storm)
            }
            Decision::GiveUp(r) => panic!("gave up: {r}"),
        }
    }

    #[test]
    fn default_is_off() {
        let mut b = Backoff::new(ReconnectPolicy::default(), 1).unwrap();
        assert_eq!(
            b.on_disconnect(DisconnectCause::Reset, 0),
            Decision::GiveUp(GiveUpReason::Disabled)
        );
        assert_eq!(b.gave_up(), Some(GiveUpReason::Disabled));
    }

    #[test]
    fn exponential_then_capped() {
        let mut b = Backoff::new(no_jitter(), 1).unwrap();
        let mut now = 0;
        let mut delays = Vec::new();
        for i in 1..=10u32 {
            let (a, d, storm) = schedule(
                &mut b,
                DisconnectCause::SetupFailed(SetupStep::Connect),
                now,
            );
            assert_eq!(a, i);
            assert!(!storm);
            delays.push(d / MS);
            assert_eq!(b.poll(now + d - 1), None, "not before the deadline");
            now += d;
            assert_eq!(b.poll(now), Some(i));
            assert_eq!(b.poll(now), None, "an attempt is started once");
        }
        assert_eq!(
            delays,
            [100, 200, 400, 800, 1600, 3200, 6400, 10000, 10000, 10000]
        );
    }

    #[test]
    fn jitter_is_seeded_and_within_bounds() {
        let p = ReconnectPolicy {
            jitter: 0.5,
            storm_attempts: 0,
            ..ReconnectPolicy::standard()
        };
        let run = |seed| {
            let mut b = Backoff::new(p, seed).unwrap();
            (0..20)
                .map(|i| {
                    let d = schedule(&mut b, DisconnectCause::Reset, i * 100 * S).1;
                    assert!(b.poll(i * 100 * S + d).is_some());
                    d
                })
                .collect::<Vec<_>>()
        };
        let a = run(7);
        assert_eq!(a, run(7), "same seed, same schedule");
        assert_ne!(a, run(8));
        let mut base = 100 * MS;
        for d in a {
            assert!(
                d <= base && d >= base / 2,
                "{d} outside [{}, {base}]",
                base / 2
            );
            base = (base * 2).min(10 * S);
        }
    }

    #[test]
    fn which_ends_reconnect() {
        let p = ReconnectPolicy::standard();
        for c in [1000, 1001, 1005, 1006, 1011, 1012, 1013, 1014] {
            assert!(p.reconnects(DisconnectCause::Close(c)), "{c}");
        }
        for c in [
            1002, 1003, 1004, 1007, 1008, 1009, 1010, 1015, 1016, 0, 999, 3000, 4999, 5000,
        ] {
            assert!(!p.reconnects(DisconnectCause::Close(c)), "{c}");
        }
        for c in [
            DisconnectCause::Reset,
            DisconnectCause::Fin,
            DisconnectCause::Tls,
            DisconnectCause::LivenessTimeout,
            DisconnectCause::SetupFailed(SetupStep::Resolve),
            DisconnectCause::SetupFailed(SetupStep::Upgrade),
        ] {
            assert!(p.reconnects(c), "{c}");
        }
        assert!(!p.reconnects(DisconnectCause::Stopped));

        let mut b = Backoff::new(p, 1).unwrap();
        assert_eq!(
            b.on_disconnect(DisconnectCause::Close(1008), 5),
            Decision::GiveUp(GiveUpReason::NotReconnectable(DisconnectCause::Close(1008)))
        );
        // Once given up, every further end says so; rearm starts afresh.
        assert!(matches!(
            b.on_disconnect(DisconnectCause::Reset, 6),
            Decision::GiveUp(_)
        ));
        b.rearm();
        assert_eq!(schedule(&mut b, DisconnectCause::Reset, 7).0, 1);
    }

    #[test]
    fn close_codes_configurable() {
        let mut p = ReconnectPolicy::standard();
        p.close_codes.set(1008, true).unwrap();
        p.close_codes.set(1001, false).unwrap();
        p.close_codes.set(4001, true).unwrap();
        assert!(p.reconnects(DisconnectCause::Close(1008)));
        assert!(!p.reconnects(DisconnectCause::Close(1001)));
        assert!(p.reconnects(DisconnectCause::Close(4001)));
        assert!(!p.reconnects(DisconnectCause::Close(4002)));
        p.close_codes.set_private_default(true);
        assert!(p.reconnects(DisconnectCause::Close(4002)));
        p.close_codes.set(4002, false).unwrap();
        assert!(
            !p.reconnects(DisconnectCause::Close(4002)),
            "an individual setting wins"
        );
        for c in 0..14 {
            p.close_codes.set(4100 + c, true).unwrap();
        }
        assert!(
            p.close_codes.set(4200, true).is_err(),
            "the override table is bounded"
        );
        p.close_codes.set(4100, false).unwrap(); // updating an existing one still works
        p.on_fin = false;
        assert!(!p.reconnects(DisconnectCause::Fin));
    }

    #[test]
    fn max_attempts() {
        let p = ReconnectPolicy {
            max_attempts: Some(3),
            ..no_jitter()
        };
        let mut b = Backoff::new(p, 1).unwrap();
        let mut now = 0;
        for i in 1..=3 {
            let (a, d, _) = schedule(&mut b, DisconnectCause::SetupFailed(SetupStep::Tls), now);
            assert_eq!(a, i);
            now += d;
            assert_eq!(b.poll(now), Some(i));
        }
        assert_eq!(
            b.on_disconnect(DisconnectCause::SetupFailed(SetupStep::Tls), now),
            Decision::GiveUp(GiveUpReason::AttemptsExhausted { attempts: 3 })
        );
    }

    #[test]
    fn connecting_is_not_healthy_staying_up_is() {
        let p = ReconnectPolicy {
            max_attempts: Some(4),
            ..no_jitter()
        };
        let mut b = Backoff::new(p, 1).unwrap();
        b.connected(0);
        let mut now = 0;
        // A server that accepts and drops us after 1 s: the backoff keeps growing.
        for i in 1..=4 {
            now += S;
            let (a, d, _) = schedule(&mut b, DisconnectCause::Close(1011), now);
            assert_eq!(a, i);
            assert_eq!(d, (100 * MS) << (i - 1));
            now += d;
            assert_eq!(b.poll(now), Some(i));
            b.connected(now);
        }
        assert!(matches!(
            b.on_disconnect(DisconnectCause::Close(1011), now + S),
            Decision::GiveUp(GiveUpReason::AttemptsExhausted { attempts: 4 })
        ));

        // A connection up for healthy_after_ns resets the backoff.
        let mut b = Backoff::new(p, 1).unwrap();
        b.connected(0);
        let (_, d1, _) = schedule(&mut b, DisconnectCause::Reset, S);
        assert_eq!(b.poll(S + d1), Some(1));
        b.connected(S + d1);
        let (a2, d2, _) = schedule(&mut b, DisconnectCause::Reset, 2 * S + d1);
        assert_eq!((a2, d2), (2, 200 * MS));
        let up = 2 * S + d1 + d2;
        assert_eq!(b.poll(up), Some(2));
        b.connected(up);
        assert_eq!(b.attempt(), 2);
        b.poll(up + 10 * S);
        assert_eq!(b.attempt(), 0, "healthy after 10 s");
        let (a3, d3, _) = schedule(&mut b, DisconnectCause::Reset, up + 11 * S);
        assert_eq!((a3, d3), (1, 100 * MS));
        assert_eq!(b.attempts_total(), 3);
    }

    #[test]
    fn storm_guard() {
        // Healthy after 0 s would reset the backoff on every connect; the guard still
        // holds attempts to 3 per 10 s.
        let p = ReconnectPolicy {
            jitter: 0.0,
            healthy_after_ns: 0,
            storm_attempts: 3,
            storm_window_ns: 10 * S,
            max_ns: 5 * S,
            ..ReconnectPolicy::standard()
        };
        let mut b = Backoff::new(p, 1).unwrap();
        let mut now = 0;
        let mut got = Vec::new();
        for _ in 0..8 {
            b.connected(now);
            let (_, d, storm) = schedule(&mut b, DisconnectCause::Fin, now);
            got.push((d / MS, storm));
            now += d;
            assert!(b.poll(now).is_some());
        }
        // Decisions at 0, 0.1, 0.2 s pass; the fourth and fifth (0.3, 5.3 s) find three
        // within 10 s and wait the maximum; at 10.3 and 10.4 s the window has slid past
        // the first ones; at 10.5 s it holds 5.3, 10.3, 10.4 again.
        assert_eq!(
            got,
            [
                (100, false),
                (100, false),
                (100, false),
                (5000, true),
                (5000, true),
                (100, false),
                (100, false),
                (5000, true),
            ]
        );
        assert_eq!(b.storm_delays(), 3);
    }

    #[test]
    fn duplicate_report_and_stop() {
        let mut b = Backoff::new(no_jitter(), 1).unwrap();
        let d1 = b.on_disconnect(DisconnectCause::Reset, 0);
        assert_eq!(
            b.on_disconnect(DisconnectCause::Fin, 1),
            d1,
            "reported twice: same attempt"
        );
        assert_eq!(
            b.on_disconnect(DisconnectCause::Stopped, 2),
            Decision::GiveUp(GiveUpReason::NotReconnectable(DisconnectCause::Stopped))
        );
        assert_eq!(b.next_deadline(), None);
    }

    #[test]
    fn validation() {
        let bad = [
            ReconnectPolicy {
                initial_ns: 0,
                ..ReconnectPolicy::standard()
            },
            ReconnectPolicy {
                multiplier: 0.5,
                ..ReconnectPolicy::standard()
            },
            ReconnectPolicy {
                multiplier: f64::NAN,
                ..ReconnectPolicy::standard()
            },
            ReconnectPolicy {
                max_ns: 1,
                ..ReconnectPolicy::standard()
            },
            ReconnectPolicy {
                jitter: 1.5,
                ..ReconnectPolicy::standard()
            },
            ReconnectPolicy {
                max_attempts: Some(0),
                ..ReconnectPolicy::standard()
            },
            ReconnectPolicy {
                storm_attempts: 5000,
                ..ReconnectPolicy::standard()
            },
            ReconnectPolicy {
                storm_window_ns: 0,
                ..ReconnectPolicy::standard()
            },
        ];
        for p in bad {
            assert!(Backoff::new(p, 0).is_err(), "{p:?}");
        }
        // A huge maximum and multiplier never overflow.
        let p = ReconnectPolicy {
            max_ns: u64::MAX,
            multiplier: 1e300,
            jitter: 1.0,
            storm_attempts: 0,
            ..ReconnectPolicy::standard()
        };
        let mut b = Backoff::new(p, 3).unwrap();
        for i in 0..5 {
            assert!(matches!(
                b.on_disconnect(DisconnectCause::Reset, u64::MAX - 10),
                Decision::Reconnect { .. }
            ));
            b.poll(u64::MAX);
            let _ = i;
        }
    }
}
