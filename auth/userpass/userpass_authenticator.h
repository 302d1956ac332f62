#pragma once
// RFC 1929 username/password (method 02) against a password file.
//
// Flow: read the request; refuse empty names/passwords without hashing; refuse throttled
// (user, source) pairs; answer from the credential cache when it holds this exact
// user/password/hash; otherwise verify on the blocking pool (an unknown user costs the same
// hash as a known one, so timing does not reveal which users exist). A failure waits the
// fixed failure delay, answers 01 01, and the session closes.

#include <chrono>
#include <memory>

#include "auth/authenticator.h"
#include "auth/userpass/credential_cache.h"
#include "auth/userpass/login_throttle.h"
#include "auth/userpass/password_file.h"

namespace socksgate::auth::userpass {

struct UserPassSettings {
  std::chrono::milliseconds failure_delay{1000};
  std::chrono::milliseconds cache_ttl{std::chrono::seconds(60)};
  size_t cache_max_entries = 10000;
};

// Everything the method needs that outlives one session: shared by the sessions of one
// configuration snapshot (the cache is therefore dropped on reload), thread-safe.
class UserPassBackend {
 public:
  UserPassBackend(PasswordFile file, UserPassSettings settings,
                  std::shared_ptr<LoginThrottle> throttle);

  const PasswordFile& file() const { return file_; }
  const UserPassSettings& settings() const { return settings_; }
  CredentialCache& cache() const { return cache_; }
  LoginThrottle& throttle() const { return *throttle_; }
  // A real hash of a random password: what unknown users are checked against.
  const std::string& decoy_hash() const { return decoy_hash_; }

 private:
  PasswordFile file_;
  UserPassSettings settings_;
  mutable CredentialCache cache_;
  std::shared_ptr<LoginThrottle> throttle_;
  std::string decoy_hash_;
};

class UserPassAuthenticator final : public Authenticator {
 public:
  explicit UserPassAuthenticator(std::shared_ptr<const UserPassBackend> backend)
      : backend_(std::move(backend)) {}
  uint8_t method_code() const override { return kMethodUserPass; }
  std::string_view name() const override { return "userpass"; }
  asio::awaitable<std::error_code> authenticate(crypto::Channel& channel, const AuthContext& ctx,
                                                AuthOutcome* outcome) override;

 private:
  std::shared_ptr<const UserPassBackend> backend_;
};

}  // namespace socksgate::auth::userpass
