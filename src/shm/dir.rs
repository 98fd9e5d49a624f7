//! `/dev/shm/pipeline_<name>/`: one directory per pipeline (one per connection).
//!
//! Ownership is an `flock` on `.lock` inside the directory, held by the creator (and
//! inherited by its forked stage processes). The kernel drops it when the last holder
//! dies — even by SIGKILL — so "is the creator dead?" has an exact answer, unlike a
//! pid that may have been reused.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::region::{Region, RegionSpec};
use crate::error::{Error, Result};

/// Where pipelines live. Tests may point elsewhere with `PIPELINE_SHM_ROOT`.
pub const SHM_ROOT: &str = "/dev/shm";

const LOCK_FILE: &str = ".lock";

/// A pipeline's shared-memory directory, either owned (created here: removed on drop)
/// or attached (opened by name: left alone on drop).
pub struct ShmDir {
    name: String,
    path: PathBuf,
    owner: Option<File>,
    created: Mutex<Vec<PathBuf>>,
}

fn root() -> PathBuf {
    std::env::var_os("PIPELINE_SHM_ROOT").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(SHM_ROOT))
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

    /// Create (or reclaim) the directory for pipeline `name` and take ownership.
    /// Fails if a live process owns it.
    pub fn create(name: &str) -> Result<ShmDir> {
        validate_name(name)?;
        let path = Self::path_for(name);
        match fs::DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io(format!("create {}", path.display()), e)),
        }
        let lock_path = path.join(LOCK_FILE);
        let mut lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| Error::io(format!("open {}", lock_path.display()), e))?;
        if !try_lock(&lock) {
            let pid = fs::read_to_string(&lock_path).unwrap_or_default();
            return Err(Error::Shm(format!(
                "pipeline {name:?} is in use by pid {} ({}); stop it or choose another name",
                pid.trim(),
                path.display()
            )));
        }
        // We hold the lock: anything else in the directory is left by a dead creator.
        let mut reclaimed = 0;
        for entry in fs::read_dir(&path).map_err(|e| Error::io(format!("list {}", path.display()), e))? {
            let entry = entry.map_err(|e| Error::io(format!("list {}", path.display()), e))?;
            if entry.file_name() != LOCK_FILE {
                let p = entry.path();
                fs::remove_file(&p).map_err(|e| Error::io(format!("reclaim {}", p.display()), e))?;
                reclaimed += 1;
            }
        }
        if reclaimed > 0 {
            eprintln!("pipeline: reclaimed {reclaimed} stale region(s) in {} left by a dead process", path.display());
        }
        lock.set_len(0).ok();
        let _ = write!(lock, "{}", std::process::id());
        Ok(ShmDir { name: name.to_string(), path, owner: Some(lock), created: Mutex::new(Vec::new()) })
    }

    /// Open a running pipeline's directory to attach to its regions.
    pub fn open(name: &str) -> Result<ShmDir> {
        validate_name(name)?;
        let path = Self::path_for(name);
        if !path.is_dir() {
            return Err(Error::Shm(format!("no pipeline named {name:?} ({} does not exist)", path.display())));
        }
        Ok(ShmDir { name: name.to_string(), path, owner: None, created: Mutex::new(Vec::new()) })
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

    /// Create region `file` in this (owned) directory.
    pub fn create_region(&self, file: &str, spec: RegionSpec) -> Result<Region> {
        if self.owner.is_none() {
            return Err(Error::Shm(format!("{}: only the owner creates regions", self.path.display())));
        }
        let p = self.path.join(file);
        let r = Region::create(&p, spec)?;
        if let Ok(mut v) = self.created.lock() {
            v.push(p);
        }
        Ok(r)
    }

    /// Attach to region `file`, checking it matches `spec`.
    pub fn attach_region(&self, file: &str, spec: RegionSpec) -> Result<Region> {
        Region::attach(&self.path.join(file), spec)
    }
}

impl Drop for ShmDir {
    fn drop(&mut self) {
        if self.owner.is_none() {
            return;
        }
        // A forked stage process inherits this value but must not tear the directory
        // down under its parent: only the process that created it removes it.
        let creator: u32 = fs::read_to_string(self.path.join(LOCK_FILE))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        if creator != std::process::id() {
            return;
        }
        if let Ok(v) = self.created.lock() {
            for p in v.iter() {
                let _ = fs::remove_file(p);
            }
        }
        let _ = fs::remove_file(self.path.join(LOCK_FILE));
        let _ = fs::remove_dir(&self.path);
    }
}
