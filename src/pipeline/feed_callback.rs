//! Callback delivery of a [`Feed`]: the merge step runs on a thread the library owns and
//! hands every item of the merged stream (frames and events, in stream order) to one
//! callback.
//!
//! ```no_run
//! use pipeline::pipeline::{Config, Feed, FeedConfig, FeedItem, KeyExtractor};
//! let legs = vec![Config::new("wss://a.example.com/ws"), Config::new("wss://b.example.com/ws")];
//! let cfg = FeedConfig::new(legs, KeyExtractor::json("seq").unwrap());
//! let feed = Feed::start_with_callback(cfg, Box::new(|item| {
//!     match item {
//!         FeedItem::Frame(f) => println!("leg {} seq {:?}: {} bytes", f.leg(), f.key(), f.payload().len()),
//!         FeedItem::Event(e) => eprintln!("{e}"),
//!     }
//!     Ok(()) // Err(reason) closes every leg and ends delivery
//! }))?;
//! feed.wait_finished(std::time::Duration::from_secs(60));
//! # Ok::<(), pipeline::Error>(())
//! ```
//!
//! The thread owns the feed behind a lock it holds while it delivers a batch; the
//! [`CallbackFeed`] handle takes the same lock for rotation, counters and close. A frame
//! is given back as soon as the callback returns (its payload is valid only during the
//! call). Calls on the handle from inside the callback are refused with an error (they
//! would wait for the lock the callback's own thread holds).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::{JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use super::{Feed, FeedConfig, FeedItem};
use crate::error::{Error, Result};
use crate::runner::{Wait, WaitKind};
use crate::stats::StatsRegion;

/// A feed's callback: every frame and event of the merged stream in order, on the
/// feed's own thread. `Err(reason)` closes every leg (code 1011) and ends delivery;
/// [`CallbackFeed::error`] then says why. A panic is caught and ends it the same way.
pub type OnFeedItem = Box<dyn FnMut(FeedItem<'_>) -> std::result::Result<(), String> + Send>;

/// Items delivered per hold of the lock: the handle's calls wait at most this long.
const BATCH: usize = 64;

struct Shared {
    feed: Mutex<Feed>,
    /// Raised by `stop`; shared with a callback that may wait (the publisher waiting
    /// for room in its output ring must give up when the feed stops).
    stop: Arc<AtomicBool>,
    finished: AtomicBool,
    error: Mutex<Option<String>>,
    merge_thread: OnceLock<ThreadId>,
}

/// A [`Feed`] delivering by callback (see [`Feed::start_with_callback`]). Dropping it
/// stops the thread, then every leg.
pub struct CallbackFeed {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    name: String,
    stats: StatsRegion,
}

impl std::fmt::Debug for CallbackFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallbackFeed").field("name", &self.name).finish()
    }
}

fn lock_ignoring_poison<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The callback runs inside catch_unwind, so a panic never leaves the lock poisoned
    // mid-update of the feed; the error slot is a plain Option.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

fn merge_loop(shared: &Shared, mut cb: OnFeedItem) {
    let mut w = Wait::new(WaitKind::Backoff);
    while !shared.stop.load(Ordering::Acquire) {
        let mut feed = lock_ignoring_poison(&shared.feed);
        let mut n = 0;
        let mut failed = None;
        while n < BATCH {
            let Some(item) = feed.next() else { break };
            n += 1;
            match catch_unwind(AssertUnwindSafe(|| cb(item))) {
                Ok(Ok(())) => {}
                Ok(Err(why)) => failed = Some(format!("the feed callback failed: {why}")),
                Err(p) => failed = Some(format!("the feed callback panicked: {}", panic_text(&*p))),
            }
            if failed.is_some() {
                break;
            }
        }
        if let Some(why) = failed {
            let _ = feed.close(1011, "feed callback failed");
            *lock_ignoring_poison(&shared.error) = Some(why);
            break;
        }
        let done = n == 0 && feed.finished();
        drop(feed);
        if done {
            break;
        }
        if n == 0 {
            w.idle();
        } else {
            w.reset();
        }
    }
    shared.finished.store(true, Ordering::Release);
}

