//! `pipeline connect URL [URL ...] --dedup-json-field NAME [--contiguous] [--hold-ms MS]
//! [--rotate-every SECS]`: the URLs are the legs of one feed, merged by key. Stdout: one
//! line per delivered message; stderr: one line per event (gap, leg up/down, rotation).
//! With `--external-consumer` the merged stream (frames and events) is published in
//! `/dev/shm/pipeline_<name>/` for header-only readers (`plc_next_feed`) instead.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use pipeline::pipeline::{
    ArbiterMode, Feed, FeedConfig, FeedEvent, FeedItem, KeyExtractor, PublishConfig, RotationConfig, State,
};

use crate::connect::Opts;
use crate::signals::interrupted;
use crate::stat::json;

#[derive(Default)]
pub(crate) struct FeedOpts {
    pub(crate) field: Option<String>,
    pub(crate) contiguous: bool,
    pub(crate) hold_ms: Option<f64>,
    pub(crate) rotate_every: Option<f64>,
}

impl FeedOpts {
    pub(crate) fn wanted(&self) -> bool {
        self.field.is_some() || self.rotate_every.is_some()
    }
}

pub(crate) fn main(o: Opts) -> ExitCode {
    let key = match &o.feed.field {
        Some(f) => match KeyExtractor::json(f) {
            Ok(k) => k,
            Err(e) => return crate::usage_error(&format!("--dedup-json-field {f:?}: {e}")),
        },
        None => KeyExtractor::None,
    };
    // --external-consumer is the feed's, not its legs': the feed reads the legs and
    // publishes the merged stream.
    let publish = o.cfg.external_consumer;
    let mut leg = o.cfg.clone();
    leg.external_consumer = false;
    let mut legs = vec![leg.clone()];
    for u in &o.more_urls {
        let mut c = leg.clone();
        c.url = u.clone();
        legs.push(c);
    }
    let mut cfg = FeedConfig::new(legs, key);
    cfg.name = o.cfg.name.clone();
    cfg.quiet = o.cfg.quiet;
    if o.feed.contiguous {
        cfg.mode = ArbiterMode::Contiguous;
    }
    if let Some(ms) = o.feed.hold_ms {
        cfg.hold_window = Duration::from_secs_f64(ms / 1000.0);
    }
    cfg.rotation = RotationConfig {
        every_ns: o.feed.rotate_every.map(|s| (s * 1e9) as u64),
        ..Default::default()
    };
    if publish {
        if o.count.is_some() {
            return crate::usage_error("--count counts the lines printed; with --external-consumer another process reads them");
        }
        return published(&o, cfg);
    }
    let mut feed = match Feed::start(cfg) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("pipeline: {e}");
            return ExitCode::from(1);
        }
    };
    for s in &o.sends {
        if let Err(e) = feed.send_text_all(s) {
            eprintln!("pipeline: send: {e}");
            return ExitCode::from(1);
        }
    }
    let out = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, out.lock());
    let mut line = Vec::new();
    let mut n = 0u64;
    let mut closing = false;
    let mut clean = true;
    let code = loop {
        if interrupted() && !closing {
            closing = true;
            let _ = feed.close(1001, "interrupted");
        }
        enum Got {
            Line,
            Event(FeedEvent),
            Nothing,
        }
        let got = match feed.next_timeout(Duration::from_millis(50)) {
            Some(FeedItem::Frame(f)) => {
                // A merged feed's messages carry no per-stage stamps (yet).
                o.printer.render(&mut line, f.opcode(), true, f.payload(), None);
                Got::Line
            }
            Some(FeedItem::Event(e)) => Got::Event(e),
            None => Got::Nothing,
        };
        match got {
            Got::Line if o.count.is_some_and(|c| n >= c) => {} // closing
            Got::Line => {
                if out.write_all(&line).is_err() {
                    break 1;
                }
                n += 1;
                if o.count == Some(n) && !closing {
                    closing = true;
                    let _ = out.flush();
                    let _ = feed.close(1000, "done");
                }
            }
            Got::Event(e) => {
                let _ = out.flush();
                if let FeedEvent::LegDown { state: State::Disconnected { reason }, .. } = &e {
                    clean &= matches!(
                        reason.kind,
                        pipeline::pipeline::DisconnectKind::CloseCompleted { .. }
                            | pipeline::pipeline::DisconnectKind::ServerClosed { code: 1000, .. }
                    );
                }
                eprintln!("pipeline: {e}");
            }
            Got::Nothing => {
                let _ = out.flush();
                if feed.finished() {
                    break if interrupted() {
                        crate::signals::exit_status()
                    } else if clean && (o.count.is_none() || o.count <= Some(n)) {
                        0
                    } else {
                        1
                    };
                }
            }
        }
    };
    let _ = out.flush();
    drop(out);
    feed.publish_stats();
    if let Some(path) = &o.stats_json {
        let counters = feed.stats_region().snapshot();
        crate::connect::emit_stats(path, json(feed.name(), &counters, None));
    }
    let (r, a) = feed.rotations();
    let (g, gs) = feed.gaps();
    eprintln!(
        "pipeline: feed {}: {} delivered, {g} gap(s) ({gs} sequences), {r} rotation(s){}",
        feed.name(),
        feed.delivered(),
        if a > 0 { format!(", {a} aborted") } else { String::new() }
    );
    feed.stop();
    ExitCode::from(code)
}

/// `--external-consumer`: publish the merged stream and wait until every leg is gone
/// (Ctrl-C closes them with 1001).
fn published(o: &Opts, cfg: FeedConfig) -> ExitCode {
    let quiet = cfg.quiet;
    let mut feed = match Feed::start_published(cfg, PublishConfig::default()) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("pipeline: {e}");
            return ExitCode::from(1);
        }
    };
    if !quiet {
        eprintln!(
            "pipeline: feed {0}: the merged stream is published for external readers (pipeline_consumer.h: plc_open(\"{0}\"), plc_next_feed)",
            feed.name()
        );
    }
    for s in &o.sends {
        if let Err(e) = feed.with(|f| f.send_text_all(s)).and_then(|r| r) {
            eprintln!("pipeline: send: {e}");
            return ExitCode::from(1);
        }
    }
    let mut closing = false;
    while !feed.wait_finished(Duration::from_millis(50)) {
        if interrupted() && !closing {
            closing = true;
            let _ = feed.close(1001, "interrupted");
        }
    }
    let failed = feed.error();
    let summary = feed.with(|f| {
        f.publish_stats();
        let (g, gs) = f.gaps();
        if let Some(path) = &o.stats_json {
            if let Err(e) = std::fs::write(path, json(f.name(), &f.stats_region().snapshot(), None) + "\n") {
                eprintln!("pipeline: cannot write {path}: {e}");
            }
        }
        format!("pipeline: feed {}: {} published, {g} gap(s) ({gs} sequences)", f.name(), f.delivered())
    });
    if let Ok(line) = summary {
        eprintln!("{line}");
    }
    let _ = feed.stop();
    match failed {
        Some(e) => {
            eprintln!("pipeline: {e}");
            ExitCode::from(1)
        }
        None if interrupted() => ExitCode::from(130),
        None => ExitCode::SUCCESS,
    }
}
