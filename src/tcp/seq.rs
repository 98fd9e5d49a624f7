//! Sequence-number arithmetic modulo 2^32 (RFC 1982 style): `a < b` iff the signed
//! distance `a - b` is negative. Valid while the two numbers are < 2^31 apart, which
//! TCP's window limits guarantee.

#[inline(always)]
pub fn lt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}
#[inline(always)]
pub fn le(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) <= 0
}
#[inline(always)]
pub fn gt(a: u32, b: u32) -> bool {
    lt(b, a)
}
#[inline(always)]
pub fn ge(a: u32, b: u32) -> bool {
    le(b, a)
}
/// `start <= x < start + len` (modulo 2^32).
#[inline(always)]
pub fn in_window(x: u32, start: u32, len: u32) -> bool {
    x.wrapping_sub(start) < len
}
/// `b - a` when `a <= b`, else 0.
#[inline(always)]
pub fn dist(a: u32, b: u32) -> u32 {
    if le(a, b) {
        b.wrapping_sub(a)
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn wraps() {
        assert!(lt(u32::MAX, 0));
        assert!(lt(u32::MAX - 10, 5));
        assert!(gt(5, u32::MAX - 10));
        assert!(le(7, 7) && ge(7, 7));
        assert!(in_window(2, u32::MAX - 1, 10));
        assert!(!in_window(9, u32::MAX - 1, 10));
        assert_eq!(dist(u32::MAX - 1, 3), 5);
        assert_eq!(dist(3, u32::MAX - 1), 0);
    }
}
