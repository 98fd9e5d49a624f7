//! A client and a server `TlsSession` connected in memory (no sockets): for benchmarks
//! that time one side's record path on ciphertext the other side made.

use pipeline::tls::{TlsContext, TlsSession};

/// Move everything `a` has for the network into `b`.
pub fn pump(a: &mut TlsSession, b: &mut TlsSession) {
    let mut v = Vec::new();
    a.drain_ciphertext_into(&mut v);
    b.feed_ciphertext(&v).unwrap();
}

/// Both handshakes done (host "localhost"), and the server's post-handshake tickets
/// swallowed by the client, so what is timed next is application data only.
pub fn connected_pair(cctx: &TlsContext, sctx: &TlsContext) -> (TlsSession, TlsSession) {
    let mut c = cctx.client_session("localhost").unwrap();
    let mut s = sctx.server_session().unwrap();
    for _ in 0..10 {
        let _ = c.handshake().unwrap();
        pump(&mut c, &mut s);
        let _ = s.handshake().unwrap();
        pump(&mut s, &mut c);
        if c.is_handshake_done() && s.is_handshake_done() {
            break;
        }
    }
    let _ = c.handshake().unwrap();
    assert!(c.is_handshake_done() && s.is_handshake_done());
    s.write_plaintext(b"x").unwrap();
    pump(&mut s, &mut c);
    let mut one = [0u8; 16];
    assert_eq!(c.read_plaintext(&mut one).unwrap(), 1);
    (c, s)
}
