#pragma once
// The relay: bytes both ways between the client channel and the upstream socket until both
// directions have ended, an error, or the idle timeout.
//
// - Plain TCP <-> TCP uses splice(2) through a pipe (zero copy). Pipes are taken from a
//   per-thread pool only while bytes are in flight, so an idle session holds no pipe and no
//   buffer: two descriptors and a few hundred bytes of coroutine state.
// - A fast plain TCP stream is woken per 256 KiB instead of per segment (bulk mode, relay.cc);
//   interactive traffic is not affected, and a transfer's tail waits at most 500 us.
// - Other channels (TLS, GSS) copy through one reused buffer per direction.
// - Half-close is preserved: EOF one way is passed on as a FIN (shutdown) that way only.
// - A reset from either side is passed on as a reset to the other.
// - Counters are exact: bytes actually written to the receiving side.
// - Limits (gateway/limits.h): a direction with a FlowLimiter reads only as many bytes as its
//   token buckets (and the user's remaining quota) grant, and sleeps until there are tokens.
//   The splice path stays: each splice into the pipe moves at most the bytes granted. A used-up
//   quota ends the session (limit:quota).
//
// Runs on the session's executor; the two pumps are joined with &&, the idle watchdog with ||.

#include <asio/awaitable.hpp>
#include <asio/ip/tcp.hpp>
#include <chrono>
#include <cstdint>

#include "crypto/channel.h"
#include "gateway/close_reason.h"
#include "gateway/metrics.h"

namespace socksgate::gateway {

class FlowLimiter;

struct RelayResult {
  uint64_t bytes_up = 0;    // client -> upstream
  uint64_t bytes_down = 0;  // upstream -> client
  CloseReason reason = CloseReason::kClientClosed;
  uint32_t bulk_entries = 0;  // times a splice pump went into bulk mode (relay.cc), both ways
};

struct RelayOptions {
  std::chrono::seconds idle_timeout{3600};
  bool allow_splice = true;
  // Live counts other threads read while the relay runs (admin /sessions, metrics).
  ByteTap tap_up, tap_down;
  // Bandwidth limits and quotas per direction; nullptr = none.
  FlowLimiter* limit_up = nullptr;
  FlowLimiter* limit_down = nullptr;
};

asio::awaitable<RelayResult> run_relay(crypto::Channel& client, asio::ip::tcp::socket& upstream,
                                       RelayOptions opts);

}  // namespace socksgate::gateway
