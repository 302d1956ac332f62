#pragma once
// Every way a session can end, in one place: for each, the SOCKS5 reply code a client gets
// (when a reply is still due), the audit `close_reason` token and a counter slot. errno and
// resolver errors map to a CloseReason here and nowhere else.

#include <array>
#include <atomic>
#include <cstdint>
#include <string_view>
#include <system_error>

#include "gateway/socks5.h"

namespace socksgate::gateway {

enum class CloseReason : uint8_t {
  kClientClosed,  // normal end: the relay finished (both sides closed)
  kIdleTimeout,
  kNegotiationTimeout,
  kClientReset,
  kUpstreamReset,
  kRelayError,
  kProtocolError,           // malformed SOCKS message
  kUnsupportedCommand,      // REP 07
  kUnsupportedAddressType,  // REP 08
  kNoAcceptableMethod,      // 05 FF
  kAuthFailed,
  kClientDenied,        // a client rule blocked the source
  kPolicyDenied,        // REP 02
  kLimitSessions,       // a session cap was reached
  kResolveFailed,       // REP 04
  kNetworkUnreachable,  // REP 03
  kHostUnreachable,     // REP 04
  kConnectionRefused,   // REP 05
  kTtlExpired,          // REP 06
  kConnectTimeout,      // REP 04 (RFC 1928 has no better code)
  kConnectFailed,       // REP 01
  kBindTimeout,         // BIND: the expected peer did not connect in time (REP 04)
  kBindFailed,          // BIND: no listening port could be opened (REP 01)
  kLimitBinds,          // BIND: the user\'s cap on open BINDs (REP 02)
  kSocks4Disabled,      // a SOCKS4 request on a listener without SOCKS4 (00 5B)
  kTlsHandshakeFailed,  // TLS listener: the handshake failed (no SOCKS byte was exchanged)
  kTlsHandshakeTimeout,
  kTlsError,  // a bad TLS record after the handshake
  kShutdown,  // the gateway stopped while the session ran
  // An admin closed the user's sessions (POST /sessions/close).
  kAdminClosed,
  kBusy,  // the blocking pool was full
  kInternalError,
  kGssProtection,     // GSS-API: a token failed to verify or had the wrong protection (closed)
  kAuditUnavailable,  // the session_start record could not be made durable (fail-closed, REP 01)
  // A reload's policy (or password file) no longer allows the running session.
  kRevoked,
  kLimitQuota,        // a byte quota of the user is used up (REP 02 at start, or closed)
  kLimitNewSessions,  // the user's new sessions per minute (REP 02)
  kCount_,
};

struct CloseInfo {
  std::string_view token;  // audit close_reason, metrics label
  socks5::Reply reply;     // what the client is told if no reply was sent yet
};

const CloseInfo& describe(CloseReason r);
inline std::string_view to_string(CloseReason r) { return describe(r).token; }

// Maps a failed upstream connect() / splice() error to a reason.
CloseReason from_connect_error(const std::error_code& ec);
// Maps an error reading a client message during negotiation: EOF is a normal close, a reset
// is the client's, a message that is malformed or over its bound is a protocol error.
CloseReason from_client_read_error(const std::error_code& ec);

// Process-wide counters, one per reason (relaxed atomics; read by metrics and tests).
class CloseCounters {
 public:
  void add(CloseReason r) { c_[static_cast<size_t>(r)].fetch_add(1, std::memory_order_relaxed); }
  uint64_t get(CloseReason r) const {
    return c_[static_cast<size_t>(r)].load(std::memory_order_relaxed);
  }

 private:
  std::array<std::atomic<uint64_t>, static_cast<size_t>(CloseReason::kCount_)> c_{};
};

}  // namespace socksgate::gateway
