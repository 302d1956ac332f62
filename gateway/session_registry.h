#pragma once
// Live sessions: admission against the session caps (global, per source, per user), what the
// admin listener shows of each (GET /sessions) and a way to close them (drain on SIGTERM, an
// admin closing a user's sessions). Thread-safe: sessions on every I/O thread register here;
// one mutex, touched a few times per session (open, request, close), never per relayed byte:
// the relay adds to the session's byte counters (relaxed atomics) without it.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "gateway/close_reason.h"

namespace socksgate::gateway {

// What the admin listener shows of a live session.
struct SessionView {
  uint64_t id = 0;
  std::string listener, client, user, method, command, target;
  uint64_t bytes_up = 0, bytes_down = 0;
  std::chrono::steady_clock::duration age{};
};

class SessionRegistry {
 public:
  enum class Admit { kOk, kGlobalLimit, kSourceLimit };
  // Asks the session to end with the given reason; safe to call from any thread (it posts to
  // the session's executor).
  using Closer = std::function<void(CloseReason)>;
  using ByteCell = std::shared_ptr<std::atomic<uint64_t>>;
  // Asks the session to check itself against the configuration now in effect (after a
  // reload); safe to call from any thread (it posts to the session's executor).
  using Recheck = std::function<void()>;

  // What a session is known by from the start.
  struct Origin {
    std::string listener;
    std::string client;             // "address:port"
    ByteCell bytes_up, bytes_down;  // the relay adds to them as it writes
  };

  // Registers session `id` from `source`. 0 = no limit.
  Admit admit(uint64_t id, const std::string& source, uint32_t max_total, uint32_t max_per_source,
              Closer closer, Origin origin = {});
  // Records what the session asked for, once its request is read (for GET /sessions).
  void describe(uint64_t id, const std::string& user, const std::string& method,
                const std::string& command, const std::string& target);
  // Counts the session against `user`; false (and nothing counted) when the cap is reached.
  bool admit_user(uint64_t id, const std::string& user, uint32_t max_per_user);
  // Counts an open BIND of session `id` against `user`; released by remove().
  bool admit_bind(uint64_t id, const std::string& user, uint32_t max_per_user);
  void remove(uint64_t id);
  // Set once the session relays (what it relays is then known); recheck_all() reaches it.
  void set_recheck(uint64_t id, Recheck recheck);
  // Asks every relaying session to re-check itself; returns how many were asked.
  size_t recheck_all();

  size_t active() const;
  size_t active_for_user(const std::string& user) const;
  // Asks every live session to close (they finish on their own threads).
  void close_all(CloseReason why = CloseReason::kShutdown);
  // Asks every live session of `user` to close; returns how many were asked.
  size_t close_user(const std::string& user, CloseReason why);
  std::vector<SessionView> list() const;

 private:
  struct Entry {
    std::string source;
    std::string user;
    bool user_counted = false;
    bool bind_counted = false;
    Closer closer;
    Recheck recheck;
    Origin origin;
    std::string method, command, target;
    std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
  };
  mutable std::mutex mu_;
  std::unordered_map<uint64_t, Entry> sessions_;              // GUARDED_BY(mu_)
  std::unordered_map<std::string, uint32_t> per_source_;      // GUARDED_BY(mu_)
  std::unordered_map<std::string, uint32_t> per_user_;        // GUARDED_BY(mu_)
  std::unordered_map<std::string, uint32_t> binds_per_user_;  // GUARDED_BY(mu_)
};

}  // namespace socksgate::gateway
