//! Our own XDP program: redirect ONLY our TCP flow into the AF_XDP socket, pass
//! everything else (ARP, ICMP, other TCP, other hosts) to the kernel.
//!
//! The program is hand-assembled BPF (no clang, no libbpf at run time), loaded with
//! `BPF_PROG_LOAD` and attached with `BPF_LINK_CREATE`, so the attachment belongs to a
//! file descriptor: when the process exits — even by SIGKILL — the link fd is closed and
//! the kernel detaches the program. Nothing is pinned, nothing survives us.
//!
//! Maps:
//! - `pl_flows` (HASH, up to [`MAX_FLOWS`] entries): the connections we own, one entry
//!   per 4-tuple, added and removed from user space while the program runs (every
//!   connection of one [`crate::stage::XdpPollStage`] is one entry):
//!
//!   key (12 bytes, all network byte order, exactly as in the packet):
//!
//!   | offset | size | field                                  |
//!   |-------:|-----:|----------------------------------------|
//!   | 0      | 4    | server IPv4 address (IP source)        |
//!   | 4      | 4    | our local IPv4 address (IP destination) |
//!   | 8      | 2    | server TCP port (TCP source)           |
//!   | 10     | 2    | our local TCP port (TCP destination)   |
//!
//!   value ([`FLOW_VALUE_SIZE`] bytes):
//!
//!   | offset | size | field                                                    |
//!   |-------:|-----:|----------------------------------------------------------|
//!   | 0      | 4    | injected loss, percent 0..=100 (fault tests; 0 = off)     |
//!   | 8      | 8    | packets redirected (atomic add by the program)            |
//!   | 16     | 8    | packets dropped by injected loss                          |
//!
//! - `pl_xsks` (XSKMAP, key = rx queue index, value = AF_XDP socket fd): one socket per
//!   RX queue, so a flow is caught on whatever queue RSS puts it.
//!
//! Matching: Ethernet type IPv4, version 4, IHL >= 5 (options are skipped using IHL, so
//! IHL > 5 works), protocol TCP, not a fragment (MF clear, offset 0), and the full
//! 4-tuple (source address and port, destination address and port) is a key of
//! `pl_flows`. The destination address matters: a kernel connection from another local
//! address to the same server with the same local port is not ours and goes to the
//! kernel. Matched packets go to `bpf_redirect_map(xsks, rx_queue_index, XDP_PASS)`: if
//! no socket is in that queue's slot the packet falls back to the kernel rather than
//! vanishing.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use super::sys::{self, Alu, Asm, Cond, Size, R0, R1, R10, R2, R3, R4, R5, R6, R7, R8, R9};
use crate::error::{Error, Result};

/// Size of a `pl_flows` key and value.
pub const FLOW_KEY_SIZE: usize = 12;
pub const FLOW_VALUE_SIZE: usize = 24;
/// Connections one program (one interface, one process) can carry.
pub const MAX_FLOWS: u32 = 256;

/// One connection's 4-tuple, as seen on packets coming from the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Flow {
    pub server_ip: Ipv4Addr,
    pub server_port: u16,
    pub local_ip: Ipv4Addr,
    pub local_port: u16,
}

impl Flow {
    /// The map key: the packet's bytes, in the packet's order.
    pub fn key(&self) -> [u8; FLOW_KEY_SIZE] {
        let mut k = [0u8; FLOW_KEY_SIZE];
        k[0..4].copy_from_slice(&self.server_ip.octets());
        k[4..8].copy_from_slice(&self.local_ip.octets());
        k[8..10].copy_from_slice(&self.server_port.to_be_bytes());
        k[10..12].copy_from_slice(&self.local_port.to_be_bytes());
        k
    }
}

/// How the program was attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// Native (driver) XDP, `XDP_FLAGS_DRV_MODE`.
    Native,
    /// Generic (SKB) XDP, `XDP_FLAGS_SKB_MODE`: works on any device, slower.
    Generic,
}

/// Which attach modes to try.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AttachRequest {
    /// Native first, generic if the driver refuses.
    #[default]
    Auto,
    Native,
    Generic,
}

/// Counters kept by the program itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FilterCounters {
    pub redirected: u64,
    pub loss_dropped: u64,
}

