//! `/dev/shm/pipeline_<name>/`: one directory per pipeline (one per connection).
//!
//! Ownership is an `flock` on `.lock` inside the directory, held by the creator (and
//! inherited by its forked stage processes). The kernel drops it when the last holder
//! dies — even by SIGKILL — so "is the creator dead?" has an exact answer, unlike a
//! pid that may have been reused.

use std::ffi::{CStr, CString};
use std::fs::{self, File};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::region::{Region, RegionSpec};
use super::{check_trusted, open_nofollow, Trust};
use crate::error::{Error, Result};

/// Where pipelines live. Tests may point elsewhere with `PIPELINE_SHM_ROOT`.
pub const SHM_ROOT: &str = "/dev/shm";

const LOCK_FILE: &str = ".lock";

/// A pipeline's shared-memory directory, either owned (created here: removed on drop)
/// or attached (opened by name: left alone on drop).
///
/// The directory is opened once (`O_DIRECTORY | O_NOFOLLOW`), checked on that
/// descriptor, and every file in it is then opened, created and removed relative to the
/// descriptor (`openat` / `unlinkat`), so a path swapped after the check cannot redirect
/// us elsewhere.
pub struct ShmDir {
    name: String,
    path: PathBuf,
    dir: File,
    owner: Option<File>,
    created: Mutex<Vec<CString>>,
}

fn root() -> PathBuf {
    std::env::var_os("PIPELINE_SHM_ROOT").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(SHM_ROOT))
}

/// A region file name is one path component (it is passed to `openat` in our
/// directory): no separators, no `.`/`..`, no NUL.
fn file_name(dir: &Path, file: &str) -> Result<CString> {
    if file.is_empty() || file == "." || file == ".." || file.contains('/') {
        return Err(Error::Config(format!("{}: {file:?} is not a plain file name", dir.display())));
    }
    CString::new(file).map_err(|_| Error::Config(format!("{}: {file:?} contains a NUL byte", dir.display())))
}

/// Open `path` as a directory without following a symlink in its last component.
fn open_dir(path: &Path) -> Result<File> {
    open_nofollow(None, path, libc::O_RDONLY | libc::O_DIRECTORY, 0, path)
}

/// `unlinkat(dir, name, 0)`: removes a file or symlink itself, never what it points to.
fn unlink_at(dir: &File, name: &CStr) -> std::io::Result<()> {
    // SAFETY: `dir` is an open directory descriptor, `name` NUL-terminated.
    if unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The names in the directory open as `dir` (not `.`/`..`), read through the
/// descriptor: whatever its path names now does not matter.
fn list(dir: &File, shown: &Path) -> Result<Vec<CString>> {
    // fdopendir takes ownership of the descriptor it is given: give it a duplicate.
    let dup = dir.try_clone().map_err(|e| Error::io(format!("list {}", shown.display()), e))?;
    let fd = std::os::fd::IntoRawFd::into_raw_fd(dup);
    // SAFETY: `fd` is an open directory descriptor that we own and hand to fdopendir.
    let d = unsafe { libc::fdopendir(fd) };
    if d.is_null() {
        let e = std::io::Error::last_os_error();
        // SAFETY: fdopendir failed, so `fd` is still ours to close.
        unsafe { libc::close(fd) };
        return Err(Error::io(format!("list {}", shown.display()), e));
    }
    // A duplicate shares the file offset: start from the top whatever was read before.
    // SAFETY: `d` is the valid DIR* returned above.
    unsafe { libc::rewinddir(d) };
    let mut names = Vec::new();
    loop {
        // SAFETY: `d` is valid until closedir below; readdir's result is read before the
        // next call, as required.
        let ent = unsafe { libc::readdir(d) };
        if ent.is_null() {
            break;
        }
        // SAFETY: d_name is NUL-terminated inside the dirent readdir returned.
        let n = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) };
        if n.to_bytes() != b"." && n.to_bytes() != b".." {
            names.push(n.to_owned());
        }
    }
    // SAFETY: closing the DIR* (and its descriptor, the duplicate) exactly once.
    unsafe { libc::closedir(d) };
    Ok(names)
}

/// A pipeline name becomes a path component: keep it to a safe alphabet.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "pipeline name {name:?} must be 1-64 characters of [A-Za-z0-9_.-], not starting with '.'"
        )))
    }
}

