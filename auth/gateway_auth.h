#pragma once
// GatewayAuth is the client side of one RFC 1928 method: how the agent signs on to a gateway,
// on the TLS channel, after the gateway selected this method.
//
// One instance for the life of the agent (built from its config), shared by every session: it
// holds the credentials and nothing per session (a method that needs per-session state, such
// as a GSS-API context, keeps it in the coroutine frame of authenticate()). authenticate() is
// const and runs on the session's executor. A gateway that refuses the credentials is an
// outcome with `rejected` set, not an error; std::error_code is for I/O failures and
// malformed answers.
//
// Adding a method: one class in the method's folder, one line in make_gateway_auth()
// (auth/gateway_auth.cc).

#include <asio/awaitable.hpp>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>

#include "crypto/channel.h"

namespace socksgate::auth {

struct GatewayAuthOutcome {
  bool rejected = false;  // the gateway refused the credentials (the session must not retry)
  std::string detail;     // one line for the agent's log, never a credential
  // Set on success when the method protects what follows (GSS-API per-message protection):
  // the session talks over this channel, which wraps the one authenticate() was given.
  std::unique_ptr<crypto::Channel> channel;
  std::string protection;      // gssapi: the level the gateway granted
  bool channel_bound = false;  // gssapi: bindings were sent (the gateway checks them)
};

class GatewayAuth {
 public:
  virtual ~GatewayAuth() = default;
  virtual uint8_t method_code() const = 0;
  virtual std::string_view name() const = 0;
  // Who we sign on as, for log lines ("alice", "" for none).
  virtual std::string_view user() const = 0;
  // Runs the subnegotiation (after the gateway's method selection).
  virtual asio::awaitable<std::error_code> authenticate(crypto::Channel& channel,
                                                        GatewayAuthOutcome* outcome) const = 0;
};

// What the agent's config says about signing on. The password has already been read from its
// source (file, environment variable, prompt); make_gateway_auth() takes it over and the
// GatewayAuth wipes it when destroyed.
struct GatewayAuthSettings {
  std::string method;  // "userpass" | "gssapi" | "none"
  std::string user;
  std::string password;
  // gssapi
  std::string service;                         // "rcmd@host" or a principal with '/'
  std::string ccache;                          // empty = the default ticket cache
  std::string protection = "confidentiality";  // | "integrity" | "none"
  bool channel_binding = true;
};

// The one place a method name becomes an implementation. Returns null for an unknown method.
std::unique_ptr<GatewayAuth> make_gateway_auth(GatewayAuthSettings settings);
// Method names make_gateway_auth() knows, for config errors ("gssapi, none, userpass").
std::string_view gateway_auth_methods();

}  // namespace socksgate::auth
