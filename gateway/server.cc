#include "gateway/server.h"

#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/executor_work_guard.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/ip/v6_only.hpp>
#include <asio/post.hpp>
#include <asio/signal_set.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <map>
#include <thread>
#include <tuple>

#include "gateway/admin.h"
#include "gateway/log.h"
#include "gateway/ready_file.h"
#include "gateway/server_state.h"
#include "gateway/session.h"
#include "gateway/tcp_tuning.h"

namespace socksgate::gateway {
namespace {
constexpr auto kUse = asio::experimental::as_tuple(asio::use_awaitable);
// A listener's identity across reloads: its configured address and port, plus its name when
// the port is 0 (any free port), so that a reload keeps rather than re-binds it.
using Key = std::tuple<std::string, uint16_t, std::string>;
Key key_of(const ListenerConfig& lc) { return {lc.address, lc.port, lc.port == 0 ? lc.name : ""}; }
}  // namespace

struct Server::Impl {
  // One listening address: an acceptor per I/O thread (SO_REUSEPORT), so a connection is
  // accepted on the thread that will run its session — no hand-off between threads, which on
  // small VMs costs more than the accept itself. Each acceptor is only touched on its own
  // thread (closing is posted there).
  struct Listener {
    std::string name;
    asio::ip::tcp::endpoint bound;
    std::vector<std::unique_ptr<asio::ip::tcp::acceptor>> acceptors;  // [i] runs on ios[i]
    std::string congestion_control;  // set on the acceptors; accepted sockets inherit it
  };

  // Accepted connections inherit a listening socket's congestion control. Going back to the
  // default on reload means naming the kernel's current default.
  static void set_listener_congestion(Listener& l, const std::string& name) {
    if (name == l.congestion_control) return;
    std::string want = name.empty() ? kernel_congestion_controls().default_name : name;
    for (auto& a : l.acceptors) {
      apply_congestion_control(a->native_handle(), want, "listener \"" + l.name + "\"");
    }
    l.congestion_control = name;
  }

  void close_listener(Listener& l) {
    for (size_t i = 0; i < l.acceptors.size(); ++i) {
      asio::ip::tcp::acceptor* a = l.acceptors[i].get();
      asio::post(*ios[i], [a] {
        std::error_code ec;
        a->close(ec);
      });
    }
  }

  Impl(Snapshot initial, ServerOptions o)
      : opts(std::move(o)),
        state(threads_or_cores(initial.config->threads.blocking),
              initial.config->threads.blocking_queue, initial.config->threads.resolver),
        signals(control, SIGHUP, SIGTERM, SIGINT) {
    // Quota usage of earlier runs; a damaged file stops the start here (limits.h says why),
    // before any thread (the audit writer's) exists.
    state_file = initial.config->limits.state_file;
    if (!state_file.empty()) state.limits.load(state_file);
    signals.add(SIGUSR1);
    if (opts.throttle) state.throttle = opts.throttle;
    size_t n = threads_or_cores(initial.config->threads.io);
    for (size_t i = 0; i < n; ++i) ios.push_back(std::make_unique<asio::io_context>(1));
    open_audit(*initial.config);
    configure_metrics(initial);
    state.snapshot.store(std::make_shared<const Snapshot>(std::move(initial)));
  }

  // Label sets the configuration decides: listeners, rule ids, users with their own series.
  void configure_metrics(const Snapshot& snap) {
    std::vector<std::string> names;
    for (const auto& l : snap.config->listeners) names.push_back(l.name);
    state.metrics.configure(
        names, snap.policy->rule_ids(),
        snap.config->admin ? snap.config->admin->metrics_users : std::vector<std::string>{});
  }

  static size_t threads_or_cores(uint32_t n) {
    if (n != 0) return n;
    unsigned c = std::thread::hardware_concurrency();
    return c == 0 ? 2 : c;
  }