impl Feed {
    /// Start like [`Feed::start`], then run the merge step on a thread of its own that
    /// hands every item to `cb` (see the module `feed_callback` documentation). Returns
    /// once every leg is connected (or failed, as `start`).
    pub fn start_with_callback(cfg: FeedConfig, cb: OnFeedItem) -> Result<CallbackFeed> {
        CallbackFeed::run(Feed::start(cfg)?, cb, Arc::new(AtomicBool::new(false)))
    }
}

impl CallbackFeed {
    /// Run the merge of a started `feed` on its own thread; `stop` is raised when the
    /// handle stops.
    pub(crate) fn run(feed: Feed, cb: OnFeedItem, stop: Arc<AtomicBool>) -> Result<CallbackFeed> {
        let name = feed.name().to_string();
        let stats = feed.stats_region().clone();
        let shared = Arc::new(Shared {
            feed: Mutex::new(feed),
            stop,
            finished: AtomicBool::new(false),
            error: Mutex::new(None),
            merge_thread: OnceLock::new(),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("feed-{name}"))
            .spawn(move || merge_loop(&s, cb))
            .map_err(|e| Error::io("spawn the feed's merge thread", e))?;
        let _ = shared.merge_thread.set(thread.thread().id());
        Ok(CallbackFeed { shared, thread: Some(thread), name, stats })
    }

    /// The feed's name (its stats region: `pipeline stat NAME`; legs `NAME-<i>`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The feed's own stats region (read without the lock, any time).
    pub fn stats_region(&self) -> &StatsRegion {
        &self.stats
    }

    /// The feed, locked against the merge thread: for everything [`Feed`] offers on a
    /// shared reference (`leg`, `leg_stats`, `gaps`, `delivered`, `held`,
    /// `publish_stats`, `send_text_all`, `close`, ...). Refused from inside the callback.
    pub fn with<R>(&self, f: impl FnOnce(&Feed) -> R) -> Result<R> {
        let feed = self.lock()?;
        Ok(f(&feed))
    }

    /// The C API's access (rotation and the rest need `&mut`).
    pub(crate) fn lock(&self) -> Result<MutexGuard<'_, Feed>> {
        if self.shared.merge_thread.get() == Some(&std::thread::current().id()) {
            return Err(Error::Config(
                "called from inside the feed's own callback (the merge thread holds the feed): \
                 return from the callback first, or act from another thread"
                    .into(),
            ));
        }
        Ok(lock_ignoring_poison(&self.shared.feed))
    }

    /// [`Feed::rotate`].
    pub fn rotate(&self) -> Result<()> {
        self.lock()?.rotate();
        Ok(())
    }

    /// [`Feed::shutdown_notice`].
    pub fn shutdown_notice(&self) -> Result<()> {
        self.lock()?.shutdown_notice();
        Ok(())
    }

    /// [`Feed::expect`].
    pub fn expect(&self, stream: u32, next: u64) -> Result<bool> {
        Ok(self.lock()?.expect(stream, next))
    }

    /// [`Feed::close`]: every leg's close handshake; the callback still gets what they
    /// bring until the feed is finished.
    pub fn close(&self, code: u16, reason: &str) -> Result<()> {
        self.lock()?.close(code, reason)
    }

    /// Delivery is over: every leg gone for good and everything delivered, or the
    /// callback failed ([`CallbackFeed::error`]).
    pub fn finished(&self) -> bool {
        self.shared.finished.load(Ordering::Acquire)
    }

    /// Wait (sleeping) up to `timeout` for [`CallbackFeed::finished`].
    pub fn wait_finished(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.finished() {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }

    /// Why delivery ended early: the callback's `Err` or panic.
    pub fn error(&self) -> Option<String> {
        lock_ignoring_poison(&self.shared.error).clone()
    }

    /// Stop the thread (after the callback call in progress), then every leg. Also on
    /// drop. Refused from inside the callback (the thread cannot join itself).
    pub fn stop(&mut self) -> Result<()> {
        if self.shared.merge_thread.get() == Some(&std::thread::current().id()) {
            return Err(Error::Config("CallbackFeed::stop from inside the feed's own callback".into()));
        }
        self.shared.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        lock_ignoring_poison(&self.shared.feed).stop();
        Ok(())
    }
}

impl Drop for CallbackFeed {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
