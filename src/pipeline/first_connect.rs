//! The first connect when reconnect is on: a feed handler is often started before its
//! gateway is up, so a refused, unresolvable or TLS-failing first attempt is retried with
//! the reconnect policy's backoff until the set-up timeout (`Config::timeout`) instead of
//! failing `Pipeline::start` at once. Without reconnect the first failure is the error,
//! as before.
//!
//! Two places fail a first connect, and both come through here:
//! - building the transport (the kernel transports connect, and do TLS, before any stage
//!   exists): [`FirstConnect::run`] retries the builder itself;
//! - the stages' own set-up (the WebSocket upgrade; TCP and TLS of the XDP transport):
//!   the transport stage already reconnects with its [`Backoff`] once it has one, and
//!   [`FirstConnect::watch`] reports those attempts while `runner::run_setup` waits.

use std::time::{Duration, Instant};

use super::Config;
use crate::error::{Error, Result};
use crate::feed::{Backoff, DisconnectCause, ReconnectDecision, SetupStep};
use crate::stats::{Counter, DisconnectKind, State, StatsRegion};

/// Hears every failed first-connect attempt: `State::Reconnecting { attempt, cause }`
/// and the attempt's error in one line.
pub type OnAttempt<'a> = &'a mut dyn FnMut(&State, &str);

pub(crate) struct FirstConnect<'a> {
    origin: Instant,
    deadline: Instant,
    timeout: Duration,
    /// `None`: reconnect is off, the first failure is the error.
    backoff: Option<Backoff>,
    /// Attempts reported so far (builder retries and the stages' own).
    attempts: u32,
    /// The transport stage's `reconnects` counter when last looked at, and the reason
    /// of the attempt it counted (kept: the timeout records its own reason over it).
    seen_stage: u64,
    stage_reason: String,
    report: OnAttempt<'a>,
}

impl<'a> FirstConnect<'a> {
    pub(crate) fn new(cfg: &Config, seed: u64, report: OnAttempt<'a>) -> Result<FirstConnect<'a>> {
        let backoff = match cfg.reconnect.enabled {
            true => Some(Backoff::new(cfg.reconnect, seed).map_err(|e| Error::Config(e.to_string()))?),
            false => None,
        };
        let origin = Instant::now();
        Ok(FirstConnect {
            origin,
            deadline: origin + cfg.timeout,
            timeout: cfg.timeout,
            backoff,
            attempts: 0,
            seen_stage: 0,
            stage_reason: String::new(),
            report,
        })
    }

    /// Time left of the set-up timeout (what the next attempt may take).
    pub(crate) fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// `build(time_left)` until it succeeds, the policy gives up, or the set-up timeout
    /// passes (then the error names the last attempt's failure).
    pub(crate) fn run<T>(&mut self, mut build: impl FnMut(Duration) -> Result<T>) -> Result<T> {
        loop {
            match build(self.remaining()) {
                Ok(t) => return Ok(t),
                Err(e) => self.failed(e)?,
            }
        }
    }

    fn failed(&mut self, e: Error) -> Result<()> {
        let step = match &e {
            Error::Tls(_) => SetupStep::Tls,
            Error::WebSocket { .. } => SetupStep::Upgrade,
            Error::Net(_) | Error::Reset(_) | Error::Timeout(_) | Error::Io { .. } | Error::Closed(_) => {
                SetupStep::Connect
            }
            // A bad option, a missing capability, shared memory: no retry fixes those.
            _ => return Err(e),
        };
        let Some(b) = self.backoff.as_mut() else { return Err(e) };
        let now = self.origin.elapsed().as_nanos() as u64;
        match b.on_disconnect(DisconnectCause::SetupFailed(step), now) {
            // The policy's own limit (max_attempts, on_setup_failure off): the last
            // attempt's error as it is.
            ReconnectDecision::GiveUp(_) => Err(e),
            ReconnectDecision::Reconnect { attempt, at_ns, .. } => {
                let at = self.origin + Duration::from_nanos(at_ns);
                if at >= self.deadline {
                    return Err(self.last_error(&e.to_string()));
                }
                self.attempts = attempt;
                (self.report)(&State::Reconnecting { attempt, cause: DisconnectKind::from_error(&e) }, &e.to_string());
                std::thread::sleep(at.saturating_duration_since(Instant::now()));
                b.poll(self.origin.elapsed().as_nanos() as u64);
                Ok(())
            }
        }
    }

    /// While the stages set up: report each attempt the transport stage made since the
    /// last look (it counts them in `reconnects`, the state says the last one's cause).
    pub(crate) fn watch(&mut self, stats: &StatsRegion) {
        let r = stats.get(Counter::Reconnects);
        if r == self.seen_stage {
            return;
        }
        self.seen_stage = r;
        self.attempts += 1;
        self.stage_reason = stats.reason().message;
        let cause = stats.state_from_cause();
        (self.report)(&State::Reconnecting { attempt: self.attempts, cause }, &self.stage_reason);
    }

    /// Set-up's error: a timeout while the stages were retrying names the last
    /// attempt's failure; anything else is as it came.
    pub(crate) fn setup_error(&self, e: Error) -> Error {
        match e {
            Error::Timeout(_) if self.seen_stage > 0 => self.last_error(&self.stage_reason),
            e => e,
        }
    }

    fn last_error(&self, last: &str) -> Error {
        Error::Timeout(format!(
            "no connection within the set-up timeout of {:.1} s ({} attempt(s)); the last attempt failed: {last}",
            self.timeout.as_secs_f64(),
            self.attempts + 1,
        ))
    }
}
