//! The whole pipeline over AF_XDP: XDP poll stage, our TCP + TLS transport, WebSocket,
//! against Python `websockets` over TLS in the server namespace of a veth test bed.
//! Needs root (skipped otherwise; fails under CI).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use pipeline_testkit::netns::TestBed;
use pipeline::pipeline::{Config, Pipeline, PipelineState, TransportKind};
use pipeline::runner::{Layout, WaitKind};
use pipeline::stats::Counter;
use pipeline_testkit::synthetic::*;

const SERVER: &str = r#"
import asyncio, sys, ssl, websockets
N = int(sys.argv[1])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[2], sys.argv[3])
async def handler(ws):
    for i in range(N):
        await ws.send(f"xdp {i} " + "y" * (i % 300))
    async for m in ws:
        await ws.send("echo " + m)
async def main():
    async with websockets.serve(handler, sys.argv[4], 9443, ssl=ctx, compression=None, max_size=2**20):
        print("ready", flush=True)
        await asyncio.Future()
asyncio.run(main())
"#;

#[test]
fn wss_over_af_xdp_through_every_stage() {
    let Some(bed) = TestBed::new_or_skip("pipeline over AF_XDP") else {
        return;
    };
    // The venv tools/setup.sh makes (asserts with a clear message when it is missing:
    // never a silent skip).
    let py = pipeline_testkit::python::python();
    // The test CA's leaf for the server's address; the pipeline verifies against the CA.
    let (cert, key) = pipeline_testkit::certs::certs().leaf("veth");
    let ca = pipeline_testkit::certs::certs().ca();
    let n = 20_000;
    let mut srv = Command::new("ip")
        .args([
            "netns",
            "exec",
            &bed.server_ns,
            &py,
            "-c",
            SERVER,
            &n.to_string(),
        ])
        .arg(&cert)
        .arg(&key)
        .arg(bed.server_ip.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(srv.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    let mut r = Ok(());
    for layout in [Layout::Inline, Layout::Threads, Layout::Processes] {
        let (name, _g) = unique(&format!("xdp{}", layout.name()));
        let url = format!("wss://{}:9443/", bed.server_ip);
        let ca = ca.clone();
        r = bed.in_client(move || -> Result<(), String> {
            let mut cfg = Config::new(&url);
            cfg.name = Some(name);
            cfg.transport = TransportKind::Xdp;
            cfg.ca_file = Some(ca.clone());
            cfg.layout = Some(layout);
            cfg.wait = Some(WaitKind::Backoff);
            cfg.timeout = Duration::from_secs(10);
            cfg.quiet = true;
            let mut p =
                Pipeline::start(cfg).map_err(|e| format!("{}: start: {e}", layout.name()))?;
            let mut rx = p.receiver().unwrap();
            for i in 0..n {
                let f = rx
                    .next_frame_timeout(Duration::from_secs(10))
                    .ok_or(format!(
                        "message {i} missing; {:?}",
                        p.stats().iter().filter(|c| c.1 > 0).collect::<Vec<_>>()
                    ))?;
                let want = format!("xdp {i} {}", "y".repeat(i % 300));
                if f.text() != Some(want.as_str()) {
                    return Err(format!("message {i}: {:?}", f.text()));
                }
            }
            p.send_text("over xdp").map_err(|e| e.to_string())?;
            let f = rx
                .next_frame_timeout(Duration::from_secs(10))
                .ok_or("no echo")?;
            if f.text() != Some("echo over xdp") {
                return Err(format!("echo: {:?}", f.text()));
            }
            drop(f);
            let s = p.stats();
            if s.get(Counter::RxPackets) == 0 || s.get(Counter::TxPackets) == 0 {
                return Err("XDP counters stayed at zero".into());
            }
            p.close(1000, "bye").map_err(|e| e.to_string())?;
            p.wait_disconnected(Duration::from_secs(10));
            let st = p.state();
            p.stop();
            match st {
                PipelineState::Disconnected { reason }
                    if matches!(reason.kind, pipeline::pipeline::DisconnectKind::CloseCompleted { code: 1000 }) =>
                {
                    Ok(())
                }
                s => Err(format!("{}: after close: {s:?}", layout.name())),
            }
        });
        if r.is_err() {
            break;
        }
    }
    let _ = srv.kill();
    let _ = srv.wait();
    r.unwrap();
}
