//! Liveness: a client PING every interval, and "dead" when neither data nor a PONG
//! arrived within the timeout.
//!
//! Only what the *peer* sends counts: [`on_data`](Liveness::on_data) and
//! [`on_pong`](Liveness::on_pong). Our own sends (pings included) never extend life.
//!
//! Time is robust against the two ways the C++ project's watchdog went wrong
//! ("reconnect storms from a watchdog fed stale timestamps"):
//! - a timestamp older than the newest one seen (a batch timestamp taken before the
//!   last pong, a clock read on another core) never extends life and never makes the
//!   silence look longer: every duration is `newest - last_alive` with the newest time
//!   seen on *any* input, and subtraction saturates, so there is no unsigned underflow
//!   turning "slightly in the past" into "dead for 584 years";
//! - a clock that does not move yields nothing: no ping burst, no death;
//! - after a reconnect [`restart`](Liveness::restart) starts the silence afresh, so a
//!   new connection is never judged by the old one's last message.

use super::ConfigError;

/// Ping interval and liveness timeout, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LivenessConfig {
    pub ping_interval_ns: u64,
    pub timeout_ns: u64,
}

impl LivenessConfig {
    /// `timeout_ns` must exceed `ping_interval_ns`: otherwise an idle but healthy feed
    /// is declared dead before its first pong could arrive.
    pub fn new(ping_interval_ns: u64, timeout_ns: u64) -> Result<Self, ConfigError> {
        if ping_interval_ns == 0 {
            return Err(ConfigError("liveness: the ping interval must be > 0"));
        }
        if timeout_ns <= ping_interval_ns {
            return Err(ConfigError(
                "liveness: the timeout must be longer than the ping interval",
            ));
        }
        Ok(LivenessConfig {
            ping_interval_ns,
            timeout_ns,
        })
    }
}

/// What to do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LivenessAction {
    Nothing,
    /// Send a PING now (its payload is the caller's business; any pong counts).
    SendPing,
    /// Neither data nor a pong for `silent_ns` ≥ the timeout. Reported once; the
    /// connection should be closed and reconnected ([`DisconnectCause::LivenessTimeout`](super::DisconnectCause::LivenessTimeout)).
    Dead {
        silent_ns: u64,
    },
}

/// Liveness of one connection. See the module comment.
#[derive(Debug, Clone)]
pub struct Liveness {
    cfg: LivenessConfig,
    /// Newest time the peer proved alive (data or pong).
    last_alive: u64,
    /// Newest time seen on any input: the clock never goes back inside.
    newest: u64,
    next_ping: u64,
    /// Time the oldest unanswered ping was sent, for the round-trip time.
    ping_outstanding: Option<u64>,
    last_rtt: Option<u64>,
    dead: bool,
    pings_sent: u64,
    pongs: u64,
}

impl Liveness {
    /// A connection that became ready at `now_ns` (its handshake is the first proof of
    /// life).
    pub fn new(cfg: LivenessConfig, now_ns: u64) -> Self {
        Liveness {
            cfg,
            last_alive: now_ns,
            newest: now_ns,
            next_ping: now_ns.saturating_add(cfg.ping_interval_ns),
            ping_outstanding: None,
            last_rtt: None,
            dead: false,
            pings_sent: 0,
            pongs: 0,
        }
    }

    /// A new connection (after a reconnect) became ready at `now_ns`. Counters stay.
    pub fn restart(&mut self, now_ns: u64) {
        let (sent, pongs) = (self.pings_sent, self.pongs);
        *self = Liveness {
            pings_sent: sent,
            pongs,
            ..Liveness::new(self.cfg, now_ns.max(self.newest))
        };
    }

    fn observe(&mut self, now_ns: u64) -> u64 {
        self.newest = self.newest.max(now_ns);
        self.newest
    }

    /// A data frame arrived (read the clock once per batch and pass it for the batch).
    #[inline]
    pub fn on_data(&mut self, now_ns: u64) {
        if now_ns > self.last_alive && !self.dead {
            self.last_alive = now_ns;
        }
        self.observe(now_ns);
    }

