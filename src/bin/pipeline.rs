//! `pipeline`: connect to a WebSocket through the pipeline, watch a running pipeline's
//! counters, or run the demo. Plain `std::env::args` parsing; `pipeline --help`.

#[path = "pipeline/connect.rs"]
mod connect;
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
      --stats-json PATH            write the final counters as JSON at exit
      --name NAME                  shared-memory name (/dev/shm/pipeline_NAME)
      --frames                     print frames as they arrive (no reassembly)
      --external-consumer          leave the frames to another process (pipeline_consumer.h)
      --synthetic N                use the built-in synthetic server sending N messages
                                   (no network; for trying layouts and the stat tool)
  pipeline stat NAME [--once] [--json]
                                   a running pipeline's counters, refreshed every second
  pipeline demo                    the exchange simulator demo
  pipeline --help | --version";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let rest = &args[1..];
    match cmd.as_str() {
        "connect" => connect::main(rest),
        "stat" => stat::main(rest),
        "demo" => demo(rest),
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

fn demo(_args: &[String]) -> ExitCode {
    println!(
        "pipeline demo (placeholder: the exchange simulator is being written)\n\
         It will:\n\
         1. start a local exchange simulator: a TLS WebSocket server streaming order-book\n\
            updates at a chosen rate, in a network namespace behind a veth pair;\n\
         2. connect to it through the pipeline over AF_XDP (root) or the kernel transport\n\
            on loopback (no root), choosing layout and wait strategy from the core count;\n\
         3. print messages per second, latency percentiles and the stats counters live;\n\
         4. close cleanly and remove its shared memory.\n\
         Meanwhile: `pipeline connect wss://... --synthetic 100000 --count 100000` runs\n\
         the whole pipeline against the built-in synthetic server."
    );
    ExitCode::SUCCESS
}
