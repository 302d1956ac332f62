#pragma once
// RFC 1929 username/password (method 02) against a password file or PAM.
//
// Flow: read the request; refuse empty names/passwords without hashing; refuse throttled
// (user, source) pairs; answer from the credential cache when it holds this exact
// user/password/hash; otherwise verify on the blocking pool (an unknown user costs the same
// hash as a known one, so timing does not reveal which users exist). A failure waits the
// fixed failure delay, answers 01 01, and the session closes.
//
// With the PAM back-end the password goes to the auth monitor instead (never cached: account
// checks and one-time passwords must run every time); the identity is the user name PAM ends
// with (PAM_USER) and its Unix groups.

#include <chrono>
#include <memory>
#include <string>

#include "auth/authenticator.h"
#include "auth/userpass/credential_cache.h"
#include "auth/userpass/login_throttle.h"
#include "auth/userpass/password_file.h"

namespace socksgate::auth::userpass {

struct Request;  // auth/userpass/rfc1929.h

// Where passwords are checked: a password file (crypt(3) hashes, on the blocking pool), or PAM
// through the privileged auth monitor (auth/pam/monitor.h).
enum class UserPassBackendKind { kFile, kPam };

struct UserPassSettings {
  UserPassBackendKind backend = UserPassBackendKind::kFile;
  std::string pam_service = "socksgate";
  std::chrono::milliseconds pam_timeout{30000};  // per PAM transaction, in the monitor
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
  // The PAM back-end's check: "" on success (identity filled in), else the failure token.
  asio::awaitable<std::string> verify_pam(const Request& req, const AuthContext& ctx,
                                          AuthOutcome* outcome);
  std::shared_ptr<const UserPassBackend> backend_;
};

}  // namespace socksgate::auth::userpass
