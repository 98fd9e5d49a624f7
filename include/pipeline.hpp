// pipeline.hpp — header-only C++17 wrapper of libpipeline's C API (<wspipe/pipeline.h>).
//
//   #include <wspipe/pipeline.hpp>
//   wspipe::Config cfg("wss://feed.example/md");
//   cfg.layout(PL_LAYOUT_THREADS).ca_file("/etc/ssl/ca.pem");
//   long n = 0;                                    // your state: the callback runs in
//   wspipe::Pipeline p(cfg, [&](wspipe::Sender &s, const wspipe::Message &m) {
//       ++n;                                       // this process in every layout
//       if (m.text() == "ping?") s.send_text("pong");
//       if (bad(m)) throw std::runtime_error("bad tick");   // ends the connection
//   });
//   p.wait_disconnected(std::chrono::seconds(60));
//   std::string why; p.disconnect(&why);           // "message callback failed: bad tick"
//
// - RAII: ~Pipeline stops the stages and removes the shared memory (pl_free).
// - Errors of the C calls throw wspipe::Error (with the PlResult and the library's
//   message); wspipe::Closed for PL_ERR_CLOSED.
// - The callback is a std::function; an exception it throws is caught in the C
//   trampoline (nothing unwinds into the Rust library), its what() becomes the
//   disconnect message and the kind is PL_DISCONNECT_CALLBACK_ERROR.
// - Payloads are std::string_view (text()) and, with C++20, std::span (bytes()); both
//   point into shared memory and are valid only during the callback (polling: until
//   release()).
#ifndef WSPIPE_PIPELINE_HPP
#define WSPIPE_PIPELINE_HPP

#include "pipeline.h"

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>
#if defined(__has_include)
#if __has_include(<span>) && __cplusplus >= 202002L
#include <span>
#define WSPIPE_HAS_SPAN 1
#endif
#endif

namespace wspipe {

/// A failed C call: the result code and the library's message for it.
class Error : public std::runtime_error {
  public:
    Error(PlResult code, const std::string &what) : std::runtime_error(what), code_(code) {}
    PlResult code() const noexcept { return code_; }

  private:
    PlResult code_;
};

/// The connection is closed (PL_ERR_CLOSED).
class Closed : public Error {
  public:
    using Error::Error;
};

namespace detail {
inline std::string last_error(PlResult r, const char *what) {
    size_t n = pl_last_error(nullptr, 0);
    std::string msg(n, '\0');
    if (n) pl_last_error(&msg[0], n + 1);
    return std::string(what) + ": " + pl_result_name(r) + (msg.empty() ? "" : ": " + msg);
}
inline void check(PlResult r, const char *what) {
    if (r == PL_OK) return;
    if (r == PL_ERR_CLOSED) throw Closed(r, last_error(r, what));
    throw Error(r, last_error(r, what));
}
}  // namespace detail

/// One received message (or frame), in place in shared memory.
struct Message {
    const uint8_t *data = nullptr;
    size_t size = 0;
    /// 1 text, 2 binary, 0 continuation (PL_OPCODE_MORE masked off: see more()).
    uint32_t opcode = 0;
    bool more_follows = false;

    std::string_view text() const noexcept { return {reinterpret_cast<const char *>(data), size}; }
#ifdef WSPIPE_HAS_SPAN
    std::span<const uint8_t> bytes() const noexcept { return {data, size}; }
#endif
    bool is_text() const noexcept { return opcode == 1; }
    bool is_binary() const noexcept { return opcode == 2; }
    bool more() const noexcept { return more_follows; }
};

/// Sends from inside the callback (valid during the call, in every layout).
class Sender {
  public:
    explicit Sender(pl_sender *s) noexcept : s_(s) {}
    void send_text(std::string_view t) { detail::check(pl_sender_send_text(s_, t.data(), t.size()), "send_text"); }
    void send_binary(const void *data, size_t n) {
        detail::check(pl_sender_send_binary(s_, static_cast<const uint8_t *>(data), n), "send_binary");
    }
    void close(uint16_t code = 1000, const char *reason = nullptr) {
        detail::check(pl_sender_close(s_, code, reason), "close");
    }
    pl_sender *raw() const noexcept { return s_; }

