//! The AF_XDP socket: UMEM + four rings (xsk-rs 0.11 over libxdp), our flow filter,
//! and the frame ledger that says who owns every frame.
//!
//! One [`XdpSocket`] is single-owner (`&mut self` everywhere on the hot path); the XDP
//! poll stage owns it. A loop iteration looks like:
//!
//! ```text
//! for each outgoing packet: addr = alloc_tx(kind); write tx_buffer(addr); send(addr, len)
//! flush_tx()                 // one reserve + one submit + at most one sendto kick
//! n = rx_burst(&mut descs)   // frames now belong to the consumer
//! ... consumer reads rx_frame(desc), later release_rx(desc.addr)
//! reap_completions()         // TX frames back to their pools, by address range
//! refill()                   // released RX frames back to the fill ring, one batch
//! ```
//! [`XdpSocket::poll`] does `flush_tx + reap_completions + refill`.

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::str::FromStr;
use std::time::Duration;

use xsk_rs::config::{BindFlags, FrameSize, Interface, LibxdpFlags, QueueSize, SocketConfig, UmemConfig, XdpFlags};
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, TxQueue, Umem};

use super::addr;
use super::bpf::{AttachMode, AttachRequest, FilterCounters, Flow, FlowFilter};
use super::sys;
use super::umem::{frame_index, kind_of, FrameKind, FrameLedger, PoolStats, TxKind, DATA_OFFSET, TX_CAPACITY};
use crate::config::{FRAME_SIZE, RX_FRAMES, TOTAL_UMEM_FRAMES, UMEM_BYTES};
use crate::error::{Error, Result};

/// Descriptors moved per ring operation.
pub const BATCH: usize = 64;

/// Zero-copy preference.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ZeroCopy {
    /// Try zero-copy, fall back to copy mode.
    #[default]
    Auto,
    /// Copy mode only.
    Off,
    /// Zero-copy or fail.
    Required,
}

/// What to open.
#[derive(Clone, Debug)]
pub struct XdpConfig {
    pub ifname: String,
    /// `None` (default): bind a socket on every RX queue of the interface, sharing one
    /// UMEM, so a flow is caught on whatever queue RSS gives it, with no steering.
    /// `Some(q)`: only queue `q` (then the flows must be steered to it, e.g.
    /// `ethtool -N <if> flow-type tcp4 src-ip S src-port P action q`).
    pub queue: Option<u32>,
    pub attach: AttachRequest,
    pub zero_copy: ZeroCopy,
    /// How long to keep retrying a bind that fails with EBUSY (a queue released by a
    /// just-closed socket can stay busy for a moment; seconds on a loaded machine with
    /// several queues, whose sockets the kernel releases after an RCU grace period).
    pub bind_busy_timeout: Duration,
}

impl XdpConfig {
    pub fn new(ifname: &str) -> Self {
        XdpConfig {
            ifname: ifname.to_string(),
            queue: None,
            attach: AttachRequest::Auto,
            zero_copy: ZeroCopy::Auto,
            bind_busy_timeout: Duration::from_secs(5),
        }
    }
}

/// The mode actually in use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XdpMode {
    pub zero_copy: bool,
    pub attach: AttachMode,
    /// Kernel driver of the interface (`veth`, `mlx5_core`, ...), if known.
    pub driver: String,
}

impl fmt::Display for XdpMode {
    /// e.g. "copy mode, native XDP (veth)".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}, {} XDP ({})",
            if self.zero_copy { "zero-copy mode" } else { "copy mode" },
            match self.attach {
                AttachMode::Native => "native",
                AttachMode::Generic => "generic (SKB)",
            },
            if self.driver.is_empty() { "unknown driver" } else { &self.driver }
        )
    }
}

/// A received packet: UMEM address of its first byte and its length.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RxDesc {
    pub addr: u64,
    pub len: u32,
}

/// Counters of the socket. Plain integers updated by the owner; copy them out with
/// [`XdpSocket::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpStats {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// `sendto` kicks issued (at most one per `flush_tx`).
    pub tx_kicks: u64,
    /// `flush_tx` calls that found the TX ring too full for the whole batch.
    pub tx_ring_full: u64,
    /// Frames refused by `send` (bad length / not user-held) and returned to the pool.
    pub tx_rejected: u64,
    /// Addresses put on the fill ring.
    pub fill_submitted: u64,
    /// `refill` calls that could not place every released frame (ring full).
    pub fill_ring_full: u64,
    /// `recvfrom` wakeups for the fill ring.
    pub fill_kicks: u64,
    /// Completion-ring entries consumed.
    pub comp_reaped: u64,
    /// Descriptors from the rx ring that did not match an RX frame owned by the kernel.
    pub rx_bad_desc: u64,
    /// Pool counters (exhaustion, completions, cancels).
    pub pools: PoolStats,
}

