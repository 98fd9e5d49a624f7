//! Thin wrappers over the `bpf(2)` system call and a tiny BPF instruction assembler.
//!
//! We do not link libbpf for this: the filter program is a few dozen instructions, so
//! it is assembled here and loaded with `BPF_PROG_LOAD` directly. Constants are the
//! kernel UAPI values (`include/uapi/linux/bpf.h`).

#![allow(dead_code)] // a small assembler: not every op is used by the one program

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use crate::error::Error;

// bpf_cmd
pub const BPF_MAP_CREATE: u32 = 0;
pub const BPF_MAP_LOOKUP_ELEM: u32 = 1;
pub const BPF_MAP_UPDATE_ELEM: u32 = 2;
pub const BPF_MAP_DELETE_ELEM: u32 = 3;
pub const BPF_PROG_LOAD: u32 = 5;
pub const BPF_LINK_CREATE: u32 = 28;
// bpf_map_type
pub const BPF_MAP_TYPE_HASH: u32 = 1;
pub const BPF_MAP_TYPE_ARRAY: u32 = 2;
pub const BPF_MAP_TYPE_XSKMAP: u32 = 17;
// bpf_prog_type / bpf_attach_type
pub const BPF_PROG_TYPE_XDP: u32 = 6;
pub const BPF_XDP: u32 = 37;
// helpers
pub const BPF_FUNC_MAP_LOOKUP_ELEM: i32 = 1;
pub const BPF_FUNC_GET_PRANDOM_U32: i32 = 7;
pub const BPF_FUNC_REDIRECT_MAP: i32 = 51;
// XDP actions
pub const XDP_DROP: i32 = 1;
pub const XDP_PASS: i32 = 2;
// XDP attach flags (if_link.h)
pub const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
pub const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

/// `union bpf_attr`, as raw 8-byte words: every command we use fits in 128 bytes and
/// the kernel requires any bytes it does not know to be zero, which a zeroed buffer is.
#[repr(C, align(8))]
pub struct Attr(pub [u8; 128]);

