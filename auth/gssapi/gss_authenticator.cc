#include "auth/gssapi/gss_authenticator.h"

#include <gssapi/gssapi_ext.h>
#include <krb5/krb5.h>
#include <unistd.h>

#include <asio/error.hpp>
#include <atomic>
#include <cassert>
#include <climits>
#include <optional>
#include <stdexcept>

#include "crypto/parse.h"

namespace socksgate::auth::gssapi {
namespace {

// One gss_accept_sec_context step, as the blocking pool returns it.
struct AcceptStep {
  OM_uint32 major = 0;
  OM_uint32 minor = 0;
  std::vector<uint8_t> output;
  OM_uint32 flags = 0;
  std::string principal;   // set once complete
  std::string local_name;  // auth_to_local result, when asked for and known
  std::string detail;      // status text on failure
};

// Everything a pool task needs, owned by the task (by value or shared).
struct AcceptCall {
  std::shared_ptr<const GssBackend> backend;  // keeps the credential alive while the task runs
  // Shared with the session: the task keeps the context alive even if the session's frame is
  // destroyed while it runs (shutdown).
  std::shared_ptr<crypto::GssContext> context;
  std::vector<uint8_t> input;
  bool want_local_name;
  // The channel-binding data of the TLS channel underneath (empty: none, plain TCP).
  std::vector<uint8_t> bindings;

