//! One shared-memory file: a header page followed by the payload, optionally mapped
//! "mirrored" (the payload mapped twice back to back) so that any byte range of up to
//! the payload size starting inside it is contiguous in virtual memory. Byte rings use
//! the mirror so that a record or a WebSocket frame crossing the physical end of the
//! buffer still reaches the consumer as one slice — no wrap gap, no copy.

use std::fs::File;
use std::os::fd::BorrowedFd;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::MmapRaw;

use super::{check_trusted, open_nofollow, Trust};
use crate::error::{Error, Result};

/// "PLPIPE01" little-endian; a file without it is not ours or is still being created.
pub const REGION_MAGIC: u64 = u64::from_le_bytes(*b"PLPIPE01");
/// Bumped whenever any region's layout changes; attachers refuse other versions.
pub const LAYOUT_VERSION: u32 = 1;
/// The header occupies one page so the payload is page aligned (needed to mirror it).
pub const HEADER_BYTES: usize = 4096;

/// Offset of the control area in the header page (see [`Region::ctl_ptr`]).
pub const CTL_OFFSET: usize = 256;
/// Size of the control area.
pub const CTL_BYTES: usize = 1024;
static_assertions::const_assert!(CTL_OFFSET + CTL_BYTES <= HEADER_BYTES);

/// What a region holds; an attacher states what it expects.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionKind {
    Umem = 1,
    ElemRing = 2,
    ByteRing = 3,
    TcpState = 4,
    Stats = 5,
}

impl RegionKind {
    fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            1 => RegionKind::Umem,
            2 => RegionKind::ElemRing,
            3 => RegionKind::ByteRing,
            4 => RegionKind::TcpState,
            5 => RegionKind::Stats,
            _ => return None,
        })
    }
}

/// The first bytes of every region file. Mirrored in `include/pipeline_consumer.h`;
/// change both together and bump [`LAYOUT_VERSION`].
#[repr(C)]
pub struct RegionHeader {
    /// Written last, with release ordering, once every other field is in place.
    pub magic: AtomicU64,
    pub layout_version: u32,
    pub kind: u32,
    pub header_bytes: u32,
    /// Element size for element rings, 1 for byte rings, 0 for other regions.
    pub elem_size: u32,
    /// Element (or byte) capacity of the ring, 0 for other regions.
    pub capacity: u64,
    /// Bytes after the header page.
    pub payload_bytes: u64,
    pub creator_pid: u32,
    pub _reserved: u32,
}
static_assertions::const_assert!(std::mem::size_of::<RegionHeader>() == 48);

enum Mapping {
    Plain(MmapRaw),
    /// `len` bytes reserved at `base`: header+payload, then the payload again.
    Mirrored { base: NonNull<u8>, len: usize },
}

/// A mapped region. Dropping it unmaps; the file stays (the [`super::ShmDir`] owner
/// removes files).
pub struct Region {
    map: Mapping,
    path: PathBuf,
    payload_bytes: usize,
}

// SAFETY: the mapping is plain shared memory; all cross-thread access to its contents
// goes through atomics or through the SPSC protocols built on top of it.
unsafe impl Send for Region {}
// SAFETY: as above; `Region` itself has no interior mutability outside the mapping.
unsafe impl Sync for Region {}

/// What a caller asks of a region (checked on attach).
#[derive(Clone, Copy, Debug)]
pub struct RegionSpec {
    pub kind: RegionKind,
    pub elem_size: u32,
    pub capacity: u64,
    pub payload_bytes: usize,
    pub mirrored: bool,
}

