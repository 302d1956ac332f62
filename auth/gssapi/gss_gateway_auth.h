#pragma once
// RFC 1961 on the agent's side (the GSS-API initiator): signs on to the gateway with the user's
// Kerberos ticket and wraps the channel in the agreed per-message protection.
//
// Flow: gss_init_sec_context against the gateway's service name until the context is complete
// (mutual authentication: the gateway's last token is checked), each call on a small blocking
// pool of our own because it may ask the KDC for a service ticket; then the protection-level
// subnegotiation: our requested level wrapped out, the gateway's granted level in. A granted
// level below the requested one is refused here (the requested level is the agent's minimum),
// and the session is over before any request is sent.
//
// Channel binding: over TLS the channel's binding data (crypto::Channel::channel_binding(),
// tls-exporter under TLS 1.3) is passed to gss_init_sec_context, so that the ticket's
// authenticator is tied to this TLS connection and a TLS-terminating middlebox cannot relay it.

#include <memory>
#include <string>

#include "auth/gateway_auth.h"
#include "auth/gssapi/rfc1961.h"
#include "crypto/blocking_pool.h"

namespace socksgate::auth::gssapi {

struct GssInitiatorSettings {
  // The gateway's service: "service@host" (a host-based name, e.g. "rcmd@gw.example.com") or a
  // Kerberos principal with a '/' ("rcmd/gw.example.com@CORP.EXAMPLE").
  std::string service;
  // The ticket cache: empty = the default (KRB5CCNAME, else krb5.conf's default).
  std::string ccache;
  // What we ask for, and the least we accept: kIntegrity, kConfidentiality (kNone: TLS only).
  Level level = Level::kConfidentiality;
  // Send the TLS channel's binding data when the channel has some.
  bool channel_binding = true;
  unsigned max_round_trips = 8;
};

class GssGatewayAuth final : public GatewayAuth {
 public:
  explicit GssGatewayAuth(GssInitiatorSettings settings);
  uint8_t method_code() const override;
  std::string_view name() const override { return "gssapi"; }
  // The user is whoever the ticket cache says; the service is what log lines can name.
  std::string_view user() const override { return settings_.service; }
  asio::awaitable<std::error_code> authenticate(crypto::Channel& channel,
                                                GatewayAuthOutcome* outcome) const override;

 private:
  GssInitiatorSettings settings_;
  // gss_init_sec_context may talk to the KDC: never on the I/O thread.
  mutable crypto::BlockingPool pool_{2, 256};
};

}  // namespace socksgate::auth::gssapi
