#pragma once
// Live sessions: admission against the session caps (global, per source, per user) and a way
// to close them all (drain on SIGTERM). Thread-safe: sessions on every I/O thread register
// here; one mutex, touched twice per session (open, close), never per relayed byte.

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>

namespace socksgate::gateway {

class SessionRegistry {
 public:
  enum class Admit { kOk, kGlobalLimit, kSourceLimit };

  // Registers session `id` from `source`; `closer` must be safe to call from any thread
  // (it posts to the session's executor). 0 = no limit.
  Admit admit(uint64_t id, const std::string& source, uint32_t max_total, uint32_t max_per_source,
              std::function<void()> closer);
  // Counts the session against `user`; false (and nothing counted) when the cap is reached.
  bool admit_user(uint64_t id, const std::string& user, uint32_t max_per_user);
  // Counts an open BIND of session `id` against `user`; released by remove().
  bool admit_bind(uint64_t id, const std::string& user, uint32_t max_per_user);
  void remove(uint64_t id);

  size_t active() const;
  size_t active_for_user(const std::string& user) const;
  // Asks every live session to close (they finish on their own threads).
  void close_all();

 private:
  struct Entry {
    std::string source;
    std::string user;
    bool user_counted = false;
    bool bind_counted = false;
    std::function<void()> closer;
  };
  mutable std::mutex mu_;
  std::unordered_map<uint64_t, Entry> sessions_;              // GUARDED_BY(mu_)
  std::unordered_map<std::string, uint32_t> per_source_;      // GUARDED_BY(mu_)
  std::unordered_map<std::string, uint32_t> per_user_;        // GUARDED_BY(mu_)
  std::unordered_map<std::string, uint32_t> binds_per_user_;  // GUARDED_BY(mu_)
};

}  // namespace socksgate::gateway