  private:
    pl_sender *s_;
};

using OnMessage = std::function<void(Sender &, const Message &)>;

/// Start-up options: owns its strings; raw() for the fields without a setter.
class Config {
  public:
    explicit Config(std::string url) : url_(std::move(url)) {
        pl_config_init(&c_);  // the header's macro: passes sizeof(PlConfig)
    }
    Config &name(std::string v) { name_ = std::move(v); return *this; }
    Config &iface(std::string v) { iface_ = std::move(v); return *this; }
    Config &ca_file(std::string v) { ca_ = std::move(v); return *this; }
    Config &transport(PlTransport v) { c_.transport = static_cast<uint32_t>(v); return *this; }
    Config &layout(PlLayout v) { c_.layout = static_cast<uint32_t>(v); return *this; }
    Config &wait(PlWait v) { c_.wait = static_cast<uint32_t>(v); return *this; }
    Config &insecure(bool v = true) { c_.insecure = v; return *this; }
    Config &quiet(bool v = true) { c_.quiet = v; return *this; }
    Config &timeout(std::chrono::milliseconds v) { c_.timeout_ms = static_cast<uint32_t>(v.count()); return *this; }
    Config &subscribe(std::string text) { subs_.push_back(std::move(text)); return *this; }
    Config &header(std::string name_value) { headers_.push_back(std::move(name_value)); return *this; }
    /// PL_TRANSPORT_SYNTHETIC: the server's bytes after the upgrade (copied).
    Config &synthetic(std::string bytes, size_t chunk = 0) {
        synthetic_ = std::move(bytes);
        c_.synthetic_chunk = chunk;
        return *this;
    }
    PlConfig &raw() noexcept { return c_; }

    /// The C struct with every pointer set to this object's strings (valid while it lives).
    PlConfig build() {
        PlConfig c = c_;
        c.url = url_.c_str();
        c.name = name_.empty() ? nullptr : name_.c_str();
        c.iface = iface_.empty() ? nullptr : iface_.c_str();
        c.ca_file = ca_.empty() ? nullptr : ca_.c_str();
        subs_p_.clear();
        for (auto &s : subs_) subs_p_.push_back(s.c_str());
        c.subscriptions = subs_p_.empty() ? nullptr : subs_p_.data();
        c.subscriptions_len = subs_p_.size();
        headers_p_.clear();
        for (auto &s : headers_) headers_p_.push_back(s.c_str());
        c.headers = headers_p_.empty() ? nullptr : headers_p_.data();
        c.headers_len = headers_p_.size();
        if (!synthetic_.empty()) {
            c.synthetic_data = reinterpret_cast<const uint8_t *>(synthetic_.data());
            c.synthetic_len = synthetic_.size();
        }
        return c;
    }

  private:
    PlConfig c_{};
    std::string url_, name_, iface_, ca_, synthetic_;
    std::vector<std::string> subs_, headers_;
    std::vector<const char *> subs_p_, headers_p_;
};

/// A polled frame; give it back with Pipeline::release (in order).
struct Frame {
    PlFrame raw{};
    Message message() const noexcept {
        return Message{raw.payload, raw.len, raw.opcode & ~static_cast<uint32_t>(PL_OPCODE_MORE),
                       (raw.opcode & PL_OPCODE_MORE) != 0};
    }
};

/// Why the pipeline disconnected.
struct Disconnect {
    uint32_t kind = PL_DISCONNECT_NONE;  // a PlDisconnectKind value
    uint32_t close_code = 0;
    std::string message;
    const char *kind_name() const noexcept { return pl_disconnect_kind_name(kind); }
};

/// A running pipeline (RAII: the destructor stops it and removes its shared memory).
class Pipeline {
  public:
    /// Polling delivery (poll() / release()).
    explicit Pipeline(Config &cfg) {
        PlConfig c = cfg.build();
        detail::check(pl_start(&c, &p_), "pl_start");
    }
    /// Callback delivery: `cb` runs in this process in every layout (in `processes`,
    /// on a thread of it). A throw ends the connection (see the top of this file).
    Pipeline(Config &cfg, OnMessage cb) : ctx_(new Ctx{std::move(cb)}) {
        PlConfig c = cfg.build();
        c.on_message = nullptr;
        c.on_message_ex = &Pipeline::trampoline;
        c.on_message_user = ctx_.get();
        detail::check(pl_start(&c, &p_), "pl_start");
    }
    ~Pipeline() { pl_free(p_); }
    Pipeline(const Pipeline &) = delete;
    Pipeline &operator=(const Pipeline &) = delete;
    Pipeline(Pipeline &&o) noexcept : p_(std::exchange(o.p_, nullptr)), ctx_(std::move(o.ctx_)) {}
    Pipeline &operator=(Pipeline &&o) noexcept {
        if (this != &o) {
            pl_free(p_);
            p_ = std::exchange(o.p_, nullptr);
            ctx_ = std::move(o.ctx_);
        }
        return *this;
    }

