//! Per-message timestamps and the latency histograms of the stats region.
//!
//! Every message carries four CLOCK_MONOTONIC nanosecond stamps ([`Timestamps`]):
//! - `arrival`: the packet that completed it reached us. XDP: the NIC's time is not
//!   offered on veth (no XDP RX metadata), so the time our poll took the batch off the
//!   RX ring; kernel sockets: the socket's receive timestamp (`SO_TIMESTAMPNS`, the
//!   kernel's time of the skb); synthetic: when the bytes were generated.
//! - `decrypted`: the transport wrote the plaintext into MSG_INBOX.
//! - `parsed`: the WebSocket stage published the frame.
//! - `delivered`: the AppClient (callback or poll) took it.
//!
//! Clocks are read once per batch, never per message: the transport once per read
//! batch, the WebSocket stage once per poll that publishes, the reader once per run of
//! frames found waiting. CLOCK_MONOTONIC is read through the vDSO (the TSC and a
//! multiply, the kernel's own calibration, no syscall), so the stamps of stages in
//! different processes compare directly.
//!
//! The histograms are HdrHistogram-style log-linear: values below 2^(SUB_BITS+1) ns
//! are exact, above that every power of two is split into 2^SUB_BITS buckets (a bucket
//! spans at most 1/32 of its value: 3 % resolution), up to 2^40 ns (18 minutes); larger
//! values land in the last bucket. Fixed memory in the stats region, one writer each
//! (the reader of WS_FRAME_INFO), Relaxed load + store like every counter.

use std::cell::Cell;

/// When a message passed each stage (CLOCK_MONOTONIC ns; 0: not known).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timestamps {
    /// The packet that completed the message arrived (see the module docs for the source).
    pub arrival_ns: u64,
    /// Its plaintext was in MSG_INBOX.
    pub decrypted_ns: u64,
    /// The WebSocket stage published it.
    pub parsed_ns: u64,
    /// The AppClient took it (callback about to run, or `next_frame`/`pl_poll`).
    pub delivered_ns: u64,
}

impl Timestamps {
    /// The stamps of the message being delivered on this thread: inside a message
    /// callback, the message of that call; after `Receiver::next_frame` (or `pl_poll`),
    /// the frame it returned. `None` before any message on this thread.
    pub fn current() -> Option<Timestamps> {
        CURRENT.with(|c| c.get())
    }

    pub(crate) fn set_current(t: Timestamps) {
        CURRENT.with(|c| c.set(Some(t)));
    }

    /// CLOCK_MONOTONIC ns to ns since the Unix epoch (CLOCK_REALTIME now minus
    /// CLOCK_MONOTONIC now: exact unless the wall clock steps in between).
    pub fn to_unix_ns(mono_ns: u64) -> u64 {
        mono_ns.wrapping_add(realtime_offset_ns())
    }
}

thread_local! {
    static CURRENT: Cell<Option<Timestamps>> = const { Cell::new(None) };
}

/// CLOCK_REALTIME in nanoseconds since the Unix epoch (vDSO).
pub fn realtime_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CLOCK_REALTIME minus CLOCK_MONOTONIC now (ns, wrapping): add it to a monotonic
/// stamp for Unix time, subtract it from a kernel's realtime stamp for a monotonic one.
pub fn realtime_offset_ns() -> u64 {
    realtime_ns().wrapping_sub(crate::stage::now_ns())
}

/// Where the server stamps its messages, for the one-way server -> client histogram
/// (`server_to_delivered`: the server's stamp to our delivery, both as Unix time, so
/// only as good as the two clocks' agreement).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerStamp {
    /// The first JSON member `"name": <integer>` (the integer may be quoted) in the
    /// payload, in units of `unit_ns` since the Unix epoch (1: ns, 1_000_000: ms, as
    /// many exchanges' `"E"` / `"T"` fields are).
    JsonField { name: String, unit_ns: u64 },
    /// An unsigned integer of `width` bytes (4 or 8) at `offset` in the payload.
    Binary { offset: usize, width: u8, big_endian: bool, unit_ns: u64 },
}

impl ServerStamp {
    /// Refuse what could never match (an empty or quoted name, a width other than 4
    /// or 8, a zero unit) with a message naming the field.
    pub fn check(&self) -> crate::error::Result<()> {
        let bad = |m: String| Err(crate::error::Error::Config(m));
        match self {
            ServerStamp::JsonField { name, .. } if name.is_empty() || name.contains(['"', '\\']) => {
                bad(format!("server stamp JSON field {name:?}: must be non-empty, without quotes or backslashes"))
            }
            ServerStamp::Binary { width, .. } if *width != 4 && *width != 8 => {
                bad(format!("server stamp width {width}: expected 4 or 8 bytes"))
            }
            ServerStamp::JsonField { unit_ns: 0, .. } | ServerStamp::Binary { unit_ns: 0, .. } => {
                bad("server stamp unit_ns 0: expected 1 (ns), 1000 (us), 1000000 (ms) ...".into())
            }
            _ => Ok(()),
        }
    }

