#pragma once
// One SOCKS session, accept to close, as one coroutine that reads like RFC 1928:
//
//   client rules -> method selection -> authentication -> request -> policy + connect
//   -> reply -> relay -> audit
//
// The session runs on one I/O thread (its socket's executor) and needs no locks. Every phase
// has a deadline; every ending maps to one CloseReason (reply code, audit reason, counter).

#include <asio/awaitable.hpp>
#include <asio/ip/tcp.hpp>
#include <cstdint>
#include <memory>

#include "gateway/server_state.h"

namespace socksgate::gateway {

// Where a session is, for audit and (later) metrics.
enum class SessionPhase : uint8_t {
  kAccepted,
  kTlsHandshake,
  kMethodSelection,
  kAuthentication,
  kRequest,
  kConnect,
  kBindWait,
  kRelay,
  kClosed,
};

// Runs a session to its end; never throws (anything unexpected is audited as
// internal_error by the caller's completion handler).
asio::awaitable<void> run_session(ServerState& state, std::shared_ptr<const Snapshot> snapshot,
                                  std::string listener, asio::ip::tcp::socket socket,
                                  asio::ip::tcp::endpoint peer, uint64_t id);

// "3f2a9c1e00000001": a per-process random prefix and a counter (unique, not guessable
// across restarts, sortable within one run).
std::string format_session_id(uint64_t id);

}  // namespace socksgate::gateway
