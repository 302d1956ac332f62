#include "auth/pam/monitor_client.h"

#include <unistd.h>

#include <asio/executor_work_guard.hpp>
#include <asio/local/stream_protocol.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <asio/write.hpp>
#include <deque>
#include <map>
#include <mutex>
#include <thread>

#include "auth/pam/monitor.h"
#include "crypto/parse.h"
#include "crypto/secure.h"

namespace socksgate::auth::pam {
namespace {
std::atomic<MonitorClient*> g_client{nullptr};
using Clock = std::chrono::steady_clock;
// Our own deadline is the monitor's plus this margin: normally the monitor answers "timeout".
constexpr auto kClientMargin = std::chrono::seconds(5);
constexpr auto kLinkTimeout = std::chrono::seconds(5);
constexpr auto kRetryBackoff = std::chrono::milliseconds(200);

AuthResult status_only(PamStatus s) {
  AuthResult r;
  r.status = s;
  return r;
}
}  // namespace

MonitorClient* monitor_client() { return g_client.load(); }
void set_monitor_client(MonitorClient* c) { g_client.store(c); }

struct MonitorClient::Impl {
  struct Pending {
    std::shared_ptr<Op> op;
    AuthRequest req;       // until sent (then the password is zeroed)
    uint32_t wire_id = 0;  // 0 = not sent yet
    std::unique_ptr<asio::steady_timer> timer;
  };

  Impl(MonitorClient* o, int fd) : owner(o), control_fd(fd), work(io.get_executor()) {}

  // The thread starts with the first request, on that caller's credentials (after the
  // privilege drop), not when the client is made.
  void start() {
    std::call_once(started, [this] { thread = std::thread([this] { io.run(); }); });
  }

  void log(bool error, const std::string& s) const {
    if (logger) logger(error, s);
  }

  void add(std::shared_ptr<Op> op, AuthRequest req, uint64_t token) {
    if (stopped || pending.size() >= kMaxPending) {
      crypto::secure_zero(req.password.data(), req.password.size());
      op->complete(status_only(stopped ? PamStatus::kUnavailable : PamStatus::kBusy));
      return;
    }
    auto t = std::clamp(std::chrono::milliseconds(req.timeout_ms), kMinTimeout, kMaxTimeout);
    Pending p{std::move(op), req, 0, std::make_unique<asio::steady_timer>(io)};
    crypto::secure_zero(req.password.data(), req.password.size());  // the copy lives on
    p.timer->expires_after(t + kClientMargin);
    p.timer->async_wait([this, token](std::error_code ec) {
      if (!ec) finish(token, status_only(PamStatus::kTimeout));
    });
    pending.emplace(token, std::move(p));
    unsent.push_back(token);
    pump();
  }

  // Completes and forgets one request (no-op if it already completed).
  void finish(uint64_t token, AuthResult r) {
    auto it = pending.find(token);
    if (it == pending.end()) return;
    Pending p = std::move(it->second);
    pending.erase(it);
    if (p.wire_id != 0) wire_to_token.erase(p.wire_id);
    crypto::secure_zero(p.req.password.data(), p.req.password.size());
    p.timer->cancel();
    p.op->complete(std::move(r));
  }

  // Sends what waits, opening a link first if there is none.
  void pump() {
    if (!link && !open_link()) {
      while (!unsent.empty()) {
        uint64_t t = unsent.front();
        unsent.pop_front();
        finish(t, status_only(PamStatus::kUnavailable));
      }
      return;
    }
    while (!unsent.empty()) {
      uint64_t t = unsent.front();
      unsent.pop_front();
      auto it = pending.find(t);
      if (it == pending.end()) continue;
      Pending& p = it->second;
      p.req.id = ++next_wire;
      auto frame = encode_auth(p.req);
      crypto::secure_zero(p.req.password.data(), p.req.password.size());
      if (frame.empty()) {
        finish(t, status_only(PamStatus::kError));
        continue;
      }
      p.wire_id = p.req.id;
      wire_to_token[p.wire_id] = t;
      write(std::move(frame));
    }
  }

  bool open_link() {
    if (stopped || Clock::now() < retry_after) return false;
    pid_t pid = -1;
    int fd = request_monitor_link(control_fd, &pid, kLinkTimeout);
    if (fd < 0) {
      retry_after = Clock::now() + kRetryBackoff;
      log(true, std::string("auth monitor: cannot start a monitor: ") + std::strerror(errno));
      return false;
    }
    link = std::make_unique<asio::local::stream_protocol::socket>(io);
    std::error_code ec;
    link->assign(asio::local::stream_protocol(), fd, ec);
    if (ec) {
      ::close(fd);
      link.reset();
      retry_after = Clock::now() + kRetryBackoff;
      return false;
    }
    ++generation;
    next_wire = 0;
    hello_ok = false;
    rbuf.clear();
    owner->monitor_pid_.store(pid);
    owner->started_.fetch_add(1);
    log(false, "auth monitor started pid=" + std::to_string(pid));
    write(encode_hello());
    read(generation);
    return true;
  }

