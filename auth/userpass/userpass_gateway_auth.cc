#include "auth/userpass/userpass_gateway_auth.h"

#include "auth/authenticator.h"
#include "auth/userpass/rfc1929.h"
#include "crypto/secure.h"

namespace socksgate::auth::userpass {

UserPassGatewayAuth::UserPassGatewayAuth(std::string user, std::string password)
    : user_(std::move(user)), password_(std::move(password)) {}

UserPassGatewayAuth::~UserPassGatewayAuth() {
  crypto::secure_zero(password_.data(), password_.size());
}

uint8_t UserPassGatewayAuth::method_code() const { return kMethodUserPass; }

asio::awaitable<std::error_code> UserPassGatewayAuth::authenticate(
    crypto::Channel& channel, GatewayAuthOutcome* outcome) const {
  std::vector<uint8_t> req = encode_request(user_, password_);
  if (req.empty()) {
    outcome->rejected = true;
    outcome->detail = "user name and password must be 1 to 255 bytes";
    co_return std::error_code{};
  }
  std::error_code ec = co_await channel.write_all(req);
  crypto::secure_zero(req.data(), req.size());
  if (ec) co_return ec;
  bool success = false;
  ec = co_await channel.read_message(
      [&](std::span<const uint8_t> in, size_t* consumed) {
        return parse_reply(in, &success, consumed);
      },
      2);
  if (ec) co_return ec;
  if (!success) {
    outcome->rejected = true;
    outcome->detail = "the gateway rejected the password of user \"" + user_ + "\"";
  }
  co_return std::error_code{};
}

}  // namespace socksgate::auth::userpass
