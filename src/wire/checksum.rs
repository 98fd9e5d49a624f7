//! The Internet checksum (RFC 1071): one's-complement sum of 16-bit big-endian words.
//!
//! The sum is byte-order independent (RFC 1071 §2(B)), so the bulk loop adds the
//! buffer as native little-endian `u64`s in one add-with-carry chain (8 bytes per `adc`,
//! RFC 1071 §2(C)'s "deferred carries" taken one step further), then folds to 16
//! bits and swaps the result once at the end. A 64-bit one's-complement sum folds to
//! the same 16-bit sum as adding the 16-bit words directly. Partial sums of pieces can
//! be combined with [`combine`] as long as every piece except the last has even length.

use std::net::Ipv4Addr;

/// Fold a wide accumulator to 16 bits with end-around carry.
#[inline(always)]
pub fn fold(mut s: u64) -> u16 {
    s = (s & 0xffff_ffff) + (s >> 32);
    s = (s & 0xffff_ffff) + (s >> 32);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s as u16
}

/// `a + b + carry_in` and the carry out: one `adc` on x86_64, whose carry flag then
/// chains the next add (LLVM keeps the chain in the flags across an unrolled loop).
#[inline(always)]
fn add_carry(carry: u8, a: u64, b: u64) -> (u8, u64) {
    #[cfg(target_arch = "x86_64")]
    {
        let mut out = 0u64;
        // (A safe function since Rust 1.8x; `unsafe` for the older compilers we support.)
        #[allow(unused_unsafe)]
        // SAFETY: `adc` is baseline x86_64 (no target feature needed); it only writes `out`.
        let c = unsafe { core::arch::x86_64::_addcarry_u64(carry, a, b, &mut out) };
        (c, out)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let (s1, c1) = a.overflowing_add(b);
        let (s2, c2) = s1.overflowing_add(carry as u64);
        ((c1 | c2) as u8, s2)
    }
}

#[inline(always)]
fn word(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// One's-complement sum of `data` as big-endian 16-bit words (an odd last byte is
/// padded with zero), folded to 16 bits but not complemented.
///
/// Why this shape: it runs on every received segment (1448 bytes), and callgrind showed
/// the first loop (u32 words into u64 accumulators) at 0.7 instructions per byte, 12 %
/// of the receive path at 16 KiB messages. One add-with-carry chain over u64 words,
/// 64 bytes per iteration, is about a fifth of an instruction per byte.
#[inline]
pub fn sum(data: &[u8]) -> u16 {
    let mut acc: u64 = 0;
    let mut c: u8 = 0;
    let mut chunks = data.chunks_exact(64);
    for b in &mut chunks {
        for i in 0..8 {
            (c, acc) = add_carry(c, acc, word(&b[i * 8..]));
        }
    }
    let mut rest = chunks.remainder();
    while rest.len() >= 8 {
        (c, acc) = add_carry(c, acc, word(rest));
        rest = &rest[8..];
    }
    let mut tail = [0u8; 8];
    tail[..rest.len()].copy_from_slice(rest);
    (c, acc) = add_carry(c, acc, u64::from_le_bytes(tail));
    // End-around carry: the last carry goes back in (it cannot carry out again: adding
    // 1 to a sum that just overflowed leaves it below 2^64 - 1).
    let (_, acc) = add_carry(0, acc, c as u64);
    fold(acc).swap_bytes()
}

/// Add two folded sums (one's complement addition).
#[inline(always)]
pub fn combine(a: u16, b: u16) -> u16 {
    fold(a as u64 + b as u64)
}

/// The Internet checksum of `data`: the complement of [`sum`].
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    !sum(data)
}

