#pragma once
// Authenticator runs one RFC 1928 method's subnegotiation on an already-open channel.
//
// One instance per session; every call runs on the session's executor. Blocking library
// calls go through ctx.blocking. A peer that fails to authenticate is an AuthOutcome with
// ok == false, not an error; the returned std::error_code is for I/O failure only (EOF,
// reset, a message over its size bound, a malformed message).
//
// Authenticators never log or keep credentials: only the identity and a failure reason
// leave them.

#include <asio/awaitable.hpp>
#include <asio/ip/address.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

#include "crypto/blocking_pool.h"
#include "crypto/channel.h"

namespace socksgate::auth {

// RFC 1928 method codes.
inline constexpr uint8_t kMethodNone = 0x00;
inline constexpr uint8_t kMethodGssapi = 0x01;
inline constexpr uint8_t kMethodUserPass = 0x02;
inline constexpr uint8_t kMethodNoAcceptable = 0xFF;

// Who the peer is, once authenticated.
struct Identity {
  std::string user;                 // policy user name; empty = anonymous
  std::vector<std::string> groups;  // groups the mechanism knows of (policy adds its own)
  std::string method;               // "none", "userpass", "gssapi", ...
  std::string principal;            // gssapi: the full Kerberos principal (audit); else empty
  std::string protection;           // gssapi: "integrity" | "confidentiality" | "none"
  // gssapi: the context is bound to the TLS channel it came over (RFC 5056 channel binding).
  bool channel_bound = false;
};

struct AuthOutcome {
  bool ok = false;
  Identity identity;
  // Set on failure, a short token for audit and metrics: "bad_password", "unknown_user",
  // "throttled", "empty_password", "busy", ...
  std::string failure_reason;
  // The user name the peer claimed, for the audit record of a failure (never trusted).
  std::string claimed_user;
  // Set on failure when there is more to say than the reason: the GSS-API major/minor status
  // text, a framing error. For the audit record; never a credential.
  std::string failure_detail;
  // Set on success when the method protects what follows (GSS-API per-message protection):
  // from now on the session talks over this channel, which wraps the one authenticate() was
  // given (that one must outlive it).
  std::unique_ptr<crypto::Channel> channel;
};

// What a session hands an authenticator.
struct AuthContext {
  asio::ip::address client;
  std::string listener;
  crypto::BlockingPool* blocking = nullptr;
  // GSS-API: the least protection level (RFC 1961 values: 1 integrity, 2 confidentiality; 0
  // none) the policy's rules need for this identity, asked once the principal is mapped; the
  // granted level is raised to it. Unset = the listener's level only.
  std::function<uint8_t(const Identity&)> required_protection;
};

class Authenticator {
 public:
  virtual ~Authenticator() = default;
  virtual uint8_t method_code() const = 0;
  virtual std::string_view name() const = 0;
  // Runs the subnegotiation (after the method-selection reply has been sent).
  virtual asio::awaitable<std::error_code> authenticate(crypto::Channel& channel,
                                                        const AuthContext& ctx,
                                                        AuthOutcome* outcome) = 0;
};

}  // namespace socksgate::auth
