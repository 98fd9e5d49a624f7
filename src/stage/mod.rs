//! The pipeline's stages: step functions that own their ring endpoints.
//!
//! A stage does a bounded amount of work per [`Stage::poll`] and says whether anything
//! moved. It never knows where it runs — its own process, its own thread, or one loop
//! with the others: [`crate::runner`] decides. The same stage objects run the set-up
//! (handshakes) inline and then the steady state wherever they are placed.
//!
//! | stage | design § | consumes | produces |
//! |---|---|---|---|
//! | [`EngineStage`] (the per-interface [`Engine`]) | 5.1 | every connection's RAW/ACK/PONG_OUTBOX, AF_XDP rx/comp | AF_XDP tx/fill, each RAW_INBOX, TX free lists |
//! | [`TransportStage`] | 5.2 | a [`Transport`], MSG_OUTBOX, PONGS | MSG_INBOX |
//! | [`WebSocketStage`] | 5.3 | MSG_INBOX | WS_FRAME_INFO, PONGS |
//! | [`AppClientStage`] | 5.4 | WS_FRAME_INFO, MSG_INBOX (in place) | MSG_INBOX release |

mod app;
mod kernel;
mod synthetic;
mod transport;
mod websocket;
mod xdp_poll;
mod xdp_transport;

pub use app::{AppClientStage, FrameReader, Handler, OnMessage, OnMessageFallible, RawFrame};
pub use kernel::{StreamStats, StreamTransport, TlsTransport};
pub use synthetic::{encode_server_frame, encode_server_frame_rsv1, SyntheticCapture, SyntheticScript, SyntheticTransport};
pub use transport::{FeedOptions, Subscription, Transport, TransportCounters, TransportStage};
pub use websocket::{Delivery, WebSocketStage};
pub use xdp_poll::{Engine, EnginePort, EngineStage, EngineStats, Registration, TransportPort, XdpRings};
pub use xdp_transport::{resolve_v4, XdpDial, XdpTransport};

use crate::error::Result;

/// What one poll did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Nothing moved: the runner may back off.
    Idle,
    /// Something moved: poll again at once.
    Busy,
}

impl Progress {
    pub fn from_bool(moved: bool) -> Progress {
        if moved {
            Progress::Busy
        } else {
            Progress::Idle
        }
    }
    pub fn moved(self) -> bool {
        self == Progress::Busy
    }
}

impl std::ops::BitOr for Progress {
    type Output = Progress;
    fn bitor(self, o: Progress) -> Progress {
        Progress::from_bool(self.moved() || o.moved())
    }
}

/// A step function. `poll` returns `Err` when the stage cannot go on (peer closed,
/// protocol error, dead transport); the runner then records the error as the
/// disconnect reason and stops every stage.
pub trait Stage: Send {
    /// Short name for logs, thread names and the stats tool ("xdp", "transport", ...).
    fn name(&self) -> &'static str;
    /// Do a bounded amount of work. `now_ns` is CLOCK_MONOTONIC, read once per loop.
    fn poll(&mut self, now_ns: u64) -> Result<Progress>;
    /// Must this stage run in the process that started the pipeline? (The XDP engine:
    /// its sockets and frame ledger serve every connection of that process.) The
    /// `processes` layout runs such a stage on a thread of that process instead of
    /// forking it.
    fn stays_in_process(&self) -> bool {
        false
    }
}

/// CLOCK_MONOTONIC in nanoseconds (vDSO, no syscall).
#[inline]
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
