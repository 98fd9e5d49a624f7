//! `pipeline connect` the way websocat is used: stdin lines out, -H/--protocol/-v,
//! --binary, --jsonl, --max-message, --stats-json -, the exit statuses, and the hints
//! (a 1009 names the limit; ws:// to a TLS port says wss://). Against the scripted
//! Python server (tools/ws_interop_server.py) and raw listeners on loopback.

use std::io::{Read, Write};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use pipeline_testkit::certs::certs;
use pipeline_testkit::deflate_server::pattern;
use pipeline_testkit::ws_server::Server;

/// `pipeline connect URL` with the small-box layout and `args`.
fn connect(url: &str, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pipeline"));
    c.args(["connect", url, "--layout", "inline", "--wait", "backoff", "--timeout", "10"])
        .args(args);
    c
}

/// Run with `input` on stdin (None: /dev/null); fail if it runs past 30 s.
fn run(mut cmd: Command, input: Option<&[u8]>) -> Output {
    cmd.stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run pipeline");
    if let Some(b) = input {
        let mut w = child.stdin.take().unwrap();
        w.write_all(b).unwrap();
        // Dropped: stdin ends here.
    }
    // A watchdog, so a hang fails the test; stdout and stderr are read meanwhile (a
    // 1 MiB message would not fit the pipe).
    let pid = child.id() as i32;
    let (done, wait) = std::sync::mpsc::channel::<()>();
    let dog = std::thread::spawn(move || {
        if wait.recv_timeout(Duration::from_secs(30)).is_err() {
            // SAFETY: our own child, not yet reaped (the main thread is in wait()).
            unsafe { libc::kill(pid, libc::SIGKILL) };
            return true;
        }
        false
    });
    let o = child.wait_with_output().unwrap();
    let _ = done.send(());
    assert!(!dog.join().unwrap(), "still running after 30 s; stderr: {}", String::from_utf8_lossy(&o.stderr));
    o
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn assert_status(o: &Output, code: i32) {
    assert_eq!(o.status.code(), Some(code), "stderr: {}", err(o));
}

// --- a small JSON reader, so the tests check the output with a parser of their own ---

#[derive(Debug, Clone, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    /// The number as written (u64 nanoseconds would not survive an f64).
    Num(String),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    fn parse(s: &str) -> Json {
        let b = s.as_bytes();
        let mut i = 0;
        let v = Self::value(b, &mut i);
        Self::ws(b, &mut i);
        assert_eq!(i, b.len(), "trailing bytes after JSON in {s:?}");
        v
    }
    fn ws(b: &[u8], i: &mut usize) {
        while *i < b.len() && b" \t\r\n".contains(&b[*i]) {
            *i += 1;
        }
    }
    fn value(b: &[u8], i: &mut usize) -> Json {
        Self::ws(b, i);
        let lit = |i: &mut usize, w: &str, v: Json| {
            assert!(b[*i..].starts_with(w.as_bytes()), "bad JSON at {i}");
            *i += w.len();
            v
        };
        match b[*i] {
            b'n' => lit(i, "null", Json::Null),
            b't' => lit(i, "true", Json::Bool(true)),
            b'f' => lit(i, "false", Json::Bool(false)),
            b'"' => Json::Str(Self::string(b, i)),
            b'[' => {
                *i += 1;
                let mut v = Vec::new();
                Self::ws(b, i);
                if b[*i] == b']' {
                    *i += 1;
                    return Json::Arr(v);
                }
                loop {
                    v.push(Self::value(b, i));
                    Self::ws(b, i);
                    *i += 1;
                    match b[*i - 1] {
                        b',' => continue,
                        b']' => return Json::Arr(v),
                        c => panic!("bad JSON array at {i}: {:?}", c as char),
                    }
                }
            }
            b'{' => {
                *i += 1;
                let mut v = Vec::new();
                Self::ws(b, i);
                if b[*i] == b'}' {
                    *i += 1;
                    return Json::Obj(v);
                }
                loop {
                    Self::ws(b, i);
                    let k = Self::string(b, i);
                    Self::ws(b, i);
                    assert_eq!(b[*i], b':', "bad JSON object at {i}");
                    *i += 1;
                    v.push((k, Self::value(b, i)));
                    Self::ws(b, i);
                    *i += 1;
                    match b[*i - 1] {
                        b',' => continue,
                        b'}' => return Json::Obj(v),
                        c => panic!("bad JSON object at {i}: {:?}", c as char),
                    }
                }
            }
            _ => {
                let start = *i;
                while *i < b.len() && (b[*i].is_ascii_digit() || b"-+.eE".contains(&b[*i])) {
                    *i += 1;
                }
                assert!(*i > start, "bad JSON value at {start}");
                Json::Num(String::from_utf8(b[start..*i].to_vec()).unwrap())
            }
        }
    }
    fn string(b: &[u8], i: &mut usize) -> String {
        assert_eq!(b[*i], b'"');
        *i += 1;
        let mut out: Vec<u8> = Vec::new();
        let hex4 = |i: &mut usize| {
            let v = u32::from_str_radix(std::str::from_utf8(&b[*i..*i + 4]).unwrap(), 16).unwrap();
            *i += 4;
            v
        };
        loop {
            let c = b[*i];
            *i += 1;
            match c {
                b'"' => return String::from_utf8(out).expect("JSON string is UTF-8"),
                b'\\' => {
                    let e = b[*i];
                    *i += 1;
                    let ch = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'n' => '\n',
                        b't' => '\t',
                        b'r' => '\r',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'u' => {
                            let mut u = hex4(i);
                            if (0xd800..0xdc00).contains(&u) {
                                assert_eq!(&b[*i..*i + 2], b"\\u");
                                *i += 2;
                                u = 0x10000 + ((u - 0xd800) << 10) + (hex4(i) - 0xdc00);
                            }
                            char::from_u32(u).unwrap()
                        }
                        _ => panic!("bad JSON escape \\{}", e as char),
                    };
                    out.extend_from_slice(ch.encode_utf8(&mut [0; 4]).as_bytes());
                }
                c if c < 0x20 => panic!("raw control character in a JSON string"),
                c => out.push(c),
            }
        }
    }
    fn get(&self, k: &str) -> &Json {
        match self {
            Json::Obj(v) => &v.iter().find(|(n, _)| n == k).unwrap_or_else(|| panic!("no {k:?} in {self:?}")).1,
            _ => panic!("{self:?} is not an object"),
        }
    }
    fn str(&self) -> &str {
        match self {
            Json::Str(s) => s,
            _ => panic!("{self:?} is not a string"),
        }
    }
    fn u64(&self) -> u64 {
        match self {
            Json::Num(n) => n.parse().unwrap_or_else(|_| panic!("{n} is not an integer")),
            _ => panic!("{self:?} is not a number"),
        }
    }
}

