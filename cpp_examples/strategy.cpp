// strategy: a C++17 "strategy" on libpipeline (include/pipeline.h, -lpipeline).
//
//   strategy URL [--transport kernel|xdp] [--iface IF] [--ca-file F] [--insecure]
//                [--count N] [--send TEXT] [--layout L] [--wait W] [--name NAME]
//                [--quiet] [--timeout SECS]
//
// Subscribes to URL and prints one line per received message. Messages of
// tools/exchange_sim.py (binary, `seq` embedded) are checked: order, size, crc32 and
// pattern; the one-way latency comes from the embedded send timestamp (CLOCK_MONOTONIC,
// shared by every network namespace of the host). Text messages (e.g. the echo of
// --send) are printed as they are. After --count N feed messages it closes with 1000;
// Ctrl-C closes with 1001. At the end one summary line:
//   summary: messages=N gaps=0 bad=0 text=T seconds=S rate=R/s latency_us p50=.. p99=.. p99.9=.. max=..
// Exit status 0 only if the count was reached (when given) with no gap and no bad message.
#include "pipeline.h"
#include "feed_check.h"

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

std::atomic<bool> g_interrupted{false};
extern "C" void on_sigint(int) { g_interrupted.store(true); }

// The library's message for the last failure on this thread, with the code's name.
std::string last_error(PlResult r) {
    char buf[512];
    pl_last_error(buf, sizeof buf);
    return std::string(pl_result_name(r)) + ": " + buf;
}

[[noreturn]] void usage(const char *why) {
    std::fprintf(stderr,
                 "strategy: %s\nusage: strategy URL [--transport kernel|xdp] [--iface IF] [--ca-file F] [--insecure]\n"
                 "                [--count N] [--send TEXT] [--layout auto|processes|threads|inline]\n"
                 "                [--wait auto|spin|yield|backoff] [--name NAME] [--timeout SECS] [--quiet]\n",
                 why);
    std::exit(2);
}

double pct(std::vector<uint64_t> &v, double p) {
    if (v.empty()) return 0.0;
    size_t i = static_cast<size_t>(p / 100.0 * static_cast<double>(v.size() - 1) + 0.5);
    std::nth_element(v.begin(), v.begin() + static_cast<long>(i), v.end());
    return static_cast<double>(v[i]) / 1000.0;
}

}  // namespace

