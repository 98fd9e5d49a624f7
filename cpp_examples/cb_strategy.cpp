// cb_strategy: the C++ wrapper (<wspipe/pipeline.hpp>) with callback delivery.
//
//   cb_strategy URL [--ca-file F] [--count N] [--layout processes|threads|inline]
//               [--throw-at K] [--reply-every M] [--name NAME] [--quiet]
//
// The callback checks each feed message of tools/exchange_sim.py (feed_check.h) and
// counts it in a plain local variable (no shared memory: in the processes layout the
// callback runs in this process too, so the count is right). Every M messages it sends
// a text reply through the Sender it is given. --throw-at K: the callback throws a
// std::runtime_error at message K; the wrapper catches it, and the connection ends with
// PL_DISCONNECT_CALLBACK_ERROR and the exception's text. At the end one line:
//   summary: messages=N gaps=G bad=B replies=R text=T stamps_bad=S kind=PL_DISCONNECT_... reason=...
// (stamps_bad: messages whose wspipe::message_timestamps() were missing or out of stage order)
// Exit status 0 if the count was reached (or, with --throw-at, if the disconnect is the
// callback error with the exception's text and exactly K messages were seen).
#include <wspipe/pipeline.hpp>
#include "feed_check.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

int main(int argc, char **argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: cb_strategy URL [--ca-file F] [--count N] [--layout L] [--throw-at K] [--reply-every M]\n");
        return 2;
    }
    wspipe::Config cfg(argv[1]);
    cfg.wait(PL_WAIT_BACKOFF).quiet();
    long long count = -1, throw_at = -1, reply_every = 0;
    for (int i = 2; i < argc; i++) {
        std::string a = argv[i];
        auto val = [&]() -> std::string {
            if (i + 1 >= argc) { std::fprintf(stderr, "%s needs a value\n", a.c_str()); std::exit(2); }
            return argv[++i];
        };
        if (a == "--ca-file") cfg.ca_file(val());
        else if (a == "--count") count = std::atoll(val().c_str());
        else if (a == "--throw-at") throw_at = std::atoll(val().c_str());
        else if (a == "--reply-every") reply_every = std::atoll(val().c_str());
        else if (a == "--name") cfg.name(val());
        else if (a == "--quiet") {}
        else if (a == "--layout") {
            std::string l = val();
            cfg.layout(l == "processes" ? PL_LAYOUT_PROCESSES : l == "threads" ? PL_LAYOUT_THREADS : PL_LAYOUT_INLINE);
        } else { std::fprintf(stderr, "unknown option %s\n", a.c_str()); return 2; }
    }
    if (!wspipe::abi_matches()) {
        std::fprintf(stderr, "cb_strategy: library ABI %u, header ABI %u\n", pl_abi_version(), PL_ABI_VERSION);
        return 1;
    }
    // The strategy's state: plain variables of this process.
    unsigned long long want = 0, gaps = 0, bad = 0, replies = 0, text = 0, stamps_bad = 0;
    bool closing = false;
    try {
        wspipe::Pipeline p(cfg, [&](wspipe::Sender &s, const wspipe::Message &m) {
            // The library's per-message stamps: in stage order for every message.
            auto t = wspipe::message_timestamps();
            if (!t || t->arrival_ns == 0 || t->arrival_ns > t->decrypted_ns || t->decrypted_ns > t->parsed_ns ||
                t->parsed_ns > t->delivered_ns)
                stamps_bad++;
            if (m.is_text()) { text++; return; }
            if (closing) return;
            uint64_t seq = 0, sent = 0;
            int c = feed_check(m.data, m.size, want, &seq, &sent, 1);
            if (c == FEED_GAP) gaps += seq - want;
            else if (c == FEED_BAD) bad++;
            want = seq + 1;
            if (throw_at >= 0 && want == static_cast<unsigned long long>(throw_at))
                throw std::runtime_error("strategy: position limit at seq " + std::to_string(seq));
            if (reply_every > 0 && want % static_cast<unsigned long long>(reply_every) == 0) {
                s.send_text("ack " + std::to_string(seq));
                replies++;
            }
            if (count >= 0 && want >= static_cast<unsigned long long>(count)) {
                closing = true;
                s.close(1000, "done");
            }
        });
        p.wait_disconnected(std::chrono::seconds(120));
        wspipe::Disconnect d = p.disconnect();
        std::printf("summary: messages=%llu gaps=%llu bad=%llu replies=%llu text=%llu stamps_bad=%llu kind=%s reason=%s\n",
                    want, gaps, bad, replies, text, stamps_bad, d.kind_name(), d.message.c_str());
        if (stamps_bad) return 1;
        if (throw_at >= 0)
            return d.kind == PL_DISCONNECT_CALLBACK_ERROR && d.message.find("position limit") != std::string::npos &&
                           want == static_cast<unsigned long long>(throw_at)
                       ? 0
                       : 1;
        return (count < 0 || want >= static_cast<unsigned long long>(count)) && gaps == 0 && bad == 0 ? 0 : 1;
    } catch (const wspipe::Error &e) {
        std::fprintf(stderr, "cb_strategy: %s\n", e.what());
        return 1;
    }
}
