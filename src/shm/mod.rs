//! Shared-memory regions under `/dev/shm/pipeline_<name>/`.
//!
//! Every region file starts with a [`RegionHeader`] page (magic, layout version, kind,
//! sizes, creator pid) so that an attacher — another process, the header-only C
//! consumer, the stats tool — refuses a mismatched layout instead of reading garbage.
//! Files are created mode 0600. A directory whose creator is dead is reclaimed at the
//! next start; [`ShmDir`] removes what it created when dropped.
//!
//! Trust: names are predictable and /dev/shm is writable by every local user, so a
//! directory or file found there may have been planted. Everything is opened
//! `O_NOFOLLOW` through the directory's descriptor and checked with `fstat` on the
//! descriptor itself ([`check_trusted`]) before it is used: a real directory / regular
//! file, owned by the uid we run as (or root, when attaching), not writable by group or
//! others. The header-only C consumer makes the same checks.

mod dir;
mod region;

pub use dir::{ShmDir, SHM_ROOT};

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use crate::error::{Error, Result};
pub use region::{Region, RegionHeader, RegionKind, RegionSpec, CTL_BYTES, CTL_OFFSET, HEADER_BYTES, LAYOUT_VERSION, REGION_MAGIC};

/// The file names of the design document's section 7 (plus our stats region).
pub mod names {
    pub const UMEM: &str = "umem.dat";
    pub const RAW_INBOX: &str = "raw_inbox.shm";
    pub const RAW_OUTBOX: &str = "raw_outbox.shm";
    pub const ACK_OUTBOX: &str = "ack_outbox.shm";
    pub const PONG_OUTBOX: &str = "pong_outbox.shm";
    pub const MSG_INBOX: &str = "msg_inbox.shm";
    /// permessage-deflate offered: the transport's decrypted bytes, which the
    /// WebSocket stage parses and inflates (or copies) into MSG_INBOX.
    pub const WIRE_INBOX: &str = "wire_inbox.shm";
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

/// What [`check_trusted`] expects to find.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trust {
    /// A directory we are about to take ownership of (and reclaim): ours exactly, no
    /// group/other bits at all (we create it 0700).
    OwnDir,
    /// A running pipeline's directory: ours or root's, not writable by group/others.
    AttachDir,
    /// A file inside a directory we own (`.lock`): ours exactly, one link, private.
    OwnFile,
    /// A region file we attach to: ours or root's, not writable by group/others.
    AttachFile,
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Refuse a directory or file that another local user created, could write, or that is
/// not what it claims to be. `f` was opened `O_NOFOLLOW`, so `metadata` (an `fstat` of
/// the open descriptor) describes exactly the object we will use, not whatever the path
/// names a moment later.
pub(crate) fn check_trusted(f: &File, path: &Path, trust: Trust) -> Result<()> {
    let p = path.display();
    let m = f.metadata().map_err(|e| Error::io(format!("stat {p}"), e))?;
    let dir = matches!(trust, Trust::OwnDir | Trust::AttachDir);
    let ft = m.file_type();
    if dir && !ft.is_dir() {
        return Err(Error::Shm(format!("{p} is not a directory; remove it (rm {p}) or choose another pipeline name")));
    }
    if !dir && !ft.is_file() {
        let what = if ft.is_dir() {
            "a directory"
        } else if ft.is_fifo() {
            "a FIFO"
        } else if ft.is_socket() {
            "a socket"
        } else {
            "a device or other special file"
        };
        return Err(Error::Shm(format!("{p} is {what}, not a regular file: not a pipeline region; remove it")));
    }
    let me = euid();
    let own = matches!(trust, Trust::OwnDir | Trust::OwnFile);
    // Attaching also accepts root's files: a pipeline run as root is readable by a
    // consumer running as root, and root could write our files anyway.
    if m.uid() != me && (own || m.uid() != 0) {
        let hint = if dir { format!("rm -r {p}") } else { format!("rm {p}") };
        return Err(Error::Shm(format!(
            "{p} is owned by uid {}, not by uid {me} that runs this process: another local user may have \
             created it to take over the pipeline; remove it ({hint}) or choose another pipeline name",
            m.uid()
        )));
    }
    let mode = m.mode() & 0o7777;
    let bad = match trust {
        Trust::OwnDir | Trust::OwnFile => 0o077,
        Trust::AttachDir | Trust::AttachFile => 0o022,
    };
    if mode & bad != 0 {
        return Err(Error::Shm(if trust == Trust::OwnDir {
            format!(
                "{p} has mode {mode:04o}: a pipeline directory must not be accessible to group or others \
                 (we create it 0700), or another user could replace its files; remove it (rm -r {p}) \
                 or, if it is yours and nobody else has used it, chmod 700 {p}"
            )
        } else {
            format!(
                "{p} has mode {mode:04o}: writable by group or others, so its contents cannot be trusted; \
                 restart the pipeline (it creates {}) or chmod go-w {p} if you know it is intact",
                if dir { "its directory 0700" } else { "its files 0600" }
            )
        }));
    }
    if trust == Trust::OwnFile && m.nlink() != 1 {
        return Err(Error::Shm(format!(
            "{p} has {} hard links: it may be another file of yours linked in; remove it (rm {p})",
            m.nlink()
        )));
    }
    Ok(())
}

/// `openat(dir, name, flags | O_NOFOLLOW | O_CLOEXEC, mode)`. A symbolic link in the last
/// component fails with a message saying so (ELOOP) rather than being followed.
/// `dir` None means relative to the working directory (`name` is then a full path).
pub(crate) fn open_nofollow(dir: Option<BorrowedFd<'_>>, name: &Path, flags: libc::c_int, mode: libc::mode_t, shown: &Path) -> std::result::Result<File, Error> {
    use std::os::unix::ffi::OsStrExt;
    let c = CString::new(name.as_os_str().as_bytes())
        .map_err(|_| Error::Config(format!("{}: path contains a NUL byte", shown.display())))?;
    let at = dir.map(|d| d.as_raw_fd()).unwrap_or(libc::AT_FDCWD);
    // SAFETY: `c` is a valid NUL-terminated string; `at` is an open directory descriptor
    // borrowed for the call, or AT_FDCWD. The mode argument is read only with O_CREAT.
    let fd = unsafe { libc::openat(at, c.as_ptr(), flags | libc::O_NOFOLLOW | libc::O_CLOEXEC, mode as libc::c_uint) };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        // ELOOP is O_NOFOLLOW's answer; with O_DIRECTORY some kernels say ENOTDIR first.
        let link = e.raw_os_error() == Some(libc::ELOOP)
            || std::fs::symlink_metadata(shown).map(|m| m.file_type().is_symlink()).unwrap_or(false);
        if link {
            let p = shown.display();
            let target = std::fs::read_link(shown).map(|t| format!(" to {}", t.display())).unwrap_or_default();
            return Err(Error::Shm(format!(
                "{p} is a symbolic link{target}: a pipeline's directory and files are never links, \
                 another local user may have planted it; remove it (rm {p})"
            )));
        }
        return Err(Error::io(format!("open {}", shown.display()), e));
    }
    // SAFETY: `fd` was just returned by openat and is owned by nobody else.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}
