//! Shared-memory regions under `/dev/shm/pipeline_<name>/`.
//!
//! Every region file starts with a [`RegionHeader`] page (magic, layout version, kind,
//! sizes, creator pid) so that an attacher — another process, the header-only C
//! consumer, the stats tool — refuses a mismatched layout instead of reading garbage.
//! Files are created mode 0600. A directory whose creator is dead is reclaimed at the
//! next start; [`ShmDir`] removes what it created when dropped.

mod dir;
mod region;

pub use dir::{ShmDir, SHM_ROOT};
pub use region::{Region, RegionHeader, RegionKind, RegionSpec, CTL_BYTES, CTL_OFFSET, HEADER_BYTES, LAYOUT_VERSION, REGION_MAGIC};

/// The file names of the design document's section 7 (plus our stats region).
pub mod names {
    pub const UMEM: &str = "umem.dat";
    pub const RAW_INBOX: &str = "raw_inbox.shm";
    pub const RAW_OUTBOX: &str = "raw_outbox.shm";
    pub const ACK_OUTBOX: &str = "ack_outbox.shm";
    pub const PONG_OUTBOX: &str = "pong_outbox.shm";
    pub const MSG_INBOX: &str = "msg_inbox.shm";
    pub const MSG_OUTBOX: &str = "msg_outbox.shm";
    pub const PONGS: &str = "pongs.shm";
    pub const WS_FRAME_INFO: &str = "ws_frame_info.shm";
    pub const TCP_STATE: &str = "tcp_state.shm";
    pub const STATS: &str = "stats.shm";
}

/// Is a process with this pid alive? EPERM means it exists but is not ours.
pub fn pid_alive(pid: u32) -> bool {
    if pid == 0 || pid > i32::MAX as u32 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks for existence; no signal is sent.
    let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// The system page size (mirrored mappings must be page multiples).
pub fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p <= 0 {
        4096
    } else {
        p as usize
    }
}
