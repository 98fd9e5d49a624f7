//! Client-to-server payload masking (RFC 6455 §5.3).
//!
//! Masking is an XOR with a repeating 4-byte key. We widen the key to a `u64` and XOR
//! eight bytes per step; `from_ne_bytes`/`to_ne_bytes` over `chunks_exact` compile to
//! plain unaligned loads and stores, so an unaligned head needs no special case and the
//! tail (< 8 bytes) is done bytewise. Byte order does not matter: data and key are
//! loaded the same way, so the XOR stays byte-for-byte.

/// The key rotated so that `buf[0]` is payload byte number `phase` (mod 4). Lets a
/// payload be masked in pieces that do not start on a multiple of four.
#[inline]
fn rotated(key: [u8; 4], phase: usize) -> [u8; 4] {
    let r = phase & 3;
    [key[r], key[(r + 1) & 3], key[(r + 2) & 3], key[(r + 3) & 3]]
}

#[inline]
fn wide(k: [u8; 4]) -> u64 {
    u64::from_ne_bytes([k[0], k[1], k[2], k[3], k[0], k[1], k[2], k[3]])
}

/// XOR `buf` in place with `key`; `phase` is the payload offset of `buf[0]`.
/// Applying it twice restores the input (unmasking is the same operation).
#[inline]
pub fn apply_mask(buf: &mut [u8], key: [u8; 4], phase: usize) {
    let k = rotated(key, phase);
    if k == [0; 4] {
        return;
    }
    let k64 = wide(k);
    let mut chunks = buf.chunks_exact_mut(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        c.copy_from_slice(&(u64::from_ne_bytes(w) ^ k64).to_ne_bytes());
    }
    // The bulk consumed a multiple of 8 (a multiple of 4) bytes, so the tail's
    // phase restarts at k[0].
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= k[i & 3];
    }
}

/// Copy `src` into `dst[..src.len()]` masking on the way (one pass over the data
/// instead of copy-then-mask). `dst` must be at least as long as `src`.
#[inline]
pub fn mask_copy(src: &[u8], dst: &mut [u8], key: [u8; 4], phase: usize) {
    let dst = &mut dst[..src.len()];
    let k = rotated(key, phase);
    let k64 = wide(k);
    let mut d = dst.chunks_exact_mut(8);
    let mut s = src.chunks_exact(8);
    for (dc, sc) in (&mut d).zip(&mut s) {
        let mut w = [0u8; 8];
        w.copy_from_slice(sc);
        dc.copy_from_slice(&(u64::from_ne_bytes(w) ^ k64).to_ne_bytes());
    }
    for (i, (db, sb)) in d.into_remainder().iter_mut().zip(s.remainder()).enumerate() {
        *db = *sb ^ k[i & 3];
    }
}

/// The obvious byte-at-a-time loop: the reference the tests and the benchmark
/// compare against.
pub fn apply_mask_naive(buf: &mut [u8], key: [u8; 4], phase: usize) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b ^= key[(i + phase) & 3];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_naive_for_all_lengths_and_phases() {
        let key = [0x12, 0x34, 0x56, 0x78];
        for len in 0..70 {
            for phase in 0..4 {
                let src: Vec<u8> = (0..len as u8).map(|i| i.wrapping_mul(31)).collect();
                let mut a = src.clone();
                let mut b = src.clone();
                let mut c = vec![0u8; len];
                apply_mask(&mut a, key, phase);
                apply_mask_naive(&mut b, key, phase);
                mask_copy(&src, &mut c, key, phase);
                assert_eq!(a, b, "len {len} phase {phase}");
                assert_eq!(c, b, "copy len {len} phase {phase}");
            }
        }
    }

    #[test]
    fn masking_in_pieces_equals_masking_whole() {
        let key = [1, 2, 3, 4];
        let src: Vec<u8> = (0..100u8).collect();
        let mut whole = src.clone();
        apply_mask(&mut whole, key, 0);
        for cut in 0..src.len() {
            let mut p = src.clone();
            let (a, b) = p.split_at_mut(cut);
            apply_mask(a, key, 0);
            apply_mask(b, key, cut);
            assert_eq!(p, whole);
        }
    }

    #[test]
    fn unaligned_start() {
        let key = [9, 8, 7, 6];
        let mut buf = vec![0u8; 67];
        let mut refb = buf.clone();
        apply_mask(&mut buf[3..], key, 0);
        apply_mask_naive(&mut refb[3..], key, 0);
        assert_eq!(buf, refb);
    }
}