/// Sum of the TCP/UDP IPv4 pseudo-header (RFC 793 §3.1): src, dst, zero+protocol, length.
#[inline]
pub fn pseudo_header_sum(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, len: u16) -> u16 {
    let s = src.octets();
    let d = dst.octets();
    let acc = u16::from_be_bytes([s[0], s[1]]) as u64
        + u16::from_be_bytes([s[2], s[3]]) as u64
        + u16::from_be_bytes([d[0], d[1]]) as u64
        + u16::from_be_bytes([d[2], d[3]]) as u64
        + protocol as u64
        + len as u64;
    fold(acc)
}

/// TCP checksum over pseudo-header + `segment` (whose checksum field must be zero when
/// computing, or hold the value when verifying with [`verify_tcp`]).
#[inline]
pub fn tcp_checksum(src: Ipv4Addr, dst: Ipv4Addr, segment: &[u8]) -> u16 {
    let ph = pseudo_header_sum(src, dst, super::IPPROTO_TCP, segment.len() as u16);
    !combine(ph, sum(segment))
}

/// True when the TCP checksum of `segment` (checksum field included) verifies.
#[inline]
pub fn verify_tcp(src: Ipv4Addr, dst: Ipv4Addr, segment: &[u8]) -> bool {
    if segment.len() > u16::MAX as usize {
        return false;
    }
    let ph = pseudo_header_sum(src, dst, super::IPPROTO_TCP, segment.len() as u16);
    combine(ph, sum(segment)) == 0xffff
}

/// Incremental update (RFC 1624 eqn. 3): the new checksum after one 16-bit word of the
/// covered data changed from `old` to `new`.
#[inline]
pub fn update16(csum: u16, old: u16, new: u16) -> u16 {
    !fold(!csum as u64 + !old as u64 + new as u64)
}

/// Incremental update for a 32-bit field (two 16-bit words).
#[inline]
pub fn update32(csum: u16, old: u32, new: u32) -> u16 {
    let c = update16(csum, (old >> 16) as u16, (new >> 16) as u16);
    update16(c, old as u16, new as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(data: &[u8]) -> u16 {
        let mut s: u32 = 0;
        let mut i = 0;
        while i + 1 < data.len() {
            s += u16::from_be_bytes([data[i], data[i + 1]]) as u32;
            i += 2;
        }
        if i < data.len() {
            s += (data[i] as u32) << 8;
        }
        while s >> 16 != 0 {
            s = (s & 0xffff) + (s >> 16);
        }
        s as u16
    }

    #[test]
    fn matches_reference_all_lengths() {
        let mut x: u32 = 12345;
        let data: Vec<u8> = (0..2000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        for len in 0..300 {
            assert_eq!(sum(&data[..len]), reference(&data[..len]), "len {len}");
        }
        for len in [1447, 1448, 1460, 2000] {
            assert_eq!(sum(&data[..len]), reference(&data[..len]));
        }
        // Every alignment of the slice start (the bulk loop reads unaligned words).
        for start in 1..16 {
            for len in [0, 1, 7, 8, 9, 31, 32, 33, 1448] {
                let d = &data[start..start + len];
                assert_eq!(sum(d), reference(d), "start {start} len {len}");
            }
        }
        // All 0xff: sum folds to 0xffff; carries out of every 64-bit add.
        assert_eq!(sum(&[0xff; 1500]), 0xffff);
        assert_eq!(sum(&[0xff; 1501]), reference(&[0xff; 1501]));
        let big = vec![0xfeu8; 65535];
        assert_eq!(sum(&big), reference(&big));
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3 example: 00 01 f2 03 f4 f5 f6 f7 -> sum 0xddf2.
        assert_eq!(
            sum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0xddf2
        );
    }

    #[test]
    fn incremental_matches_full() {
        let mut d = [0u8; 40];
        for (i, b) in d.iter_mut().enumerate() {
            *b = (i * 7 + 3) as u8;
        }
        let c0 = checksum(&d);
        let old = u32::from_be_bytes([d[4], d[5], d[6], d[7]]);
        let new: u32 = 0xdead_beef;
        d[4..8].copy_from_slice(&new.to_be_bytes());
        assert_eq!(update32(c0, old, new), checksum(&d));
    }
}
