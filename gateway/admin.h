#pragma once
// The admin listener: a minimal HTTP/1.1 server for operators and monitoring, loopback by
// default (docs/metrics.md, docs/configuration.md "admin").
//
//   GET  /metrics                  Prometheus text format          (token when configured)
//   GET  /sessions                 live sessions as JSON           (token when configured)
//   POST /sessions/close?user=U    closes every session of U       (token when configured)
//   GET  /healthz                  200 while the process serves
//   GET  /readyz                   200 when accepting sessions, 503 while draining
//
// One request per connection (the reply says Connection: close), read under a deadline, with
// a bounded head and no request body; a bounded number of connections at a time. The token
// is compared in constant time. Everything runs on the server's control thread.
// The wire format (a strict, bounded, fuzzed request parser) is in gateway/admin_http.h.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "gateway/admin_http.h"

namespace asio {
class io_context;
}

namespace socksgate::gateway {

struct ServerState;
struct AdminConfig;

// The admin listener itself. Created and used on the control thread only.
class AdminServer {
 public:
  AdminServer(asio::io_context& io, ServerState& state);
  ~AdminServer();
  // Opens (or, when address or port changed, reopens) the listener for `cfg`; closes it when
  // cfg is null. Throws std::runtime_error when the address cannot be bound.
  void apply(const AdminConfig* cfg);
  // The bound address and port, when listening.
  std::optional<std::pair<std::string, uint16_t>> bound() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Client side, for `socksgate sessions|close-user|metrics`: one request to HOST:PORT (IP
// literal, "[v6]:port" accepted), a token sent as "Authorization: Bearer" when non-empty.
// Throws std::runtime_error (connection failure, timeout, malformed reply).
http::Response admin_request(const std::string& host_port, const std::string& method,
                             const std::string& target, const std::string& token,
                             int timeout_ms = 10000);

}  // namespace socksgate::gateway