/// The loaded program and its maps; optionally attached to an interface.
#[derive(Debug)]
pub struct FlowFilter {
    flow_map: OwnedFd,
    /// The flows in `flow_map` (to sum their counters; a HASH map is not indexable).
    flows: Vec<Flow>,
    xsk_map: OwnedFd,
    prog: OwnedFd,
    link: Option<OwnedFd>,
    attached: Option<(u32, AttachMode)>,
}

const CAP_BPF_MAP: &str = "CAP_BPF (create BPF maps)";
const CAP_XSKMAP: &str = "CAP_NET_ADMIN and CAP_BPF (create an XSKMAP)";
const CAP_PROG: &str = "CAP_NET_ADMIN and CAP_BPF (load an XDP program)";
const CAP_LINK: &str = "CAP_NET_ADMIN (attach an XDP program to an interface)";

/// Assemble the filter program for the given map fds.
pub fn program(flow_map: RawFd, xsk_map: RawFd) -> Vec<sys::Insn> {
    let mut a = Asm::new();
    a.alu_reg(Alu::Mov, R6, R1) // r6 = ctx
        .ldx(Size::W, R2, R6, 0) // r2 = data
        .ldx(Size::W, R3, R6, 4) // r3 = data_end
        // Ethernet (14) + minimal IPv4 header (20) present?
        .alu_reg(Alu::Mov, R4, R2)
        .alu_imm(Alu::Add, R4, 34)
        .jmp_reg(Cond::Gt, R4, R3, "pass")
        // ethertype == 0x0800 (loaded little-endian: 0x0008)
        .ldx(Size::H, R4, R2, 12)
        .jmp_imm(Cond::Ne, R4, 0x0008, "pass")
        // version == 4, IHL >= 5
        .ldx(Size::B, R4, R2, 14)
        .alu_reg(Alu::Mov, R5, R4)
        .alu_imm(Alu::And, R5, 0xf0)
        .jmp_imm(Cond::Ne, R5, 0x40, "pass")
        .alu_imm(Alu::And, R4, 0x0f)
        .jmp_imm(Cond::Lt, R4, 5, "pass")
        // protocol == TCP
        .ldx(Size::B, R5, R2, 23)
        .jmp_imm(Cond::Ne, R5, 6, "pass")
        // not a fragment: MF bit and fragment offset all zero (LE load of bytes 20..22)
        .ldx(Size::H, R5, R2, 20)
        .alu_imm(Alu::And, R5, 0xff3f)
        .jmp_imm(Cond::Ne, R5, 0, "pass")
        // r7 = TCP header = data + 14 + IHL*4; its ports present?
        .alu_imm(Alu::Lsh, R4, 2)
        .alu_reg(Alu::Mov, R7, R2)
        .alu_imm(Alu::Add, R7, 14)
        .alu_reg(Alu::Add, R7, R4)
        .alu_reg(Alu::Mov, R8, R7)
        .alu_imm(Alu::Add, R8, 4)
        .jmp_reg(Cond::Gt, R8, R3, "pass")
        // key on the stack at fp-16: saddr, daddr, sport, dport (packet byte order)
        .ldx(Size::W, R5, R2, 26)
        .stx(Size::W, R10, R5, -16)
        .ldx(Size::W, R5, R2, 30)
        .stx(Size::W, R10, R5, -12)
        .ldx(Size::H, R5, R7, 0)
        .stx(Size::H, R10, R5, -8)
        .ldx(Size::H, R5, R7, 2)
        .stx(Size::H, R10, R5, -6)
        // r0 = bpf_map_lookup_elem(&flows, &key)
        .alu_reg(Alu::Mov, R2, R10)
        .alu_imm(Alu::Add, R2, -16)
        .ld_map_fd(R1, flow_map)
        .call(sys::BPF_FUNC_MAP_LOOKUP_ELEM)
        .jmp_imm(Cond::Eq, R0, 0, "pass")
        .alu_reg(Alu::Mov, R9, R0) // r9 = &value
        // injected loss (fault tests): drop if prandom % 100 < loss
        .ldx(Size::W, R5, R9, 0)
        .jmp_imm(Cond::Eq, R5, 0, "redirect")
        .call(sys::BPF_FUNC_GET_PRANDOM_U32)
        .alu_imm(Alu::Mod, R0, 100)
        .ldx(Size::W, R5, R9, 0)
        .jmp_reg(Cond::Ge, R0, R5, "redirect")
        .alu_imm(Alu::Mov, R1, 1)
        .atomic_add64(R9, R1, 16)
        .alu_imm(Alu::Mov, R0, sys::XDP_DROP)
        .exit()
        .label("redirect")
        .alu_imm(Alu::Mov, R1, 1)
        .atomic_add64(R9, R1, 8)
        .ldx(Size::W, R2, R6, 16) // rx_queue_index
        .ld_map_fd(R1, xsk_map)
        .alu_imm(Alu::Mov, R3, sys::XDP_PASS) // fallback action if the slot is empty
        .call(sys::BPF_FUNC_REDIRECT_MAP)
        .exit()
        .label("pass")
        .alu_imm(Alu::Mov, R0, sys::XDP_PASS)
        .exit();
    a.finish()
}

