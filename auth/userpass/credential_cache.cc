#include "auth/userpass/credential_cache.h"

#include <string>
#include <vector>

namespace socksgate::auth::userpass {

CredentialCache::CredentialCache(std::chrono::milliseconds ttl, size_t max_entries)
    : ttl_(ttl), max_entries_(max_entries) {
  crypto::random_bytes(hmac_key_);
}

crypto::Sha256Digest CredentialCache::key_of(std::string_view user, std::string_view password,
                                             std::string_view hash) const {
  std::string msg;
  msg.reserve(user.size() + password.size() + hash.size() + 2);
  msg.append(user).push_back('\0');
  msg.append(password).push_back('\0');
  msg.append(hash);
  auto d =
      crypto::hmac_sha256(hmac_key_, {reinterpret_cast<const uint8_t*>(msg.data()), msg.size()});
  crypto::secure_zero(msg.data(), msg.size());
  return d;
}

bool CredentialCache::lookup(std::string_view user, std::string_view password,
                             std::string_view hash) {
  if (ttl_.count() <= 0) return false;
  auto k = key_of(user, password, hash);
  std::lock_guard lock(mu_);
  auto it = entries_.find(k);
  if (it == entries_.end()) return false;
  if (it->second <= Clock::now()) {
    entries_.erase(it);
    return false;
  }
  return true;
}

void CredentialCache::insert(std::string_view user, std::string_view password,
                             std::string_view hash) {
  if (ttl_.count() <= 0 || max_entries_ == 0) return;
  auto k = key_of(user, password, hash);
  auto now = Clock::now();
  std::lock_guard lock(mu_);
  if (entries_.size() >= max_entries_) {
    std::erase_if(entries_, [now](const auto& e) { return e.second <= now; });
    // Still full of live entries: forget one rather than grow (costs one extra hash later).
    if (entries_.size() >= max_entries_) entries_.erase(entries_.begin());
  }
  entries_[k] = now + ttl_;
}

size_t CredentialCache::size() const {
  std::lock_guard lock(mu_);
  return entries_.size();
}

}  // namespace socksgate::auth::userpass
