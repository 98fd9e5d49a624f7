//! Message keys: which (stream, sequence) a message carries, so that the arbiter can
//! take each message once from whichever leg brings it first.
//!
//! Built-ins:
//! - [`JsonField`]: an unsigned integer field of a JSON object, found by a scanner that
//!   walks the top-level object's keys and *skips* every value it does not want (strings
//!   with escapes, nested objects and arrays) without parsing it. Rules:
//!   - a plain name (`"seq"`, Binance's `"u"`) matches a key of the **top-level** object
//!     only; the same name inside a nested object or array never matches (an order's
//!     `"u"` inside `"data"` is not the message's sequence);
//!   - a dotted path (`"data.u"`, Binance's combined streams) descends into the named
//!     objects, at most [`JsonField::MAX_DEPTH`] levels; each level is again top-level only;
//!   - keys are compared byte for byte as written (case-sensitive, escapes not decoded);
//!     the first occurrence wins;
//!   - the value must be a non-negative JSON integer that fits `u64`, followed by
//!     whitespace, `,` or `}`; a negative number, a fraction, an exponent, a leading zero,
//!     `null`, a string or a truncated message give *no key* — unless
//!     [`allow_quoted`](JsonField::allow_quoted) accepts `"123"` as 123;
//!   - whitespace anywhere JSON allows it is fine; the top level must be an object.
//! - [`BinaryField`]: an unsigned integer at a fixed offset, width 1, 2, 4 or 8, big or
//!   little endian; a message too short gives no key.
//! - a plain function or a closure (the C callback is wrapped as one by the FFI layer).
//!
//! A stream id, when configured, comes from a second field: a JSON integer (fits `u32`)
//! or a JSON string (hashed with 32-bit FNV-1a over its raw bytes — two names colliding
//! would be arbitrated as one stream; with a few hundred symbols the chance is ~10⁻⁵),
//! or a binary integer (low 32 bits). A configured stream field that is missing means no
//! key: the message is treated like an ack or a heartbeat.

use super::ConfigError;

/// A message's identity in the merged stream: a sequence number within a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub stream: u32,
    pub seq: u64,
}

impl Key {
    pub fn new(stream: u32, seq: u64) -> Self {
        Key { stream, seq }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endian {
    Big,
    Little,
}

/// An unsigned integer at a fixed offset of a binary message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BinaryField {
    offset: usize,
    width: u8,
    endian: Endian,
}

impl BinaryField {
    pub fn new(offset: usize, width: u8, endian: Endian) -> Result<Self, ConfigError> {
        if !matches!(width, 1 | 2 | 4 | 8) {
            return Err(ConfigError(
                "binary key: the width must be 1, 2, 4 or 8 bytes",
            ));
        }
        if offset.checked_add(usize::from(width)).is_none() {
            return Err(ConfigError("binary key: offset too large"));
        }
        Ok(BinaryField {
            offset,
            width,
            endian,
        })
    }

    #[inline]
    pub fn read(&self, msg: &[u8]) -> Option<u64> {
        let w = usize::from(self.width);
        let b = msg.get(self.offset..self.offset + w)?;
        let mut buf = [0u8; 8];
        Some(match self.endian {
            Endian::Big => {
                buf[8 - w..].copy_from_slice(b);
                u64::from_be_bytes(buf)
            }
            Endian::Little => {
                buf[..w].copy_from_slice(b);
                u64::from_le_bytes(buf)
            }
        })
    }
}

/// A field of a JSON object, by name or dotted path. See the module comment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonField {
    path: [u8; JsonField::MAX_PATH],
    /// (start, len) of each segment within `path`.
    segs: [(u8, u8); JsonField::MAX_DEPTH],
    nsegs: u8,
    allow_quoted: bool,
}

impl JsonField {
    pub const MAX_DEPTH: usize = 4;
    pub const MAX_PATH: usize = 64;