int main(int argc, char **argv) {
    PlConfig cfg;
    pl_config_init(&cfg);
    std::string url, iface, ca, name, send;
    long long count = -1;
    bool quiet = false;
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        auto val = [&]() -> std::string {
            if (i + 1 >= argc) usage((a + " needs a value").c_str());
            return argv[++i];
        };
        if (a == "--transport") {
            std::string t = val();
            if (t == "kernel") cfg.transport = PL_TRANSPORT_KERNEL;
            else if (t == "xdp") cfg.transport = PL_TRANSPORT_XDP;
            else usage("--transport: kernel or xdp");
        } else if (a == "--iface") iface = val();
        else if (a == "--ca-file") ca = val();
        else if (a == "--insecure") cfg.insecure = true;
        else if (a == "--count") count = std::atoll(val().c_str());
        else if (a == "--send") send = val();
        else if (a == "--name") name = val();
        else if (a == "--quiet") quiet = true;
        else if (a == "--timeout") cfg.timeout_ms = static_cast<uint32_t>(std::atof(val().c_str()) * 1000);
        else if (a == "--layout") {
            std::string l = val();
            if (l == "auto") cfg.layout = PL_LAYOUT_AUTO;
            else if (l == "processes") cfg.layout = PL_LAYOUT_PROCESSES;
            else if (l == "threads") cfg.layout = PL_LAYOUT_THREADS;
            else if (l == "inline") cfg.layout = PL_LAYOUT_INLINE;
            else usage("--layout: auto, processes, threads or inline");
        } else if (a == "--wait") {
            std::string w = val();
            if (w == "auto") cfg.wait = PL_WAIT_AUTO;
            else if (w == "spin") cfg.wait = PL_WAIT_SPIN;
            else if (w == "yield") cfg.wait = PL_WAIT_YIELD;
            else if (w == "backoff") cfg.wait = PL_WAIT_BACKOFF;
            else usage("--wait: auto, spin, yield or backoff");
        } else if (a == "-h" || a == "--help") usage("help");
        else if (!a.empty() && a[0] == '-') usage(("unknown option " + a).c_str());
        else if (url.empty()) url = a;
        else usage("only one URL");
    }
    if (url.empty()) usage("a URL is required");
    cfg.url = url.c_str();
    if (!iface.empty()) cfg.iface = iface.c_str();
    if (!ca.empty()) cfg.ca_file = ca.c_str();
    if (!name.empty()) cfg.name = name.c_str();

    std::signal(SIGINT, on_sigint);
    std::signal(SIGTERM, on_sigint);

    pl_pipeline *p = nullptr;
    PlResult r = pl_start(&cfg, &p);
    if (r != PL_OK) {
        std::fprintf(stderr, "strategy: start: %s\n", last_error(r).c_str());
        return 1;
    }
    if (!send.empty() && (r = pl_send_text(p, send.data(), send.size())) != PL_OK) {
        std::fprintf(stderr, "strategy: send: %s\n", last_error(r).c_str());
        pl_free(p);
        return 1;
    }

    std::vector<uint64_t> lat_ns;
    lat_ns.reserve(count > 0 ? static_cast<size_t>(count) : 1u << 20);
    uint64_t want = 0, gaps = 0, bad = 0, text = 0, first_ns = 0, last_ns = 0;
    bool closing = false;
    unsigned idle = 0;
    int status = 0;
    for (;;) {
        if (g_interrupted.load() && !closing) {
            closing = true;
            pl_close(p, 1001, "interrupted");
        }
        PlFrame f;
        r = pl_poll(p, &f);
        if (r == PL_ERR_WOULD_BLOCK) {
            // Back off: spin a little, then yield, then sleep (this is a 2-core-friendly example).
            if (++idle > 256) std::this_thread::sleep_for(std::chrono::microseconds(20));
            else if (idle > 64) std::this_thread::yield();
            continue;
        }
        if (r == PL_ERR_CLOSED) break;
        if (r != PL_OK) {
            std::fprintf(stderr, "strategy: poll: %s\n", last_error(r).c_str());
            status = 1;
            break;
        }
        idle = 0;
        uint32_t op = f.opcode & 0xFFu;
        if (op == 1) {
            text++;
            if (!quiet) std::printf("text %.*s\n", static_cast<int>(f.len), reinterpret_cast<const char *>(f.payload));
        } else if (!closing) {
            uint64_t now = feed_now_ns(), seq = 0, sent = 0;
            int c = feed_check(f.payload, f.len, want, &seq, &sent, 1);
            if (first_ns == 0) first_ns = now;
            last_ns = now;
            if (c == FEED_GAP) {
                gaps += seq - want;
                std::fprintf(stderr, "strategy: gap: expected seq %llu, got %llu\n", (unsigned long long)want,
                             (unsigned long long)seq);
            } else if (c == FEED_BAD) {
                bad++;
                std::fprintf(stderr, "strategy: bad message at seq %llu (len %zu)\n", (unsigned long long)want, f.len);
            }
            want = seq + 1;
            if (sent != 0 && now >= sent) lat_ns.push_back(now - sent);
            if (!quiet)
                std::printf("seq=%llu size=%zu latency_us=%.1f\n", (unsigned long long)seq, f.len,
                            sent ? static_cast<double>(now - sent) / 1000.0 : 0.0);
            if (count >= 0 && want >= static_cast<uint64_t>(count)) {
                closing = true;
                if ((r = pl_close(p, 1000, "done")) != PL_OK) {
                    std::fprintf(stderr, "strategy: close: %s\n", last_error(r).c_str());
                    status = 1;
                }
            }
        }
        pl_release(p, &f);
    }
    if (status == 0) pl_wait_disconnected(p, 5000);
    PlState st;
    char why[256] = "";
    pl_get_state(p, &st, why, sizeof why);
    PlStats s;
    pl_get_stats(p, &s);
    double secs = last_ns > first_ns ? static_cast<double>(last_ns - first_ns) / 1e9 : 0.0;
    std::printf("summary: messages=%llu gaps=%llu bad=%llu text=%llu seconds=%.3f rate=%.0f/s "
                "latency_us p50=%.1f p99=%.1f p99.9=%.1f max=%.1f drops=%llu overruns=%llu\n",
                (unsigned long long)want, (unsigned long long)gaps, (unsigned long long)bad,
                (unsigned long long)text, secs, secs > 0 ? static_cast<double>(want) / secs : 0.0,
                pct(lat_ns, 50), pct(lat_ns, 99), pct(lat_ns, 99.9), pct(lat_ns, 100),
                (unsigned long long)s.drops, (unsigned long long)s.overruns);
    PlDisconnect d;
    if (pl_get_disconnect(p, &d, nullptr, 0) != PL_OK) d.kind = PL_DISCONNECT_NONE;
    std::fprintf(stderr, "strategy: %s [%s]\n", why, pl_disconnect_kind_name(d.kind));
    pl_free(p);
    if (g_interrupted.load()) return 130;
    if (gaps || bad || (count >= 0 && want < static_cast<uint64_t>(count))) status = 1;
    return status;
}
