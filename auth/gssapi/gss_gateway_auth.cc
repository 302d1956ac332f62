#include "auth/gssapi/gss_gateway_auth.h"

#include <gssapi/gssapi_ext.h>

#include <asio/error.hpp>

#include "auth/authenticator.h"
#include "auth/gssapi/gss_authenticator.h"
#include "crypto/gss.h"
#include "crypto/gss_channel.h"
#include "crypto/parse.h"

namespace socksgate::auth::gssapi {
namespace {

constexpr OM_uint32 kRequestFlags = GSS_C_MUTUAL_FLAG | GSS_C_REPLAY_FLAG | GSS_C_SEQUENCE_FLAG |
                                    GSS_C_INTEG_FLAG | GSS_C_CONF_FLAG;

// What one session's establishment holds across pool calls; shared with the pool tasks so that
// a session torn down mid-call leaves them nothing dangling.
struct InitState {
  crypto::GssContext context;
  crypto::GssName target;
  crypto::GssCred cred;  // GSS_C_NO_CREDENTIAL = the default ccache
  std::vector<uint8_t> bindings;
};

struct InitStep {
  OM_uint32 major = 0;
  OM_uint32 minor = 0;
  OM_uint32 flags = 0;
  std::vector<uint8_t> output;
  std::string detail;
};

// The first call also imports the name and acquires the credential (both may read files).
struct InitCall {
  std::shared_ptr<InitState> st;
  const GssInitiatorSettings* settings;  // owned by the GssGatewayAuth, which outlives sessions
  std::vector<uint8_t> input;
  bool first;

