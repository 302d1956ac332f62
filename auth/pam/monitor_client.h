#pragma once
// The gateway's side of the auth-monitor link (auth/pam/monitor.h): sends AUTH frames and
// completes each waiting session with its RESULT.
//
// One client per process, created before the privilege drop with the supervisor's control
// socket; it owns one thread (its own io_context, started by the first request) that does all
// link I/O, so sessions on any
// I/O thread can call authenticate() and are resumed on their own executor. The link is
// opened on first use; when it dies (EOF, a malformed reply, the monitor killed) every
// request in flight on it completes with kUnavailable and the next request (or a retry after
// a short backoff) asks the supervisor for a fresh monitor. Each request has a deadline on
// this side too (its PAM timeout plus a margin), and cancelling the awaiting coroutine (the
// session's negotiation deadline) completes it at once with kTimeout. Bounded: at most
// kMaxPending requests wait; beyond that they complete with kBusy.

#include <sys/types.h>

#include <asio/async_result.hpp>
#include <asio/awaitable.hpp>
#include <asio/bind_cancellation_slot.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/dispatch.hpp>
#include <asio/io_context.hpp>
#include <asio/use_awaitable.hpp>
#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "auth/pam/monitor_protocol.h"

namespace socksgate::auth::pam {

inline constexpr size_t kMaxPending = 4096;

class MonitorClient {
 public:
  // Takes ownership of `control_fd` (the supervisor's control socket).
  explicit MonitorClient(int control_fd);
  ~MonitorClient();
  MonitorClient(const MonitorClient&) = delete;
  MonitorClient& operator=(const MonitorClient&) = delete;

  // One PAM transaction. `req.id` is assigned here. Thread-safe; resumes on the caller's
  // executor. The password is zeroed once sent.
  asio::awaitable<AuthResult> authenticate(AuthRequest req);

  // The current monitor's pid (-1 when no link is up): for logs and tests.
  pid_t monitor_pid() const { return monitor_pid_.load(); }
  // How many monitors this client has started (restarts included).
  uint64_t monitors_started() const { return started_.load(); }
  // Where the client reports monitor starts and link failures, and the PAM back-end the
  // messages PAM modules sent (default: nowhere). Set before the first request; log() may
  // then be called from any thread.
  void set_logger(std::function<void(bool error, const std::string&)> log);
  void log(bool error, const std::string& text) const;
  // Completes every waiting request with kUnavailable and stops the client's thread. Call
  // after the sessions' event loops have stopped, before they are destroyed.
  void shutdown();

 private:
  struct Op {
    virtual ~Op() = default;
    virtual void complete(AuthResult r) = 0;
  };
  template <typename Handler>
  struct HandlerOp;
  struct Impl;

  void submit(std::shared_ptr<Op> op, AuthRequest req, uint64_t token);
  void cancel(uint64_t token);
  uint64_t next_token() { return token_.fetch_add(1) + 1; }

  std::unique_ptr<Impl> impl_;
  std::atomic<pid_t> monitor_pid_{-1};
  std::atomic<uint64_t> started_{0};
  std::atomic<uint64_t> token_{0};
};

// The process's client, if the gateway started one (nullptr in `validate`, `explain`, tests
// without a monitor). Set once at start-up, before any session exists.
MonitorClient* monitor_client();
void set_monitor_client(MonitorClient* c);

template <typename Handler>
struct MonitorClient::HandlerOp final : MonitorClient::Op {
  explicit HandlerOp(Handler h) : handler(std::move(h)) {}
  void complete(AuthResult r) override {
    auto ex = asio::get_associated_executor(handler);
    asio::dispatch(ex, [h = std::move(handler), r = std::move(r)]() mutable {
      asio::get_associated_cancellation_slot(h).clear();
      std::move(h)(std::move(r));
    });
  }
  Handler handler;
};

inline asio::awaitable<AuthResult> MonitorClient::authenticate(AuthRequest req) {
  // Named, not a temporary inside co_await (GCC 12 destroys those twice).
  auto initiation = [this, req = std::move(req)](auto handler) mutable {
    uint64_t token = next_token();
    auto slot = asio::get_associated_cancellation_slot(handler);
    if (slot.is_connected()) {
      slot.assign([this, token](asio::cancellation_type) { cancel(token); });
    }
    std::shared_ptr<Op> op = std::make_shared<HandlerOp<decltype(handler)>>(std::move(handler));
    submit(std::move(op), std::move(req), token);
  };
  AuthResult r = co_await asio::async_initiate<decltype(asio::use_awaitable), void(AuthResult)>(
      std::move(initiation), asio::use_awaitable);
  co_return r;
}

}  // namespace socksgate::auth::pam