/// Base64 decoding (RFC 4648, padded), independent of the library's encoder.
fn unbase64(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {:?}", c as char),
    };
    assert_eq!(s.len() % 4, 0, "base64 length");
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    for q in s.as_bytes().chunks(4) {
        let pad = q.iter().filter(|&&c| c == b'=').count();
        let mut n = 0u32;
        for &c in q {
            n = n << 6 | if c == b'=' { 0 } else { val(c) as u32 };
        }
        out.extend_from_slice(&n.to_be_bytes()[1..4 - pad]);
    }
    out
}

fn hex(b: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    b.iter().flat_map(|x| [D[(x >> 4) as usize] as char, D[(x & 15) as usize] as char]).collect()
}

fn stats_file(tag: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("plcli_{tag}_{}.json", std::process::id()))
}

/// The stats JSON a run wrote to `path` (removed).
fn read_stats(path: &std::path::Path) -> Json {
    let j = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let _ = std::fs::remove_file(path);
    Json::parse(j.trim_end())
}

// --- stdin ---

/// Each stdin line goes out as one text message (line end not sent, CRLF too, UTF-8
/// kept, an empty line an empty message); the echoes print one per line; `--stats-json
/// -` puts the counters on stdout after the last message.
#[test]
fn stdin_lines_are_sent_as_text_and_the_echoes_printed() {
    let srv = Server::start(None);
    let o = run(
        connect(&srv.url("127.0.0.1", "/echo"), &["--count", "4", "--stats-json", "-"]),
        Some("one\ntwo wörld\r\n\nlast, no line end".as_bytes()),
    );
    assert_status(&o, 0);
    let out = String::from_utf8(o.stdout).unwrap();
    // split('\n'), not lines(): a CR left on a message must show.
    let lines: Vec<&str> = out.strip_suffix('\n').unwrap_or(&out).split('\n').collect();
    assert_eq!(lines.len(), 5, "{out}");
    assert_eq!(&lines[..4], ["one", "two wörld", "", "last, no line end"]);
    let stats = Json::parse(lines[4]);
    assert_eq!(stats.get("state").str(), "disconnected");
    assert_eq!(stats.get("reason_kind").str(), "close_completed");
    assert_eq!(stats.get("counters").get("sent_messages").u64(), 4);
    assert_eq!(stats.get("counters").get("messages").u64(), 4);
}

