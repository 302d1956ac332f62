#pragma once
// RFC 1961 GSS-API (method 01) acceptor against a keytab, with the protection-level
// subnegotiation and, once a level is agreed, the session's channel wrapped in per-message
// protection (crypto::GssChannel).
//
// Flow: context tokens (MTYP 01) until gss_accept_sec_context completes — each call on the
// blocking pool, since it may read the keytab and write the replay cache; every output token is
// sent before the status is judged; at most `max_round_trips` client tokens. Then the realm
// check and the principal -> user mapping, then the protection level (MTYP 02): the client's
// wrapped octet (bare in the NEC variant) in, the granted level out. Any failure sends the
// RFC's abort `01 FF` and ends in an AuthOutcome whose failure_reason is a short token and
// whose failure_detail carries the GSS major/minor status text.

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "auth/authenticator.h"
#include "auth/gssapi/rfc1961.h"
#include "crypto/gss.h"
#include "crypto/gss_channel.h"

namespace socksgate::auth::gssapi {

enum class NameMapping {
  kStripRealm,   // alice@EXAMPLE.COM -> alice (for the listed realms only)
  kAuthToLocal,  // krb5.conf's auth_to_local rules (gss_localname / krb5_aname_to_localname)
};

struct GssSettings {
  std::string keytab;     // "FILE:/path"
  std::string principal;  // acceptor principal, e.g. "rcmd/gw.example.com"; empty = any in keytab
  std::vector<std::string> realms;  // principals from other realms are refused
  NameMapping mapping = NameMapping::kStripRealm;
  Level required = Level::kConfidentiality;  // kIntegrity, kConfidentiality or kNone (TLS only)
  bool nec = false;                          // the level octet travels unwrapped
  // Refuse contexts not bound to the TLS channel they came over (GSS_C_CHANNEL_BOUND_FLAG).
  bool require_channel_binding = false;
  unsigned max_round_trips = 8;
};

// RFC 1961's framing of encapsulated data (`01 03 LEN TOKEN`) for crypto::GssChannel.
class Rfc1961Framing final : public crypto::TokenFraming {
 public:
  size_t max_token() const override { return kMaxTokenSize; }
  size_t max_frame() const override { return kMaxMessageSize; }
  void append_frame(std::span<const uint8_t> token, std::vector<uint8_t>* out) const override;
  void append_frame_header(size_t token_len, std::vector<uint8_t>* out) const override;
  std::error_code parse_frame(std::span<const uint8_t> in, std::span<const uint8_t>* token,
                              size_t* consumed) const override;
};

// Reads one whole RFC 1961 message (any MTYP, abort included) from `channel` into *type and
// *token. Errors: the channel's (EOF, timeout...), Rfc1961Errc for a malformed message,
// crypto::ChannelErrc::kMessageTooLarge. Both ends of the method (gateway and agent) use it.
asio::awaitable<std::error_code> read_rfc1961_message(crypto::Channel& channel, MessageType* type,
                                                      std::vector<uint8_t>* token);

// The keys of a FILE: keytab copied into a process-private MEMORY: keytab, so that the file is
// read exactly once, when the configuration is loaded (before any privilege drop; a changed
// file takes effect on reload). Closing the last handle destroys the copy.
class KeytabCopy {
 public:
  // Throws std::runtime_error (unreadable file, no keys).
  explicit KeytabCopy(const std::string& file_keytab);
  KeytabCopy(const KeytabCopy&) = delete;
  KeytabCopy& operator=(const KeytabCopy&) = delete;
  ~KeytabCopy();
  const std::string& name() const { return name_; }  // "MEMORY:socksgate-..."
  size_t entries() const { return entries_; }

 private:
  struct _krb5_context* kc_ = nullptr;
  struct _krb5_kt* mem_ = nullptr;
  std::string name_;
  size_t entries_ = 0;
};

// What outlives a session: the settings and the acceptor credential (acquired from the keytab
// when the configuration is loaded, so that a missing keytab or principal is a load error).
// Shared read-only by the sessions of one snapshot.
class GssBackend {
 public:
  // Throws std::runtime_error with the GSS status text when the credential cannot be acquired.
  explicit GssBackend(GssSettings settings);
  const GssSettings& settings() const { return settings_; }
  gss_cred_id_t cred() const { return cred_.get(); }
  const std::shared_ptr<const Rfc1961Framing>& framing() const { return framing_; }

 private:
  GssSettings settings_;
  std::unique_ptr<KeytabCopy> keytab_;  // declared before cred_: outlives it
  crypto::GssCred cred_;
  std::shared_ptr<const Rfc1961Framing> framing_ = std::make_shared<Rfc1961Framing>();
};

// The default acceptor principal: rcmd/<this host's name>.
std::string default_principal();
// The default realm of the krb5 configuration in effect (empty when there is none).
std::string default_realm();
// "integrity", "confidentiality", "none".
std::string_view level_name(Level l);

class GssAuthenticator final : public Authenticator {
 public:
  explicit GssAuthenticator(std::shared_ptr<const GssBackend> backend)
      : backend_(std::move(backend)) {}
  uint8_t method_code() const override { return kMethodGssapi; }
  std::string_view name() const override { return "gssapi"; }
  asio::awaitable<std::error_code> authenticate(crypto::Channel& channel, const AuthContext& ctx,
                                                AuthOutcome* outcome) override;

 private:
  // Sends 01 FF and records the failure.
  asio::awaitable<std::error_code> refuse(crypto::Channel& channel, AuthOutcome* outcome,
                                          std::string reason, std::string detail);
  std::shared_ptr<const GssBackend> backend_;
};

}  // namespace socksgate::auth::gssapi
