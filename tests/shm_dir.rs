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