/// `-E`: the end of stdin closes (1000) once the lines are out, exit 0. Without it
/// the connection stays up after stdin ends, until SIGINT: 130.
#[test]
fn exit_on_eof_closes_and_without_it_the_connection_stays_until_sigint() {
    let srv = Server::start(None);
    let json = stats_file("eof");
    let mut c = connect(&srv.url("127.0.0.1", "/echo"), &["-E", "--stats-json"]);
    c.arg(&json);
    let o = run(c, Some(b"a\nb\n"));
    assert_status(&o, 0);
    let s = read_stats(&json);
    assert_eq!(s.get("reason_kind").str(), "close_completed", "{s:?}");
    assert_eq!(s.get("counters").get("sent_messages").u64(), 2);

    let mut child: Child = connect(&srv.url("127.0.0.1", "/echo"), &[])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(child.try_wait().unwrap().is_none(), "the end of stdin (without -E) ended the run");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let t = Instant::now();
    let st = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "no exit after SIGINT");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut e = String::new();
    child.stderr.take().unwrap().read_to_string(&mut e).unwrap();
    assert_eq!(st.code(), Some(130), "{e}");
}

// --- -H, --protocol, -v, --no-stdin ---

#[test]
fn headers_and_protocol_reach_the_server_and_verbose_shows_the_upgrade() {
    let srv = Server::start(None);
    let json = stats_file("hdr");
    let mut c = connect(
        &srv.url("127.0.0.1", "/headers"),
        &["-H", "X-Trace: abc 1", "--header", "Authorization:Bearer t0k", "--protocol", "chat"],
    );
    c.args(["--protocol", "v2", "-v", "--no-stdin", "--count", "1", "--stats-json"]).arg(&json);
    // --no-stdin: this line must not be sent.
    let o = run(c, Some(b"not to be sent\n"));
    assert_status(&o, 0);
    let seen = Json::parse(String::from_utf8_lossy(&o.stdout).trim_end());
    let Json::Arr(hs) = seen.get("headers") else { panic!("{seen:?}") };
    let header = |n: &str| {
        hs.iter()
            .find_map(|h| match h {
                Json::Arr(p) if p[0].str().eq_ignore_ascii_case(n) => Some(p[1].str().to_string()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("server did not see {n}: {seen:?}"))
    };
    assert_eq!(header("X-Trace"), "abc 1");
    assert_eq!(header("Authorization"), "Bearer t0k");
    assert_eq!(header("Sec-WebSocket-Protocol"), "chat, v2");
    assert_eq!(seen.get("subprotocol").str(), "chat");
    let e = err(&o);
    for want in [
        "> GET /headers HTTP/1.1\n",
        "> X-Trace: abc 1\n",
        "> Sec-WebSocket-Protocol: chat, v2\n",
        "< HTTP/1.1 101 Switching Protocols\n",
        "< Sec-WebSocket-Protocol: chat\n",
        "pipeline: subprotocol: chat\n",
        "pipeline: disconnected: ",
        "[close_completed]",
    ] {
        assert!(e.contains(want), "-v lacks {want:?}: {e}");
    }
    assert_eq!(read_stats(&json).get("counters").get("sent_messages").u64(), 0, "--no-stdin read stdin");
}

#[test]
fn bad_options_are_usage_errors() {
    for (args, says) in [
        (&["-H", "no colon"][..], "expected 'Name: value'"),
        (&["-H", ": empty name"], "expected 'Name: value'"),
        (&["-H", "Host: x"], "set by the WebSocket handshake"),
        (&["--protocol", "two words"], "not an HTTP token"),
        (&["--binary", "octal"], "expected raw, hex or base64"),
        (&["--jsonl", "--binary", "raw"], "--binary does not apply with --jsonl"),
        (&["--max-message", "0"], "--max-message 0"),
        (&["--max-message", "lots"], "expected a number of bytes"),
        (&["--no-stdin", "-E"], "--exit-on-eof needs stdin"),
        (&["-E", "--dedup-json-field", "seq"], "a feed (several URLs"),
    ] {
        // A closed port: a usage error must be found before any connect.
        let o = run(connect("ws://127.0.0.1:9/", args), None);
        assert_status(&o, 2);
        assert!(err(&o).contains(says), "{args:?}: {}", err(&o));
    }
    // --help of connect names the options and the exit statuses.
    let o = run(connect("ws://127.0.0.1:9/", &["--help"]), None);
    assert_status(&o, 0);
    let h = String::from_utf8_lossy(&o.stdout);
    for w in ["-H, --header", "--protocol NAME", "-v, --verbose", "--binary raw|hex|base64", "--jsonl", "--max-message BYTES",
        "--no-stdin", "-E, --exit-on-eof", "--stats-json PATH|-", "exit status of connect", "3 connect failure", "4 TLS",
        "5 protocol", "6 the server closed", "130 SIGINT, 143 SIGTERM"] {
        assert!(h.contains(w), "--help lacks {w:?}");
    }
}

// --- what is printed ---

/// `--binary raw|hex|base64` on a 300 B and a 1 MiB binary message, byte for byte.
#[test]
fn binary_modes_byte_for_byte() {
    let srv = Server::start(None);
    for size in [300usize, 1 << 20] {
        let want = pattern(0, size);
        let url = srv.url("127.0.0.1", &format!("/big?size={size}"));
        for mode in ["raw", "hex", "base64"] {
            let o = run(connect(&url, &["--binary", mode, "--count", "1"]), None);
            assert_status(&o, 0);
            let got = match mode {
                "raw" => o.stdout,
                "hex" => {
                    assert_eq!(o.stdout.last(), Some(&b'\n'), "{mode}: one line");
                    assert_eq!(String::from_utf8(o.stdout).unwrap(), hex(&want) + "\n", "{mode} {size}");
                    continue;
                }
                _ => {
                    let s = String::from_utf8(o.stdout).unwrap();
                    unbase64(s.strip_suffix('\n').expect("base64: one line"))
                }
            };
            assert!(got == want, "{mode} {size}: {} bytes, want {}", got.len(), want.len());
        }
    }
}

/// `--jsonl`: one object per message; text as a string (escapes included), binary as
/// base64, a 1 MiB message whole, and the receive time under "ts".
#[test]
fn jsonl_one_object_per_message() {
    let srv = Server::start(None);
    let before = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    // /fragmented: "fragmented tëxt", binary 00 01 02, binary pattern(0, 1 MiB), then echo.
    let o = run(
        connect(&srv.url("127.0.0.1", "/fragmented"), &["--jsonl", "--count", "4"]),
        Some("say \"hi\"\tthere \\ \u{1}\n".as_bytes()),
    );
    assert_status(&o, 0);
    let out = String::from_utf8(o.stdout).unwrap();
    let msgs: Vec<Json> = out.lines().map(Json::parse).collect();
    assert_eq!(msgs.len(), 4, "{out}");
    let after = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    let big = pattern(0, 1 << 20);
    let binary: [&[u8]; 2] = [&[0, 1, 2], &big];
    for (i, m) in msgs.iter().enumerate() {
        // The library's stamps along the stages, then the CLI's, in order and in the run.
        let t = m.get("ts");
        let stamps: Vec<u64> = ["arrival_unix_ns", "decrypted_unix_ns", "parsed_unix_ns", "delivered_unix_ns", "cli_recv_unix_ns"]
            .iter()
            .map(|k| t.get(k).u64())
            .collect();
        // (Converted from CLOCK_MONOTONIC with one offset: allow 1 ms of clock step.)
        assert!(stamps.windows(2).all(|w| w[0] <= w[1] + 1_000_000), "{i}: stamps out of order {stamps:?}");
        assert!(before <= stamps[0] + 1_000_000 && stamps[4] <= after, "{i}: stamps {stamps:?} outside the run");
        assert_eq!(m.get("fin"), &Json::Bool(true));
        match i {
            0 | 3 => {
                let want = if i == 0 { "fragmented tëxt" } else { "say \"hi\"\tthere \\ \u{1}" };
                assert_eq!(m.get("opcode").u64(), 1);
                assert_eq!(m.get("text").str(), want);
                assert_eq!(m.get("length").u64(), want.len() as u64);
            }
            _ => {
                let want = binary[i - 1];
                assert_eq!(m.get("opcode").u64(), 2);
                assert_eq!(m.get("length").u64(), want.len() as u64);
                assert!(unbase64(m.get("base64").str()) == want, "message {i}");
            }
        }
    }
}

// --- limits, exit statuses, hints ---

/// Our 1009 says the limit and the option; `--max-message` raises it; the server's 1009
/// is told apart (its limit, not ours).
#[test]
fn message_too_big_names_the_limit_and_the_option() {
    let srv = Server::start(None);
    let url = srv.url("127.0.0.1", "/big?size=3000");
    let o = run(connect(&url, &["--max-message", "2000"]), None);
    assert_status(&o, 5);
    let e = err(&o);
    assert!(e.contains("1009") && e.contains("2000 bytes") && e.contains("raise it with --max-message"), "{e}");
    let o = run(connect(&url, &["--max-message", "3000", "--count", "1", "--binary", "raw"]), None);
    assert_status(&o, 0);
    assert!(o.stdout == pattern(0, 3000));
    // Above the default 1 MiB: the inbox grows with the limit.
    let url = srv.url("127.0.0.1", "/big?size=3000000");
    let o = run(connect(&url, &["--max-message", "3000000", "--count", "1", "--binary", "raw"]), None);
    assert_status(&o, 0);
    assert!(o.stdout == pattern(0, 3_000_000));
    let o = run(connect(&srv.url("127.0.0.1", "/close?code=1009&reason=too+big"), &[]), None);
    assert_status(&o, 6);
    assert!(err(&o).contains("server's limit"), "{}", err(&o));
}

#[test]
fn each_failure_class_has_its_exit_status() {
    // 3: nothing listens.
    let o = run(connect("ws://127.0.0.1:9/", &[]), None);
    assert_status(&o, 3);
    // 4: TLS (a certificate from a CA we were not given).
    let tls = Server::tls();
    let o = run(connect(&tls.url("localhost", "/echo"), &[]), None);
    assert_status(&o, 4);
    // 5: the upgrade refused.
    let srv = Server::start(None);
    let o = run(connect(&srv.url("127.0.0.1", "/forbidden"), &[]), None);
    assert_status(&o, 5);
    assert!(err(&o).contains("403"), "{}", err(&o));
    // 6: closed by the server with another code than 1000 ...
    let o = run(connect(&srv.url("127.0.0.1", "/close?code=1001&reason=bye"), &[]), None);
    assert_status(&o, 6);
    assert!(err(&o).contains("1001"), "{}", err(&o));
    // ... or with 1000 before --count messages.
    let o = run(connect(&srv.url("127.0.0.1", "/close"), &["--count", "5"]), None);
    assert_status(&o, 6);
    assert!(err(&o).contains("after 0 of --count 5"), "{}", err(&o));
    // 0: the server's 1000 when no count was asked for.
    let o = run(connect(&srv.url("127.0.0.1", "/stream?n=2&size=4&type=text"), &[]), None);
    assert_status(&o, 0);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "abcd\nbcde\n");
    // 2: a URL the library refuses.
    let o = run(connect("http://127.0.0.1/", &[]), None);
    assert_status(&o, 2);
}

/// ws:// to a TLS port: an OpenSSL server (Python's) closes without a byte; others
/// answer with a TLS alert record. Both say to try wss://.
#[test]
fn ws_to_a_tls_port_says_try_wss() {
    let tls = Server::tls();
    let o = run(connect(&format!("ws://127.0.0.1:{}/echo", tls.port), &[]), None);
    assert_status(&o, 5);
    assert!(err(&o).contains("try wss://"), "{}", err(&o));

    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let h = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut b = [0u8; 512];
        let _ = s.read(&mut b);
        // A TLS 1.2 fatal alert, protocol_version (70): what rustls or Go send.
        let _ = s.write_all(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 70]);
        std::thread::sleep(Duration::from_millis(300));
    });
    let o = run(connect(&format!("ws://127.0.0.1:{port}/"), &[]), None);
    h.join().unwrap();
    assert_status(&o, 5);
    let e = err(&o);
    assert!(e.contains("TLS record") && e.contains("TLS alert") && e.contains("try wss://"), "{e}");
    // The same port asked for with wss:// and the right CA works (the hint is right).
    let ca = certs().ca();
    let o = run(
        connect(&tls.url("localhost", "/stream?n=1&size=3&type=text"), &["--ca-file", ca.to_str().unwrap()]),
        None,
    );
    assert_status(&o, 0);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "abc\n");
}

