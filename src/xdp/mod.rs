//! AF_XDP: the UMEM and its frame pools, the socket (xsk-rs 0.11 over libxdp), our own
//! flow-filter XDP program attached through a bpf_link, and address look-ups.
//!
//! - [`socket::XdpSocket`]: open/bind with mode fallback (zero-copy+native first, then
//!   copy, then generic), batched TX with one kick, RX bursts, frame release, refill.
//! - [`umem`]: UMEM partitions (RX/ACK/PONG/MSG from [`crate::config`]) and the
//!   [`umem::FrameLedger`] that tracks who owns each frame.
//! - [`bpf::FlowFilter`]: the XDP program that redirects only our TCP flow.
//! - [`addr`]: interface address/MAC/MTU/ifindex, route and neighbour look-ups, and the
//!   local port reservation.
//!
//! See `docs/xdp.md` for the design and the capabilities needed.

pub mod addr;
pub mod bpf;
pub mod fault;
pub mod socket;
pub(crate) mod sys;
pub mod umem;

pub use addr::{Mac, PortReservation, Route};
pub use fault::{FaultConfig, FaultStats};
pub use bpf::{AttachMode, AttachRequest, FilterCounters, Flow, FlowFilter};
pub use socket::{KernelStats, RxDesc, UmemView, XdpConfig, XdpMode, XdpSocket, XdpStats, ZeroCopy, BATCH, MAX_TX_PACKET};
pub use umem::{FrameKind, FrameLedger, LedgerError, PoolStats, TxKind, DATA_OFFSET, TX_CAPACITY};
