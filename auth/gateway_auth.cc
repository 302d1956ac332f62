#include "auth/gateway_auth.h"

#include "auth/gssapi/gss_gateway_auth.h"
#include "auth/none/none_gateway_auth.h"
#include "auth/userpass/userpass_gateway_auth.h"

namespace socksgate::auth {

std::unique_ptr<GatewayAuth> make_gateway_auth(GatewayAuthSettings s) {
  if (s.method == "userpass") {
    return std::make_unique<userpass::UserPassGatewayAuth>(std::move(s.user),
                                                           std::move(s.password));
  }
  if (s.method == "none") return std::make_unique<NoneGatewayAuth>();
  if (s.method == "gssapi") {
    gssapi::GssInitiatorSettings g;
    g.service = std::move(s.service);
    g.ccache = std::move(s.ccache);
    g.level = s.protection == "integrity" ? gssapi::Level::kIntegrity
              : s.protection == "none"    ? gssapi::Level::kNone
                                          : gssapi::Level::kConfidentiality;
    g.channel_binding = s.channel_binding;
    return std::make_unique<gssapi::GssGatewayAuth>(std::move(g));
  }
  return nullptr;
}

std::string_view gateway_auth_methods() { return "gssapi, none, userpass"; }

}  // namespace socksgate::auth
