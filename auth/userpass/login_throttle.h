#pragma once
// Throttles password guessing per (user, source address): after `max_failures` failures
// within `window`, that pair is refused without a password check for `lockout`. The key
// includes the source, so an attacker elsewhere cannot lock a user out: the real user, from
// their own address, still gets in. Thread-safe; bounded (oldest entries are evicted first).
// Lives as long as the server, across reloads, so a reload does not reset an attack's count.

#include <chrono>
#include <cstddef>
#include <map>
#include <mutex>
#include <string>
#include <string_view>

namespace socksgate::auth::userpass {

struct ThrottleSettings {
  int max_failures = 5;
  std::chrono::seconds window{60};
  std::chrono::seconds lockout{300};
  size_t max_entries = 100000;
};

class LoginThrottle {
 public:
  using Clock = std::chrono::steady_clock;
  explicit LoginThrottle(ThrottleSettings s = {}) : s_(s) {}

  void configure(ThrottleSettings s);
  // True when this (user, source) may try a password now.
  bool allowed(std::string_view user, std::string_view source,
               Clock::time_point now = Clock::now());
  void record_failure(std::string_view user, std::string_view source,
                      Clock::time_point now = Clock::now());
  void record_success(std::string_view user, std::string_view source);
  size_t size() const;

 private:
  struct Entry {
    int failures = 0;
    Clock::time_point window_start;
    Clock::time_point locked_until;
  };
  static std::string key(std::string_view user, std::string_view source);

  mutable std::mutex mu_;
  ThrottleSettings s_;                  // GUARDED_BY(mu_)
  std::map<std::string, Entry> table_;  // GUARDED_BY(mu_)
};

}  // namespace socksgate::auth::userpass
