//! `pipeline connect` failures each exit with their class's status (4 TLS, 5 protocol,
//! 1 other) and a one-line reason on stderr:
//! a refused certificate (unknown CA, expired), a non-101 upgrade, a missing capability.
//! (A refused connection and bad arguments are in pipeline_cli.rs.)

use std::process::{Command, Output, Stdio};

use pipeline_testkit::certs::certs;
use pipeline_testkit::ws_server::Server;

fn connect(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pipeline"))
        .arg("connect")
        .args(args)
        .args(["--timeout", "10"])
        .stdin(Stdio::null())
        .output()
        .expect("run pipeline")
}

/// Exit status `code` and exactly one `pipeline: ` reason line (the layout notice aside).
fn one_line_failure(o: &Output, code: i32) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(code), "stderr: {err}");
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("pipeline: ") && !l.contains("layout") && !l.contains("AF_XDP on"))
        .collect();
    assert_eq!(lines.len(), 1, "want one reason line, got: {err}");
    lines[0].to_string()
}

#[test]
fn certificate_from_an_unknown_ca_is_refused() {
    let srv = Server::tls();
    let o = connect(&[&srv.url("localhost", "/echo"), "--transport", "kernel"]);
    let why = one_line_failure(&o, 4);
    assert!(why.contains("certificate verify failed") && why.contains("local issuer"), "{why}");
}

#[test]
fn expired_certificate_is_refused_even_with_the_right_ca() {
    let srv = Server::start(Some("expired"));
    let ca = certs().ca();
    let o = connect(&[&srv.url("localhost", "/echo"), "--transport", "kernel", "--ca-file", ca.to_str().unwrap()]);
    let why = one_line_failure(&o, 4);
    assert!(why.contains("expired"), "{why}");
}

#[test]
fn non_101_upgrade_is_reported_with_its_status_line() {
    let srv = Server::tls();
    let ca = certs().ca();
    let o = connect(&[&srv.url("localhost", "/forbidden"), "--transport", "kernel", "--ca-file", ca.to_str().unwrap()]);
    let why = one_line_failure(&o, 5);
    assert!(why.contains("403"), "{why}");
}

#[test]
fn missing_capability_is_named_with_how_to_grant_it() {
    if unsafe { libc::geteuid() } != 0 || Command::new("capsh").arg("--help").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
        assert!(std::env::var_os("CI").is_none(), "CI: this test needs root and capsh (libcap2-bin)");
        eprintln!("skipped: needs root and capsh to drop capabilities");
        return;
    }
    let o = Command::new("capsh")
        .arg("--drop=cap_net_admin,cap_net_raw,cap_bpf,cap_sys_admin,cap_perfmon")
        .args(["--", "-c", "exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_pipeline"))
        .args(["connect", "wss://127.0.0.1:9/", "--transport", "xdp", "--iface", "lo", "--timeout", "5"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let why = one_line_failure(&o, 1);
    assert!(why.contains("missing capability: CAP_BPF") && why.contains("setcap"), "{why}");
}

#[test]
fn every_command_answers_help() {
    for cmd in ["connect", "stat", "demo"] {
        let o = Command::new(env!("CARGO_BIN_EXE_pipeline")).args([cmd, "--help"]).output().unwrap();
        assert!(o.status.success(), "{cmd} --help: {:?}", o.status);
        assert!(String::from_utf8_lossy(&o.stdout).contains("pipeline connect URL"), "{cmd}");
    }
}
