//! `pipeline`: connect to a WebSocket through the pipeline, watch a running pipeline's
//! counters, or run the demo. Plain `std::env::args` parsing; `pipeline --help`.

mod connect;
mod demo;
mod feed;
mod signals;
mod stat;

use std::process::ExitCode;

const USAGE: &str = "\
usage:
  pipeline connect URL [URL ...] [options]
                                   print each received message (text as a line, binary as hex);
                                   several URLs are the legs of one feed (A/B), merged by key
      --transport xdp|kernel       byte transport (default kernel)
      --iface IF                   interface for --transport xdp
      --layout processes|threads|inline
      --wait spin|yield|backoff    (default: chosen from the number of cores, and said)
      --cores LIST                 cores per stage, e.g. 2,3,4,5
      --ca-file PATH               CA bundle (default: the system's)
      --insecure                   do not verify the certificate (loud)
      --send TEXT                  send TEXT after the handshake (repeatable)
      --reconnect                  reconnect after a lost connection (backoff 100 ms .. 10 s
                                   with jitter; 1008 and our own close do not reconnect)
      --subscribe TEXT             send TEXT after every (re)connect, before it is reported connected
      --ping-interval SECS         client PING every SECS (with --liveness-timeout)
      --liveness-timeout SECS      dead after SECS without data or PONG (then reconnect)
      --dedup-json-field NAME      a feed: the key is the integer field NAME of each JSON message
                                   (e.g. seq, or Binance's u); monotonic: duplicates dropped
      --contiguous                 keys step by one: hold a message ahead of a gap until another
                                   leg fills it or --hold-ms passes, then a gap event
      --hold-ms MS                 the hold window (default 1)
      --rotate-every SECS          make-before-break: every SECS open a new leg, retire the old
                                   one once it is in step (no gap, no duplicate)
                                   (feed events -- gap, leg up/down, rotation -- go to stderr)
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
  pipeline stat [NAME] [--once] [--json | --prometheus] [--plot FILE] [--window MS]
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

/// The value after option `name`, or the error saying it is missing.
pub fn option_value(it: &mut std::slice::Iter<'_, String>, name: &str) -> Result<String, String> {
    it.next().cloned().ok_or_else(|| format!("{name} needs a value"))
}