/// Kernel-side counters (`getsockopt(XDP_STATISTICS)`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelStats {
    pub rx_dropped: u64,
    pub rx_invalid_descs: u64,
    pub tx_invalid_descs: u64,
    pub rx_ring_full: u64,
    pub rx_fill_ring_empty_descs: u64,
    pub tx_ring_empty_descs: u64,
}

/// A raw view of the UMEM for another thread or a forked process (the mapping is
/// `MAP_SHARED`, so a `fork`ed child sees the same frames). Copy it freely; who may
/// touch which frame is decided by the ledger's owner, which is why access is unsafe.
#[derive(Clone, Copy, Debug)]
pub struct UmemView {
    base: *mut u8,
}

// SAFETY: the view is only a base pointer into a mapping that lives as long as the
// XdpSocket; concurrent access to disjoint frames is the UMEM's contract.
unsafe impl Send for UmemView {}
unsafe impl Sync for UmemView {}

impl UmemView {
    /// Base address of the UMEM mapping.
    pub fn base(&self) -> *mut u8 {
        self.base
    }
    /// # Safety
    /// `addr..addr+len` must lie inside one frame the caller currently owns (an RX frame
    /// it received and has not released, a TX frame it allocated and not sent), and the
    /// XdpSocket must still be alive.
    pub unsafe fn slice(&self, addr: u64, len: usize) -> &[u8] {
        debug_assert!(frame_index(addr) == frame_index(addr + len.max(1) as u64 - 1));
        // SAFETY: per the contract above.
        unsafe { std::slice::from_raw_parts(self.base.add(addr as usize), len) }
    }
    /// # Safety
    /// As [`UmemView::slice`], and nobody else reads or writes those bytes meanwhile.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn slice_mut(&self, addr: u64, len: usize) -> &mut [u8] {
        debug_assert!(frame_index(addr) == frame_index(addr + len.max(1) as u64 - 1));
        // SAFETY: per the contract above.
        unsafe { std::slice::from_raw_parts_mut(self.base.add(addr as usize), len) }
    }
}

/// One bound queue: its AF_XDP socket's four rings (each queue of a shared UMEM has its
/// own fill and completion rings).
struct Queue {
    tx_q: TxQueue,
    rx_q: RxQueue,
    fill_q: FillQueue,
    comp_q: CompQueue,
    fd: RawFd,
    id: u32,
    /// Frames on this queue's fill ring (given minus received): refills go to the
    /// emptiest queue, so no queue runs dry while another hoards frames.
    fill_level: usize,
}

/// AF_XDP sockets bound to an interface's RX queues over one shared UMEM, with our flow
/// filter attached. TX always goes out through the first queue's socket.
pub struct XdpSocket {
    // Field order is drop order: detach the program first, then close the sockets'
    // rings, then the UMEM (xsk-rs also keeps its own references alive).
    filter: FlowFilter,
    queues: Vec<Queue>,
    /// Queue the next RX burst starts at (round robin, so no queue starves).
    rx_next: usize,
    umem: Umem,
    ledger: FrameLedger,
    /// One descriptor per frame as xsk-rs built them (addr = data address); copied and
    /// given a length to submit. FrameDesc cannot be built from an address otherwise.
    templates: Box<[FrameDesc]>,
    /// Scratch for ring batches (no allocation after open).
    scratch: Vec<FrameDesc>,
    /// Sent but not yet on the TX ring (ring full); flushed first next time.
    tx_pending: Vec<FrameDesc>,
    view: UmemView,
    mode: XdpMode,
    ifname: String,
    ifindex: u32,
    tx_ring_size: u32,
    stats: XdpStats,
}

impl fmt::Debug for XdpSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XdpSocket")
            .field("ifname", &self.ifname)
            .field("queues", &self.queues.len())
            .field("mode", &self.mode.to_string())
            .finish()
    }
}

