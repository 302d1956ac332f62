#pragma once
// The agent (`socksgate agent`): runs on the user's machine. Local applications speak plain
// SOCKS5 (no authentication: it listens on loopback only) or HTTP CONNECT to it; for each
// local session it opens a TLS connection to the gateway (certificate verified against a CA
// file and/or a pinned SHA-256 of its key, optional client certificate), signs on with the
// configured GatewayAuth, and relays CONNECT, BIND and UDP ASSOCIATE — UDP travels inside
// the TLS connection (docs/udp-over-tls.md).
//
// Threads: one io_context on the calling thread runs every session (a user's machine needs
// no more), so the shared state below (gateway health, session count) needs no locks. Name
// resolution runs on a small BlockingPool and resumes there.
//
// Reaching the gateway: when it is unreachable, sessions retry with exponential backoff
// within gateway.connect_timeout_ms; the schedule is shared, so the agent logs the outage
// once per backoff step, not once per session. Certificate and credential failures are not
// retried: one clear log line, and SOCKS REP 01/02 or HTTP 502/407 to the local client.

#include <memory>
#include <string>

#include "auth/gateway_auth.h"
#include "gateway/agent_config.h"

namespace socksgate::gateway {

struct AgentOptions {
  std::string ready_file;  // written once listening: {"pid":…, "listeners":[…]}
};

class Agent {
 public:
  // Builds the TLS client context: throws crypto::TlsError (unreadable CA, certificate or key,
  // a key that does not match its certificate) with a one-line reason.
  Agent(AgentConfig cfg, std::unique_ptr<const auth::GatewayAuth> auth, AgentOptions opts);
  ~Agent();
  // Binds the local listeners (throws std::runtime_error on failure), then serves until
  // SIGTERM/SIGINT. Returns the process exit code.
  int run();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace socksgate::gateway