impl FlowFilter {
    /// Create the maps and load the program (not attached yet). `queues` is the number
    /// of XSKMAP slots (rx queue indexes 0..queues).
    pub fn load(queues: u32) -> Result<FlowFilter> {
        let flow_map = sys::map_create(sys::BPF_MAP_TYPE_HASH, FLOW_KEY_SIZE as u32, FLOW_VALUE_SIZE as u32, MAX_FLOWS, "pl_flows")
            .map_err(|e| if sys::is_perm(&e) { sys::cap_error(CAP_BPF_MAP) } else { Error::io("BPF_MAP_CREATE (HASH pl_flows)", e) })?;
        let xsk_map = sys::map_create(sys::BPF_MAP_TYPE_XSKMAP, 4, 4, queues.max(1), "pl_xsks")
            .map_err(|e| if sys::is_perm(&e) { sys::cap_error(CAP_XSKMAP) } else { Error::io("BPF_MAP_CREATE (XSKMAP pl_xsks)", e) })?;
        let insns = program(flow_map.as_raw_fd(), xsk_map.as_raw_fd());
        // Only non-GPL-only helpers are used (map_lookup_elem, get_prandom_u32,
        // redirect_map), so the crate's own license string is accepted.
        let prog = sys::prog_load_xdp(&insns, "Apache-2.0", "pl_flow_filter").map_err(|(e, log)| {
            if sys::is_perm(&e) {
                sys::cap_error(CAP_PROG)
            } else {
                Error::io(format!("BPF_PROG_LOAD of the XDP flow filter; verifier log:\n{log}"), e)
            }
        })?;
        Ok(FlowFilter { flow_map, flows: Vec::new(), xsk_map, prog, link: None, attached: None })
    }

    /// Attach to `ifindex` through a bpf_link. `Auto` tries native then generic.
    pub fn attach(&mut self, ifindex: u32, ifname: &str, req: AttachRequest) -> Result<AttachMode> {
        if self.link.is_some() {
            return Err(Error::Config("XDP flow filter is already attached".into()));
        }
        let try_mode = |mode: AttachMode| {
            let flags = match mode {
                AttachMode::Native => sys::XDP_FLAGS_DRV_MODE,
                AttachMode::Generic => sys::XDP_FLAGS_SKB_MODE,
            };
            sys::link_create_xdp(self.prog.as_raw_fd(), ifindex, flags)
        };
        let busy = |e: &std::io::Error| matches!(e.raw_os_error(), Some(libc::EBUSY) | Some(libc::EEXIST));
        let fail = |mode: AttachMode, e: std::io::Error| -> Error {
            if sys::is_perm(&e) {
                sys::cap_error(CAP_LINK)
            } else if busy(&e) {
                Error::io(
                    format!(
                        "attach XDP program to {ifname} ({mode:?} mode): another XDP program is already attached \
                         (`ip -d link show dev {ifname}` shows it). An interface carries one XDP program: \
                         if it is another process's libpipeline, open this connection from that process \
                         (its connections on {ifname} share one AF_XDP engine) or use another interface \
                         or the kernel transport; detaching a program you do not own cuts its connections"
                    ),
                    e,
                )
            } else {
                Error::io(format!("attach XDP program to {ifname} ({mode:?} mode)"), e)
            }
        };
        let (link, mode) = match req {
            AttachRequest::Native => (try_mode(AttachMode::Native).map_err(|e| fail(AttachMode::Native, e))?, AttachMode::Native),
            AttachRequest::Generic => (try_mode(AttachMode::Generic).map_err(|e| fail(AttachMode::Generic, e))?, AttachMode::Generic),
            AttachRequest::Auto => match try_mode(AttachMode::Native) {
                Ok(l) => (l, AttachMode::Native),
                Err(e) if sys::is_perm(&e) || busy(&e) => return Err(fail(AttachMode::Native, e)),
                Err(native_err) => match try_mode(AttachMode::Generic) {
                    Ok(l) => (l, AttachMode::Generic),
                    Err(e) => {
                        return Err(fail(
                            AttachMode::Generic,
                            std::io::Error::new(e.kind(), format!("{e} (native mode failed first: {native_err})")),
                        ))
                    }
                },
            },
        };
        self.link = Some(link);
        self.attached = Some((ifindex, mode));
        Ok(mode)
    }

