//! `pipeline`: connect to a WebSocket through the pipeline, watch a running pipeline's
//! counters, or run the demo. Plain `std::env::args` parsing; `pipeline --help`.

#[path = "pipeline/connect.rs"]
mod connect;
#[path = "pipeline/demo.rs"]
mod demo;
#[path = "pipeline/stat.rs"]
mod stat;

use std::process::ExitCode;

const USAGE: &str = "\
usage:
  pipeline connect URL [options]   print each received message (text as a line, binary as hex)
      --transport xdp|kernel       byte transport (default kernel)
      --iface IF                   interface for --transport xdp
      --layout processes|threads|inline
      --wait spin|yield|backoff    (default: chosen from the number of cores, and said)
      --cores LIST                 cores per stage, e.g. 2,3,4,5
      --ca-file PATH               CA bundle (default: the system's)
      --insecure                   do not verify the certificate (loud)
      --send TEXT                  send TEXT after the handshake (repeatable)
      --count N                    stop after N messages with a normal close
      --timeout SECS               handshake deadline (default 10)
      --close-timeout SECS         how long to wait for the server's close (default 5)
      --stats-json PATH            write the final counters as JSON at exit
      --name NAME                  shared-memory name (/dev/shm/pipeline_NAME)
      --frames                     print frames as they arrive (no reassembly)
      --deflate                    offer permessage-deflate (RFC 7692; off by default)
      --deflate-client-bits N      offer client_max_window_bits=N (8..15; default: no value)
      --deflate-server-bits N      offer server_max_window_bits=N (8..15; default: not offered)
      --deflate-client-no-context-takeover, --deflate-server-no-context-takeover
      --deflate-threshold BYTES    send messages shorter than this uncompressed (default 64)
                                   (each --deflate-* option implies --deflate)
      --external-consumer          leave the frames to another process (pipeline_consumer.h)
      --synthetic N                use the built-in synthetic server sending N messages
                                   (no network; for trying layouts and the stat tool)
  pipeline stat NAME [--once] [--json]
                                   a running pipeline's counters, refreshed every second
  pipeline demo [options]          a local exchange simulator streamed to the pipeline (AF_XDP
                                   over a veth pair as root; else kernel TCP on loopback)
      --count N                    messages (default 100000)
      --rate R                     messages per second (default 6000: what the Python
                                   simulator sustains here; 0 = flat out)
      --duration SECS              stop after SECS (default 30)
      --transport auto|xdp|kernel  (default auto: xdp when root)
      --sizes mixed|N|N,M,...      message sizes (default mixed, as tools/exchange_sim.py)
      --layout L, --wait W         as for connect
  pipeline --help | --version";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let rest = &args[1..];
    // `pipeline connect --help` and friends: the one usage text covers every command.
    if rest.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    match cmd.as_str() {
        "connect" => connect::main(rest),
        "stat" => stat::main(rest),
        "demo" => demo::main(rest),
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        "-V" | "--version" => {
            println!("pipeline {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        other => usage_error(&format!("unknown command {other:?}")),
    }
}

/// One line on stderr and exit status 2.
pub fn usage_error(msg: &str) -> ExitCode {
    eprintln!("pipeline: {msg} (see pipeline --help)");
    ExitCode::from(2)
}
