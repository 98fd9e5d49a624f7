//! Shared-memory directories: permissions, ownership, reclaim after a dead creator,
//! clean removal on stop.

use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicU32, Ordering};

use pipeline::ring::ElemRing;
use pipeline::shm::ShmDir;

fn unique(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("t{}_{}_{}", std::process::id(), tag, N.fetch_add(1, Ordering::Relaxed))
}

#[test]
fn files_are_private_and_removed_on_drop() {
    let name = unique("perm");
    let path;
    {
        let dir = ShmDir::create(&name).unwrap();
        path = dir.path().to_path_buf();
        let _r = ElemRing::<u64>::create(&dir, "raw_inbox.shm", 8).unwrap();
        let mode = std::fs::metadata(path.join("raw_inbox.shm")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dmode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(dmode & 0o077, 0, "directory must not be group/world accessible");
    }
    assert!(!path.exists(), "stop must remove what start created");
}

#[test]
fn a_live_owner_blocks_a_second_creator() {
    let name = unique("live");
    let _dir = ShmDir::create(&name).unwrap();
    let err = ShmDir::create(&name).err().expect("second create must fail").to_string();
    assert!(err.contains("in use by pid") && err.contains(&std::process::id().to_string()), "{err}");
}

#[test]
fn regions_of_a_killed_creator_are_reclaimed() {
    let name = unique("dead");
    // SAFETY: the child creates a pipeline directory and dies by SIGKILL, never returning
    // into the test harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        let dir = ShmDir::create(&name).unwrap();
        let _r = ElemRing::<u64>::create(&dir, "raw_inbox.shm", 8).unwrap();
        // SAFETY: kill ourselves so no destructor cleans up.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        unreachable!();
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(libc::WIFSIGNALED(status));
    let stale = ShmDir::path_for(&name).join("raw_inbox.shm");
    assert!(stale.exists(), "the killed child left its region behind");
    let dir = ShmDir::create(&name).expect("a dead creator's directory must be reclaimed");
    assert!(!stale.exists(), "stale region removed at the next start");
    let _r = ElemRing::<u64>::create(&dir, "raw_inbox.shm", 8).unwrap();
}

#[test]
fn bad_names_and_missing_pipelines_are_clear_errors() {
    for bad in ["", "../etc", "a/b", ".hidden", &"x".repeat(65)] {
        let e = ShmDir::create(bad).err().expect("bad name accepted").to_string();
        assert!(e.contains("pipeline name"), "{e}");
    }
    let e = ShmDir::open(&unique("nope")).err().expect("missing accepted").to_string();
    assert!(e.contains("no pipeline named"), "{e}");
}

// ---- Takeover by another local user (issue 9, item 1) ----------------------------
//
// Pipeline names are predictable, so another user can create /dev/shm/pipeline_NAME
// first: owned by them, world-writable, a symlink to a directory of their choice, or
// with `.lock` pointing at a file of ours. Start must refuse all of these without
// touching anything, and attachers (ShmDir::open, region attach, `pipeline stat`) must
// refuse a directory or file that someone else could have swapped.

use std::fs;
use std::os::unix::fs::{chown, symlink};
use std::path::{Path, PathBuf};

use pipeline::ring::WsFrameInfo;
use pipeline::stats::StatsRegion;

/// `nobody` on Debian: stands in for "another local user".
const OTHER_UID: u32 = 65534;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Removes a path (directory tree, file or symlink — never following it) when dropped,
/// so a failing assertion leaves nothing behind in /dev/shm.
struct Remove(PathBuf);
impl Drop for Remove {
    fn drop(&mut self) {
        match fs::symlink_metadata(&self.0) {
            Ok(m) if m.is_dir() => {
                let _ = fs::remove_dir_all(&self.0);
            }
            Ok(_) => {
                let _ = fs::remove_file(&self.0);
            }
            Err(_) => {}
        }
    }
}

fn private_dir(p: &Path) {
    fs::create_dir(p).unwrap();
    fs::set_permissions(p, fs::Permissions::from_mode(0o700)).unwrap();
}

#[test]
fn start_refuses_a_directory_owned_by_another_user_and_leaves_it_alone() {
    if !is_root() {
        eprintln!("skipped: chown to another uid needs root");
        return;
    }
    let name = unique("other");
    let path = ShmDir::path_for(&name);
    let _g = Remove(path.clone());
    private_dir(&path);
    fs::write(path.join("raw_inbox.shm"), b"theirs").unwrap();
    chown(&path, Some(OTHER_UID), Some(OTHER_UID)).unwrap();
    let e = ShmDir::create(&name).err().expect("a directory owned by another user was accepted").to_string();
    assert!(e.contains("owned by uid 65534") && e.contains("remove it"), "{e}");
    assert_eq!(fs::read(path.join("raw_inbox.shm")).unwrap(), b"theirs", "their file must not be reclaimed");
    assert!(!path.join(".lock").exists(), "nothing may be created in it");
}

#[test]
fn start_refuses_a_world_writable_directory() {
    let name = unique("w777");
    let path = ShmDir::path_for(&name);
    let _g = Remove(path.clone());
    fs::create_dir(&path).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o777)).unwrap();
    fs::write(path.join("raw_inbox.shm"), b"planted").unwrap();
    let e = ShmDir::create(&name).err().expect("a mode 0777 directory was accepted").to_string();
    assert!(e.contains("mode 0777") && e.contains("remove it"), "{e}");
    assert_eq!(fs::read(path.join("raw_inbox.shm")).unwrap(), b"planted");
    assert!(!path.join(".lock").exists());
}