const HOW: &str = "run as root or `setcap cap_net_admin,cap_net_raw,cap_bpf,cap_ipc_lock+ep <binary>`";

fn umem_error(e: xsk_rs::umem::UmemCreateError) -> Error {
    let src = std::error::Error::source(&e).and_then(|s| s.downcast_ref::<io::Error>()).and_then(|s| s.raw_os_error());
    match src {
        Some(libc::EPERM) | Some(libc::EACCES) => {
            Error::Capability { what: "CAP_NET_RAW (create an AF_XDP socket)".into(), how: HOW.into() }
        }
        Some(libc::ENOBUFS) => Error::Capability {
            what: format!(
                "CAP_IPC_LOCK or RLIMIT_MEMLOCK >= {} KiB (register the {} KiB UMEM as locked memory)",
                UMEM_BYTES / 1024,
                UMEM_BYTES / 1024
            ),
            how: format!("{HOW}, or raise the limit (`ulimit -l unlimited`, LimitMEMLOCK=infinity)"),
        },
        Some(c) => Error::io(format!("create UMEM ({e})"), io::Error::from_raw_os_error(c)),
        None => Error::Net(format!("create UMEM: {e}")),
    }
}

fn errno_of(e: &xsk_rs::socket::SocketCreateError) -> Option<i32> {
    std::error::Error::source(e).and_then(|s| s.downcast_ref::<io::Error>()).and_then(|s| s.raw_os_error())
}

fn qsize(n: usize) -> QueueSize {
    // Power of two by construction; xsk-rs only rejects non-powers of two.
    QueueSize::new(n.next_power_of_two() as u32).unwrap_or_else(|_| unreachable!())
}

