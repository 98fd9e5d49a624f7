//! A sans-IO TCP client connection (one active open, one peer) for the XDP transport.
//!
//! Nothing here reads a clock, touches a socket or allocates after
//! [`Connection::new`]: the caller feeds received frames and the current time (µs, any
//! monotonic origin), and asks for segments to send, which it builds into its own UMEM
//! frames. See `docs/tcp.md` for the behaviour, knobs and numbers.
//!
//! The calling loop (the transport stage):
//! ```text
//! for each RX frame:  conn.on_frame(now, frame, |bytes| tls.feed(bytes));
//! conn.set_rx_space(msg_inbox_free);
//! while let Some(t) = conn.poll_transmit(now) {
//!     match t {
//!         Transmit::Control(seg) => { let f = ack_pool.alloc(); let n = conn.emit_control(&seg, f)?; tx(f, n) }
//!         Transmit::Retransmit { handle, seq, len } => { let f = msg_frame(handle);
//!             let n = conn.refresh_data_frame(f, seq, len)?; tx(f, n) }
//!     }
//! }
//! while conn.send_capacity() >= record_len { write TLS record at conn.payload_offset();
//!     let n = conn.send_data(now, frame, record_len, handle)?; tx(frame, n) }
//! while let Some(h) = conn.pop_acked() { msg_pool.release_when_tx_completed(h) }
//! while let Some(ev) = conn.poll_event() { ... }
//! ```

mod conn;
pub mod reorder;
pub mod seq;

pub use conn::{CloseReason, Connection, Event, RxVerdict, State, TcpConfig, TcpStats, Transmit};

/// A random 32-bit value from the kernel (`getrandom(2)`), used for the ISN.
pub fn random_u32() -> crate::Result<u32> {
    let mut v = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        // SAFETY: the pointer/length describe the unfilled tail of a live local array.
        let r = unsafe { libc::getrandom(v[got..].as_mut_ptr().cast(), 4 - got, 0) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(crate::Error::io(
                "getrandom for the TCP initial sequence number",
                e,
            ));
        }
        got += r as usize;
    }
    Ok(u32::from_ne_bytes(v))
}