  InitStep operator()() {
    InitStep s;
    if (first) {
      const std::string& svc = settings->service;
      gss_buffer_desc nb{svc.size(), const_cast<char*>(svc.data())};
      gss_OID type = svc.find('/') != std::string::npos ? GSS_KRB5_NT_PRINCIPAL_NAME
                                                        : GSS_C_NT_HOSTBASED_SERVICE;
      s.major = gss_import_name(&s.minor, &nb, type, st->target.out());
      if (GSS_ERROR(s.major)) {
        s.detail = "service name \"" + svc + "\": " + crypto::gss_status_text(s.major, s.minor);
        return s;
      }
      if (!settings->ccache.empty()) {
        gss_key_value_element_desc el[] = {{"ccache", settings->ccache.c_str()}};
        gss_key_value_set_desc store{1, el};
        gss_OID_desc krb5_oid = *gss_mech_krb5;
        gss_OID_set_desc mechs{1, &krb5_oid};
        s.major = gss_acquire_cred_from(&s.minor, GSS_C_NO_NAME, GSS_C_INDEFINITE, &mechs,
                                        GSS_C_INITIATE, &store, st->cred.out(), nullptr, nullptr);
        if (GSS_ERROR(s.major)) {
          s.detail = "ticket cache " + settings->ccache + ": " +
                     crypto::gss_status_text(s.major, s.minor, gss_mech_krb5);
          return s;
        }
      }
    }
    gss_channel_bindings_struct cb{};
    cb.initiator_addrtype = GSS_C_AF_UNSPEC;
    cb.acceptor_addrtype = GSS_C_AF_UNSPEC;
    cb.application_data = crypto::gss_view(st->bindings);
    gss_buffer_desc in = crypto::gss_view(input);
    crypto::GssBuffer out;
    gss_OID_desc krb5_oid = *gss_mech_krb5;
    s.major = gss_init_sec_context(
        &s.minor, st->cred.get(), st->context.out(), st->target.get(), &krb5_oid, kRequestFlags,
        GSS_C_INDEFINITE, st->bindings.empty() ? GSS_C_NO_CHANNEL_BINDINGS : &cb,
        first ? GSS_C_NO_BUFFER : &in, nullptr, out.get(), &s.flags, nullptr);
    s.output.assign(out.bytes().begin(), out.bytes().end());
    if (GSS_ERROR(s.major)) s.detail = crypto::gss_status_text(s.major, s.minor, gss_mech_krb5);
    return s;
  }
};

}  // namespace

GssGatewayAuth::GssGatewayAuth(GssInitiatorSettings settings) : settings_(std::move(settings)) {}

uint8_t GssGatewayAuth::method_code() const { return kMethodGssapi; }

asio::awaitable<std::error_code> GssGatewayAuth::authenticate(crypto::Channel& channel,
                                                              GatewayAuthOutcome* outcome) const {
  auto st = std::make_shared<InitState>();
  if (settings_.channel_binding) st->bindings = channel.channel_binding();

  // Gives up: tells the gateway (RFC 1961's abort) and records why.
  auto give_up = [&](std::string detail) -> asio::awaitable<std::error_code> {
    outcome->rejected = true;
    outcome->detail = std::move(detail);
    auto abort = encode_abort();
    co_await channel.write_all(abort);  // the gateway may be gone already
    co_return std::error_code{};
  };
  MessageType type = MessageType::kAbort;
  std::vector<uint8_t> token;
  auto read = [&]() { return read_rfc1961_message(channel, &type, &token); };

  // Context establishment (RFC 1961 section 3).
  InitStep step;
  for (unsigned round = 0;; ++round) {
    if (round >= settings_.max_round_trips) {
      co_return co_await give_up("no GSS-API context within " +
                                 std::to_string(settings_.max_round_trips) + " tokens");
    }
    InitCall call{st, &settings_, std::move(token), round == 0};
    std::error_code pool_ec;
    auto result = co_await pool_.run(call, &pool_ec);
    if (pool_ec) co_return co_await give_up("too many sign-ons at once");
    step = std::move(*result);
    if (!step.output.empty()) {
      if (step.output.size() > kMaxTokenSize) {
        co_return co_await give_up("GSS-API token larger than 65535 bytes");
      }
      auto msg = encode_message(MessageType::kContext, step.output);
      if (std::error_code ec = co_await channel.write_all(msg)) co_return ec;
    }
    if (GSS_ERROR(step.major)) {
      // No ticket, an expired one, an unknown service: the user has to act (kinit).
      co_return co_await give_up("Kerberos sign-on to " + settings_.service +
                                 " failed: " + step.detail);
    }
    if (step.major == GSS_S_COMPLETE) break;
    if (std::error_code ec = co_await read()) co_return ec;
    if (type == MessageType::kAbort) {
      outcome->rejected = true;
      outcome->detail = "the gateway refused the Kerberos sign-on (principal, realm or " +
                        std::string(st->bindings.empty() ? "ticket" : "channel binding") +
                        "; its audit log says which)";
      co_return std::error_code{};
    }
    if (type != MessageType::kContext) {
      co_return co_await give_up("the gateway sent message type " +
                                 std::to_string(static_cast<int>(type)) +
                                 " during context establishment");
    }
  }
  const bool can_conf = (step.flags & GSS_C_CONF_FLAG) != 0;
  if ((step.flags & GSS_C_MUTUAL_FLAG) == 0) {
    co_return co_await give_up("the context has no mutual authentication");
  }
  if (settings_.level == Level::kConfidentiality && !can_conf) {
    co_return co_await give_up("the Kerberos context offers no confidentiality");
  }

  // Protection-level subnegotiation (RFC 1961 section 4): our level, wrapped.
  std::vector<uint8_t> level{static_cast<uint8_t>(settings_.level)};
  {
    OM_uint32 minor = 0;
    gss_buffer_desc in = crypto::gss_view(level);
    crypto::GssBuffer out;
    OM_uint32 major =
        gss_wrap(&minor, st->context.get(), 0, GSS_C_QOP_DEFAULT, &in, nullptr, out.get());
    if (GSS_ERROR(major)) {
      co_return co_await give_up("gss_wrap: " + crypto::gss_status_text(major, minor));
    }
    auto msg = encode_message(MessageType::kProtection, out.bytes());
    if (std::error_code ec = co_await channel.write_all(msg)) co_return ec;
  }
  if (std::error_code ec = co_await read()) co_return ec;
  if (type == MessageType::kAbort) {
    outcome->rejected = true;
    // The gateway judges realm, name mapping and channel binding once the context is up, and
    // the level after that: its abort here can be any of them.
    outcome->detail =
        "the gateway refused the sign-on after Kerberos authentication (realm, "
        "channel binding or protection level " +
        std::string(level_name(settings_.level)) + "; the gateway's audit log has the reason)";
    co_return std::error_code{};
  }
  if (type != MessageType::kProtection) {
    co_return co_await give_up("the gateway sent message type " +
                               std::to_string(static_cast<int>(type)) +
                               " instead of the protection level");
  }
  Level granted = Level::kNone;
  {
    OM_uint32 minor = 0;
    gss_buffer_desc in = crypto::gss_view(token);
    crypto::GssBuffer out;
    OM_uint32 major = gss_unwrap(&minor, st->context.get(), &in, out.get(), nullptr, nullptr);
    if (major != GSS_S_COMPLETE) {
      co_return co_await give_up("the gateway's protection level did not verify: " +
                                 crypto::gss_status_text(major, minor));
    }
    if (parse_level(out.bytes(), &granted) || granted == Level::kPerMessage) {
      co_return co_await give_up("the gateway granted no valid protection level");
    }
  }
  if (static_cast<uint8_t>(granted) < static_cast<uint8_t>(settings_.level) ||
      (granted == Level::kConfidentiality && !can_conf)) {
    co_return co_await give_up("the gateway granted " + std::string(level_name(granted)) +
                               ", less than the " + std::string(level_name(settings_.level)) +
                               " we require");
  }
  outcome->protection = std::string(level_name(granted));
  outcome->channel_bound = !st->bindings.empty();
  if (granted != Level::kNone) {
    auto context = std::make_shared<crypto::GssContext>(std::move(st->context));
    outcome->channel = std::make_unique<crypto::GssChannel>(
        channel, std::move(context), granted == Level::kConfidentiality,
        std::make_shared<const Rfc1961Framing>(), /*tokens_unwrapped=*/1);
  }
  co_return std::error_code{};
}

}  // namespace socksgate::auth::gssapi
