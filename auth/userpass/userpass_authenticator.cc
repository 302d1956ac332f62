#include "auth/userpass/userpass_authenticator.h"

#include <asio/experimental/as_tuple.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>

#include "auth/userpass/rfc1929.h"
#include "crypto/password_hash.h"
#include "crypto/secure.h"

namespace socksgate::auth::userpass {

UserPassBackend::UserPassBackend(PasswordFile file, UserPassSettings settings,
                                 std::shared_ptr<LoginThrottle> throttle)
    : file_(std::move(file)),
      settings_(settings),
      cache_(settings.cache_ttl, settings.cache_max_entries),
      throttle_(std::move(throttle)) {
  // The decoy's password is random and forgotten: nothing can ever match it.
  std::array<uint8_t, 18> r;
  crypto::random_bytes(r);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string pw;
  for (uint8_t b : r) {
    pw.push_back(kHex[b >> 4]);
    pw.push_back(kHex[b & 15]);
  }
  decoy_hash_ = crypto::hash_password(pw);
  crypto::secure_zero(pw.data(), pw.size());
}

asio::awaitable<std::error_code> UserPassAuthenticator::authenticate(crypto::Channel& channel,
                                                                     const AuthContext& ctx,
                                                                     AuthOutcome* outcome) {
  Request req;
  std::error_code ec = co_await channel.read_message(
      [&](std::span<const uint8_t> in, size_t* consumed) {
        return parse_request(in, &req, consumed);
      },
      kMaxRequestSize);
  if (ec) co_return ec;

  const UserPassBackend& be = *backend_;
  outcome->claimed_user = req.user;
  outcome->identity.method = "userpass";
  std::string source = ctx.client.to_string();
  std::string failure;

  if (req.user.empty()) {
    failure = "empty_user";
  } else if (req.password.empty()) {
    failure = "empty_password";
  } else if (!be.throttle().allowed(req.user, source)) {
    failure = "throttled";
  } else {
    auto stored = be.file().find(req.user);
    std::string hash(stored ? *stored : std::string_view(be.decoy_hash()));
    if (stored && be.cache().lookup(req.user, req.password, hash)) {
      // Cached: no hash cost.
    } else {
      std::error_code pool_ec;
      // Named, not a temporary: GCC 12 destroys non-trivial temporaries of a co_await
      // expression twice.
      auto check = [pw = req.password, hash]() mutable {
        bool ok = crypto::verify_password(pw, hash);
        crypto::secure_zero(pw.data(), pw.size());
        return ok;
      };
      auto verified = co_await ctx.blocking->run(check, &pool_ec);
      if (pool_ec) {
        failure = "busy";
      } else if (!stored) {
        failure = "unknown_user";
      } else if (!*verified) {
        failure = "bad_password";
      } else {
        be.cache().insert(req.user, req.password, hash);
      }
    }
    if (failure.empty()) {
      be.throttle().record_success(req.user, source);
    } else if (failure != "busy") {
      be.throttle().record_failure(req.user, source);
    }
  }
  crypto::secure_zero(req.password.data(), req.password.size());

  if (!failure.empty()) {
    outcome->ok = false;
    outcome->failure_reason = failure;
    asio::steady_timer delay(co_await asio::this_coro::executor, be.settings().failure_delay);
    co_await delay.async_wait(asio::experimental::as_tuple(asio::use_awaitable));
    auto reply = encode_reply(false);
    co_return co_await channel.write_all(reply);
  }
  outcome->ok = true;
  outcome->identity.user = req.user;
  auto reply = encode_reply(true);
  co_return co_await channel.write_all(reply);
}

}  // namespace socksgate::auth::userpass