impl XdpSocket {
    /// Create the UMEM, bind the socket (zero-copy if possible), load and attach our
    /// filter (native if possible) and put the socket in its XSKMAP slot. The filter
    /// matches nothing until [`XdpSocket::set_flow`].
    pub fn open(cfg: &XdpConfig) -> Result<XdpSocket> {
        let ifindex = addr::ifindex(&cfg.ifname)?;
        let driver = addr::driver_name(&cfg.ifname).unwrap_or_default();

        // 1. The filter program first: it tells us native vs generic, which decides
        //    whether zero-copy is worth trying, and it needs CAP_BPF/CAP_NET_ADMIN, so
        //    a missing privilege is reported before we lock 16 MiB of memory.
        let nq = addr::rx_queue_count(&cfg.ifname);
        let queue_ids: Vec<u32> = match cfg.queue {
            Some(q) => vec![q],
            None => (0..nq).collect(),
        };
        let slots = nq.max(queue_ids.iter().max().map_or(0, |q| q + 1));
        let mut filter = FlowFilter::load(slots)?;
        let attach = filter.attach(ifindex, &cfg.ifname, cfg.attach)?;

        // 2. UMEM.
        let fill_size = RX_FRAMES;
        let comp_size = TOTAL_UMEM_FRAMES - RX_FRAMES;
        let ucfg = UmemConfig::builder()
            .frame_size(FrameSize::new(FRAME_SIZE as u32).map_err(|e| Error::Config(e.to_string()))?)
            .frame_headroom(0)
            .fill_queue_size(qsize(fill_size))
            .comp_queue_size(qsize(comp_size))
            .build()
            .map_err(|e| Error::Config(e.to_string()))?;
        let frames = std::num::NonZeroU32::new(TOTAL_UMEM_FRAMES as u32).ok_or_else(|| Error::Config("no frames".into()))?;
        let (umem, descs) = Umem::new(ucfg, frames, false).map_err(umem_error)?;
        debug_assert_eq!(descs[1].addr(), FRAME_SIZE + DATA_OFFSET);

        // 3. Socket: zero-copy first (native attach only), then copy; retry EBUSY.
        let iface = Interface::from_str(&cfg.ifname).map_err(|_| Error::Config(format!("bad interface name {:?}", cfg.ifname)))?;
        let try_zc = match cfg.zero_copy {
            ZeroCopy::Off => false,
            ZeroCopy::Auto => attach == AttachMode::Native,
            ZeroCopy::Required => true,
        };
        let mut attempts: Vec<bool> = Vec::with_capacity(2);
        if try_zc {
            attempts.push(true);
        }
        if cfg.zero_copy != ZeroCopy::Required {
            attempts.push(false);
        }
        let mut last_err = None;
        let mut queues: Vec<Queue> = Vec::with_capacity(queue_ids.len());
        let mut zero_copy = false;
        for (n, &qid) in queue_ids.iter().enumerate() {
            // The first queue decides the mode; the others bind the same way.
            let modes: Vec<bool> = if n == 0 { attempts.clone() } else { vec![zero_copy] };
            let mut opened = None;
            'modes: for zc in modes {
                let mut bind = BindFlags::XDP_USE_NEED_WAKEUP;
                bind |= if zc { BindFlags::XDP_ZEROCOPY } else { BindFlags::XDP_COPY };
                let scfg = SocketConfig::builder()
                    .rx_queue_size(qsize(fill_size))
                    .tx_queue_size(qsize(comp_size))
                    .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
                    .xdp_flags(match attach {
                        AttachMode::Native => XdpFlags::XDP_FLAGS_DRV_MODE,
                        AttachMode::Generic => XdpFlags::XDP_FLAGS_SKB_MODE,
                    })
                    .bind_flags(bind)
                    .build();
                let deadline = std::time::Instant::now() + cfg.bind_busy_timeout;
                loop {
                    // SAFETY: the UMEM outlives the socket (xsk-rs keeps a handle in every
                    // queue), each (interface, queue) pair is bound once by us, and
                    // INHIBIT_PROG_LOAD is set as sharing a UMEM requires.
                    match unsafe { xsk_rs::Socket::new(scfg, &umem, &iface, qid) } {
                        Ok((tx, rx, Some((fq, cq)))) => {
                            opened = Some((tx, rx, fq, cq, zc));
                            break 'modes;
                        }
                        Ok((_, _, None)) => {
                            return Err(Error::Net(format!(
                                "AF_XDP socket on {} queue {qid} shares a UMEM context unexpectedly (no fill/comp rings)",
                                cfg.ifname
                            )))
                        }
                        Err(e) => {
                            let code = errno_of(&e);
                            if code == Some(libc::EBUSY) && std::time::Instant::now() < deadline {
                                std::thread::sleep(Duration::from_millis(20));
                                continue;
                            }
                            if matches!(code, Some(libc::EPERM) | Some(libc::EACCES)) {
                                return Err(Error::Capability { what: "CAP_NET_RAW (bind an AF_XDP socket)".into(), how: HOW.into() });
                            }
                            last_err = Some((zc, e, code));
                            continue 'modes;
                        }
                    }
                }
            }
            let Some((tx_q, rx_q, fill_q, comp_q, zc)) = opened else {
                let (zc, e, code) = last_err.expect("at least one bind attempt");
                let what = format!(
                    "bind AF_XDP socket to {} queue {qid} ({} mode): {e}",
                    cfg.ifname,
                    if zc { "zero-copy" } else { "copy" }
                );
                return Err(match code {
                    Some(c) => Error::io(what, io::Error::from_raw_os_error(c)),
                    None => Error::Net(what),
                });
            };
            zero_copy = zc;
            let fd = tx_q.fd().as_raw_fd();
            filter.insert_xsk(qid, fd)?;
            queues.push(Queue { tx_q, rx_q, fill_q, comp_q, fd, id: qid, fill_level: 0 });
        }