    /// The matcher: the quoted name is built once, not per message.
    pub(crate) fn reader(&self) -> StampReader {
        match self {
            ServerStamp::JsonField { name, unit_ns } => StampReader { pat: format!("\"{name}\"").into_bytes(), src: self.clone(), unit_ns: *unit_ns },
            ServerStamp::Binary { unit_ns, .. } => StampReader { pat: Vec::new(), src: self.clone(), unit_ns: *unit_ns },
        }
    }
}

/// A compiled [`ServerStamp`].
pub(crate) struct StampReader {
    pat: Vec<u8>,
    src: ServerStamp,
    unit_ns: u64,
}

impl StampReader {
    /// The server's stamp in `payload`, ns since the Unix epoch (None: not there, not a
    /// number, or overflowing).
    pub(crate) fn read(&self, payload: &[u8]) -> Option<u64> {
        let v = match &self.src {
            ServerStamp::Binary { offset, width, big_endian, .. } => {
                let b = payload.get(*offset..offset.checked_add(*width as usize)?)?;
                let mut x = [0u8; 8];
                if *big_endian {
                    x[8 - b.len()..].copy_from_slice(b);
                    u64::from_be_bytes(x)
                } else {
                    x[..b.len()].copy_from_slice(b);
                    u64::from_le_bytes(x)
                }
            }
            ServerStamp::JsonField { .. } => {
                // The quote, then the rest of the quoted name byte by byte: a memcmp call
                // per window cost ~8x more on a 100-byte trade message.
                let (q, name) = self.pat.split_first()?;
                let mut from = 0;
                let at = loop {
                    let at = from + payload.get(from..)?.iter().position(|b| b == q)?;
                    let cand = payload.get(at + 1..at + 1 + name.len())?;
                    if cand.iter().zip(name).all(|(a, b)| a == b) {
                        break at;
                    }
                    from = at + 1;
                };
                let mut rest = &payload[at + self.pat.len()..];
                let skip_ws = |r: &mut &[u8]| {
                    while let [b' ' | b'\t' | b'\n' | b'\r', tail @ ..] = *r {
                        *r = tail;
                    }
                };
                skip_ws(&mut rest);
                rest = rest.strip_prefix(b":")?;
                skip_ws(&mut rest);
                if let Some(r) = rest.strip_prefix(b"\"") {
                    rest = r;
                }
                let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
                if digits == 0 || digits > 20 {
                    return None;
                }
                rest[..digits].iter().try_fold(0u64, |a, &d| a.checked_mul(10)?.checked_add((d - b'0') as u64))?
            }
        };
        v.checked_mul(self.unit_ns)
    }
}

/// Sub-bucket bits: 2^SUB_BITS buckets per power of two.
pub const SUB_BITS: u32 = 5;
const LINEAR: u64 = 1 << (SUB_BITS + 1);
/// The largest power of two with its own buckets (2^40 ns, about 18 minutes).
const TOP_EXP: u32 = 40;
/// Buckets per histogram.
pub const BUCKETS: usize = LINEAR as usize + ((TOP_EXP - SUB_BITS) as usize) * (1 << SUB_BITS);

/// The bucket of a value (ns).
#[inline]
pub fn bucket_of(v: u64) -> usize {
    if v < LINEAR {
        return v as usize;
    }
    let e = 63 - v.leading_zeros();
    if e > TOP_EXP {
        return BUCKETS - 1;
    }
    let sub = (v >> (e - SUB_BITS)) - (1 << SUB_BITS);
    LINEAR as usize + ((e - SUB_BITS - 1) as usize) * (1 << SUB_BITS) + sub as usize
}

/// The smallest value of bucket `b` (inclusive) and the next bucket's (exclusive).
pub fn bucket_range(b: usize) -> (u64, u64) {
    if b < LINEAR as usize {
        return (b as u64, b as u64 + 1);
    }
    let g = (b - LINEAR as usize) >> SUB_BITS;
    let sub = ((b - LINEAR as usize) & ((1 << SUB_BITS) - 1)) as u64;
    let e = g as u32 + SUB_BITS + 1;
    let width = 1u64 << (e - SUB_BITS);
    let lo = (1u64 << e) + sub * width;
    (lo, lo + width)
}

/// One histogram read out of the stats region (the `pipeline stat` side).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistogramSnapshot {
    pub count: u64,
    pub sum_ns: u64,
    pub max_ns: u64,
    pub buckets: Vec<u64>,
}