    /// `"seq"`, `"u"`, or `"data.u"`. Segments are non-empty; a name containing a dot
    /// cannot be expressed (none of the feeds we know uses one).
    pub fn new(path: &str) -> Result<Self, ConfigError> {
        let b = path.as_bytes();
        if b.is_empty() || b.len() > Self::MAX_PATH {
            return Err(ConfigError(
                "JSON key: the field name must be 1 to 64 bytes",
            ));
        }
        let mut f = JsonField {
            path: [0; Self::MAX_PATH],
            segs: [(0, 0); Self::MAX_DEPTH],
            nsegs: 0,
            allow_quoted: false,
        };
        f.path[..b.len()].copy_from_slice(b);
        let mut start = 0usize;
        for (i, seg) in path.split('.').enumerate() {
            if seg.is_empty() {
                return Err(ConfigError("JSON key: empty segment in the field path"));
            }
            if i == Self::MAX_DEPTH {
                return Err(ConfigError("JSON key: at most 4 levels in the field path"));
            }
            f.segs[i] = (start as u8, seg.len() as u8);
            start += seg.len() + 1;
            f.nsegs += 1;
        }
        Ok(f)
    }

    /// Also accept the integer as a JSON string (`"u":"160"`).
    pub fn allow_quoted(mut self, yes: bool) -> Self {
        self.allow_quoted = yes;
        self
    }

    fn seg(&self, i: usize) -> &[u8] {
        let (s, l) = self.segs[i];
        &self.path[usize::from(s)..usize::from(s) + usize::from(l)]
    }

    /// Index of the value of this field in `msg`.
    fn locate(&self, msg: &[u8]) -> Option<usize> {
        let mut i = 0;
        for d in 0..usize::from(self.nsegs) {
            i = find_in_object(msg, i, self.seg(d))?;
        }
        Some(i)
    }

    /// The field as an unsigned integer.
    #[inline]
    pub fn read_u64(&self, msg: &[u8]) -> Option<u64> {
        let i = self.locate(msg)?;
        match *msg.get(i)? {
            b'"' if self.allow_quoted => {
                let (v, end) = parse_uint(msg, i + 1)?;
                (msg.get(end) == Some(&b'"')).then_some(v)
            }
            _ => {
                let (v, end) = parse_uint(msg, i)?;
                matches!(
                    msg.get(end),
                    Some(b' ' | b'\t' | b'\n' | b'\r' | b',' | b'}')
                )
                .then_some(v)
            }
        }
    }

    /// The field as a stream id: an integer that fits `u32`, or a string's FNV-1a hash.
    pub fn read_stream(&self, msg: &[u8]) -> Option<u32> {
        let i = self.locate(msg)?;
        if msg.get(i) == Some(&b'"') {
            let end = string_end(msg, i)?;
            return Some(fnv1a32(&msg[i + 1..end - 1]));
        }
        let (v, end) = parse_uint(msg, i)?;
        if !matches!(
            msg.get(end),
            Some(b' ' | b'\t' | b'\n' | b'\r' | b',' | b'}')
        ) {
            return None;
        }
        u32::try_from(v).ok()
    }
}