  // One AuditLog per file, ever: two writers must never share one chain. A reload that names
  // another file opens a new log (sessions that hold the old one finish their records there);
  // one that names a file a live log already writes (the current one, or an older one that
  // running sessions still hold) reuses that log and changes its other settings in place.
  void open_audit(const Config& cfg) {
    std::shared_ptr<AuditLog> same;
    for (auto& w : audit_logs) {
      auto a = w.lock();
      if (a && a->config().file == cfg.audit.file) same = a;
    }
    if (same) {
      const AuditConfig& was = same->config();
      if (was.key_file != cfg.audit.key_file) {
        log::warn("reload: a new audit.key_file for ", cfg.audit.file,
                  " takes effect at restart (rotate the log first)");
      }
      if (was.epoch_records != cfg.audit.epoch_records ||
          was.epoch_seconds != cfg.audit.epoch_seconds) {
        log::warn("reload: audit.epoch_records / epoch_seconds take effect at restart");
      }
      same->reconfigure(cfg.audit);
      audit_log = same;
    } else {
      // Without root but with capabilities, no thread may start before they are dropped.
      audit_log = std::make_shared<AuditLog>(cfg.audit, &state.metrics,
                                             ::geteuid() == 0 || threads_allowed);
      audit_logs.push_back(audit_log);
    }
    state.audit.store(audit_log);
  }