fn try_lock(file: &File) -> bool {
    // SAFETY: flock on a valid, open descriptor.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

impl ShmDir {
    /// The directory of pipeline `name`.
    pub fn path_for(name: &str) -> PathBuf {
        root().join(format!("pipeline_{name}"))
    }

    /// Names of the pipelines that have a directory (running, or left behind by a
    /// process that died), sorted; `pipeline stat` with no name lists them.
    pub fn list() -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(root())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.strip_prefix("pipeline_").map(str::to_string))
            .filter(|n| validate_name(n).is_ok())
            .collect();
        v.sort();
        v
    }

    /// Create (or reclaim) the directory for pipeline `name` and take ownership.
    /// Fails if a live process owns it, or if the directory is not safely ours: another
    /// user's, accessible to group/others, a symlink (see [`super::check_trusted`]).
    pub fn create(name: &str) -> Result<ShmDir> {
        validate_name(name)?;
        let path = Self::path_for(name);
        let made = match fs::DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
            Err(e) => return Err(Error::io(format!("create {}", path.display()), e)),
        };
        let dir = open_dir(&path)?;
        if made {
            // Ours for certain (mkdir succeeded); make the mode exactly 0700 whatever the
            // umask. The check below still looks at what we actually opened.
            // SAFETY: fchmod on an open descriptor.
            unsafe { libc::fchmod(dir.as_raw_fd(), 0o700) };
        }
        check_trusted(&dir, &path, Trust::OwnDir)?;
        let lock_path = path.join(LOCK_FILE);
        let lock = open_nofollow(
            Some(dir.as_fd()),
            Path::new(LOCK_FILE),
            libc::O_RDWR | libc::O_CREAT,
            0o600,
            &lock_path,
        )?;
        check_trusted(&lock, &lock_path, Trust::OwnFile)?;
        if !try_lock(&lock) {
            let mut buf = [0u8; 16];
            let n = lock.read_at(&mut buf, 0).unwrap_or(0);
            let pid = String::from_utf8_lossy(&buf[..n]).trim().to_string();
            return Err(Error::Shm(format!(
                "pipeline {name:?} is in use by pid {pid} ({}); stop it or choose another name",
                path.display()
            )));
        }
        // We hold the lock: anything else in the directory is left by a dead creator.
        // unlinkat removes a planted symlink itself, never its target; a subdirectory
        // (which we never create) fails with EISDIR and stops the start.
        let mut reclaimed = 0;
        for n in list(&dir, &path)? {
            if n.to_bytes() == LOCK_FILE.as_bytes() {
                continue;
            }
            unlink_at(&dir, &n).map_err(|e| {
                Error::io(format!("reclaim {}/{}", path.display(), n.to_string_lossy()), e)
            })?;
            reclaimed += 1;
        }
        if reclaimed > 0 {
            eprintln!("pipeline: reclaimed {reclaimed} stale region(s) in {} left by a dead process", path.display());
        }
        lock.set_len(0).map_err(|e| Error::io(format!("truncate {}", lock_path.display()), e))?;
        lock.write_all_at(std::process::id().to_string().as_bytes(), 0)
            .map_err(|e| Error::io(format!("write {}", lock_path.display()), e))?;
        Ok(ShmDir { name: name.to_string(), path, dir, owner: Some(lock), created: Mutex::new(Vec::new()) })
    }

    /// Open a running pipeline's directory to attach to its regions. Refused unless it
    /// is a real directory owned by us or root and not writable by group/others.
    pub fn open(name: &str) -> Result<ShmDir> {
        validate_name(name)?;
        let path = Self::path_for(name);
        let dir = match open_dir(&path) {
            Ok(d) => d,
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::Shm(format!("no pipeline named {name:?} ({} does not exist)", path.display())));
            }
            Err(e) => return Err(e),
        };
        check_trusted(&dir, &path, Trust::AttachDir)?;
        Ok(ShmDir { name: name.to_string(), path, dir, owner: None, created: Mutex::new(Vec::new()) })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn is_owner(&self) -> bool {
        self.owner.is_some()
    }

    /// Create region `file` in this (owned) directory (`O_CREAT | O_EXCL`, 0600).
    pub fn create_region(&self, file: &str, spec: RegionSpec) -> Result<Region> {
        if self.owner.is_none() {
            return Err(Error::Shm(format!("{}: only the owner creates regions", self.path.display())));
        }
        let c = file_name(&self.path, file)?;
        let r = Region::create_at(self.dir.as_fd(), file, self.path.join(file), spec)?;
        if let Ok(mut v) = self.created.lock() {
            v.push(c);
        }
        Ok(r)
    }

    /// Attach to region `file`, checking it is a trusted regular file (not a symlink,
    /// ours or root's, not writable by group/others) that matches `spec`.
    pub fn attach_region(&self, file: &str, spec: RegionSpec) -> Result<Region> {
        file_name(&self.path, file)?;
        Region::attach_at(self.dir.as_fd(), file, self.path.join(file), spec)
    }
}

impl Drop for ShmDir {
    fn drop(&mut self) {
        let Some(lock) = &self.owner else {
            return;
        };
        // A forked stage process inherits this value but must not tear the directory
        // down under its parent: only the process that created it removes it.
        let mut buf = [0u8; 16];
        let n = lock.read_at(&mut buf, 0).unwrap_or(0);
        let creator: u32 = std::str::from_utf8(&buf[..n]).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
        if creator != std::process::id() {
            return;
        }
        if let Ok(v) = self.created.lock() {
            for n in v.iter() {
                let _ = unlink_at(&self.dir, n);
            }
        }
        if let Ok(n) = CString::new(LOCK_FILE) {
            let _ = unlink_at(&self.dir, &n);
        }
        // rmdir goes by path: remove it only if the path still names the directory we
        // hold (rmdir of an empty directory is harmless anyway, but be exact).
        let same = match (fs::symlink_metadata(&self.path), self.dir.metadata()) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        };
        if same {
            let _ = fs::remove_dir(&self.path);
        }
    }
}
