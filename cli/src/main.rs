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
                                   send each line of stdin as a text message;
                                   several URLs are the legs of one feed (A/B), merged by key
      -H, --header 'Name: value'   extra upgrade request header (repeatable)
      --protocol NAME              offer subprotocol NAME (repeatable; -v says which one the
                                   server chose)
      -v, --verbose                the upgrade (> sent, < received) and events (closing, gaps,
                                   the disconnect and its kind) on stderr
      --binary raw|hex|base64      binary messages: raw bytes with nothing added, or hex /
                                   base64 and a newline (default hex); text is always a line
      --jsonl                      one JSON object per message: opcode, fin, length, text (a
                                   string) or base64, ts {arrival,decrypted,parsed,delivered,cli_recv}_unix_ns
      --max-message BYTES          largest message accepted (default 1048576; larger closes
                                   1009); MSG_INBOX grows to 2 x BYTES
      --no-stdin                   do not read stdin (also not read: a terminal we are in the
                                   background of)
      -E, --exit-on-eof            the end of stdin closes the connection (1000) once the
                                   lines are sent (default: it stays open)
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
      --stats-json PATH|-          write the final counters as JSON at exit (- : one line on
                                   stdout after the last message)
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
    exit status of connect: 0 our close completed or the server closed 1000; 1 other
      (shared memory, capability, a stage died, stdout closed); 2 usage (bad option, URL,
      header); 3 connect failure (refused, unreachable, timed out, reset, stream ended
      without a close); 4 TLS; 5 protocol (upgrade refused, or the server broke the
      protocol: we closed 1002/1007/1009); 6 the server closed with a code other than 1000,
      before --count, or did not finish our close; 130 SIGINT, 143 SIGTERM (128 + signal)
  pipeline stat [NAME] [--once] [--json | --prometheus] [--plot FILE] [--window MS]
                                   a running pipeline's counters, refreshed every second
  pipeline demo [options]          the Rust feed server streamed to the pipeline: as root AF_XDP,
                                   then the kernel transport, over a veth pair, side by side with
                                   the ratios and a latency picture; else kernel TCP on loopback
      --count N                    messages of the flat-out run, msgs/s (default 500000)
      --latency-count N            messages of the paced run, latency (default 40000)
      --rate R                     messages per second of the paced run (default 20000)
      --size B                     message size, 16..65535 bytes (default 256)
      --duration SECS              per transport: stop after SECS (default 30)
      --transport auto|xdp|kernel  (default auto: both when root)
      --plot FILE                  the latency picture (default ./pipeline-demo-latency.svg)
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
