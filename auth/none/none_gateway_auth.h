#pragma once
// Method 00 on the agent's side: nothing to send. With a client certificate this means "the
// certificate's user" to a gateway configured for it.

#include "auth/authenticator.h"
#include "auth/gateway_auth.h"

namespace socksgate::auth {

class NoneGatewayAuth final : public GatewayAuth {
 public:
  uint8_t method_code() const override { return kMethodNone; }
  std::string_view name() const override { return "none"; }
  std::string_view user() const override { return ""; }
  asio::awaitable<std::error_code> authenticate(crypto::Channel&,
                                                GatewayAuthOutcome*) const override {
    co_return std::error_code{};
  }
};

}  // namespace socksgate::auth