  // Opens listeners to match `cfg`: keeps those whose address/port is unchanged, opens new
  // ones, closes removed ones. Throws on a bind failure of a new listener.
  void sync_listeners(const Config& cfg) {
    std::map<Key, std::unique_ptr<Listener>> next_set;
    for (const auto& lc : cfg.listeners) {
      Key k = key_of(lc);
      auto it = listeners.find(k);
      if (it != listeners.end()) {
        it->second->name = lc.name;
        set_listener_congestion(*it->second, lc.congestion_control);
        next_set.emplace(k, std::move(it->second));
        listeners.erase(it);
        continue;
      }
      auto l = std::make_unique<Listener>();
      asio::ip::tcp::endpoint ep(asio::ip::make_address(lc.address), lc.port);
      std::error_code ec;
      for (size_t i = 0; i < ios.size() && !ec; ++i) {
        auto a = std::make_unique<asio::ip::tcp::acceptor>(*ios[i]);
        a->open(ep.protocol(), ec);
        if (!ec) a->set_option(asio::socket_base::reuse_address(true), ec);
        if (!ec) {
          int one = 1;
          if (::setsockopt(a->native_handle(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) {
            ec = std::error_code(errno, std::system_category());
          }
        }
        if (!ec && ep.address().is_v6()) a->set_option(asio::ip::v6_only(true), ec);
        if (!ec) a->bind(ep, ec);
        if (!ec) a->listen(4096, ec);
        // Port 0: the first acceptor picks the port, the others join it.
        if (!ec && i == 0) ep.port(a->local_endpoint().port());
        if (!ec) l->acceptors.push_back(std::move(a));
      }
      if (ec) {
        throw std::runtime_error("listener \"" + lc.name + "\": cannot listen on " + lc.address +
                                 " port " + std::to_string(lc.port) + ": " + ec.message());
      }
      l->name = lc.name;
      l->bound = ep;
      set_listener_congestion(*l, lc.congestion_control);
      log::info("listening name=", lc.name, " address=", l->bound.address().to_string(),
                " port=", l->bound.port(), " methods=", join(lc.methods));
      Listener* raw = l.get();
      next_set.emplace(k, std::move(l));
      for (size_t i = 0; i < raw->acceptors.size(); ++i) {
        asio::co_spawn(*ios[i], accept_loop(raw, i), asio::detached);
      }
    }
    for (auto& [k, l] : listeners) {
      log::info("closing listener name=", l->name);
      close_listener(*l);
      retired.push_back(std::move(l));
    }
    listeners = std::move(next_set);
  }

  static std::string join(const std::vector<std::string>& v) {
    std::string s;
    for (const auto& x : v) s += (s.empty() ? "" : ",") + x;
    return s;
  }

  asio::awaitable<void> accept_loop(Listener* l, size_t index) {
    asio::io_context& io = *ios[index];
    asio::ip::tcp::acceptor& acceptor = *l->acceptors[index];
    asio::steady_timer backoff(io);
    for (;;) {
      asio::ip::tcp::endpoint peer;
      auto [ec, sock] = co_await acceptor.async_accept(peer, kUse);
      if (ec == asio::error::operation_aborted || !acceptor.is_open()) co_return;
      if (ec) {
        // EMFILE and friends: say so and back off instead of spinning.
        log::warn("accept on ", l->name, ": ", ec.message());
        backoff.expires_after(std::chrono::milliseconds(100));
        co_await backoff.async_wait(kUse);
        continue;
      }
      uint64_t id = ++state.sessions_total;
      auto snap = state.snapshot.load();
      asio::co_spawn(io, run_session(state, std::move(snap), l->name, std::move(sock), peer, id),
                     [this](std::exception_ptr e) {
                       if (!e) return;
                       state.counters.add(CloseReason::kInternalError);
                       try {
                         std::rethrow_exception(e);
                       } catch (const std::exception& ex) {
                         log::error("session failed: ", ex.what());
                       }
                     });
    }
  }

  void write_ready_file() {
    if (opts.ready_file.empty()) return;
    std::vector<ReadyListener> ready;
    for (const auto& [k, l] : listeners) ready.push_back({l->name, l->bound});
    std::optional<ReadyListener> admin_ready;
    if (auto a = admin.bound()) {
      admin_ready = ReadyListener{
          "admin", asio::ip::tcp::endpoint(asio::ip::make_address(a->first), a->second)};
    }
    gateway::write_ready_file(opts.ready_file, ready, admin_ready ? &*admin_ready : nullptr);
  }

  void reload() {
    if (opts.config_path.empty()) {
      log::warn("reload: running on the embedded default configuration; nothing to re-read");
      return;
    }
    try {
      Snapshot snap = load_snapshot(opts.config_path, state.throttle);
      sync_listeners(*snap.config);
      admin.apply(snap.config->admin ? &*snap.config->admin : nullptr);
      open_audit(*snap.config);
      configure_metrics(snap);
      if (snap.config->limits.state_file != state_file) {
        log::warn("reload: a new limits.state_file takes effect at restart (still writing ",
                  state_file.empty() ? std::string("none") : state_file, ")");
      }
      state.snapshot.store(std::make_shared<const Snapshot>(std::move(snap)));
      write_ready_file();
      state.metrics.reload_succeeded();
      // Running sessions are held to the new policy (and password file): those it no longer
      // allows close with reason "revoked" (after policy.revoke_grace_s).
      size_t checked = state.sessions.recheck_all();
      log::info("reload: configuration ", opts.config_path, " loaded; re-checking ", checked,
                " running sessions");
    } catch (const std::exception& e) {
      state.metrics.reload_failed();
      log::error("reload failed, keeping the previous configuration: ", e.what());
    }
  }

  asio::awaitable<void> drain() {
    state.draining.store(true);
    for (auto& [k, l] : listeners) close_listener(*l);
    auto timeout = state.snapshot.load()->config->limits.drain_timeout;
    log::info("draining: ", state.sessions.active(), " sessions, up to ", timeout.count(), " s");
    asio::steady_timer t(control);
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (state.sessions.active() > 0 && std::chrono::steady_clock::now() < deadline) {
      t.expires_after(std::chrono::milliseconds(50));
      co_await t.async_wait(kUse);
    }
    if (size_t left = state.sessions.active(); left > 0) {
      log::info("drain timeout: closing ", left, " sessions");
      state.sessions.close_all();
      auto hard = std::chrono::steady_clock::now() + std::chrono::seconds(5);
      while (state.sessions.active() > 0 && std::chrono::steady_clock::now() < hard) {
        t.expires_after(std::chrono::milliseconds(20));
        co_await t.async_wait(kUse);
      }
    }
    stopping = true;
    for (auto& io : ios) io->stop();
    control.stop();
  }

  // Quota usage goes to limits.state_file every few seconds when it changed, and at the end.
  bool save_limits() {
    if (state_file.empty()) return true;
    std::string err;
    if (state.limits.save(state_file, &err)) {
      limits_save_failing = false;
      return true;
    }
    if (!limits_save_failing) log::error("limits.state_file: ", err, " (will retry)");
    limits_save_failing = true;
    return false;
  }
  asio::awaitable<void> limits_saver() {
    asio::steady_timer t(control);
    for (;;) {
      t.expires_after(kLimitsSaveInterval);
      auto [ec] = co_await t.async_wait(kUse);
      if (ec) co_return;
      if (state.limits.dirty()) save_limits();
    }
  }

  // Rules with "when" windows allow a session only while the clock is inside one. Windows are
  // whole minutes (in zones whose offsets are whole minutes), so just after every minute
  // boundary running sessions are decided again, as after a reload: those no rule allows any
  // more close with reason "revoked" (after policy.revoke_grace_s).
  asio::awaitable<void> window_clock() {
    asio::steady_timer t(control);
    for (;;) {
      const auto now = std::chrono::system_clock::now();
      const auto next = std::chrono::floor<std::chrono::minutes>(now) + std::chrono::minutes(1);
      t.expires_after(next - now + kWindowCheckDelay);
      auto [ec] = co_await t.async_wait(kUse);
      if (ec || stopping) co_return;
      if (state.snapshot.load()->policy->uses_time_windows()) state.sessions.recheck_all();
    }
  }

  asio::awaitable<void> signal_loop() {
    for (;;) {
      auto [ec, sig] = co_await signals.async_wait(kUse);
      if (ec) co_return;
      if (sig == SIGHUP) {
        reload();
      } else if (sig == SIGUSR1) {
        log::info("signal ", sig, ": reopening the audit log");
        if (audit_log) audit_log->reopen();
      } else {
        log::info("signal ", sig, ": stopping");
        co_await drain();
        co_return;
      }
    }
  }

  int run() {
    sync_listeners(*state.snapshot.load()->config);
    if (const auto& a = state.snapshot.load()->config->admin) admin.apply(&*a);
    write_ready_file();
    if (opts.after_bind) opts.after_bind();
    threads_allowed = true;
    for (auto& w : audit_logs) {
      if (auto a = w.lock()) a->start();
    }
    // The state file must stay writable after the privilege drop: find out now, not at the
    // first save.
    if (std::string err; !state_file.empty() && !state.limits.save(state_file, &err)) {
      log::error("limits.state_file: ", err,
                 " (its directory must be writable by the user the gateway runs as); stopping");
      for (auto& w : audit_logs) {
        if (auto a = w.lock()) a->shutdown();
      }
      return 1;
    }
    std::vector<std::thread> threads;
    std::vector<asio::executor_work_guard<asio::io_context::executor_type>> guards;
    for (auto& io : ios) guards.emplace_back(io->get_executor());
    for (auto& io : ios) threads.emplace_back([&io] { io->run(); });
    asio::co_spawn(control, signal_loop(), asio::detached);
    if (!state_file.empty()) asio::co_spawn(control, limits_saver(), asio::detached);
    asio::co_spawn(control, window_clock(), asio::detached);
    log::info("socksgate ready: ", ios.size(), " I/O threads, config ",
              opts.config_path.empty() ? "<embedded>" : opts.config_path);
    // Signals were blocked before any thread started (main.cc): take them here, on the
    // control thread only. One that arrived meanwhile is pending and is delivered now.
    sigset_t control_signals;
    sigemptyset(&control_signals);
    sigaddset(&control_signals, SIGHUP);
    sigaddset(&control_signals, SIGTERM);
    sigaddset(&control_signals, SIGINT);
    sigaddset(&control_signals, SIGUSR1);
    pthread_sigmask(SIG_UNBLOCK, &control_signals, nullptr);
    control.run();
    for (auto& io : ios) io->stop();
    for (auto& t : threads) t.join();
    save_limits();
    // Write what is queued and stop every audit writer while the I/O contexts still exist (a
    // writer completes a commit by posting to a session's context).
    for (auto& w : audit_logs) {
      if (auto a = w.lock()) a->shutdown();
    }
    log::info("stopped");
    return 0;
  }

  // Declaration order is destruction order, reversed: the control context (whose pending
  // accepts hold sockets of the I/O contexts) dies first, then the I/O contexts (whose
  // session frames point into state), then state.
  ServerOptions opts;
  ServerState state;
  std::vector<std::unique_ptr<asio::io_context>> ios;
  asio::io_context control{1};
  asio::signal_set signals;
  AdminServer admin{control, state};  // after control: its sockets belong to control
  std::map<Key, std::unique_ptr<Listener>> listeners;
  std::vector<std::unique_ptr<Listener>> retired;
  std::shared_ptr<AuditLog> audit_log;              // the current one
  bool threads_allowed = false;                     // after_bind has run
  std::vector<std::weak_ptr<AuditLog>> audit_logs;  // every one made (sessions may hold old ones)
  bool stopping = false;
  std::string state_file;  // limits.state_file as started (a reload does not move it)
  bool limits_save_failing = false;
  static constexpr auto kLimitsSaveInterval = std::chrono::seconds(2);
  // How long after a minute boundary the time windows are applied (timers may fire early by
  // the clock's granularity; this keeps the check on the new minute).
  static constexpr auto kWindowCheckDelay = std::chrono::milliseconds(50);
};

Server::Server(Snapshot initial, ServerOptions opts)
    : impl_(std::make_unique<Impl>(std::move(initial), std::move(opts))) {}
Server::~Server() = default;
int Server::run() { return impl_->run(); }

}  // namespace socksgate::gateway
