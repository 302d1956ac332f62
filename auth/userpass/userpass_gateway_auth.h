#pragma once
// RFC 1929 on the agent's side: sends the user name and password, reads the status.

#include <string>

#include "auth/gateway_auth.h"

namespace socksgate::auth::userpass {

class UserPassGatewayAuth final : public GatewayAuth {
 public:
  // `user` and `password` are 1..255 bytes (the agent's config loader checks).
  UserPassGatewayAuth(std::string user, std::string password);
  ~UserPassGatewayAuth() override;  // wipes the password
  UserPassGatewayAuth(const UserPassGatewayAuth&) = delete;
  UserPassGatewayAuth& operator=(const UserPassGatewayAuth&) = delete;

  uint8_t method_code() const override;
  std::string_view name() const override { return "userpass"; }
  std::string_view user() const override { return user_; }
  asio::awaitable<std::error_code> authenticate(crypto::Channel& channel,
                                                GatewayAuthOutcome* outcome) const override;

 private:
  std::string user_;
  std::string password_;
};

}  // namespace socksgate::auth::userpass
