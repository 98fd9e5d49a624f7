//! A fast PRNG for per-frame masking keys, seeded from the OS.
//!
//! RFC 6455 §10.3 wants masking keys an application cannot predict, so that a hostile
//! script cannot choose the bytes that appear on the wire (cache poisoning of
//! intermediaries). Our "application" is the trading process itself, not untrusted
//! script, so a non-cryptographic generator seeded from `getrandom(2)` is the trade we
//! make: one multiply per key instead of a syscall or a CSPRNG per frame. The
//! handshake key, needed once per connection, comes from the OS directly.

use crate::error::{Error, Result};

/// Fill `buf` from the kernel's CSPRNG (`getrandom(2)`, blocking only before the pool
/// is initialised at boot).
pub fn os_random(buf: &mut [u8]) -> Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: `rest` is a valid, writable region of `rest.len()` bytes for the
        // duration of the call; getrandom writes at most that many.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(Error::io("getrandom for WebSocket keys", e));
        }
        filled += n as usize;
    }
    Ok(())
}

/// wyrand (Wang Yi): 64-bit state, one 64x64->128 multiply per output, passes
/// BigCrush/PractRand. Plenty for masking keys; not for secrets.
#[derive(Clone, Debug)]
pub struct WyRand {
    state: u64,
}

impl WyRand {
    pub fn from_seed(seed: u64) -> Self {
        WyRand { state: seed }
    }

    pub fn from_os() -> Result<Self> {
        let mut s = [0u8; 8];
        os_random(&mut s)?;
        Ok(WyRand::from_seed(u64::from_ne_bytes(s)))
    }

    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0xa076_1d64_78bd_642f);
        let t = u128::from(self.state) * u128::from(self.state ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) as u64) ^ (t as u64)
    }

    #[inline]
    pub fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_seeds_differ() {
        let mut a = WyRand::from_os().unwrap();
        let mut b = WyRand::from_os().unwrap();
        assert_ne!(a.next_u64(), b.next_u64());
    }

    #[test]
    fn outputs_vary() {
        let mut r = WyRand::from_seed(0);
        let v: Vec<u32> = (0..64).map(|_| r.next_u32()).collect();
        let mut d = v.clone();
        d.sort_unstable();
        d.dedup();
        assert_eq!(d.len(), v.len());
    }
}