/// A feed (one leg here) prints through the same `--jsonl` and takes `--stats-json -`.
#[test]
fn a_feed_takes_jsonl_and_stats_on_stdout() {
    use pipeline_testkit::feed_server::{SeqServer, SeqSpec};
    let spec = SeqSpec::new("J", Instant::now() + Duration::from_millis(300), Duration::from_millis(1), 20);
    let server = SeqServer::start(spec);
    let (name, _g) = pipeline_testkit::synthetic::unique("cli_feedjsonl");
    let (_g0, _g1) = (pipeline_testkit::synthetic::unique("cli_feedjsonl-0").1, pipeline_testkit::synthetic::unique("cli_feedjsonl-1").1);
    let o = run(
        connect(&server.url(), &["--dedup-json-field", "seq", "--jsonl", "--count", "5", "--stats-json", "-", "--name", &name]),
        None,
    );
    assert_status(&o, 0);
    let out = String::from_utf8(o.stdout).unwrap();
    let lines: Vec<Json> = out.lines().map(Json::parse).collect();
    assert_eq!(lines.len(), 6, "{out}");
    for (i, m) in lines[..5].iter().enumerate() {
        assert_eq!(m.get("opcode").u64(), 1);
        let inner = Json::parse(m.get("text").str());
        assert_eq!(inner.get("seq").u64(), i as u64, "{out}");
    }
    assert!(matches!(lines[5].get("counters"), Json::Obj(_)), "{out}");
}

