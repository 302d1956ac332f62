#pragma once
// Method 00, "no authentication required": an anonymous identity. Whether anonymous users
// may do anything is the policy's call (rules naming method "none").

#include "auth/authenticator.h"

namespace socksgate::auth {

class NoneAuthenticator final : public Authenticator {
 public:
  uint8_t method_code() const override { return kMethodNone; }
  std::string_view name() const override { return "none"; }
  asio::awaitable<std::error_code> authenticate(crypto::Channel&, const AuthContext&,
                                                AuthOutcome* outcome) override {
    outcome->ok = true;
    outcome->identity.method = "none";
    co_return std::error_code{};
  }
};

}  // namespace socksgate::auth
