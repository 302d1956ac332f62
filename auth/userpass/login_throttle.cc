#include "auth/userpass/login_throttle.h"

#include <algorithm>

namespace socksgate::auth::userpass {

std::string LoginThrottle::key(std::string_view user, std::string_view source) {
  std::string k(source);
  k.push_back('\0');
  k.append(user);
  return k;
}

void LoginThrottle::configure(ThrottleSettings s) {
  std::lock_guard lock(mu_);
  s_ = s;
}

bool LoginThrottle::allowed(std::string_view user, std::string_view source, Clock::time_point now) {
  std::lock_guard lock(mu_);
  auto it = table_.find(key(user, source));
  if (it == table_.end()) return true;
  return it->second.locked_until <= now;
}

void LoginThrottle::record_failure(std::string_view user, std::string_view source,
                                   Clock::time_point now) {
  std::lock_guard lock(mu_);
  if (s_.max_failures <= 0) return;
  auto k = key(user, source);
  auto it = table_.find(k);
  if (it == table_.end()) {
    if (table_.size() >= s_.max_entries) {
      // Evict expired entries first, then the one whose window started longest ago.
      std::erase_if(table_, [&](const auto& e) {
        return e.second.locked_until <= now && e.second.window_start + s_.window <= now;
      });
      if (table_.size() >= s_.max_entries) {
        auto oldest =
            std::min_element(table_.begin(), table_.end(), [](const auto& a, const auto& b) {
              return a.second.window_start < b.second.window_start;
            });
        if (oldest != table_.end()) table_.erase(oldest);
      }
    }
    it = table_.emplace(std::move(k), Entry{0, now, {}}).first;
  }
  Entry& e = it->second;
  if (e.window_start + s_.window <= now) {
    e.failures = 0;
    e.window_start = now;
  }
  if (++e.failures >= s_.max_failures) {
    e.locked_until = now + s_.lockout;
    e.failures = 0;
    e.window_start = now;
  }
}

void LoginThrottle::record_success(std::string_view user, std::string_view source) {
  std::lock_guard lock(mu_);
  table_.erase(key(user, source));
}

size_t LoginThrottle::size() const {
  std::lock_guard lock(mu_);
  return table_.size();
}

}  // namespace socksgate::auth::userpass