impl Region {
    /// Create `file` in the directory open as `dir` (must not exist: `O_CREAT | O_EXCL`,
    /// which also refuses a planted symlink), size it, map it and publish the header.
    /// `path` is for messages.
    pub(crate) fn create_at(dir: BorrowedFd<'_>, file: &str, path: PathBuf, spec: RegionSpec) -> Result<Region> {
        let path = path.as_path();
        if spec.mirrored && spec.payload_bytes % super::page_size() != 0 {
            return Err(Error::Config(format!(
                "mirrored region {} needs a payload that is a multiple of the page size, got {}",
                path.display(),
                spec.payload_bytes
            )));
        }
        let file = open_nofollow(Some(dir), Path::new(file), libc::O_RDWR | libc::O_CREAT | libc::O_EXCL, 0o600, path)?;
        let total = HEADER_BYTES.checked_add(spec.payload_bytes).ok_or_else(|| {
            Error::Config(format!("{}: payload of {} bytes is too large", path.display(), spec.payload_bytes))
        })?;
        file.set_len(total as u64)
            .map_err(|e| Error::io(format!("size {} to {total} bytes", path.display()), e))?;
        let region = Self::map(&file, path, spec.payload_bytes, spec.mirrored)?;
        let h = region.header_ptr();
        // SAFETY: the mapping is at least HEADER_BYTES long, freshly created and zeroed
        // by ftruncate; no other process trusts it until `magic` is published below.
        unsafe {
            (*h).layout_version = LAYOUT_VERSION;
            (*h).kind = spec.kind as u32;
            (*h).header_bytes = HEADER_BYTES as u32;
            (*h).elem_size = spec.elem_size;
            (*h).capacity = spec.capacity;
            (*h).payload_bytes = spec.payload_bytes as u64;
            (*h).creator_pid = std::process::id();
            (*h).magic.store(REGION_MAGIC, Ordering::Release);
        }
        Ok(region)
    }

    /// Map an existing region `file` of the directory open as `dir` and check that it
    /// is what the caller expects: a regular file we may trust (not a symlink, ours or
    /// root's, not writable by group/others) whose header agrees with its size.
    pub(crate) fn attach_at(dir: BorrowedFd<'_>, file: &str, path: PathBuf, expect: RegionSpec) -> Result<Region> {
        let path = path.as_path();
        let file = open_nofollow(Some(dir), Path::new(file), libc::O_RDWR, 0, path)?;
        check_trusted(&file, path, Trust::AttachFile)?;
        let len = file
            .metadata()
            .map_err(|e| Error::io(format!("stat {}", path.display()), e))?
            .len() as usize;
        if len < HEADER_BYTES {
            return Err(Error::Shm(format!(
                "{} is {len} bytes, smaller than a region header: not a pipeline region",
                path.display()
            )));
        }
        let payload = len - HEADER_BYTES;
        let region = Self::map(&file, path, payload, expect.mirrored)?;
        region.check(expect)?;
        Ok(region)
    }

    fn check(&self, expect: RegionSpec) -> Result<()> {
        let h = self.header();
        let p = self.path.display();
        let magic = h.magic.load(Ordering::Acquire);
        if magic != REGION_MAGIC {
            return Err(Error::Shm(format!(
                "{p}: bad magic {magic:#018x} (not a pipeline region, or still being created)"
            )));
        }
        if h.layout_version != LAYOUT_VERSION {
            return Err(Error::Shm(format!(
                "{p}: layout version {} but this library speaks version {LAYOUT_VERSION}; \
                 restart the pipeline with a matching library",
                h.layout_version
            )));
        }
        let kind = RegionKind::from_u32(h.kind);
        if kind != Some(expect.kind) {
            return Err(Error::Shm(format!(
                "{p}: holds a {:?} region, expected {:?}",
                kind, expect.kind
            )));
        }
        if h.header_bytes as usize != HEADER_BYTES || h.payload_bytes as usize != self.payload_bytes {
            return Err(Error::Shm(format!(
                "{p}: header says {}+{} bytes but the file has {}+{}",
                h.header_bytes, h.payload_bytes, HEADER_BYTES, self.payload_bytes
            )));
        }
        if expect.elem_size != 0 && h.elem_size != expect.elem_size {
            return Err(Error::Shm(format!(
                "{p}: element size {} but this library uses {}",
                h.elem_size, expect.elem_size
            )));
        }
        if expect.capacity != 0 && h.capacity != expect.capacity {
            return Err(Error::Shm(format!(
                "{p}: capacity {} but {} was expected",
                h.capacity, expect.capacity
            )));
        }
        Ok(())
    }