  void link_down(const std::string& why) {
    if (!link) return;
    std::error_code ignored;
    link->close(ignored);
    link.reset();
    ++generation;
    writes.clear();
    writing = false;
    log(true, "auth monitor pid=" + std::to_string(owner->monitor_pid_.load()) + " link lost (" +
                  why + "); starting a new monitor");
    owner->monitor_pid_.store(-1);
    std::vector<uint64_t> lost;
    for (const auto& [w, t] : wire_to_token) lost.push_back(t);
    for (uint64_t t : lost) finish(t, status_only(PamStatus::kUnavailable));
    wire_to_token.clear();
    // Restart now (the supervisor rate-limits), so the next login finds a monitor running.
    retry_after = Clock::now();
    if (!stopped && open_link()) pump();
  }

  void write(std::vector<uint8_t> frame) {
    writes.push_back(std::move(frame));
    if (!writing) write_next(generation);
  }

  void write_next(uint64_t gen) {
    if (writes.empty() || !link || gen != generation) {
      writing = false;
      return;
    }
    writing = true;
    asio::async_write(*link, asio::buffer(writes.front()), [this, gen](std::error_code ec, size_t) {
      if (gen != generation) return;
      auto& f = writes.front();
      crypto::secure_zero(f.data(), f.size());
      writes.pop_front();
      if (ec) return link_down(ec.message());
      write_next(gen);
    });
  }

  void read(uint64_t gen) {
    link->async_read_some(asio::buffer(tmp), [this, gen](std::error_code ec, size_t n) {
      if (gen != generation) return;
      if (ec) return link_down(ec == asio::error::eof ? "monitor closed the link" : ec.message());
      rbuf.insert(rbuf.end(), tmp.begin(), tmp.begin() + static_cast<std::ptrdiff_t>(n));
      size_t off = 0;
      for (;;) {
        Reply rep;
        size_t used = 0;
        auto perr = parse_reply(std::span<const uint8_t>(rbuf).subspan(off), &rep, &used);
        if (perr == crypto::ParseErrc::kNeedMore) break;
        if (perr) return link_down("malformed reply: " + perr.message());
        off += used;
        if (rep.type == FrameType::kHelloOk) {
          if (hello_ok || rep.version != kProtocolVersion) return link_down("unexpected HELLO_OK");
          hello_ok = true;
          continue;
        }
        if (!hello_ok || rep.result.id == 0 || rep.result.id > next_wire) {
          return link_down("reply to a request never sent");
        }
        auto it = wire_to_token.find(rep.result.id);
        if (it == wire_to_token.end()) continue;  // cancelled or timed out meanwhile
        finish(it->second, std::move(rep.result));
      }
      rbuf.erase(rbuf.begin(), rbuf.begin() + static_cast<std::ptrdiff_t>(off));
      read(gen);
    });
  }

  void stop() {
    stopped = true;
    std::vector<uint64_t> all;
    for (const auto& [t, p] : pending) all.push_back(t);
    for (uint64_t t : all) finish(t, status_only(PamStatus::kUnavailable));
    unsent.clear();
    if (link) {
      std::error_code ignored;
      link->close(ignored);
      link.reset();
    }
    ++generation;
    work.reset();
  }

  MonitorClient* owner;
  int control_fd;
  asio::io_context io{1};
  asio::executor_work_guard<asio::io_context::executor_type> work;
  std::once_flag started;
  std::thread thread;
  std::function<void(bool, const std::string&)> logger;  // set before the first request
  // Everything below is touched on `thread` only.
  bool stopped = false;
  std::unique_ptr<asio::local::stream_protocol::socket> link;
  uint64_t generation = 0;  // bumped per link: late callbacks of a dead link are ignored
  uint32_t next_wire = 0;
  bool hello_ok = false;
  Clock::time_point retry_after{};
  std::map<uint64_t, Pending> pending;
  std::map<uint32_t, uint64_t> wire_to_token;
  std::deque<uint64_t> unsent;
  std::deque<std::vector<uint8_t>> writes;
  bool writing = false;
  std::array<uint8_t, 16384> tmp{};
  std::vector<uint8_t> rbuf;
};

MonitorClient::MonitorClient(int control_fd) : impl_(std::make_unique<Impl>(this, control_fd)) {}

MonitorClient::~MonitorClient() {
  shutdown();
  ::close(impl_->control_fd);
}

void MonitorClient::set_logger(std::function<void(bool, const std::string&)> log) {
  impl_->logger = std::move(log);
}

void MonitorClient::log(bool error, const std::string& text) const { impl_->log(error, text); }

void MonitorClient::shutdown() {
  asio::post(impl_->io, [this] { impl_->stop(); });
  impl_->start();  // runs the stop (and whatever waits) if no request ever started it
  if (impl_->thread.joinable()) impl_->thread.join();
}

void MonitorClient::submit(std::shared_ptr<Op> op, AuthRequest req, uint64_t token) {
  asio::post(impl_->io, [this, op = std::move(op), req = std::move(req), token]() mutable {
    impl_->add(std::move(op), std::move(req), token);
  });
  impl_->start();
}

void MonitorClient::cancel(uint64_t token) {
  asio::post(impl_->io, [this, token] { impl_->finish(token, status_only(PamStatus::kTimeout)); });
}

}  // namespace socksgate::auth::pam
