//! Incremental UTF-8 validation (RFC 3629), for text messages that arrive in pieces.
//!
//! The validator keeps the state of an unfinished code point between calls, so a
//! message split across frames, fragments or reads is checked exactly once, and an
//! invalid byte is reported the moment it is fed (RFC 6455 §8.1 "fail fast"), not when
//! the message ends. Each lead byte fixes the allowed range of its *next* byte, which
//! rejects overlong forms (C0/C1, E0 80.., F0 80..), surrogates (ED A0..) and code
//! points above U+10FFFF (F4 90.., F5..) at the earliest byte that proves them bad.
//!
//! Market data is mostly ASCII JSON, so runs of ASCII are checked a word at a time
//! (32 bytes per test of the high bits, 8-byte steps to find the first non-ASCII
//! byte); the byte path runs only around
//! non-ASCII characters.

const HIGH: u64 = 0x8080_8080_8080_8080;

/// Where an invalid sequence was found: index of the offending byte in the slice that
/// was fed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Utf8Error {
    pub at: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Utf8Validator {
    /// Continuation bytes still expected for the current code point (0 = boundary).
    need: u8,
    /// Allowed range of the next continuation byte.
    lo: u8,
    hi: u8,
}

impl Default for Utf8Validator {
    fn default() -> Self {
        Self::new()
    }
}

/// For a lead byte: (continuation bytes, range of the first continuation), or None.
#[inline]
fn lead(b: u8) -> Option<(u8, u8, u8)> {
    Some(match b {
        0xC2..=0xDF => (1, 0x80, 0xBF),
        0xE0 => (2, 0xA0, 0xBF),
        0xE1..=0xEC | 0xEE..=0xEF => (2, 0x80, 0xBF),
        0xED => (2, 0x80, 0x9F),
        0xF0 => (3, 0x90, 0xBF),
        0xF1..=0xF3 => (3, 0x80, 0xBF),
        0xF4 => (3, 0x80, 0x8F),
        _ => return None,
    })
}

impl Utf8Validator {
    pub const fn new() -> Self {
        Utf8Validator {
            need: 0,
            lo: 0x80,
            hi: 0xBF,
        }
    }

    /// True when everything fed so far ends on a code point boundary: a text message
    /// is valid only if this holds after its final fragment.
    #[inline]
    pub fn is_complete(&self) -> bool {
        self.need == 0
    }

    pub fn reset(&mut self) {
        *self = Self::new();
    }

    /// Validate the next bytes of the stream. On error the validator's state is
    /// unspecified (the connection is failing anyway).
    #[inline]
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), Utf8Error> {
        let n = bytes.len();
        let mut i = 0;
        // Finish a code point left open by the previous call.
        while self.need > 0 {
            let Some(&c) = bytes.get(i) else {
                return Ok(());
            };
            if c < self.lo || c > self.hi {
                return Err(Utf8Error { at: i });
            }
            self.need -= 1;
            self.lo = 0x80;
            self.hi = 0xBF;
            i += 1;
        }
        loop {
            // ASCII fast path: 32 bytes per test (four u64 loads OR-ed, which the
            // compiler turns into vector loads), then 8-byte steps to pinpoint the
            // first non-ASCII byte (little-endian load: lowest set bit = first byte).
            while i + 32 <= n {
                let c = &bytes[i..i + 32];
                let w = load8(&c[0..8]) | load8(&c[8..16]) | load8(&c[16..24]) | load8(&c[24..32]);
                if w & HIGH != 0 {
                    break;
                }
                i += 32;
            }
            while i + 8 <= n {
                let m = load8(&bytes[i..i + 8]) & HIGH;
                if m != 0 {
                    i += (m.trailing_zeros() / 8) as usize;
                    break;
                }
                i += 8;
            }
            let Some(&b) = bytes.get(i) else {
                return Ok(());
            };
            i += 1;
            if b < 0x80 {
                continue;
            }
            let Some((mut need, mut lo, mut hi)) = lead(b) else {
                return Err(Utf8Error { at: i - 1 });
            };
            // Whole character in hand (the usual case): check it without the
            // resumable loop. Bytes after the first continuation only need 80..BF,
            // i.e. a signed value below -64.
            if let Some(cont) = bytes.get(i..i + need as usize) {
                if cont[0] < lo || cont[0] > hi {
                    return Err(Utf8Error { at: i });
                }
                if let Some(k) = cont[1..].iter().position(|&c| c as i8 >= -64) {
                    return Err(Utf8Error { at: i + 1 + k });
                }
                i += need as usize;
                continue;
            }
            while need > 0 {
                let Some(&c) = bytes.get(i) else {
                    // Sequence continues in the next piece.
                    *self = Utf8Validator { need, lo, hi };
                    return Ok(());
                };
                if c < lo || c > hi {
                    return Err(Utf8Error { at: i });
                }
                lo = 0x80;
                hi = 0xBF;
                need -= 1;
                i += 1;
            }
        }
    }
}

#[inline]
fn load8(s: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(s);
    u64::from_le_bytes(w)
}

/// Whole-buffer convenience: is `bytes` complete, valid UTF-8?
pub fn validate(bytes: &[u8]) -> bool {
    let mut v = Utf8Validator::new();
    v.feed(bytes).is_ok() && v.is_complete()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every 1-, 2- and 3-byte sequence, and 4-byte ones over a sample, against std,
    /// fed whole and byte by byte.
    #[test]
    fn agrees_with_std_exhaustively_short() {
        let check = |s: &[u8]| {
            let want = std::str::from_utf8(s).is_ok();
            assert_eq!(validate(s), want, "{s:02x?}");
            let mut v = Utf8Validator::new();
            let mut ok = true;
            for b in s {
                if v.feed(std::slice::from_ref(b)).is_err() {
                    ok = false;
                    break;
                }
            }
            assert_eq!(ok && v.is_complete(), want, "bytewise {s:02x?}");
        };
        for a in 0..=255u8 {
            check(&[a]);
            for b in 0..=255u8 {
                check(&[a, b]);
                if a >= 0xC0 {
                    for c in (0..=255u8)
                        .step_by(7)
                        .chain([0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0])
                    {
                        check(&[a, b, c]);
                        if a >= 0xF0 {
                            check(&[a, b, c, 0x80]);
                            check(&[a, b, c, 0xBF]);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn error_position_is_first_bad_byte() {
        let mut v = Utf8Validator::new();
        let s = b"0123456789abcdefghij\xED\xA0\x80";
        assert_eq!(v.feed(s), Err(Utf8Error { at: 21 }));
        let mut v = Utf8Validator::new();
        assert_eq!(
            v.feed(b"0123456789abcdefXYZ\xC0"),
            Err(Utf8Error { at: 19 })
        );
    }

    #[test]
    fn fast_path_boundaries() {
        for pos in 0..40 {
            let mut s = vec![b'a'; 40];
            s[pos] = 0xFF;
            let mut v = Utf8Validator::new();
            assert_eq!(v.feed(&s), Err(Utf8Error { at: pos }));
            let mut s = vec![b'a'; 40];
            s.splice(pos..pos, "€".bytes());
            assert!(validate(&s));
        }
    }
}