    fn map(file: &File, path: &Path, payload_bytes: usize, mirrored: bool) -> Result<Region> {
        let path = path.to_path_buf();
        if !mirrored {
            let m = MmapRaw::map_raw(file)
                .map_err(|e| Error::io(format!("mmap {}", path.display()), e))?;
            return Ok(Region { map: Mapping::Plain(m), path, payload_bytes });
        }
        if payload_bytes == 0 || payload_bytes % super::page_size() != 0 {
            return Err(Error::Shm(format!(
                "{}: payload of {payload_bytes} bytes cannot be mirrored",
                path.display()
            )));
        }
        // A file's size is the attacher's input here: no silent wrap-around.
        let (first, len) = match HEADER_BYTES.checked_add(payload_bytes).and_then(|f| Some((f, f.checked_add(payload_bytes)?))) {
            Some(v) => v,
            None => {
                return Err(Error::Shm(format!("{}: payload of {payload_bytes} bytes is too large to map", path.display())))
            }
        };
        let fd = file.as_raw_fd();
        // SAFETY: reserve an address range nobody else uses; PROT_NONE until the two
        // MAP_FIXED file mappings below replace it page for page.
        let base = unsafe {
            libc::mmap(std::ptr::null_mut(), len, libc::PROT_NONE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
        };
        if base == libc::MAP_FAILED {
            return Err(Error::last_os(format!("reserve {len} bytes for {}", path.display())));
        }
        let rw = libc::PROT_READ | libc::PROT_WRITE;
        let flags = libc::MAP_SHARED | libc::MAP_FIXED;
        // SAFETY: both targets lie inside the reservation made above, which we own;
        // MAP_FIXED replaces only those pages. The file is at least `first` bytes long.
        let ok = unsafe {
            libc::mmap(base, first, rw, flags, fd, 0) != libc::MAP_FAILED
                && libc::mmap(
                    (base as *mut u8).add(first) as *mut libc::c_void,
                    payload_bytes,
                    rw,
                    flags,
                    fd,
                    HEADER_BYTES as libc::off_t,
                ) != libc::MAP_FAILED
        };
        if !ok {
            let err = Error::last_os(format!("mirror-map {}", path.display()));
            // SAFETY: unmapping our own reservation.
            unsafe { libc::munmap(base, len) };
            return Err(err);
        }
        let base = NonNull::new(base as *mut u8).ok_or_else(|| Error::Shm("mmap returned null".into()))?;
        Ok(Region { map: Mapping::Mirrored { base, len }, path, payload_bytes })
    }

    fn base(&self) -> *mut u8 {
        match &self.map {
            Mapping::Plain(m) => m.as_mut_ptr(),
            Mapping::Mirrored { base, .. } => base.as_ptr(),
        }
    }

    fn header_ptr(&self) -> *mut RegionHeader {
        self.base() as *mut RegionHeader
    }

    pub fn header(&self) -> &RegionHeader {
        // SAFETY: every mapping starts with a full header page, page aligned.
        unsafe { &*self.header_ptr() }
    }

    /// Start of the payload (page aligned). With a mirrored mapping,
    /// `payload_ptr()..payload_ptr() + 2 * payload_len()` is valid and the second half
    /// aliases the first.
    pub fn payload_ptr(&self) -> *mut u8 {
        // SAFETY: HEADER_BYTES is within the mapping (checked at create/attach).
        unsafe { self.base().add(HEADER_BYTES) }
    }

    /// Start of the control area inside the header page: ring indices and flags live
    /// here, [`CTL_BYTES`] of them, each index on its own 128-byte block. Keeping them out
    /// of the payload leaves the payload page aligned (ring slots, mirrored bytes).
    pub fn ctl_ptr(&self) -> *mut u8 {
        // SAFETY: CTL_OFFSET + CTL_BYTES <= HEADER_BYTES, inside every mapping.
        unsafe { self.base().add(CTL_OFFSET) }
    }

    pub fn payload_len(&self) -> usize {
        self.payload_bytes
    }

    pub fn is_mirrored(&self) -> bool {
        matches!(self.map, Mapping::Mirrored { .. })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        if let Mapping::Mirrored { base, len } = self.map {
            // SAFETY: unmapping exactly the range this Region mapped; no references
            // into it outlive `self` (handles borrow or own the Region).
            unsafe { libc::munmap(base.as_ptr() as *mut libc::c_void, len) };
        }
    }
}
