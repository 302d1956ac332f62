#include "auth/gateway_auth.h"

#include "auth/none/none_gateway_auth.h"
#include "auth/userpass/userpass_gateway_auth.h"

namespace socksgate::auth {

std::unique_ptr<GatewayAuth> make_gateway_auth(GatewayAuthSettings s) {
  if (s.method == "userpass") {
    return std::make_unique<userpass::UserPassGatewayAuth>(std::move(s.user),
                                                           std::move(s.password));
  }
  if (s.method == "none") return std::make_unique<NoneGatewayAuth>();
  return nullptr;
}

std::string_view gateway_auth_methods() { return "none, userpass"; }

}  // namespace socksgate::auth