    /// A PONG arrived (solicited or not: both prove the peer reads and writes).
    pub fn on_pong(&mut self, now_ns: u64) {
        if self.dead {
            return;
        }
        self.pongs += 1;
        if let Some(sent) = self.ping_outstanding.take() {
            if now_ns >= sent {
                self.last_rtt = Some(now_ns - sent);
            }
        }
        if now_ns > self.last_alive {
            self.last_alive = now_ns;
        }
        self.observe(now_ns);
    }

    /// What to do at `now_ns`: dead beats ping; at most one ping per interval.
    pub fn poll(&mut self, now_ns: u64) -> LivenessAction {
        if self.dead {
            return LivenessAction::Nothing;
        }
        let now = self.observe(now_ns);
        let silent = now.saturating_sub(self.last_alive);
        if silent >= self.cfg.timeout_ns {
            self.dead = true;
            return LivenessAction::Dead { silent_ns: silent };
        }
        if now >= self.next_ping {
            // Keep the schedule, but after a stall (the loop did not run for several
            // intervals) send one ping, not a burst.
            let next = self.next_ping.saturating_add(self.cfg.ping_interval_ns);
            self.next_ping = if next > now {
                next
            } else {
                now.saturating_add(self.cfg.ping_interval_ns)
            };
            self.ping_outstanding.get_or_insert(now);
            self.pings_sent += 1;
            return LivenessAction::SendPing;
        }
        LivenessAction::Nothing
    }

    /// The earliest time `poll` may return something other than `Nothing`.
    pub fn next_deadline(&self) -> Option<u64> {
        if self.dead {
            return None;
        }
        Some(
            self.next_ping
                .min(self.last_alive.saturating_add(self.cfg.timeout_ns)),
        )
    }