impl HistogramSnapshot {
    /// The value at quantile `q` (0..=1): the upper edge of the bucket holding it,
    /// capped at the recorded maximum (so p100 is the exact max). 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        let total: u64 = self.buckets.iter().sum();
        if total == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (b, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let (lo, hi) = bucket_range(b);
                let v = if hi - lo == 1 { lo } else { hi - 1 };
                return v.min(self.max_ns);
            }
        }
        self.max_ns
    }

    /// What was recorded after `earlier` (a snapshot of the same histogram): a
    /// measured run without its warm-up. `max_ns` stays the all-time maximum (a maximum
    /// cannot be subtracted), capped by the run's top bucket.
    pub fn since(&self, earlier: &HistogramSnapshot) -> HistogramSnapshot {
        let buckets: Vec<u64> = self.buckets.iter().zip(&earlier.buckets).map(|(a, b)| a.saturating_sub(*b)).collect();
        let top = buckets.iter().rposition(|&n| n > 0).map_or(0, |b| bucket_range(b).1 - 1);
        HistogramSnapshot {
            count: self.count.saturating_sub(earlier.count),
            sum_ns: self.sum_ns.saturating_sub(earlier.sum_ns),
            max_ns: self.max_ns.min(top),
            buckets,
        }
    }

    /// Add `other`'s recordings (several runs as one distribution).
    pub fn merge(&mut self, other: &HistogramSnapshot) {
        if self.buckets.len() < other.buckets.len() {
            self.buckets.resize(other.buckets.len(), 0);
        }
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.count += other.count;
        self.sum_ns += other.sum_ns;
        self.max_ns = self.max_ns.max(other.max_ns);
    }

    pub fn mean_ns(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum_ns as f64 / self.count as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_cover_their_values() {
        let mut prev_hi = 0;
        for b in 0..BUCKETS {
            let (lo, hi) = bucket_range(b);
            assert_eq!(lo, prev_hi, "bucket {b} starts where {} ended", b.saturating_sub(1));
            assert!(hi > lo);
            assert_eq!(bucket_of(lo), b);
            assert_eq!(bucket_of(hi - 1), b);
            // Resolution: a bucket spans at most 1/32 of its lower edge (above the linear part).
            if lo >= LINEAR {
                assert!((hi - lo) * 32 <= lo, "bucket {b} [{lo}, {hi}) too wide");
            }
            prev_hi = hi;
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn server_stamps_are_found_in_json_and_binary_payloads() {
        let ms = ServerStamp::JsonField { name: "E".into(), unit_ns: 1_000_000 }.reader();
        assert_eq!(ms.read(br#"{"e":"trade","E": 1700000000123,"p":"1"}"#), Some(1_700_000_000_123_000_000));
        assert_eq!(ms.read(br#"{"E":"1700000000123"}"#), Some(1_700_000_000_123_000_000));
        assert_eq!(ms.read(br#"{"e":"trade"}"#), None);
        assert_eq!(ms.read(br#"{"E":null}"#), None);
        assert_eq!(ms.read(br#"{"E":99999999999999999999}"#), None, "overflow");
        let le = ServerStamp::Binary { offset: 2, width: 8, big_endian: false, unit_ns: 1 }.reader();
        let mut p = vec![0u8; 2];
        p.extend_from_slice(&1_700_000_000_000_000_123u64.to_le_bytes());
        assert_eq!(le.read(&p), Some(1_700_000_000_000_000_123));
        assert_eq!(le.read(&p[..9]), None, "short payload");
        let be = ServerStamp::Binary { offset: 0, width: 4, big_endian: true, unit_ns: 1_000_000_000 }.reader();
        assert_eq!(be.read(&1_700_000_000u32.to_be_bytes()), Some(1_700_000_000_000_000_000));
        for bad in [
            ServerStamp::JsonField { name: "".into(), unit_ns: 1 },
            ServerStamp::JsonField { name: "a\"b".into(), unit_ns: 1 },
            ServerStamp::Binary { offset: 0, width: 2, big_endian: false, unit_ns: 1 },
            ServerStamp::Binary { offset: 0, width: 8, big_endian: false, unit_ns: 0 },
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn quantiles_within_a_bucket_of_the_truth() {
        let mut h = HistogramSnapshot { count: 0, sum_ns: 0, max_ns: 0, buckets: vec![0; BUCKETS] };
        for v in 1..=10_000u64 {
            h.buckets[bucket_of(v * 100)] += 1;
            h.count += 1;
            h.sum_ns += v * 100;
            h.max_ns = h.max_ns.max(v * 100);
        }
        for (q, want) in [(0.5, 500_000u64), (0.99, 990_000), (0.999, 999_000), (1.0, 1_000_000)] {
            let got = h.quantile(q);
            assert!(got >= want && got <= want + want / 32, "q{q}: {got} vs {want}");
        }
        assert_eq!(h.quantile(1.0), 1_000_000);
        // A run after a warm-up: the difference holds only the run's values.
        let mut later = h.clone();
        for v in [5_000_000u64, 6_000_000] {
            later.buckets[bucket_of(v)] += 1;
            later.count += 1;
            later.sum_ns += v;
            later.max_ns = later.max_ns.max(v);
        }
        let run = later.since(&h);
        assert_eq!((run.count, run.sum_ns), (2, 11_000_000));
        assert!(run.quantile(0.5) >= 5_000_000 && run.quantile(0.5) < 5_200_000, "{}", run.quantile(0.5));
        assert_eq!(run.quantile(1.0), 6_000_000);
        let mut both = run.clone();
        both.merge(&run);
        assert_eq!((both.count, both.buckets.iter().sum::<u64>()), (4, 4));
    }
}