        let templates = descs.into_boxed_slice();
        // SAFETY: templates[0] describes frame 0 of this UMEM; we only take its address.
        let base = unsafe {
            let mut d0 = templates[0];
            let mut data = umem.data_mut(&mut d0);
            data.contents_mut().as_mut_ptr().sub(DATA_OFFSET)
        };
        let t0 = templates[0];
        let mut s = XdpSocket {
            filter,
            queues,
            rx_next: 0,
            umem,
            ledger: FrameLedger::new(),
            scratch: vec![t0; BATCH.max(RX_FRAMES.next_power_of_two())],
            tx_pending: Vec::with_capacity(TOTAL_UMEM_FRAMES - RX_FRAMES),
            templates,
            view: UmemView { base },
            mode: XdpMode { zero_copy, attach, driver },
            ifname: cfg.ifname.clone(),
            ifindex,
            tx_ring_size: qsize(comp_size).get(),
            stats: XdpStats::default(),
        };
        // Hand every RX frame to the kernel, spread over the queues.
        while s.refill() > 0 {}
        Ok(s)
    }

    /// The mode in use; `to_string()` gives e.g. "copy mode, native XDP (veth)".
    pub fn mode(&self) -> &XdpMode {
        &self.mode
    }
    pub fn ifname(&self) -> &str {
        &self.ifname
    }
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }
    /// The RX queues bound, in order.
    pub fn queue_ids(&self) -> Vec<u32> {
        self.queues.iter().map(|q| q.id).collect()
    }
    /// The first queue's AF_XDP socket fd (TX goes out through it).
    pub fn fd(&self) -> RawFd {
        self.queues[0].fd
    }
    pub fn umem_view(&self) -> UmemView {
        self.view
    }
    /// Redirect this flow to us (besides the others already added).
    pub fn add_flow(&mut self, flow: Flow) -> Result<()> {
        self.filter.add_flow(flow)
    }
    /// Stop redirecting this flow.
    pub fn remove_flow(&mut self, flow: &Flow) -> Result<()> {
        self.filter.remove_flow(flow)
    }
    /// Drop `pct`% of a flow's incoming packets in the XDP program (fault tests).
    pub fn set_rx_loss_percent(&self, flow: &Flow, pct: u32) -> Result<()> {
        self.filter.set_loss_percent(flow, pct)
    }
    pub fn filter(&self) -> &FlowFilter {
        &self.filter
    }
    pub fn filter_counters(&self) -> Result<FilterCounters> {
        self.filter.counters()
    }

    pub fn stats(&self) -> XdpStats {
        let mut s = self.stats;
        s.pools = self.ledger.stats();
        s
    }
    pub fn ledger(&self) -> &FrameLedger {
        &self.ledger
    }

    pub fn kernel_stats(&self) -> Result<KernelStats> {
        // Summed over the queues.
        let mut sum = KernelStats::default();
        for q in &self.queues {
            let k = q.tx_q.fd().xdp_statistics().map_err(|e| Error::io("getsockopt(XDP_STATISTICS)", e))?;
            sum.rx_dropped += k.rx_dropped();
            sum.rx_invalid_descs += k.rx_invalid_descs();
            sum.tx_invalid_descs += k.tx_invalid_descs();
            sum.rx_ring_full += k.rx_ring_full();
            sum.rx_fill_ring_empty_descs += k.rx_fill_ring_empty_descs();
            sum.tx_ring_empty_descs += k.tx_ring_empty_descs();
        }
        Ok(sum)
    }

    // ------------------------------------------------------------------ TX

    /// Take a frame from a TX pool; `None` when that pool is exhausted (counted).
    #[inline]
    pub fn alloc_tx(&mut self, kind: TxKind) -> Option<u64> {
        self.ledger.alloc_tx(kind)
    }

    /// The writable packet buffer ([`TX_CAPACITY`] bytes) of a TX frame we hold.
    #[inline]
    pub fn tx_buffer(&mut self, addr: u64) -> Option<&mut [u8]> {
        if !self.ledger.is_user_held(addr) {
            return None;
        }
        let start = addr as usize;
        let end = frame_index(addr) * FRAME_SIZE + FRAME_SIZE;
        // SAFETY: the ledger says the frame is user-held (not on any ring), and we hold
        // `&mut self`, so nobody else touches it while this borrow lives.
        Some(unsafe { self.view.slice_mut(addr, end - start) })
    }

    /// Give back a TX frame we allocated but will not send.
    pub fn free_tx(&mut self, addr: u64) -> Result<()> {
        self.ledger.cancel_tx(addr).map(|_| ()).map_err(|e| Error::Config(format!("free_tx: {e:?}")))
    }

    /// Queue `len` bytes of a held TX frame for transmission. The frame is the kernel's
    /// until its completion. On error the frame has been returned to its pool.
    #[inline]
    pub fn send(&mut self, addr: u64, len: usize) -> Result<()> {
        let idx = frame_index(addr);
        let ok_len = len > 0 && (addr as usize) + len <= idx * FRAME_SIZE + FRAME_SIZE;
        if !ok_len || !self.ledger.is_user_held(addr) || addr != self.templates[idx].addr() as u64 {
            self.stats.tx_rejected += 1;
            let _ = self.ledger.cancel_tx(addr);
            return Err(Error::Config(format!("send: frame {addr:#x} len {len} is not a held TX frame of that size")));
        }
        let mut d = self.templates[idx];
        // SAFETY: the frame is ours (user-held); setting the descriptor's length only.
        unsafe { self.umem.data_mut(&mut d).cursor().set_pos(len) };
        self.ledger.mark_in_flight(addr).map_err(|e| Error::Config(format!("send: {e:?}")))?;
        // Cannot exceed capacity: each TX frame is in tx_pending at most once.
        self.tx_pending.push(d);
        Ok(())
    }

    /// Put every queued frame that fits on the TX ring with one reserve/submit, then kick
    /// once if the kernel asked for a wakeup. Returns frames submitted.
    pub fn flush_tx(&mut self) -> usize {
        let mut n = 0;
        if !self.tx_pending.is_empty() {
            // SAFETY: every pending descriptor is an in-flight frame of this UMEM, not on
            // any other ring.
            n = unsafe { self.queues[0].tx_q.produce(&self.tx_pending) };
            if n < self.tx_pending.len() {
                self.stats.tx_ring_full += 1;
            }
            for d in &self.tx_pending[..n] {
                self.stats.tx_bytes += d.lengths().data() as u64;
            }
            self.stats.tx_packets += n as u64;
            self.tx_pending.drain(..n);
        }
        // One kick per call, only if the kernel asked for it and it still has
        // descriptors to take. In copy mode the kernel sends at most 32 frames per
        // `sendto`, so descriptors can stay on the ring after a kick: keep kicking on
        // later calls until the ring is drained (the consumer index is read only while
        // frames are in flight).
        if (n > 0 || (self.ledger.in_flight() > self.tx_pending.len() && self.tx_ring_busy())) && self.queues[0].tx_q.needs_wakeup() {
            self.stats.tx_kicks += 1;
            // ENOBUFS/EAGAIN/EBUSY/ENETDOWN are swallowed by xsk-rs (retry next loop).
            let _ = self.queues[0].tx_q.wakeup();
        }
        n
    }

    /// Whether the kernel has not yet consumed everything we put on the TX ring.
    fn tx_ring_busy(&mut self) -> bool {
        self.queues[0].tx_q.nb_free_exact() < self.tx_ring_size
    }

    /// Frames accepted by `send` but not yet on the TX ring.
    pub fn tx_pending(&self) -> usize {
        self.tx_pending.len()
    }

    /// Return completed TX frames to their pools. Returns frames reclaimed.
    pub fn reap_completions(&mut self) -> usize {
        self.reap_completions_with(|_, _| false)
    }

    /// Like [`XdpSocket::reap_completions`], telling `keep(addr, kind)` about each
    /// completed frame first: when it returns true the caller keeps the frame (it is
    /// user-held again, e.g. a data frame held for retransmission) instead of it going
    /// back to its pool.
    pub fn reap_completions_with(&mut self, mut keep: impl FnMut(u64, TxKind) -> bool) -> usize {
        let mut total = 0;
        let XdpSocket { queues, scratch, ledger, stats, .. } = self;
        for q in queues.iter_mut() {
            loop {
                let cap = scratch.len().min(1024);
                // SAFETY: scratch descriptors are only written by the call.
                let n = unsafe { q.comp_q.consume(&mut scratch[..cap]) };
                for d in &scratch[..n] {
                    let addr = d.addr() as u64;
                    // Errors are counted inside the ledger (comp_unexpected).
                    let kept = match kind_of(addr) {
                        Some(FrameKind::Ack) => keep(addr, TxKind::Ack),
                        Some(FrameKind::Pong) => keep(addr, TxKind::Pong),
                        Some(FrameKind::Msg) => keep(addr, TxKind::Msg),
                        _ => false,
                    };
                    let _ = if kept { ledger.complete_keep(addr) } else { ledger.complete(addr) };
                }
                total += n;
                if n < cap {
                    break;
                }
            }
        }
        stats.comp_reaped += total as u64;
        total
    }

    // ------------------------------------------------------------------ RX

    /// Take up to `out.len()` received packets off the rx ring. Their frames belong to
    /// the caller until [`XdpSocket::release_rx`].
    #[inline]
    pub fn rx_burst(&mut self, out: &mut [RxDesc]) -> usize {
        let mut k = 0;
        let nq = self.queues.len();
        let start = self.rx_next;
        self.rx_next = (self.rx_next + 1) % nq;
        let XdpSocket { queues, scratch, ledger, stats, .. } = self;
        for j in 0..nq {
            let q = &mut queues[(start + j) % nq];
            let cap = (out.len() - k).min(scratch.len());
            if cap == 0 {
                break;
            }
            // SAFETY: scratch descriptors are only written by the call.
            let n = unsafe { q.rx_q.consume(&mut scratch[..cap]) };
            q.fill_level = q.fill_level.saturating_sub(n);
            for d in &scratch[..n] {
                let addr = d.addr() as u64;
                if ledger.rx_received(addr).is_err() {
                    stats.rx_bad_desc += 1;
                    continue;
                }
                let len = d.lengths().data();
                stats.rx_bytes += len as u64;
                out[k] = RxDesc { addr, len: len as u32 };
                k += 1;
            }
        }
        stats.rx_packets += k as u64;
        k
    }

    /// The bytes of a received packet we hold (empty if we do not hold it).
    #[inline]
    pub fn rx_frame(&self, d: &RxDesc) -> &[u8] {
        let fits = frame_index(d.addr) == frame_index(d.addr + (d.len as u64).max(1) - 1);
        if !fits || !self.ledger.is_rx_held(d.addr) {
            return &[];
        }
        // SAFETY: the ledger says the consumer holds this RX frame: the kernel will not
        // write it until it is released and refilled.
        unsafe { self.view.slice(d.addr, d.len as usize) }
    }

    /// The consumer is done with a received frame; it goes back to the fill ring at the
    /// next [`XdpSocket::refill`] (never before this call).
    #[inline]
    pub fn release_rx(&mut self, addr: u64) -> Result<()> {
        self.ledger.release_rx(addr).map_err(|e| Error::Config(format!("release_rx: {e:?}")))
    }

    /// Put released RX frames on a fill ring (one batch, to the queue with the fewest
    /// frames on its fill ring). Returns frames placed.
    pub fn refill(&mut self) -> usize {
        let XdpSocket { ledger, queues, scratch, templates, stats, .. } = self;
        let pending = ledger.refill_pending();
        if pending == 0 {
            return 0;
        }
        // A batch, not everything, with several queues: the next call may pick another.
        let batch = if queues.len() > 1 { BATCH } else { scratch.len() };
        let Some(q) = queues.iter_mut().min_by_key(|q| q.fill_level) else { return 0 };
        let n = ledger.drain_refill(batch.min(scratch.len()), |idx| {
            for (s, &i) in scratch.iter_mut().zip(idx) {
                *s = templates[i as usize];
            }
            // SAFETY: these RX frames were released by the consumer and are on no ring.
            unsafe { q.fill_q.produce(&scratch[..idx.len()]) }
        });
        q.fill_level += n;
        stats.fill_submitted += n as u64;
        if n < pending.min(batch) {
            stats.fill_ring_full += 1;
        }
        if n > 0 && q.fill_q.needs_wakeup() {
            stats.fill_kicks += 1;
            // SAFETY: zero-length non-blocking recvfrom on our own socket: a wakeup.
            unsafe { libc::recvfrom(q.fd, std::ptr::null_mut(), 0, libc::MSG_DONTWAIT, std::ptr::null_mut(), std::ptr::null_mut()) };
        }
        n
    }

    /// `flush_tx` + `reap_completions` + `refill`; returns whether anything moved.
    pub fn poll(&mut self) -> bool {
        let a = self.flush_tx();
        let b = self.reap_completions();
        let c = self.refill();
        a + b + c > 0
    }

    /// Block up to `timeout` for the rx ring to become readable (for backoff runners and
    /// tests; the spinning stage never calls it).
    pub fn wait_rx(&mut self, timeout: Duration) -> Result<bool> {
        let mut fds: Vec<libc::pollfd> = self.queues.iter().map(|q| libc::pollfd { fd: q.fd, events: libc::POLLIN, revents: 0 }).collect();
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: `fds` is a valid array of pollfd that outlives the call.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if r < 0 {
            return Err(Error::io("poll AF_XDP sockets", io::Error::last_os_error()));
        }
        Ok(r > 0)
    }

    /// Which partition an address belongs to.
    pub fn kind_of(addr: u64) -> Option<FrameKind> {
        kind_of(addr)
    }
}

/// `TX_CAPACITY` re-exported for users of the socket.
pub const MAX_TX_PACKET: usize = TX_CAPACITY;

#[allow(dead_code)]
fn _assert_send() {
    fn is_send<T: Send>() {}
    is_send::<XdpSocket>();
    let _ = sys::XDP_PASS;
}