impl Attr {
    pub fn new() -> Self {
        Attr([0u8; 128])
    }
    pub fn u32_at(&mut self, off: usize, v: u32) -> &mut Self {
        self.0[off..off + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }
    pub fn u64_at(&mut self, off: usize, v: u64) -> &mut Self {
        self.0[off..off + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }
    pub fn bytes_at(&mut self, off: usize, v: &[u8]) -> &mut Self {
        self.0[off..off + v.len()].copy_from_slice(v);
        self
    }
}

/// `bpf(cmd, attr, sizeof attr)`; returns the non-negative result or the errno.
pub fn bpf(cmd: u32, attr: &mut Attr) -> io::Result<i64> {
    // SAFETY: `attr` is a valid, writable 128-byte buffer that outlives the call; the
    // kernel reads/writes at most `size` bytes of it. Pointers stored inside it (insns,
    // log buffer, key/value) are kept alive by the callers for the duration of the call.
    let r = unsafe {
        libc::syscall(libc::SYS_bpf, cmd as libc::c_long, attr.0.as_mut_ptr(), attr.0.len() as libc::c_long)
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as i64)
    }
}

/// Like [`bpf`] for commands that return a new file descriptor.
pub fn bpf_fd(cmd: u32, attr: &mut Attr) -> io::Result<OwnedFd> {
    let fd = bpf(cmd, attr)? as RawFd;
    // SAFETY: the kernel just returned this fd to us; nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `BPF_MAP_CREATE`.
pub fn map_create(map_type: u32, key_size: u32, value_size: u32, max_entries: u32, name: &str) -> io::Result<OwnedFd> {
    let mut a = Attr::new();
    a.u32_at(0, map_type).u32_at(4, key_size).u32_at(8, value_size).u32_at(12, max_entries);
    // map_flags@16, inner_map_fd@20, numa_node@24, map_name[16]@28
    let n = name.as_bytes();
    a.bytes_at(28, &n[..n.len().min(15)]);
    bpf_fd(BPF_MAP_CREATE, &mut a)
}

/// `BPF_MAP_UPDATE_ELEM` with flags `BPF_ANY`.
pub fn map_update(map: RawFd, key: &[u8], value: &[u8]) -> io::Result<()> {
    let mut a = Attr::new();
    a.u32_at(0, map as u32).u64_at(8, key.as_ptr() as u64).u64_at(16, value.as_ptr() as u64).u64_at(24, 0);
    bpf(BPF_MAP_UPDATE_ELEM, &mut a).map(|_| ())
}

/// `BPF_MAP_DELETE_ELEM`.
pub fn map_delete(map: RawFd, key: &[u8]) -> io::Result<()> {
    let mut a = Attr::new();
    a.u32_at(0, map as u32).u64_at(8, key.as_ptr() as u64);
    bpf(BPF_MAP_DELETE_ELEM, &mut a).map(|_| ())
}

/// `BPF_MAP_LOOKUP_ELEM` into `value`.
pub fn map_lookup(map: RawFd, key: &[u8], value: &mut [u8]) -> io::Result<()> {
    let mut a = Attr::new();
    a.u32_at(0, map as u32).u64_at(8, key.as_ptr() as u64).u64_at(16, value.as_mut_ptr() as u64);
    bpf(BPF_MAP_LOOKUP_ELEM, &mut a).map(|_| ())
}

/// `BPF_PROG_LOAD` of an XDP program. On failure the verifier log (if any) is returned
/// with the errno.
pub fn prog_load_xdp(insns: &[Insn], license: &str, name: &str) -> Result<OwnedFd, (io::Error, String)> {
    let lic = std::ffi::CString::new(license).expect("license has no NUL");
    let try_load = |log: Option<&mut Vec<u8>>| -> io::Result<OwnedFd> {
        let mut a = Attr::new();
        a.u32_at(0, BPF_PROG_TYPE_XDP)
            .u32_at(4, insns.len() as u32)
            .u64_at(8, insns.as_ptr() as u64)
            .u64_at(16, lic.as_ptr() as u64);
        if let Some(buf) = log {
            // log_level@24, log_size@28, log_buf@32
            a.u32_at(24, 1).u32_at(28, buf.len() as u32).u64_at(32, buf.as_mut_ptr() as u64);
        }
        // kern_version@40, prog_flags@44, prog_name[16]@48, prog_ifindex@64,
        // expected_attach_type@68
        let n = name.as_bytes();
        a.bytes_at(48, &n[..n.len().min(15)]);
        a.u32_at(68, BPF_XDP);
        bpf_fd(BPF_PROG_LOAD, &mut a)
    };
    match try_load(None) {
        Ok(fd) => Ok(fd),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => Err((e, String::new())),
        Err(_) => {
            // Load again with the verifier log on, so the error says why.
            let mut log = vec![0u8; 1 << 16];
            match try_load(Some(&mut log)) {
                Ok(fd) => Ok(fd),
                Err(e) => {
                    let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
                    Err((e, String::from_utf8_lossy(&log[..end]).into_owned()))
                }
            }
        }
    }
}

/// `BPF_LINK_CREATE` attaching an XDP program to an interface. The returned link fd
/// owns the attachment: closing it (or the process dying, even by SIGKILL) detaches.
pub fn link_create_xdp(prog: RawFd, ifindex: u32, xdp_flags: u32) -> io::Result<OwnedFd> {
    let mut a = Attr::new();
    a.u32_at(0, prog as u32).u32_at(4, ifindex).u32_at(8, BPF_XDP).u32_at(12, xdp_flags);
    bpf_fd(BPF_LINK_CREATE, &mut a)
}

/// Map an EPERM/EACCES from a privileged operation to [`Error::Capability`].
pub fn cap_error(what: &str) -> Error {
    Error::Capability {
        what: what.to_string(),
        how: "run as root or `setcap cap_net_admin,cap_net_raw,cap_bpf,cap_ipc_lock+ep <binary>`".to_string(),
    }
}

pub fn is_perm(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES))
}

// ---------------------------------------------------------------------------------
// Instruction assembler
// ---------------------------------------------------------------------------------

