//! The closing handshake (RFC 6455 §5.5.1, §7): close-frame payloads and the state
//! machine that decides what to send and when the transport may be closed.
//!
//! Sans-IO: time comes in as `Instant`s from the caller, actions go out as values.

use std::time::{Duration, Instant};

use super::frame::{close_code, is_valid_close_code, CloseFrame, ControlPayload};
use super::utf8;

/// Decode a received close payload: empty (code 1005 reported), or a 2-byte code plus
/// UTF-8 reason. Errors carry the close code we must answer with.
pub fn parse_close_payload(p: &[u8]) -> Result<CloseFrame, (u16, &'static str)> {
    match p.len() {
        0 => Ok(CloseFrame {
            code: close_code::NO_STATUS,
            reason: ControlPayload::EMPTY,
        }),
        1 => Err((
            close_code::PROTOCOL_ERROR,
            "close frame with a 1-byte payload",
        )),
        _ => {
            let code = u16::from_be_bytes([p[0], p[1]]);
            if !is_valid_close_code(code) {
                return Err((close_code::PROTOCOL_ERROR, "invalid close code"));
            }
            if !utf8::validate(&p[2..]) {
                return Err((
                    close_code::INVALID_PAYLOAD,
                    "close reason is not valid UTF-8",
                ));
            }
            let reason = ControlPayload::new(&p[2..])
                .ok_or((close_code::PROTOCOL_ERROR, "close frame too long"))?;
            Ok(CloseFrame { code, reason })
        }
    }
}

/// Where the closing handshake stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseState {
    Open,
    /// We sent a close and wait for the server's until `deadline`.
    Sent {
        deadline: Instant,
    },
    /// Both close frames have crossed (or we failed the connection): close the
    /// transport. The client side may close TCP at once; RFC 6455 §7.1.1 prefers the
    /// server to close first, so a caller that can afford it waits briefly for FIN.
    Done,
}

/// What the caller must do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseAction {
    Nothing,
    /// Send a close frame with this code (`None`: empty payload); then, if
    /// `then_close_transport`, close the transport once it is flushed.
    SendClose {
        code: Option<u16>,
        then_close_transport: bool,
    },
    /// Close the transport now.
    CloseTransport,
}

/// The closing handshake from the client's side.
#[derive(Debug, Clone)]
pub struct CloseHandshake {
    state: CloseState,
    timeout: Duration,
    /// The code the connection ended with (ours or the peer's), once known.
    code: Option<u16>,
}

impl CloseHandshake {
    /// `timeout`: how long to wait for the server's close after sending ours.
    pub fn new(timeout: Duration) -> Self {
        CloseHandshake {
            state: CloseState::Open,
            timeout,
            code: None,
        }
    }

    pub fn state(&self) -> CloseState {
        self.state
    }

    pub fn code(&self) -> Option<u16> {
        self.code
    }

    /// May data frames still be sent?
    pub fn can_send_data(&self) -> bool {
        self.state == CloseState::Open
    }

    /// We want to close: send a close frame and start the timer. Calling it again (or
    /// after the peer's close) does nothing — only one close frame is ever sent.
    pub fn local_close(&mut self, code: u16, now: Instant) -> CloseAction {
        if self.state != CloseState::Open {
            return CloseAction::Nothing;
        }
        self.state = CloseState::Sent {
            deadline: now + self.timeout,
        };
        self.code = Some(code);
        CloseAction::SendClose {
            code: Some(code),
            then_close_transport: false,
        }
    }

    /// The server's close frame arrived. If it started the handshake we echo its code
    /// (an empty close for 1005, which must not go on the wire) and then close the
    /// transport; if we started it, the handshake is complete.
    pub fn remote_close(&mut self, frame: &CloseFrame) -> CloseAction {
        match self.state {
            CloseState::Open => {
                self.state = CloseState::Done;
                self.code = Some(frame.code);
                let code = if frame.code == close_code::NO_STATUS {
                    None
                } else {
                    Some(frame.code)
                };
                CloseAction::SendClose {
                    code,
                    then_close_transport: true,
                }
            }
            CloseState::Sent { .. } => {
                self.state = CloseState::Done;
                CloseAction::CloseTransport
            }
            CloseState::Done => CloseAction::Nothing,
        }
    }

