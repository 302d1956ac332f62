#pragma once
// A short-lived memory of successful password verifications, so that a client opening many
// connections pays the (deliberately slow) hash once per TTL, not once per connection.
//
// Entries are keyed by HMAC-SHA256(process-random key, user NUL password NUL stored hash):
// the password itself is never stored, the key never leaves memory, and a changed hash
// invalidates the entry. A cache belongs to one configuration snapshot and is dropped on
// reload. Thread-safe (one mutex; lookups are rare compared to relayed bytes). Bounded.

#include <chrono>
#include <cstddef>
#include <map>
#include <mutex>
#include <string_view>

#include "crypto/secure.h"

namespace socksgate::auth::userpass {

class CredentialCache {
 public:
  using Clock = std::chrono::steady_clock;
  CredentialCache(std::chrono::milliseconds ttl, size_t max_entries);

  bool lookup(std::string_view user, std::string_view password, std::string_view hash);
  void insert(std::string_view user, std::string_view password, std::string_view hash);
  size_t size() const;

 private:
  crypto::Sha256Digest key_of(std::string_view user, std::string_view password,
                              std::string_view hash) const;

  const std::chrono::milliseconds ttl_;
  const size_t max_entries_;
  std::array<uint8_t, 32> hmac_key_;
  mutable std::mutex mu_;
  std::map<crypto::Sha256Digest, Clock::time_point> entries_;  // GUARDED_BY(mu_): expiry
};

}  // namespace socksgate::auth::userpass