/// One `struct bpf_insn`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    pub code: u8,
    /// dst_reg in the low nibble, src_reg in the high nibble.
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

/// Registers.
pub const R0: u8 = 0;
pub const R1: u8 = 1;
pub const R2: u8 = 2;
pub const R3: u8 = 3;
pub const R4: u8 = 4;
pub const R5: u8 = 5;
pub const R6: u8 = 6;
pub const R7: u8 = 7;
pub const R8: u8 = 8;
pub const R9: u8 = 9;
pub const R10: u8 = 10;

/// Access sizes.
#[derive(Clone, Copy)]
pub enum Size {
    B = 0x10,
    H = 0x08,
    W = 0x00,
    DW = 0x18,
}

/// Jump conditions (BPF_JMP class op codes).
#[derive(Clone, Copy)]
pub enum Cond {
    Eq = 0x10,
    Gt = 0x20,
    Ge = 0x30,
    Ne = 0x50,
    Lt = 0xa0,
    Le = 0xb0,
}

/// 64-bit ALU ops.
#[derive(Clone, Copy)]
pub enum Alu {
    Add = 0x00,
    Sub = 0x10,
    Or = 0x40,
    And = 0x50,
    Lsh = 0x60,
    Rsh = 0x70,
    Mod = 0x90,
    Mov = 0xb0,
}

const BPF_LD: u8 = 0x00;
const BPF_LDX: u8 = 0x01;
const BPF_ST: u8 = 0x02;
const BPF_STX: u8 = 0x03;
const BPF_JMP: u8 = 0x05;
const BPF_ALU64: u8 = 0x07;
const BPF_MEM: u8 = 0x60;
const BPF_IMM: u8 = 0x00;
const BPF_ATOMIC: u8 = 0xc0;
const BPF_K: u8 = 0x00;
const BPF_X: u8 = 0x08;
const BPF_CALL: u8 = 0x80;
const BPF_EXIT: u8 = 0x90;
const BPF_PSEUDO_MAP_FD: u8 = 1;