#[test]
fn start_refuses_a_symlinked_directory_and_deletes_nothing_in_its_target() {
    let name = unique("slnk");
    let path = ShmDir::path_for(&name);
    let victim = path.with_file_name(format!("{name}_victim"));
    let _g = Remove(path.clone());
    let _v = Remove(victim.clone());
    private_dir(&victim);
    fs::write(victim.join("precious.txt"), b"keep me").unwrap();
    symlink(&victim, &path).unwrap();
    let e = ShmDir::create(&name).err().expect("a symlinked directory was accepted").to_string();
    assert!(e.contains("symbolic link") && e.contains("remove it"), "{e}");
    assert_eq!(fs::read(victim.join("precious.txt")).unwrap(), b"keep me", "reclaim followed the symlink");
    assert!(!victim.join(".lock").exists());
}

#[test]
fn start_refuses_a_lock_symlink_and_leaves_its_target_untouched() {
    let name = unique("lsym");
    let path = ShmDir::path_for(&name);
    let victim = path.with_file_name(format!("{name}_victim.txt"));
    let _g = Remove(path.clone());
    let _v = Remove(victim.clone());
    fs::write(&victim, b"precious").unwrap();
    private_dir(&path);
    symlink(&victim, path.join(".lock")).unwrap();
    let e = ShmDir::create(&name).err().expect("a .lock symlink was followed").to_string();
    assert!(e.contains(".lock") && e.contains("symbolic link"), "{e}");
    assert_eq!(fs::read(&victim).unwrap(), b"precious", "the .lock target was truncated/overwritten");
}

#[test]
fn attach_refuses_symlinked_or_writable_region_files() {
    let name = unique("attf");
    let dir = ShmDir::create(&name).unwrap();
    let _ring = ElemRing::<WsFrameInfo>::create(&dir, "ws_frame_info.shm", 16).unwrap();
    // A region file elsewhere, symlinked in under a region's name.
    let other = unique("atto");
    let odir = ShmDir::create(&other).unwrap();
    let _oring = ElemRing::<WsFrameInfo>::create(&odir, "ws_frame_info.shm", 16).unwrap();
    symlink(odir.path().join("ws_frame_info.shm"), dir.path().join("pongs.shm")).unwrap();
    let _s = Remove(dir.path().join("pongs.shm"));

    let d2 = ShmDir::open(&name).unwrap();
    let e = ElemRing::<WsFrameInfo>::attach(&d2, "pongs.shm").err().expect("symlinked region accepted").to_string();
    assert!(e.contains("symbolic link"), "{e}");

    let f = dir.path().join("ws_frame_info.shm");
    fs::set_permissions(&f, fs::Permissions::from_mode(0o666)).unwrap();
    let e = ElemRing::<WsFrameInfo>::attach(&d2, "ws_frame_info.shm").err().expect("mode 0666 region accepted").to_string();
    assert!(e.contains("mode 0666") && e.contains("group or others"), "{e}");
    fs::set_permissions(&f, fs::Permissions::from_mode(0o600)).unwrap();
    assert!(ElemRing::<WsFrameInfo>::attach(&d2, "ws_frame_info.shm").is_ok());

    if is_root() {
        chown(&f, Some(OTHER_UID), None).unwrap();
        let e = ElemRing::<WsFrameInfo>::attach(&d2, "ws_frame_info.shm").err().expect("foreign region accepted").to_string();
        assert!(e.contains("owned by uid 65534"), "{e}");
        chown(&f, Some(0), None).unwrap();
    }
}

#[test]
fn open_refuses_a_directory_owned_by_another_user_or_writable_by_others() {
    let name = unique("atd");
    let dir = ShmDir::create(&name).unwrap();
    let path = dir.path().to_path_buf();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o757)).unwrap();
    let e = ShmDir::open(&name).err().expect("a world-writable directory was opened").to_string();
    assert!(e.contains("mode 0757"), "{e}");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o700)).unwrap();
    assert!(ShmDir::open(&name).is_ok());
    if is_root() {
        chown(&path, Some(OTHER_UID), None).unwrap();
        let e = ShmDir::open(&name).err().expect("another user's directory was opened").to_string();
        assert!(e.contains("owned by uid 65534"), "{e}");
        chown(&path, Some(0), None).unwrap();
    }
    // A symlink to a real pipeline directory is not that pipeline.
    let alias = unique("ats");
    let apath = ShmDir::path_for(&alias);
    let _a = Remove(apath.clone());
    symlink(&path, &apath).unwrap();
    let e = ShmDir::open(&alias).err().expect("a symlinked directory was opened").to_string();
    assert!(e.contains("symbolic link"), "{e}");
}

#[test]
fn pipeline_stat_refuses_a_region_others_could_have_written() {
    let name = unique("stat");
    let dir = ShmDir::create(&name).unwrap();
    let _stats = StatsRegion::create(&dir).unwrap();
    let stat = |n: &str| std::process::Command::new(pipeline_testkit::pipeline_bin()).args(["stat", n, "--once"]).output().unwrap();
    let o = stat(&name);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let f = dir.path().join("stats.shm");
    fs::set_permissions(&f, fs::Permissions::from_mode(0o646)).unwrap();
    let o = stat(&name);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("mode 0646"), "{err}");
    fs::set_permissions(&f, fs::Permissions::from_mode(0o600)).unwrap();
    if is_root() {
        chown(dir.path(), Some(OTHER_UID), None).unwrap();
        let o = stat(&name);
        let err = String::from_utf8_lossy(&o.stderr);
        chown(dir.path(), Some(0), None).unwrap();
        assert!(!o.status.success() && err.contains("owned by uid 65534"), "{err}");
    }
}
