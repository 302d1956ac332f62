#pragma once
// The server: N I/O threads (one io_context each; a session lives on one of them), the
// listeners, and the control thread that handles signals:
//   SIGHUP  re-read config, policy and password file; validate; swap atomically. A bad file
//           keeps the old configuration and logs why. Listeners are added/removed to match.
//   SIGUSR1 reopen the audit log file (log rotation).
//   SIGTERM stop accepting, let running sessions finish for limits.drain_timeout, close the
//   SIGINT  rest, exit 0.

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "gateway/config.h"

namespace socksgate::gateway {

struct ServerOptions {
  std::string config_path;  // empty = embedded default (no reload from file)
  std::string ready_file;   // written once listening: {"pid":…, "listeners":[…]}
  // The login throttle the initial snapshot was loaded with (kept across reloads).
  std::shared_ptr<auth::userpass::LoginThrottle> throttle;
  // Runs once, after the listeners are bound, the audit log is open and the ready file is
  // written, before the I/O threads start (nothing is served before): the privilege drop.
  std::function<void()> after_bind;
};

class Server {
 public:
  Server(Snapshot initial, ServerOptions opts);
  ~Server();
  // Binds the listeners (throws std::runtime_error with a clear message on failure), then
  // serves until SIGTERM/SIGINT. Returns the process exit code.
  int run();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace socksgate::gateway
