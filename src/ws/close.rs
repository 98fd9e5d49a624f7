//! Close-frame payloads (RFC 6455 §5.5.1, §7.4): the parser decodes a server's close
//! with [`parse_close_payload`], checking the code with the one rule
//! ([`is_valid_close_code`]) that `Pipeline::close` also applies to ours. The closing
//! handshake itself (echo, timeout, shutdown) is the transport stage's
//! (`stage::TransportStage`).

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
