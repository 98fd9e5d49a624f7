//! The `processes` layout's supervisor waits only for its own stage processes: the
//! embedding application's children keep their exit statuses, and two pipelines in
//! one process never reap each other's stages.

use std::process::Command;
use std::time::Duration;

use pipeline::pipeline::{Pipeline, PipelineState};
use pipeline::runner::Layout;
use pipeline::stage::SyntheticScript;
use pipeline_testkit::synthetic::*;

/// A slow synthetic feed, so the pipeline stays connected for the whole test.
fn slow() -> SyntheticScript {
    SyntheticScript {
        bytes_per_sec: 100_000,
        ..script(text_frames(100_000), 0)
    }
}

fn reason(p: &Pipeline) -> pipeline::pipeline::DisconnectReason {
    match p.state() {
        PipelineState::Disconnected { reason } => reason,
        s => panic!("not disconnected: {s:?}"),
    }
}

#[test]
fn the_applications_own_children_keep_their_exit_statuses() {
    let (name, _g) = unique("sup_app_children");
    let p = Pipeline::start(config(&name, slow(), Layout::Processes)).unwrap();
    assert_eq!(p.child_pids().len(), 2);
    let mut kids = Vec::new();
    for i in 0..20 {
        // Each child lives a little, so the supervisor polls many times meanwhile.
        let c = Command::new("sh")
            .args(["-c", &format!("sleep 0.05; exit {}", i + 1)])
            .spawn()
            .expect("spawn sh");
        kids.push((i + 1, c));
    }
    let mut got = 0;
    let mut lost = Vec::new();
    for (want, mut c) in kids {
        match c.wait() {
            Ok(st) if st.code() == Some(want) => got += 1,
            Ok(st) => lost.push(format!("child {want}: {st:?}")),
            Err(e) => lost.push(format!("child {want}: {e}")),
        }
    }
    assert_eq!(got, 20, "statuses the application lost: {lost:?}");
    assert!(
        matches!(p.state(), PipelineState::Connected),
        "the pipeline is unaffected: {:?}",
        p.state()
    );
    p.stop();
}

#[test]
fn two_processes_pipelines_each_notice_only_their_own_dead_stage() {
    let (a, _ga) = unique("sup_a");
    let pa = Pipeline::start(config(&a, slow(), Layout::Processes)).unwrap();
    // Several rounds: with a supervisor that reaps any child, each round's stage is
    // collected by A's supervisor about half the time and B then never notices.
    for round in 0..4 {
        let (b, _gb) = unique(&format!("sup_b{round}"));
        let pb = Pipeline::start(config(&b, slow(), Layout::Processes)).unwrap();
        let pids = pb.child_pids();
        assert_eq!(pids.len(), 2);
        // SAFETY: killing a stage process of pipeline B (our own grandchild-free child).
        unsafe { libc::kill(pids[1], libc::SIGKILL) };
        assert!(
            pb.wait_disconnected(Duration::from_secs(5)),
            "round {round}: B never noticed its websocket stage (pid {}) died",
            pids[1]
        );
        let r = reason(&pb);
        assert_eq!(
            r.kind,
            pipeline::pipeline::DisconnectKind::StageDied {
                stage: "websocket".into(),
                pid: pids[1],
                exit: pipeline::pipeline::StageExit::Signal(9)
            },
            "round {round}: {r}"
        );
        pb.stop();
        assert!(
            matches!(pa.state(), PipelineState::Connected),
            "round {round}: A is unaffected: {:?}",
            pa.state()
        );
    }
    pa.stop();
}

/// A core no `cpu_set_t` can hold is a config error at start, in every layout — not a
/// panic inside `CPU_SET` in a freshly forked child (which would unwind through the
/// supervisor's code in the child) or in a stage thread.
#[test]
fn a_core_beyond_cpu_setsize_is_refused_before_anything_forks() {
    for layout in [Layout::Processes, Layout::Threads] {
        let (name, _g) = unique(&format!("sup_core_{}", layout.name()));
        let mut c = config(&name, script(text_frames(10), 0), layout);
        c.cores = vec![0, 5000];
        match Pipeline::start(c) {
            Err(e) => {
                let m = e.to_string();
                assert!(matches!(e, pipeline::Error::Config(_)), "{m}");
                assert!(m.contains("5000"), "{m}");
            }
            Ok(p) => {
                let st = p.state();
                p.stop();
                panic!("{}: started with core 5000 (state {st:?})", layout.name());
            }
        }
    }
}