    /// Detach (close the link). Also happens on drop and on process death.
    pub fn detach(&mut self) {
        self.link = None;
        self.attached = None;
    }

    pub fn attached(&self) -> Option<(u32, AttachMode)> {
        self.attached
    }

    /// Put an AF_XDP socket in the XSKMAP slot for `queue`.
    pub fn insert_xsk(&self, queue: u32, xsk_fd: RawFd) -> Result<()> {
        sys::map_update(self.xsk_map.as_raw_fd(), &queue.to_ne_bytes(), &(xsk_fd as u32).to_ne_bytes())
            .map_err(|e| if sys::is_perm(&e) { sys::cap_error(CAP_XSKMAP) } else { Error::io(format!("insert AF_XDP socket into XSKMAP slot {queue}"), e) })
    }

    fn read_value(&self, flow: &Flow) -> Result<[u8; FLOW_VALUE_SIZE]> {
        let mut v = [0u8; FLOW_VALUE_SIZE];
        sys::map_lookup(self.flow_map.as_raw_fd(), &flow.key(), &mut v).map_err(|e| Error::io("read pl_flows map", e))?;
        Ok(v)
    }

    fn write_value(&self, flow: &Flow, v: &[u8; FLOW_VALUE_SIZE]) -> Result<()> {
        sys::map_update(self.flow_map.as_raw_fd(), &flow.key(), v).map_err(|e| Error::io("update pl_flows map", e))
    }

    /// Start redirecting this flow (counters from zero). Adding a flow twice is refused:
    /// two connections cannot own one 4-tuple.
    pub fn add_flow(&mut self, flow: Flow) -> Result<()> {
        if self.flows.contains(&flow) {
            return Err(Error::Config(format!("flow {flow:?} is already redirected")));
        }
        if self.flows.len() >= MAX_FLOWS as usize {
            return Err(Error::Config(format!("at most {MAX_FLOWS} AF_XDP connections per interface and process")));
        }
        self.write_value(&flow, &[0u8; FLOW_VALUE_SIZE])?;
        self.flows.push(flow);
        Ok(())
    }

    /// Stop redirecting this flow: its packets go to the kernel from now on.
    pub fn remove_flow(&mut self, flow: &Flow) -> Result<()> {
        let Some(i) = self.flows.iter().position(|f| f == flow) else { return Ok(()) };
        self.flows.swap_remove(i);
        sys::map_delete(self.flow_map.as_raw_fd(), &flow.key()).map_err(|e| Error::io("delete from pl_flows map", e))
    }

    /// Flows redirected now.
    pub fn flows(&self) -> &[Flow] {
        &self.flows
    }

    /// Inject random loss on one flow's incoming packets (fault tests). 0 turns it off.
    pub fn set_loss_percent(&self, flow: &Flow, pct: u32) -> Result<()> {
        let mut v = self.read_value(flow)?;
        v[0..4].copy_from_slice(&pct.min(100).to_ne_bytes());
        self.write_value(flow, &v)
    }

    /// One flow's counters.
    pub fn flow_counters(&self, flow: &Flow) -> Result<FilterCounters> {
        let v = self.read_value(flow)?;
        Ok(FilterCounters {
            redirected: u64::from_ne_bytes(v[8..16].try_into().unwrap_or_default()),
            loss_dropped: u64::from_ne_bytes(v[16..24].try_into().unwrap_or_default()),
        })
    }

    /// Counters summed over every flow redirected now.
    pub fn counters(&self) -> Result<FilterCounters> {
        let mut sum = FilterCounters::default();
        for f in &self.flows {
            let c = self.flow_counters(f)?;
            sum.redirected += c.redirected;
            sum.loss_dropped += c.loss_dropped;
        }
        Ok(sum)
    }

    /// The program fd (e.g. for `BPF_OBJ_GET_INFO_BY_FD`).
    pub fn prog_fd(&self) -> RawFd {
        self.prog.as_raw_fd()
    }
}
