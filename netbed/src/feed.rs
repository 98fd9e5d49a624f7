//! The exchange simulator's feed format (`tools/exchange_sim.py`): message sizes,
//! content and the checks a client makes on every message. Plain functions over bytes,
//! no WebSocket code: the tests and the veth benchmark receive the messages through the
//! library's own `Pipeline`.

/// Size of message `seq` with `--sizes mixed`.
pub fn mixed_size(seq: u64) -> usize {
    let h = (seq.wrapping_mul(2654435761)) & 0xffff_ffff;
    if seq % 997 == 996 {
        65536
    } else if seq % 101 == 100 {
        1024 + (h % 15361) as usize
    } else {
        1 + (h % 1024) as usize
    }
}

pub fn crc32(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let t = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, e) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 { 0xEDB88320 ^ (c >> 1) } else { c >> 1 };
            }
            *e = c;
        }
        t
    });
    let mut c = !0u32;
    for &b in data {
        c = t[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

/// Check binary message `seq` of size `want`; returns the embedded send timestamp
/// (CLOCK_MONOTONIC ns) when the message is long enough to carry the header.
pub fn check_message(seq: u64, want: usize, m: &[u8]) -> Result<Option<u64>, String> {
    if m.len() != want {
        return Err(format!("message {seq}: {} bytes, expected {want}", m.len()));
    }
    let o = (seq.wrapping_mul(131)) as usize;
    let from = if m.len() >= 24 { 24 } else { 0 };
    for (i, &b) in m.iter().enumerate().skip(from) {
        if b != (o.wrapping_add(i) & 0xff) as u8 {
            return Err(format!("message {seq}: byte {i} is {b:#x}"));
        }
    }
    if m.len() < 24 {
        return Ok(None);
    }
    let s = u64::from_le_bytes(m[0..8].try_into().unwrap());
    let ts = u64::from_le_bytes(m[8..16].try_into().unwrap());
    let size = u32::from_le_bytes(m[16..20].try_into().unwrap()) as usize;
    let crc = u32::from_le_bytes(m[20..24].try_into().unwrap());
    if s != seq {
        return Err(format!("expected message {seq}, got {s}"));
    }
    if size != want {
        return Err(format!("message {seq}: header size {size}, expected {want}"));
    }
    if crc != crc32(&m[24..]) {
        return Err(format!("message {seq}: crc32 mismatch"));
    }
    Ok(Some(ts))
}

/// Check text message `seq` of size `want` (`--text-every`): byte i is
/// `'a' + (seq * 131 + i) % 26`.
pub fn check_text(seq: u64, want: usize, m: &[u8]) -> Result<(), String> {
    if m.len() != want {
        return Err(format!("text message {seq}: {} bytes, expected {want}", m.len()));
    }
    let o = (seq.wrapping_mul(131) % 26) as usize;
    for (i, &b) in m.iter().enumerate() {
        if b != b'a' + ((o + i) % 26) as u8 {
            return Err(format!("text message {seq}: byte {i} is {b:#x}"));
        }
    }
    Ok(())
}

/// Check feed message `seq` as the pipeline delivered it (`opcode` 1 text, 2 binary),
/// for a simulator started with `--sizes mixed --text-every text_every`.
pub fn check_feed(seq: u64, text_every: u64, opcode: u8, m: &[u8]) -> Result<(), String> {
    let want = mixed_size(seq);
    if text_every > 0 && seq % text_every == 0 {
        if opcode != 0x1 {
            return Err(format!("message {seq}: opcode {opcode:#x}, expected text"));
        }
        check_text(seq, want, m)
    } else {
        if opcode != 0x2 {
            return Err(format!("message {seq}: opcode {opcode:#x}, expected binary"));
        }
        check_message(seq, want, m).map(|_| ())
    }
}

/// CLOCK_MONOTONIC in ns (the simulator's clock).
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid timespec out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
