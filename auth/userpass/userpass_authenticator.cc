#include "auth/userpass/userpass_authenticator.h"

#include <asio/experimental/as_tuple.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>

#include "auth/pam/monitor_client.h"
#include "auth/userpass/rfc1929.h"
#include "crypto/password_hash.h"
#include "crypto/secure.h"

namespace socksgate::auth::userpass {
namespace {
// Printable ASCII stays, everything else becomes \xNN: log lines stay one line.
std::string escape_for_log(std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : s) {
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out.push_back(static_cast<char>(c));
    } else {
      out += "\\x";
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}
}  // namespace

UserPassBackend::UserPassBackend(PasswordFile file, UserPassSettings settings,
                                 std::shared_ptr<LoginThrottle> throttle)
    : file_(std::move(file)),
      settings_(settings),
      cache_(settings.cache_ttl, settings.cache_max_entries),
      throttle_(std::move(throttle)) {
  if (settings_.backend == UserPassBackendKind::kPam) return;  // no hashes to compare with
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

asio::awaitable<std::string> UserPassAuthenticator::verify_pam(const Request& req,
                                                               const AuthContext& ctx,
                                                               AuthOutcome* outcome) {
  pam::MonitorClient* monitor = pam::monitor_client();
  if (monitor == nullptr) co_return "pam_unavailable";
  const UserPassSettings& s = backend_->settings();
  pam::AuthRequest pr;
  pr.timeout_ms = static_cast<uint32_t>(s.pam_timeout.count());
  pr.service = s.pam_service;
  pr.user = req.user;
  pr.password = req.password;
  pr.rhost = ctx.client.to_string();
  const std::string rhost = pr.rhost;
  pam::AuthResult r = co_await monitor->authenticate(std::move(pr));
  for (const auto& m : r.messages) {
    // What the PAM stack told the user (there is no terminal to show it on): kept in the log.
    monitor->log(false, std::string("pam ") + (m.kind == 3 ? "error" : "info") +
                            " message for user \"" + escape_for_log(req.user) + "\" from " + rhost +
                            ": " + escape_for_log(m.text));
  }
  if (r.status != pam::PamStatus::kOk) co_return std::string(pam::status_token(r.status));
  outcome->identity.user = r.user;
  outcome->identity.groups = std::move(r.groups);
  co_return "";
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
  } else if (be.settings().backend == UserPassBackendKind::kPam) {
    failure = co_await verify_pam(req, ctx, outcome);
    if (failure.empty()) {
      be.throttle().record_success(req.user, source);
    } else if (failure != "busy" && failure != "pam_unavailable" && failure != "pam_timeout" &&
               failure != "pam_error") {
      be.throttle().record_failure(req.user, source);
    }
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
  if (outcome->identity.user.empty()) outcome->identity.user = req.user;
  auto reply = encode_reply(true);
  co_return co_await channel.write_all(reply);
}

}  // namespace socksgate::auth::userpass