/// A program under construction, with forward-jump labels.
#[derive(Default)]
pub struct Asm {
    pub insns: Vec<Insn>,
    /// (instruction index, label) of jumps whose offset is patched in `finish`.
    fixups: Vec<(usize, &'static str)>,
    labels: Vec<(&'static str, usize)>,
}

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn { code, regs: (dst & 0x0f) | (src << 4), off, imm }
}

impl Asm {
    pub fn new() -> Self {
        Self::default()
    }
    fn push(&mut self, i: Insn) -> &mut Self {
        self.insns.push(i);
        self
    }
    /// dst = *(size *)(src + off)
    pub fn ldx(&mut self, size: Size, dst: u8, src: u8, off: i16) -> &mut Self {
        self.push(insn(BPF_LDX | BPF_MEM | size as u8, dst, src, off, 0))
    }
    /// *(size *)(dst + off) = imm
    pub fn st(&mut self, size: Size, dst: u8, off: i16, imm: i32) -> &mut Self {
        self.push(insn(BPF_ST | BPF_MEM | size as u8, dst, 0, off, imm))
    }
    /// *(size *)(dst + off) = src
    pub fn stx(&mut self, size: Size, dst: u8, src: u8, off: i16) -> &mut Self {
        self.push(insn(BPF_STX | BPF_MEM | size as u8, dst, src, off, 0))
    }
    /// lock *(u64 *)(dst + off) += src
    pub fn atomic_add64(&mut self, dst: u8, src: u8, off: i16) -> &mut Self {
        self.push(insn(BPF_STX | BPF_ATOMIC | Size::DW as u8, dst, src, off, 0))
    }
    /// dst op= imm (64-bit)
    pub fn alu_imm(&mut self, op: Alu, dst: u8, imm: i32) -> &mut Self {
        self.push(insn(BPF_ALU64 | op as u8 | BPF_K, dst, 0, 0, imm))
    }
    /// dst op= src (64-bit)
    pub fn alu_reg(&mut self, op: Alu, dst: u8, src: u8) -> &mut Self {
        self.push(insn(BPF_ALU64 | op as u8 | BPF_X, dst, src, 0, 0))
    }
    /// dst = map fd (64-bit immediate load, relocated by the kernel to the map pointer)
    pub fn ld_map_fd(&mut self, dst: u8, fd: RawFd) -> &mut Self {
        self.push(insn(BPF_LD | Size::DW as u8 | BPF_IMM, dst, BPF_PSEUDO_MAP_FD, 0, fd));
        self.push(insn(0, 0, 0, 0, 0))
    }
    /// if (dst cond imm) goto label
    pub fn jmp_imm(&mut self, c: Cond, dst: u8, imm: i32, label: &'static str) -> &mut Self {
        self.fixups.push((self.insns.len(), label));
        self.push(insn(BPF_JMP | c as u8 | BPF_K, dst, 0, 0, imm))
    }
    /// if (dst cond src) goto label
    pub fn jmp_reg(&mut self, c: Cond, dst: u8, src: u8, label: &'static str) -> &mut Self {
        self.fixups.push((self.insns.len(), label));
        self.push(insn(BPF_JMP | c as u8 | BPF_X, dst, src, 0, 0))
    }
    pub fn call(&mut self, helper: i32) -> &mut Self {
        self.push(insn(BPF_JMP | BPF_CALL, 0, 0, 0, helper))
    }
    pub fn exit(&mut self) -> &mut Self {
        self.push(insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0))
    }
    pub fn label(&mut self, name: &'static str) -> &mut Self {
        self.labels.push((name, self.insns.len()));
        self
    }
    /// Resolve labels; panics on an unknown label (a bug in the program text).
    pub fn finish(mut self) -> Vec<Insn> {
        for &(at, name) in &self.fixups {
            let target = self
                .labels
                .iter()
                .find(|(n, _)| *n == name)
                .unwrap_or_else(|| panic!("BPF label {name} not defined"))
                .1;
            self.insns[at].off = (target as i64 - at as i64 - 1) as i16;
        }
        self.insns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_match_the_kernel_macros() {
        let mut a = Asm::new();
        a.alu_reg(Alu::Mov, R6, R1) // BPF_MOV64_REG(R6, R1)
            .ldx(Size::W, R2, R6, 4) // BPF_LDX_MEM(BPF_W, R2, R6, 4)
            .jmp_imm(Cond::Ne, R4, 0x0008, "out") // BPF_JMP_IMM(BPF_JNE, R4, 8, +1)
            .ld_map_fd(R1, 7) // BPF_LD_MAP_FD(R1, 7): two slots
            .label("out")
            .call(51)
            .exit();
        let p = a.finish();
        assert_eq!(p[0], Insn { code: 0xbf, regs: 0x16, off: 0, imm: 0 });
        assert_eq!(p[1], Insn { code: 0x61, regs: 0x62, off: 4, imm: 0 });
        assert_eq!(p[2], Insn { code: 0x55, regs: 0x04, off: 2, imm: 8 });
        assert_eq!(p[3], Insn { code: 0x18, regs: 0x11, off: 0, imm: 7 });
        assert_eq!(p[4], Insn { code: 0, regs: 0, off: 0, imm: 0 });
        assert_eq!(p[5], Insn { code: 0x85, regs: 0, off: 0, imm: 51 });
        assert_eq!(p[6], Insn { code: 0x95, regs: 0, off: 0, imm: 0 });
        assert_eq!(std::mem::size_of::<Insn>(), 8);
    }

    #[test]
    fn filter_program_is_well_formed() {
        let p = crate::xdp::bpf::program(3, 4);
        eprintln!("filter program: {} instructions", p.len());
        assert!(p.len() < 100);
        assert_eq!(p.last().unwrap().code, 0x95);
        // Every jump lands inside the program.
        for (i, ins) in p.iter().enumerate() {
            if ins.code & 0x07 == 0x05 && ins.code != 0x85 && ins.code != 0x95 {
                let t = i as i64 + 1 + ins.off as i64;
                assert!(t > i as i64 && (t as usize) < p.len(), "jump at {i} to {t}");
            }
        }
    }
}