    /// The next frame, or nullopt if none yet; throws Closed once disconnected and drained.
    std::optional<Frame> poll() {
        Frame f;
        PlResult r = pl_poll(p_, &f.raw);
        if (r == PL_ERR_WOULD_BLOCK) return std::nullopt;
        detail::check(r, "pl_poll");
        return f;
    }
    void release(const Frame &f) { detail::check(pl_release(p_, &f.raw), "pl_release"); }

    void send_text(std::string_view t) { detail::check(pl_send_text(p_, t.data(), t.size()), "pl_send_text"); }
    void send_binary(const void *d, size_t n) {
        detail::check(pl_send_binary(p_, static_cast<const uint8_t *>(d), n), "pl_send_binary");
    }
    void close(uint16_t code = 1000, const char *reason = nullptr) { detail::check(pl_close(p_, code, reason), "pl_close"); }
    bool wait_disconnected(std::chrono::milliseconds t) {
        return pl_wait_disconnected(p_, static_cast<uint32_t>(t.count())) == PL_OK;
    }
    PlState state() const {
        PlState s = PL_STATE_CONNECTING;
        detail::check(pl_get_state(p_, &s, nullptr, 0), "pl_get_state");
        return s;
    }
    Disconnect disconnect() const {
        PlDisconnect d{};
        char msg[512];
        detail::check(pl_get_disconnect(p_, &d, msg, sizeof msg), "pl_get_disconnect");
        return Disconnect{d.kind, d.close_code, msg};
    }
    PlStats stats() const {
        PlStats s{};
        detail::check(pl_get_stats(p_, &s), "pl_get_stats");
        return s;
    }
    std::string name() const {
        size_t n = pl_get_name(p_, nullptr, 0);
        std::string s(n, '\0');
        if (n) pl_get_name(p_, &s[0], n + 1);
        return s;
    }
    /// Stop the stages now (no close handshake); idempotent. Not from the callback.
    void stop() { detail::check(pl_stop(p_), "pl_stop"); }
    pl_pipeline *raw() const noexcept { return p_; }

  private:
    struct Ctx {
        OnMessage cb;
    };
    // The C callback: every exception stops here (noexcept: none can escape by mistake).
    static int32_t trampoline(void *user, pl_sender *s, const uint8_t *payload, size_t len, uint32_t opcode) noexcept {
        try {
            Sender snd(s);
            Message m{payload, len, opcode & ~static_cast<uint32_t>(PL_OPCODE_MORE), (opcode & PL_OPCODE_MORE) != 0};
            static_cast<Ctx *>(user)->cb(snd, m);
            return PL_CALLBACK_CONTINUE;
        } catch (const std::exception &e) {
            pl_sender_set_error(s, e.what());
        } catch (...) {
            pl_sender_set_error(s, "a C++ exception that is not a std::exception");
        }
        return PL_CALLBACK_ABORT;
    }

    pl_pipeline *p_ = nullptr;
    std::unique_ptr<Ctx> ctx_;
};

/// The loaded library's ABI matches this header's?
inline bool abi_matches() noexcept { return pl_abi_version() == PL_ABI_VERSION; }

/// When the message just handed to this thread (the callback's, or the last poll()'s)
/// arrived, was decrypted, parsed and delivered: CLOCK_MONOTONIC ns (std::chrono::
/// steady_clock's clock on Linux). nullopt before any message reached the thread.
inline std::optional<PlTimestamps> message_timestamps() noexcept {
    PlTimestamps t{};
    t.struct_size = sizeof t;
    if (pl_message_timestamps(&t) != PL_OK) return std::nullopt;
    return t;
}

}  // namespace wspipe

#endif  // WSPIPE_PIPELINE_HPP