/// The server receives exactly the stdin lines (recorded frame by frame, not only
/// echoed); with `--reconnect -v` a reset is reported as a reconnect and the first
/// message after it as a gap.
#[test]
fn the_server_receives_the_exact_lines_and_verbose_reports_the_reconnect_gap() {
    use pipeline_testkit::feed_server::{Ending, FeedServer};
    let server = FeedServer::start(false, vec![(4, Ending::Rst), (usize::MAX, Ending::Keep)], Duration::from_millis(150));
    let o = run(
        connect(&server.url(), &["--reconnect", "-v", "--count", "6"]),
        Some("first line\n  spaced  \n\nünïcode\r\n".as_bytes()),
    );
    assert_status(&o, 0);
    let e = err(&o);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "0-0\n0-1\n0-2\n0-3\n1-0\n1-1\n", "{e}");
    let conns = server.connections();
    let texts: Vec<(u8, Vec<u8>)> = conns[0].received.iter().filter(|(op, _)| *op != 8).cloned().collect();
    let want: Vec<(u8, Vec<u8>)> =
        ["first line", "  spaced  ", "", "ünïcode"].iter().map(|l| (1u8, l.as_bytes().to_vec())).collect();
    assert_eq!(texts, want, "what the server received");
    assert!(e.contains("pipeline: reconnecting: attempt 1 after tcp_reset"), "{e}");
    assert!(e.contains("pipeline: gap: first message after a reconnect"), "{e}");
}