    pub fn is_dead(&self) -> bool {
        self.dead
    }
    pub fn last_alive_ns(&self) -> u64 {
        self.last_alive
    }
    /// Round trip of the last answered ping.
    pub fn last_rtt_ns(&self) -> Option<u64> {
        self.last_rtt
    }
    pub fn pings_sent(&self) -> u64 {
        self.pings_sent
    }
    pub fn pongs(&self) -> u64 {
        self.pongs
    }
    pub fn config(&self) -> LivenessConfig {
        self.cfg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn cfg() -> LivenessConfig {
        LivenessConfig::new(100 * MS, 250 * MS).unwrap()
    }

    #[test]
    fn config_checked() {
        assert!(LivenessConfig::new(0, 10).is_err());
        assert!(LivenessConfig::new(10, 10).is_err());
        assert!(LivenessConfig::new(10, 5).is_err());
    }

    #[test]
    fn pings_every_interval_and_pongs_keep_alive() {
        let mut l = Liveness::new(cfg(), 1000);
        let mut pings = 0;
        for t in (1000..=1000 + 10_000 * MS).step_by(MS as usize) {
            match l.poll(t) {
                LivenessAction::SendPing => {
                    pings += 1;
                    l.on_pong(t + MS / 2);
                }
                LivenessAction::Nothing => {}
                LivenessAction::Dead { .. } => panic!("dead at {t}"),
            }
        }
        assert_eq!(pings, 100);
        assert_eq!(l.last_rtt_ns(), Some(MS / 2));
        assert_eq!(l.pings_sent(), 100);
    }

    #[test]
    fn dead_without_pong_even_while_pinging() {
        let mut l = Liveness::new(cfg(), 0);
        let mut t = 0;
        let dead_at = loop {
            t += MS;
            if let LivenessAction::Dead { silent_ns } = l.poll(t) {
                break (t, silent_ns);
            }
        };
        assert_eq!(dead_at, (250 * MS, 250 * MS));
        assert_eq!(l.pings_sent(), 2, "our own pings never extend life");
        assert!(l.is_dead());
        assert_eq!(
            l.poll(t + 1),
            LivenessAction::Nothing,
            "dead is reported once"
        );
        assert_eq!(l.next_deadline(), None);
        l.on_pong(t + 2);
        assert!(l.is_dead(), "a pong after death does not revive");
    }

    #[test]
    fn data_counts_as_life() {
        let mut l = Liveness::new(cfg(), 0);
        for t in (0..2000 * MS).step_by(10 * MS as usize) {
            l.on_data(t);
            assert!(!matches!(l.poll(t), LivenessAction::Dead { .. }));
        }
        // Data stops at 1990 ms: dead at 2240 ms, not before.
        assert_ne!(
            l.poll(2239 * MS),
            LivenessAction::Dead {
                silent_ns: 249 * MS
            }
        );
        assert!(!l.is_dead());
        assert_eq!(
            l.poll(2240 * MS),
            LivenessAction::Dead {
                silent_ns: 250 * MS
            }
        );
    }

    #[test]
    fn stale_timestamps_do_not_extend_life_nor_kill() {
        let mut l = Liveness::new(cfg(), 1_000 * MS);
        l.on_data(1_100 * MS);
        // A stale timestamp (taken before the last data) neither extends nor underflows.
        l.on_data(900 * MS);
        l.on_pong(50 * MS);
        assert_eq!(l.last_alive_ns(), 1_100 * MS);
        // Polls with stale times act at the newest time seen (1100 ms): the ping due
        // then, once, and no death.
        assert_eq!(l.poll(0), LivenessAction::SendPing);
        for t in [0, 10 * MS, 999 * MS, 1_099 * MS] {
            assert_eq!(l.poll(t), LivenessAction::Nothing, "stale poll at {t}");
        }
        // The silence is measured from the newest time ever seen, not the stale one.
        l.poll(1_300 * MS);
        assert_eq!(l.poll(5), LivenessAction::Nothing);
        // 1_349 ms: 249 ms of silence; a stale poll at 0 must not push the clock back.
        l.poll(1_349 * MS);
        assert_eq!(l.poll(0), LivenessAction::Nothing);
        assert_eq!(
            l.poll(1_350 * MS),
            LivenessAction::Dead {
                silent_ns: 250 * MS
            }
        );
    }

    #[test]
    fn frozen_clock_does_nothing() {
        let mut l = Liveness::new(cfg(), 500);
        let mut pings = 0;
        l.poll(500 + 100 * MS);
        for _ in 0..10_000 {
            match l.poll(500 + 100 * MS) {
                LivenessAction::SendPing => pings += 1,
                LivenessAction::Dead { .. } => panic!("a frozen clock killed the connection"),
                LivenessAction::Nothing => {}
            }
        }
        assert_eq!(
            pings, 0,
            "one ping for the interval (sent by the first poll), no burst"
        );
        assert_eq!(l.pings_sent(), 1);
    }

    #[test]
    fn a_stall_sends_one_ping_not_a_burst() {
        let mut l = Liveness::new(LivenessConfig::new(10 * MS, 10_000 * MS).unwrap(), 0);
        l.on_data(1000 * MS);
        assert_eq!(l.poll(1000 * MS), LivenessAction::SendPing);
        assert_eq!(l.poll(1000 * MS + 1), LivenessAction::Nothing);
        assert_eq!(l.poll(1010 * MS), LivenessAction::SendPing);
        assert_eq!(l.next_deadline(), Some(1020 * MS));
    }

    #[test]
    fn restart_after_reconnect_is_not_dead() {
        let mut l = Liveness::new(cfg(), 0);
        assert!(matches!(l.poll(300 * MS), LivenessAction::Dead { .. }));
        // The reconnect took 5 s; the new connection is judged from when it was ready.
        l.restart(5_300 * MS);
        assert!(!l.is_dead());
        assert_eq!(l.poll(5_300 * MS), LivenessAction::Nothing);
        assert_eq!(l.poll(5_400 * MS), LivenessAction::SendPing);
        assert!(!matches!(l.poll(5_549 * MS), LivenessAction::Dead { .. }));
        assert!(matches!(l.poll(5_550 * MS), LivenessAction::Dead { .. }));
        // A restart with a stale time cannot rewind the clock either.
        l.restart(0);
        assert_eq!(l.last_alive_ns(), 5_550 * MS);
        assert_eq!(l.pings_sent(), 2, "counters survive restarts");
    }
}