fn fnv1a32(b: &[u8]) -> u32 {
    let mut h = 0x811c_9dc5u32;
    for &c in b {
        h ^= u32::from(c);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

#[inline]
fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = b.get(i) {
        i += 1;
    }
    i
}

/// `b[i]` is `"`: the index just past the closing quote.
#[inline]
fn string_end(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    loop {
        match *b.get(j)? {
            b'"' => return Some(j + 1),
            b'\\' => j += 2,
            _ => j += 1,
        }
    }
}

/// Skip one JSON value starting at `b[i]` (not whitespace): the index just past it.
/// Objects and arrays are skipped by depth counting (strings inside honoured), scalars
/// up to the next delimiter; neither is validated beyond what finding its end needs.
fn skip_value(b: &[u8], i: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' => string_end(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            loop {
                match *b.get(j)? {
                    b'"' => {
                        j = string_end(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
        }
        _ => {
            let mut j = i;
            while let Some(&c) = b.get(j) {
                if matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                    break;
                }
                j += 1;
            }
            (j > i).then_some(j)
        }
    }
}

/// The object starting at `b[i]` (after whitespace): the index of the value of its
/// first key equal to `name`, or `None` (not an object, no such key, malformed).
fn find_in_object(b: &[u8], i: usize, name: &[u8]) -> Option<usize> {
    let mut i = skip_ws(b, i);
    if *b.get(i)? != b'{' {
        return None;
    }
    i += 1;
    loop {
        i = skip_ws(b, i);
        if *b.get(i)? != b'"' {
            return None; // `}` (end, not found) or malformed
        }
        let end = string_end(b, i)?;
        let key = &b[i + 1..end - 1];
        i = skip_ws(b, end);
        if *b.get(i)? != b':' {
            return None;
        }
        i = skip_ws(b, i + 1);
        if key == name {
            return Some(i);
        }
        i = skip_ws(b, skip_value(b, i)?);
        match *b.get(i)? {
            b',' => i += 1,
            _ => return None,
        }
    }
}

/// Decimal digits at `b[i]`: (value, index after the digits). No sign, no leading zero,
/// no overflow.
#[inline]
fn parse_uint(b: &[u8], i: usize) -> Option<(u64, usize)> {
    let mut j = i;
    let mut v = 0u64;
    while let Some(&c) = b.get(j) {
        if !c.is_ascii_digit() {
            break;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
        j += 1;
    }
    if j == i || (b[i] == b'0' && j > i + 1) {
        return None;
    }
    if matches!(b.get(j), Some(b'.' | b'e' | b'E')) {
        return None;
    }
    Some((v, j))
}

/// A key-reading closure (what [`KeyExtractor::Custom`] holds).
pub type KeyFn = Box<dyn FnMut(&[u8]) -> Option<Key> + Send>;

/// How to read a message's key.
pub enum KeyExtractor {
    /// Messages have no key (single leg, or arbitration by primary leg only).
    None,
    /// JSON integer field; stream from another field, or stream 0.
    Json {
        seq: JsonField,
        stream: Option<JsonField>,
    },
    /// Fixed-offset binary integer; stream from another, or stream 0.
    Binary {
        seq: BinaryField,
        stream: Option<BinaryField>,
    },
    /// A plain function returning `(stream id, sequence)`.
    Callback(fn(&[u8]) -> Option<(u32, u64)>),
    /// Anything else (the FFI layer wraps a C callback and its user data in one).
    Custom(KeyFn),
}

impl std::fmt::Debug for KeyExtractor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyExtractor::None => f.write_str("None"),
            KeyExtractor::Json { seq, stream } => f
                .debug_struct("Json")
                .field("seq", seq)
                .field("stream", stream)
                .finish(),
            KeyExtractor::Binary { seq, stream } => f
                .debug_struct("Binary")
                .field("seq", seq)
                .field("stream", stream)
                .finish(),
            KeyExtractor::Callback(_) => f.write_str("Callback"),
            KeyExtractor::Custom(_) => f.write_str("Custom"),
        }
    }
}

impl KeyExtractor {
    /// Stream 0, sequence from the JSON field `name` (or dotted path).
    pub fn json(name: &str) -> Result<Self, ConfigError> {
        Ok(KeyExtractor::Json {
            seq: JsonField::new(name)?,
            stream: None,
        })
    }

    /// Stream 0, sequence from a binary field.
    pub fn binary(offset: usize, width: u8, endian: Endian) -> Result<Self, ConfigError> {
        Ok(KeyExtractor::Binary {
            seq: BinaryField::new(offset, width, endian)?,
            stream: None,
        })
    }