    /// The peer broke the protocol: send a close with `code` (unless we already sent
    /// one) and drop the connection (RFC 6455 §7.1.7 "fail the connection").
    pub fn protocol_error(&mut self, code: u16) -> CloseAction {
        let already_sent = matches!(self.state, CloseState::Sent { .. } | CloseState::Done);
        self.state = CloseState::Done;
        if self.code.is_none() {
            self.code = Some(code);
        }
        if already_sent {
            CloseAction::CloseTransport
        } else {
            CloseAction::SendClose {
                code: Some(code),
                then_close_transport: true,
            }
        }
    }

    /// Drive the timer: after our close, give up waiting for the server's at the deadline.
    pub fn poll_timeout(&mut self, now: Instant) -> CloseAction {
        match self.state {
            CloseState::Sent { deadline } if now >= deadline => {
                self.state = CloseState::Done;
                CloseAction::CloseTransport
            }
            _ => CloseAction::Nothing,
        }
    }

    /// When `poll_timeout` should next be called, if ever.
    pub fn deadline(&self) -> Option<Instant> {
        match self.state {
            CloseState::Sent { deadline } => Some(deadline),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cf(code: u16) -> CloseFrame {
        CloseFrame {
            code,
            reason: ControlPayload::new(b"").unwrap(),
        }
    }

    #[test]
    fn payloads() {
        assert_eq!(parse_close_payload(b"").unwrap().code, 1005);
        assert_eq!(parse_close_payload(b"\x03").unwrap_err().0, 1002);
        assert_eq!(parse_close_payload(b"\x03\xe8").unwrap().code, 1000);
        assert_eq!(
            parse_close_payload(b"\x03\xe8bye").unwrap().reason_str(),
            "bye"
        );
        assert_eq!(parse_close_payload(b"\x03\xe8\xff").unwrap_err().0, 1007);
        for bad in [
            0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            assert_eq!(
                parse_close_payload(&bad.to_be_bytes()).unwrap_err().0,
                1002,
                "{bad}"
            );
        }
        for good in [
            1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999,
            4000, 4999,
        ] {
            assert_eq!(parse_close_payload(&good.to_be_bytes()).unwrap().code, good);
        }
    }

    #[test]
    fn server_initiated_echoes_code() {
        let mut h = CloseHandshake::new(Duration::from_secs(1));
        assert_eq!(
            h.remote_close(&cf(1001)),
            CloseAction::SendClose {
                code: Some(1001),
                then_close_transport: true
            }
        );
        assert_eq!(h.state(), CloseState::Done);
        let mut h = CloseHandshake::new(Duration::from_secs(1));
        assert_eq!(
            h.remote_close(&cf(1005)),
            CloseAction::SendClose {
                code: None,
                then_close_transport: true
            }
        );
    }

    #[test]
    fn client_initiated_waits_then_times_out() {
        let t0 = Instant::now();
        let mut h = CloseHandshake::new(Duration::from_millis(500));
        assert!(matches!(
            h.local_close(1000, t0),
            CloseAction::SendClose {
                code: Some(1000),
                ..
            }
        ));
        assert_eq!(h.local_close(1000, t0), CloseAction::Nothing);
        assert!(!h.can_send_data());
        assert_eq!(
            h.poll_timeout(t0 + Duration::from_millis(499)),
            CloseAction::Nothing
        );
        assert_eq!(
            h.poll_timeout(t0 + Duration::from_millis(500)),
            CloseAction::CloseTransport
        );
        let mut h = CloseHandshake::new(Duration::from_millis(500));
        h.local_close(1000, t0);
        assert_eq!(h.remote_close(&cf(1000)), CloseAction::CloseTransport);
        assert_eq!(h.deadline(), None);
    }

    #[test]
    fn protocol_error_sends_once() {
        let mut h = CloseHandshake::new(Duration::from_secs(1));
        assert_eq!(
            h.protocol_error(1007),
            CloseAction::SendClose {
                code: Some(1007),
                then_close_transport: true
            }
        );
        let mut h = CloseHandshake::new(Duration::from_secs(1));
        h.local_close(1000, Instant::now());
        assert_eq!(h.protocol_error(1002), CloseAction::CloseTransport);
    }
}