  AcceptStep operator()() {
    AcceptStep s;
    gss_buffer_desc in = crypto::gss_view(input);
    crypto::GssName src;
    crypto::GssBuffer out;
    gss_OID mech = GSS_C_NO_OID;
    // Addresses are left unspecified (RFC 5056 style: the TLS channel is the binding). MIT
    // accepts an initiator that sent no bindings at all and then leaves
    // GSS_C_CHANNEL_BOUND_FLAG clear; bindings that differ fail with GSS_S_BAD_BINDINGS.
    gss_channel_bindings_struct cb{};
    cb.initiator_addrtype = GSS_C_AF_UNSPEC;
    cb.acceptor_addrtype = GSS_C_AF_UNSPEC;
    cb.application_data = crypto::gss_view(bindings);
    s.major = gss_accept_sec_context(&s.minor, context->out(), backend->cred(), &in,
                                     bindings.empty() ? GSS_C_NO_CHANNEL_BINDINGS : &cb, src.out(),
                                     &mech, out.get(), &s.flags, nullptr, nullptr);
    s.output.assign(out.bytes().begin(), out.bytes().end());
    if (GSS_ERROR(s.major)) {
      s.detail = crypto::gss_status_text(s.major, s.minor, mech);
      return s;
    }
    if (s.major != GSS_S_COMPLETE) return s;  // continue needed
    OM_uint32 minor = 0;
    crypto::GssBuffer shown;
    if (!GSS_ERROR(gss_display_name(&minor, src.get(), shown.get(), nullptr))) {
      s.principal = shown.str();
    }
    if (want_local_name) {
      crypto::GssBuffer local;
      if (!GSS_ERROR(gss_localname(&minor, src.get(), mech, local.get())))
        s.local_name = local.str();
    }
    return s;
  }
};

// The realm of a displayed krb5 principal ("a/b@REALM"): after the last unescaped '@'.
std::optional<size_t> realm_at(const std::string& principal) {
  for (size_t i = principal.size(); i-- > 0;) {
    if (principal[i] != '@') continue;
    size_t backslashes = 0;
    for (size_t j = i; j-- > 0 && principal[j] == '\\';) ++backslashes;
    if (backslashes % 2 == 0) return i;
  }
  return std::nullopt;
}

}  // namespace

asio::awaitable<std::error_code> read_rfc1961_message(crypto::Channel& channel, MessageType* type,
                                                      std::vector<uint8_t>* token) {
  co_return co_await channel.read_message(
      [type, token](std::span<const uint8_t> in, size_t* consumed) {
        MessageView m;
        std::error_code e = parse_message(in, &m, consumed);
        if (!e) {
          *type = m.type;
          token->assign(m.token.begin(), m.token.end());
        }
        return e;
      },
      kMaxMessageSize);
}

void Rfc1961Framing::append_frame(std::span<const uint8_t> token, std::vector<uint8_t>* out) const {
  append_message(MessageType::kEncapsulated, token, out);
}

void Rfc1961Framing::append_frame_header(size_t token_len, std::vector<uint8_t>* out) const {
  assert(token_len >= 1 && token_len <= kMaxTokenSize);
  const uint8_t h[kHeaderSize] = {kVersion, static_cast<uint8_t>(MessageType::kEncapsulated),
                                  static_cast<uint8_t>(token_len >> 8),
                                  static_cast<uint8_t>(token_len & 0xFF)};
  out->insert(out->end(), h, h + kHeaderSize);
}

std::error_code Rfc1961Framing::parse_frame(std::span<const uint8_t> in,
                                            std::span<const uint8_t>* token,
                                            size_t* consumed) const {
  MessageView m;
  std::error_code ec = parse_message(in, &m, consumed);
  if (ec == crypto::ParseErrc::kNeedMore) return ec;
  if (ec) return crypto::GssErrc::kFramingError;
  if (m.type != MessageType::kEncapsulated) return crypto::GssErrc::kUnexpectedMessage;
  *token = m.token;
  return {};
}

std::string default_principal() {
  char host[HOST_NAME_MAX + 1] = {};
  if (gethostname(host, sizeof host - 1) != 0 || host[0] == '\0') return "rcmd/localhost";
  return std::string("rcmd/") + host;
}

std::string default_realm() {
  krb5_context kc = nullptr;
  if (krb5_init_context(&kc) != 0) return "";
  char* realm = nullptr;
  std::string out;
  if (krb5_get_default_realm(kc, &realm) == 0 && realm != nullptr) {
    out = realm;
    krb5_free_default_realm(kc, realm);
  }
  krb5_free_context(kc);
  return out;
}

std::string_view level_name(Level l) {
  switch (l) {
    case Level::kNone:
      return "none";
    case Level::kIntegrity:
      return "integrity";
    case Level::kConfidentiality:
      return "confidentiality";
    case Level::kPerMessage:
      return "per_message";
  }
  return "unknown";
}

KeytabCopy::KeytabCopy(const std::string& file_keytab) {
  static std::atomic<uint64_t> counter{0};
  krb5_error_code rc = krb5_init_context(&kc_);
  if (rc != 0)
    throw std::runtime_error("cannot initialise krb5 (error " + std::to_string(rc) + ")");
  name_ = "MEMORY:socksgate-" + std::to_string(getpid()) + "-" + std::to_string(++counter);
  std::string error;  // empty = success
  krb5_keytab src = nullptr;
  rc = krb5_kt_resolve(kc_, file_keytab.c_str(), &src);
  if (rc == 0) rc = krb5_kt_resolve(kc_, name_.c_str(), &mem_);
  krb5_kt_cursor cursor;
  bool iterating = false;
  if (rc == 0) rc = krb5_kt_start_seq_get(kc_, src, &cursor);
  if (rc == 0) {
    iterating = true;
    krb5_keytab_entry entry;
    while ((rc = krb5_kt_next_entry(kc_, src, &entry, &cursor)) == 0) {
      rc = krb5_kt_add_entry(kc_, mem_, &entry);
      krb5_free_keytab_entry_contents(kc_, &entry);
      if (rc != 0) break;
      ++entries_;
    }
    if (rc == KRB5_KT_END) rc = 0;
  }
  if (rc != 0) {
    const char* msg = krb5_get_error_message(kc_, rc);
    error = "keytab " + file_keytab + ": " + msg;
    krb5_free_error_message(kc_, msg);
  } else if (entries_ == 0) {
    error = "keytab " + file_keytab + " holds no keys";
  }
  if (iterating) krb5_kt_end_seq_get(kc_, src, &cursor);
  if (src != nullptr) krb5_kt_close(kc_, src);
  if (!error.empty()) {
    if (mem_ != nullptr) krb5_kt_close(kc_, mem_);
    krb5_free_context(kc_);
    throw std::runtime_error(error);
  }
}

KeytabCopy::~KeytabCopy() {
  if (mem_ != nullptr) krb5_kt_close(kc_, mem_);
  if (kc_ != nullptr) krb5_free_context(kc_);
}

GssBackend::GssBackend(GssSettings settings)
    : settings_(std::move(settings)), keytab_(std::make_unique<KeytabCopy>(settings_.keytab)) {
  OM_uint32 major = 0, minor = 0;
  crypto::GssName name;
  if (!settings_.principal.empty()) {
    gss_buffer_desc nb{settings_.principal.size(), settings_.principal.data()};
    major = gss_import_name(&minor, &nb, GSS_KRB5_NT_PRINCIPAL_NAME, name.out());
    if (GSS_ERROR(major)) {
      throw std::runtime_error("principal \"" + settings_.principal +
                               "\": " + crypto::gss_status_text(major, minor));
    }
  }
  gss_key_value_element_desc elements[] = {{"keytab", keytab_->name().c_str()}};
  gss_key_value_set_desc store{1, elements};
  gss_OID_desc krb5_oid = *gss_mech_krb5;
  gss_OID_set_desc mechs{1, &krb5_oid};
  major = gss_acquire_cred_from(&minor, name.get(), GSS_C_INDEFINITE, &mechs, GSS_C_ACCEPT, &store,
                                cred_.out(), nullptr, nullptr);
  if (GSS_ERROR(major)) {
    throw std::runtime_error(
        "cannot use keytab " + settings_.keytab +
        (settings_.principal.empty() ? std::string() : " for " + settings_.principal) + ": " +
        crypto::gss_status_text(major, minor, gss_mech_krb5));
  }
}

asio::awaitable<std::error_code> GssAuthenticator::refuse(crypto::Channel& channel,
                                                          AuthOutcome* outcome, std::string reason,
                                                          std::string detail) {
  outcome->ok = false;
  outcome->failure_reason = std::move(reason);
  outcome->failure_detail = std::move(detail);
  auto abort = encode_abort();
  co_await channel.write_all(abort);  // the peer may already be gone: the outcome stands
  co_return std::error_code{};
}

asio::awaitable<std::error_code> GssAuthenticator::authenticate(crypto::Channel& channel,
                                                                const AuthContext& ctx,
                                                                AuthOutcome* outcome) {
  const GssSettings& cfg = backend_->settings();
  outcome->identity.method = "gssapi";
  auto context = std::make_shared<crypto::GssContext>();
  const std::vector<uint8_t> bindings = channel.channel_binding();

  // Reads one message; a malformed or truncated one is the peer's protocol error.
  MessageType type = MessageType::kAbort;
  std::vector<uint8_t> token;
  std::string protocol_error;
  auto read = [&]() -> asio::awaitable<std::error_code> {
    std::error_code ec = co_await read_rfc1961_message(channel, &type, &token);
    if (!ec) co_return ec;
    if (ec.category() == rfc1961_category() || ec == crypto::ChannelErrc::kMessageTooLarge) {
      protocol_error = ec.message();
      co_return std::error_code{};
    }
    if (ec == asio::error::eof && !channel.pending().empty()) {
      protocol_error = "the connection ended inside a message";
      co_return std::error_code{};
    }
    co_return ec;
  };

  // Context establishment (RFC 1961 section 3).
  AcceptStep step;
  for (unsigned round = 0;; ++round) {
    if (std::error_code ec = co_await read()) co_return ec;
    if (!protocol_error.empty()) {
      co_return co_await refuse(channel, outcome, "gss_protocol_error", protocol_error);
    }
    if (type == MessageType::kAbort) {
      outcome->failure_reason = "gss_client_abort";
      co_return std::error_code{};
    }
    if (type != MessageType::kContext) {
      co_return co_await refuse(channel, outcome, "gss_protocol_error",
                                "message type " + std::to_string(static_cast<int>(type)) +
                                    " during context establishment");
    }
    if (round >= cfg.max_round_trips) {
      co_return co_await refuse(
          channel, outcome, "gss_protocol_error",
          "context not established within " + std::to_string(cfg.max_round_trips) + " tokens");
    }
    AcceptCall call{backend_, context, std::move(token), cfg.mapping == NameMapping::kAuthToLocal,
                    bindings};
    std::error_code pool_ec;
    auto result = co_await ctx.blocking->run(call, &pool_ec);
    if (pool_ec) co_return co_await refuse(channel, outcome, "busy", "blocking pool full");
    step = std::move(*result);
    // The output token goes first, whatever the status: on failure it is the krb5 error the
    // client needs to explain itself.
    if (!step.output.empty()) {
      if (step.output.size() > kMaxTokenSize) {
        co_return co_await refuse(channel, outcome, "gss_context_failed",
                                  "output token larger than 65535 bytes");
      }
      auto msg = encode_message(MessageType::kContext, step.output);
      if (std::error_code ec = co_await channel.write_all(msg)) co_return ec;
    }
    if (GSS_ROUTINE_ERROR(step.major) == GSS_S_BAD_BINDINGS) {
      co_return co_await refuse(channel, outcome, "gss_channel_binding_mismatch",
                                step.detail +
                                    " (the client bound its context to another channel:"
                                    " a TLS-terminating middlebox?)");
    }
    if (GSS_ERROR(step.major)) {
      co_return co_await refuse(channel, outcome, "gss_context_failed", step.detail);
    }
    if (step.major == GSS_S_COMPLETE) break;
    if (step.major != GSS_S_CONTINUE_NEEDED) {
      co_return co_await refuse(channel, outcome, "gss_context_failed",
                                crypto::gss_status_text(step.major, step.minor));
    }
  }

  // Who it is: the full principal always; the user by the realm rule or auth_to_local.
  outcome->identity.principal = step.principal;
  outcome->claimed_user = step.principal;
  // MIT sets the flag only when the client's bindings matched ours, so it is checked here
  // rather than trusting that passing bindings to the acceptor was enough.
  outcome->identity.channel_bound =
      !bindings.empty() && (step.flags & GSS_C_CHANNEL_BOUND_FLAG) != 0;
  if (cfg.require_channel_binding && !outcome->identity.channel_bound) {
    // Named first: GCC 12 destroys a ?: temporary inside co_await twice.
    std::string why = bindings.empty()
                          ? "the listener requires channel binding but has no TLS"
                          : "the client sent no channel bindings for this TLS connection (the "
                            "listener requires them)";
    co_return co_await refuse(channel, outcome, "gss_channel_binding_required", std::move(why));
  }
  auto at = realm_at(step.principal);
  std::string realm = at ? step.principal.substr(*at + 1) : std::string();
  bool realm_ok = false;
  for (const auto& r : cfg.realms) realm_ok = realm_ok || r == realm;
  if (!at || !realm_ok) {
    co_return co_await refuse(channel, outcome, "gss_realm_denied",
                              "realm \"" + realm + "\" is not an allowed realm");
  }
  std::string user = step.principal.substr(0, *at);
  if (cfg.mapping == NameMapping::kAuthToLocal) {
    if (step.local_name.empty()) {
      co_return co_await refuse(channel, outcome, "gss_no_local_name",
                                "auth_to_local gives no local name for the principal");
    }
    user = step.local_name;
  }

  // Protection-level subnegotiation (RFC 1961 section 4).
  if (std::error_code ec = co_await read()) co_return ec;
  if (!protocol_error.empty()) {
    co_return co_await refuse(channel, outcome, "gss_protocol_error", protocol_error);
  }
  if (type == MessageType::kAbort) {
    outcome->failure_reason = "gss_client_abort";
    co_return std::error_code{};
  }
  if (type != MessageType::kProtection) {
    co_return co_await refuse(channel, outcome, "gss_protocol_error",
                              "message type " + std::to_string(static_cast<int>(type)) +
                                  " instead of the protection level");
  }
  std::vector<uint8_t> level_octet;
  if (cfg.nec) {
    level_octet = token;
  } else {
    OM_uint32 minor = 0;
    int conf_state = 0;
    gss_buffer_desc in = crypto::gss_view(token);
    crypto::GssBuffer out;
    OM_uint32 major = gss_unwrap(&minor, context->get(), &in, out.get(), &conf_state, nullptr);
    if (major != GSS_S_COMPLETE) {
      co_return co_await refuse(channel, outcome, "gss_protocol_error",
                                "protection level token: " + crypto::gss_status_text(major, minor));
    }
    level_octet.assign(out.bytes().begin(), out.bytes().end());
  }
  Level requested = Level::kNone;
  if (std::error_code ec = parse_level(level_octet, &requested)) {
    co_return co_await refuse(channel, outcome, "gss_protocol_error", ec.message());
  }
  // The listener's level, raised to what the policy's rules for this user need.
  Level required = cfg.required;
  if (ctx.required_protection) {
    Identity probe;
    probe.user = user;
    probe.method = "gssapi";
    uint8_t need = ctx.required_protection(probe);
    if (need > static_cast<uint8_t>(required) &&
        need <= static_cast<uint8_t>(Level::kConfidentiality))
      required = static_cast<Level>(need);
  }
  auto granted =
      choose_level(requested, LevelPolicy{required}, (step.flags & GSS_C_INTEG_FLAG) != 0,
                   (step.flags & GSS_C_CONF_FLAG) != 0);
  if (!granted) {
    co_return co_await refuse(channel, outcome, "gss_protection_refused",
                              std::string("the context cannot give the required ") +
                                  std::string(level_name(required)) + " (client asked for " +
                                  std::string(level_name(requested)) + ")");
  }
  std::vector<uint8_t> reply_token{static_cast<uint8_t>(*granted)};
  if (!cfg.nec) {
    OM_uint32 minor = 0;
    int conf_state = 0;
    gss_buffer_desc in = crypto::gss_view(reply_token);
    crypto::GssBuffer out;
    OM_uint32 major =
        gss_wrap(&minor, context->get(), 0, GSS_C_QOP_DEFAULT, &in, &conf_state, out.get());
    if (GSS_ERROR(major)) {
      co_return co_await refuse(channel, outcome, "gss_context_failed",
                                crypto::gss_status_text(major, minor));
    }
    reply_token.assign(out.bytes().begin(), out.bytes().end());
  }
  auto reply = encode_message(MessageType::kProtection, reply_token);
  if (std::error_code ec = co_await channel.write_all(reply)) co_return ec;

  outcome->ok = true;
  outcome->identity.user = user;
  outcome->identity.protection = std::string(level_name(*granted));
  if (*granted != Level::kNone) {
    outcome->channel = std::make_unique<crypto::GssChannel>(
        channel, std::move(context), *granted == Level::kConfidentiality, backend_->framing(),
        /*tokens_unwrapped=*/cfg.nec ? 0 : 1);
  }
  co_return std::error_code{};
}

}  // namespace socksgate::auth::gssapi