    /// The key of `msg` (one WebSocket message's payload), if it has one.
    #[inline]
    pub fn key(&mut self, msg: &[u8]) -> Option<Key> {
        match self {
            KeyExtractor::None => None,
            KeyExtractor::Json { seq, stream } => {
                let s = match stream {
                    Some(f) => f.read_stream(msg)?,
                    None => 0,
                };
                Some(Key::new(s, seq.read_u64(msg)?))
            }
            KeyExtractor::Binary { seq, stream } => {
                let s = match stream {
                    Some(f) => f.read(msg)? as u32,
                    None => 0,
                };
                Some(Key::new(s, seq.read(msg)?))
            }
            KeyExtractor::Callback(f) => f(msg).map(|(s, q)| Key::new(s, q)),
            KeyExtractor::Custom(f) => f(msg),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(name: &str, msg: &str) -> Option<u64> {
        JsonField::new(name).unwrap().read_u64(msg.as_bytes())
    }

    #[test]
    fn json_top_level_integer() {
        assert_eq!(seq("seq", r#"{"seq":42}"#), Some(42));
        assert_eq!(seq("seq", r#"{"a":1,"seq":42,"b":2}"#), Some(42));
        assert_eq!(seq("seq", " \n{ \"seq\" \t:\r\n 42 \n} "), Some(42));
        assert_eq!(seq("seq", r#"{"seq":0}"#), Some(0));
        assert_eq!(
            seq("seq", r#"{"seq":18446744073709551615}"#),
            Some(u64::MAX)
        );
        let binance = r#"{"e":"depthUpdate","E":1672515782136,"s":"BNBBTC","U":157,"u":160,"b":[["0.0024","10"]],"a":[["0.0026","100"]]}"#;
        assert_eq!(seq("u", binance), Some(160));
        assert_eq!(seq("U", binance), Some(157), "case-sensitive");
        assert_eq!(seq("E", binance), Some(1672515782136));
    }

    #[test]
    fn json_nested_does_not_match() {
        assert_eq!(seq("seq", r#"{"data":{"seq":5}}"#), None);
        assert_eq!(seq("seq", r#"{"data":{"seq":5},"seq":6}"#), Some(6));
        assert_eq!(
            seq("seq", r#"{"list":[{"seq":5},{"seq":7}],"seq":8}"#),
            Some(8)
        );
        assert_eq!(
            seq("seq", r#"{"s":"\"seq\":5","seq":9}"#),
            Some(9),
            "a key inside a string"
        );
        assert_eq!(
            seq("seq", r#"{"s":"a\\","seq":10}"#),
            Some(10),
            "escaped backslash before the quote"
        );
        assert_eq!(seq("seq", r#"{"seq x":1,"xseq":2,"seq":3}"#), Some(3));
        assert_eq!(
            seq("seq", r#"[{"seq":1}]"#),
            None,
            "top level must be an object"
        );
        assert_eq!(
            seq("seq", r#"{"seq":1,"seq":2}"#),
            Some(1),
            "first occurrence wins"
        );
    }

    #[test]
    fn json_dotted_path() {
        let m = r#"{"stream":"btcusdt@depth","data":{"e":"depthUpdate","U":157,"u":160}}"#;
        assert_eq!(seq("data.u", m), Some(160));
        assert_eq!(seq("u", m), None);
        assert_eq!(seq("data.x.u", m), None);
        assert_eq!(seq("a.b.c.d", r#"{"a":{"b":{"c":{"d":4}}}}"#), Some(4));
        assert!(JsonField::new("a.b.c.d.e").is_err());
        assert!(JsonField::new("a..b").is_err());
        assert!(JsonField::new("").is_err());
        assert_eq!(seq("data.u", r#"{"data":[{"u":1}]}"#), None);
        assert_eq!(seq("data.u", r#"{"data":{"x":{"u":1}}}"#), None);
    }

    #[test]
    fn json_invalid_values_give_no_key() {
        for m in [
            r#"{"seq":-1}"#,
            r#"{"seq":1.5}"#,
            r#"{"seq":1e3}"#,
            r#"{"seq":01}"#,
            r#"{"seq":null}"#,
            r#"{"seq":true}"#,
            r#"{"seq":"12"}"#,
            r#"{"seq":18446744073709551616}"#,
            r#"{"seq":12"#,
            r#"{"seq":12x}"#,
            r#"{"seq":}"#,
            r#"{"seq""#,
            r#"{"seq"12}"#,
            r#"{"other":1}"#,
            r#"{}"#,
            r#""#,
            r#"{"a":{"b":1}"#,
            r#"{"a":"unterminated"#,
            "{\"a\" 1, \"seq\":1}",
        ] {
            assert_eq!(seq("seq", m), None, "{m}");
        }
        let q = JsonField::new("seq").unwrap().allow_quoted(true);
        assert_eq!(q.read_u64(br#"{"seq":"12"}"#), Some(12));
        assert_eq!(q.read_u64(br#"{"seq":12}"#), Some(12));
        assert_eq!(q.read_u64(br#"{"seq":"-12"}"#), None);
        assert_eq!(q.read_u64(br#"{"seq":"12a"}"#), None);
    }

    #[test]
    fn json_stream_ids() {
        let mut k = KeyExtractor::Json {
            seq: JsonField::new("data.u").unwrap(),
            stream: Some(JsonField::new("stream").unwrap()),
        };
        let a = k
            .key(br#"{"stream":"btcusdt@depth","data":{"u":160}}"#)
            .unwrap();
        let b = k
            .key(br#"{"stream":"ethusdt@depth","data":{"u":160}}"#)
            .unwrap();
        let a2 = k
            .key(br#"{"data":{"u":161}, "stream" : "btcusdt@depth"}"#)
            .unwrap();
        assert_ne!(a.stream, b.stream);
        assert_eq!(a.stream, a2.stream);
        assert_eq!((a.seq, a2.seq), (160, 161));
        assert_eq!(
            k.key(br#"{"data":{"u":160}}"#),
            None,
            "missing stream field: no key"
        );
        let mut n = KeyExtractor::Json {
            seq: JsonField::new("seq").unwrap(),
            stream: Some(JsonField::new("ch").unwrap()),
        };
        assert_eq!(n.key(br#"{"ch":7,"seq":3}"#), Some(Key::new(7, 3)));
        assert_eq!(n.key(br#"{"ch":4294967296,"seq":3}"#), None);
    }

    #[test]
    fn binary_fields() {
        let m = [0x01u8, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09];
        let rd = |o, w, e| BinaryField::new(o, w, e).unwrap().read(&m);
        assert_eq!(rd(0, 1, Endian::Big), Some(1));
        assert_eq!(rd(1, 2, Endian::Big), Some(0x0203));
        assert_eq!(rd(1, 2, Endian::Little), Some(0x0302));
        assert_eq!(rd(0, 4, Endian::Big), Some(0x01020304));
        assert_eq!(rd(5, 4, Endian::Little), Some(0x09080706));
        assert_eq!(rd(1, 8, Endian::Big), Some(0x0203040506070809));
        assert_eq!(rd(1, 8, Endian::Little), Some(0x0908070605040302));
        assert_eq!(rd(2, 8, Endian::Big), None, "too short");
        assert_eq!(rd(9, 1, Endian::Big), None);
        assert!(BinaryField::new(0, 3, Endian::Big).is_err());
        assert!(BinaryField::new(usize::MAX, 8, Endian::Big).is_err());
        let mut k = KeyExtractor::Binary {
            seq: BinaryField::new(4, 4, Endian::Big).unwrap(),
            stream: Some(BinaryField::new(0, 2, Endian::Big).unwrap()),
        };
        assert_eq!(k.key(&m), Some(Key::new(0x0102, 0x05060708)));
    }

    #[test]
    fn callbacks() {
        fn first_byte(m: &[u8]) -> Option<(u32, u64)> {
            m.first().map(|&b| (1, u64::from(b)))
        }
        let mut k = KeyExtractor::Callback(first_byte);
        assert_eq!(k.key(b"\x07"), Some(Key::new(1, 7)));
        assert_eq!(k.key(b""), None);
        let mut calls = 0u32;
        let mut c = KeyExtractor::Custom(Box::new(move |m: &[u8]| {
            calls += 1;
            Some(Key::new(calls, m.len() as u64))
        }));
        assert_eq!(c.key(b"abc"), Some(Key::new(1, 3)));
        assert_eq!(c.key(b"ab"), Some(Key::new(2, 2)));
        assert_eq!(KeyExtractor::None.key(b"{\"seq\":1}"), None);
    }

    #[test]
    fn json_scanner_never_panics() {
        // Every prefix and every single-byte corruption of a few messages.
        let msgs: [&[u8]; 3] = [
            br#"{"e":"x","s":"a\"b","L":[1,[2,{"u":3}]],"u":160, "z" : {"q":"}"}}"#,
            br#"{"data":{"u":5},"stream":"s"}"#,
            b"{ \"seq\" : 123 }",
        ];
        let f = JsonField::new("u").unwrap();
        let g = JsonField::new("data.u").unwrap().allow_quoted(true);
        for m in msgs {
            for n in 0..=m.len() {
                let _ = f.read_u64(&m[..n]);
                let _ = g.read_u64(&m[..n]);
                let _ = f.read_stream(&m[..n]);
            }
            for i in 0..m.len() {
                for c in [
                    b'"', b'\\', b'{', b'}', b'[', b']', b',', b':', b'-', b'0', b' ',
                ] {
                    let mut v = m.to_vec();
                    v[i] = c;
                    let _ = f.read_u64(&v);
                    let _ = g.read_u64(&v);
                    let _ = g.read_stream(&v);
                }
            }
        }
        assert_eq!(f.read_u64(msgs[0]), Some(160));
    }
}
