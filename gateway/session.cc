#include "gateway/session.h"

#include <sys/socket.h>

#include <algorithm>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <functional>
#include <optional>
#include <string>

#include "auth/registry.h"
#include "auth/userpass/userpass_authenticator.h"
#include "crypto/channel.h"
#include "crypto/gss_channel.h"
#include "crypto/secure.h"
#include "crypto/tls.h"
#include "gateway/audit_record.h"
#include "gateway/bind.h"
#include "gateway/limits.h"
#include "gateway/log.h"
#include "gateway/relay.h"
#include "gateway/socks4.h"
#include "gateway/socks5.h"
#include "gateway/tcp_tuning.h"
#include "gateway/timeout.h"
#include "gateway/udp_relay.h"
#include "gateway/upstream.h"

namespace socksgate::gateway {
namespace {

using Clock = std::chrono::steady_clock;
constexpr auto kUse = asio::experimental::as_tuple(asio::use_awaitable);
using nlohmann::json;

uint32_t process_id_prefix() {
  static const uint32_t prefix = [] {
    std::array<uint8_t, 4> b;
    crypto::random_bytes(b);
    return (uint32_t{b[0]} << 24) | (uint32_t{b[1]} << 16) | (uint32_t{b[2]} << 8) | b[3];
  }();
  return prefix;
}

std::optional<policy::Command> to_policy_command(uint8_t cmd) {
  switch (static_cast<socks5::Command>(cmd)) {
    case socks5::Command::kConnect:
      return policy::Command::kConnect;
    case socks5::Command::kBind:
      return policy::Command::kBind;
    case socks5::Command::kUdpAssociate:
    case socks5::Command::kUdpInStream:
      return policy::Command::kUdpAssociate;
  }
  return std::nullopt;
}

// What a TLS listener learnt in the handshake.
struct TlsRecord {
  std::string version;
  std::string cipher;
  std::string sni;
  bool resumed = false;
  std::optional<crypto::ClientCertInfo> cert;
};

// Everything the audit record of a session says.
struct SessionRecord {
  std::string id;
  std::string listener;
  asio::ip::tcp::endpoint client;
  std::string method;
  std::string user;
  std::string principal;       // gssapi
  std::string protection;      // gssapi: integrity | confidentiality | none
  bool channel_bound = false;  // gssapi: the context is bound to the TLS channel
  std::optional<std::string> command;
  std::optional<socks5::Address> requested;
  uint16_t port = 0;
  std::optional<asio::ip::tcp::endpoint> remote;
  std::optional<asio::ip::tcp::endpoint> bound;
  std::string rule_id;
  std::string decision;  // "pass" | "block" | ""
  uint64_t bytes_up = 0;
  uint64_t bytes_down = 0;
  Clock::time_point start = Clock::now();
  std::string start_time = now_rfc3339();
  SessionPhase phase = SessionPhase::kAccepted;
  std::optional<TlsRecord> tls;
};

std::string_view phase_name(SessionPhase p) {
  switch (p) {
    case SessionPhase::kAccepted:
      return "accepted";
    case SessionPhase::kTlsHandshake:
      return "tls_handshake";
    case SessionPhase::kMethodSelection:
      return "method_selection";
    case SessionPhase::kAuthentication:
      return "authentication";
    case SessionPhase::kRequest:
      return "request";
    case SessionPhase::kConnect:
      return "connect";
    case SessionPhase::kBindWait:
      return "bind_wait";
    case SessionPhase::kRelay:
      return "relay";
    case SessionPhase::kClosed:
      return "closed";
  }
  return "unknown";
}

// "192.0.2.1:80", "[2001:db8::1]:80".
std::string format_endpoint(const asio::ip::tcp::endpoint& ep) {
  std::string a = ep.address().to_string();
  if (ep.address().is_v6()) a = "[" + a + "]";
  return a + ":" + std::to_string(ep.port());
}

json base_record(std::string_view event, const SessionRecord& r) {
  json j;
  j["time"] = now_rfc3339();
  j["event"] = event;
  j["session"] = r.id;
  j["listener"] = r.listener;
  j["client"] = r.client.address().to_string();
  j["client_port"] = r.client.port();
  if (r.tls) {
    j["tls_version"] = r.tls->version;
    j["tls_cipher"] = r.tls->cipher;
    if (!r.tls->sni.empty()) j["tls_sni"] = escape_untrusted(r.tls->sni);
    j["tls_resumed"] = r.tls->resumed;
    if (const auto& c = r.tls->cert) {
      j["cert_subject"] = escape_untrusted(c->subject);
      j["cert_issuer"] = escape_untrusted(c->issuer);
      j["cert_serial"] = c->serial;
      j["cert_sha256"] = c->sha256;
      if (c->user) j["cert_user"] = escape_untrusted(*c->user);
    }
  }
  if (!r.method.empty()) j["method"] = r.method;
  if (!r.user.empty()) j["user"] = escape_untrusted(r.user);
  if (!r.principal.empty()) j["principal"] = escape_untrusted(r.principal);
  if (!r.protection.empty()) j["protection"] = r.protection;
  if (r.method == "gssapi" && !r.principal.empty()) j["channel_bound"] = r.channel_bound;
  if (r.command) j["command"] = *r.command;
  if (r.requested) {
    if (r.requested->type == socks5::AddressType::kDomain) {
      j["host"] = escape_untrusted(r.requested->domain);
    } else {
      j["host"] = r.requested->ip.to_string();
    }
    j["port"] = r.port;
  }
  if (r.remote) j["address"] = r.remote->address().to_string();
  if (!r.rule_id.empty()) j["rule"] = r.rule_id;
  // A denied record is a block, whatever the rule that passed the request said (a limit, a
  // BIND peer that is not the expected host).
  if (event == "denied") {
    j["decision"] = "block";
  } else if (!r.decision.empty()) {
    j["decision"] = r.decision;
  }
  return j;
}

// The fields every hot record (session_start, session_end) carries, as base_record() has them.
void add_base(RecordBuilder& b, const SessionRecord& r) {
  b.str("session", r.id)
      .str("listener", r.listener)
      .str("client", r.client.address().to_string())
      .num("client_port", r.client.port());
  if (r.tls) {
    b.str("tls_version", r.tls->version).str("tls_cipher", r.tls->cipher);
    if (!r.tls->sni.empty()) b.untrusted("tls_sni", r.tls->sni);
    b.json("tls_resumed", r.tls->resumed);
    if (const auto& c = r.tls->cert) {
      b.untrusted("cert_subject", c->subject)
          .untrusted("cert_issuer", c->issuer)
          .str("cert_serial", c->serial)
          .str("cert_sha256", c->sha256);
      if (c->user) b.untrusted("cert_user", *c->user);
    }
  }
  if (!r.method.empty()) b.str("method", r.method);
  if (!r.user.empty()) b.untrusted("user", r.user);
  if (!r.principal.empty()) b.untrusted("principal", r.principal);
  if (!r.protection.empty()) b.str("protection", r.protection);
  if (r.method == "gssapi" && !r.principal.empty()) b.json("channel_bound", r.channel_bound);
  if (r.command) b.str("command", *r.command);
  if (r.requested) {
    if (r.requested->type == socks5::AddressType::kDomain) {
      b.untrusted("host", r.requested->domain);
    } else {
      b.str("host", r.requested->ip.to_string());
    }
    b.num("port", r.port);
  }
  if (r.remote) b.str("address", r.remote->address().to_string());
  if (!r.rule_id.empty()) b.str("rule", r.rule_id);
  if (!r.decision.empty()) b.str("decision", r.decision);
}

class Session {
 public:
  Session(ServerState& state, std::shared_ptr<const Snapshot> snap, std::string listener,
          asio::ip::tcp::socket socket, asio::ip::tcp::endpoint peer, uint64_t id)
      : state_(state),
        snap_(std::move(snap)),
        audit_(state.audit.load()),
        channel_(std::make_unique<crypto::TcpChannel>(std::move(socket))) {
    rec_.id = format_session_id(id);
    rec_.listener = std::move(listener);
    numeric_id_ = id;
    // The peer address as accept() reported it: remote_endpoint() fails once a client has
    // reset, and a session must never be judged (or audited) as 0.0.0.0.
    rec_.client = peer;
    std::error_code ec;
    channel_->lowest_layer().set_option(asio::ip::tcp::no_delay(true), ec);
  }

  asio::awaitable<void> run();
  // Closes both sockets now (drain, revocation, an admin); the session then ends with `why`.
  // After a reload: is what this session relays still allowed? If not, it closes with reason
  // "revoked", at once or after policy.revoke_grace_s. Runs on the session's executor.
  void recheck();
  // Makes recheck() reachable from reloads, once the session relays.
  void watch_reloads();

  void abort(CloseReason why) {
    aborted_ = true;
    abort_reason_ = why;
    channel_->close();
    std::error_code ec;
    upstream_.close(ec);
  }

 private:
  asio::awaitable<bool> start_tls();
  asio::awaitable<std::error_code> sniff_then_handshake();
  std::string apply_client_certificate();
  asio::awaitable<std::optional<CloseReason>> negotiate();
  asio::awaitable<std::optional<CloseReason>> negotiate_socks4();
  asio::awaitable<void> send_reply(socks5::Reply rep);
  asio::awaitable<std::error_code> write_reply(socks5::Reply rep,
                                               const asio::ip::tcp::endpoint& ep);
  policy::DecisionRequest decision_request(policy::Command cmd) const;
  asio::awaitable<void> run_connect();
  asio::awaitable<void> run_bind();
  // in_stream: command 0x80, the datagrams travel as frames on the channel itself.
  asio::awaitable<void> run_udp(bool in_stream = false);
  asio::awaitable<std::optional<asio::ip::tcp::socket>> accept_bind_peer(
      asio::ip::tcp::acceptor& acceptor, const std::vector<policy::IpAddress>& expected,
      bool any_peer, const policy::DecisionRequest& base);
  asio::awaitable<void> relay_and_finish();
  // A copy goes to the user's own file (audit.per_user_dir) once the user is authenticated.
  void audit(json j) {
    if (audit_) audit_->write_record(AuditRecord{body_from_json(std::move(j)), identity_.user});
  }
  // session_start, durable before the success reply. False: refuse the session (REP 01,
  // close reason audit_unavailable).
  asio::awaitable<bool> commit_start();
  void audit_denied(std::string_view stage, const policy::Decision& d) {
    json j = base_record("denied", rec_);
    j["stage"] = stage;
    j["rule"] = d.rule_id;
    j["decision"] = "block";
    j["reason"] = d.reason;
    audit(std::move(j));
  }
  void finish(CloseReason reason);
  // The deciding pass rule's limits (gateway/limits.h): nullopt admits the session (and keeps
  // its ticket); a reason refuses it, audited and counted here (the caller replies).
  std::optional<CloseReason> admit_limits(const policy::Decision& d);
  // The channel SOCKS messages travel over: the TCP channel, or the GSS-API protected channel
  // that wraps it once a protection level was agreed.
  crypto::Channel& io() { return wrapped_ ? *wrapped_ : *channel_; }
  // True (and the reason noted for the audit record) when the protected channel failed: a
  // token that did not verify or came with the wrong protection.
  bool gss_failed() {
    auto* gss = dynamic_cast<crypto::GssChannel*>(wrapped_.get());
    if (gss == nullptr || !gss->failure()) return false;
    extra_["detail"] = escape_untrusted(gss->failure().message() + ": " + gss->failure_detail());
    return true;
  }
  // What GET /sessions shows as the target: "host:port".
  std::string target_text() const;
  ByteTap tap(bool up) {
    return state_.metrics.tap(rec_.listener, identity_.user, up, up ? live_up_ : live_down_);
  }

  ServerState& state_;
  std::shared_ptr<const Snapshot> snap_;
  std::shared_ptr<AuditSink> audit_;
  std::unique_ptr<crypto::Channel> channel_;  // TCP, or TLS once the handshake is done
  std::unique_ptr<crypto::Channel> wrapped_;  // GSS-API over channel_; declared after it
  asio::ip::tcp::socket upstream_{channel_->lowest_layer().get_executor()};
  SessionRecord rec_;
  uint64_t numeric_id_ = 0;

 public:
  SessionRegistry::Closer closer_;
  SessionRegistry::Recheck recheck_;

 private:
  const ListenerConfig* listener_ = nullptr;
  crypto::TlsChannel* tls_ = nullptr;  // channel_ when the listener speaks TLS
  auth::Identity identity_;
  socks5::Request request_;
  bool reply_sent_ = false;
  bool socks4_ = false;  // the client speaks SOCKS4/4a: replies are `00 5A|5B`
  json extra_;           // command-specific fields for the session_end record
  bool aborted_ = false;
  CloseReason abort_reason_ = CloseReason::kShutdown;
  std::optional<asio::steady_timer> revoke_timer_;  // running while a revocation's grace lasts
  bool admitted_ = false;
  std::unique_ptr<LimitTicket> limits_;  // this session's place in the per-user limits
  // Bytes relayed so far, read by the admin listener while the session runs.
  std::shared_ptr<std::atomic<uint64_t>> live_up_ = std::make_shared<std::atomic<uint64_t>>(0);
  std::shared_ptr<std::atomic<uint64_t>> live_down_ = std::make_shared<std::atomic<uint64_t>>(0);
};

// UDP datagrams of a GSS-API protected session: one framed gss_wrap token each.
class GssDatagrams final : public DatagramProtection {
 public:
  explicit GssDatagrams(crypto::GssChannel& ch) : ch_(ch) {}
  bool open(std::span<const uint8_t> d, std::vector<uint8_t>* plain) override {
    return ch_.open_datagram(d, plain);
  }
  bool seal(std::span<const uint8_t> plain, std::vector<uint8_t>* d) override {
    return ch_.seal_datagram(plain, d);
  }

 private:
  crypto::GssChannel& ch_;
};

// Lets other threads reach a live session: only ever touched on the session's executor.
struct SessionControl {
  Session* session = nullptr;
};

asio::awaitable<bool> Session::commit_start() {
  if (!audit_) co_return true;
  RecordBuilder b("session_start");
  add_base(b, rec_);
  b.str("start", rec_.start_time);
  if (rec_.bound) b.str("bound", format_endpoint(*rec_.bound));
  if (extra_.is_object()) {
    for (const auto& [k, v] : extra_.items()) b.json(k, v);
  }
  // A named record, not a temporary inside the co_await (GCC 12 destroys those twice).
  AuditRecord rec{b.take(), identity_.user};
  CommitResult r = co_await async_commit(*audit_, std::move(rec), asio::use_awaitable);
  if (r == CommitResult::kRefused) {
    log::warn("session ", rec_.id, ": refused: the audit log cannot be written");
    co_return false;
  }
  co_return true;
}

asio::awaitable<void> Session::send_reply(socks5::Reply rep) {
  if (reply_sent_) co_return;
  reply_sent_ = true;
  asio::ip::tcp::endpoint bound(asio::ip::address_v4::any(), 0);
  if (rep == socks5::Reply::kSucceeded && rec_.bound) bound = *rec_.bound;
  co_await write_reply(rep, bound);
}

asio::awaitable<std::error_code> Session::write_reply(socks5::Reply rep,
                                                      const asio::ip::tcp::endpoint& ep) {
  if (socks4_) {
    auto bytes = socks4::encode_reply(rep == socks5::Reply::kSucceeded, ep);
    co_return co_await io().write_all(bytes);
  }
  auto bytes = socks5::encode_reply(rep, ep);
  co_return co_await io().write_all(bytes);
}

policy::DecisionRequest Session::decision_request(policy::Command cmd) const {
  policy::DecisionRequest req;
  req.user = identity_.user;
  req.groups = identity_.groups;
  req.method = identity_.method;
  req.client_certificate = tls_ != nullptr && tls_->client_cert().has_value();
  req.protection = identity_.protection;
  req.channel_bound = identity_.channel_bound;
  req.listener = rec_.listener;
  req.client = to_policy_address(rec_.client.address());
  req.command = cmd;
  req.time = std::chrono::system_clock::now();  // rules with "when" windows
  return req;
}

// Greeting, authentication and request, under the negotiation deadline. Returns a reason
// when the session must end here (replies already sent where one is due).
asio::awaitable<std::optional<CloseReason>> Session::negotiate() {
  const Config& cfg = *snap_->config;
  // RFC 1928 section 3: method selection.
  rec_.phase = SessionPhase::kMethodSelection;
  // The first byte says which protocol: 05 SOCKS5, 04 SOCKS4/4a.
  uint8_t version = 0;
  std::error_code ec = co_await channel_->read_message(
      [&](std::span<const uint8_t> in, size_t* consumed) -> std::error_code {
        if (in.empty()) return crypto::ParseErrc::kNeedMore;
        version = in[0];
        *consumed = 0;
        return {};
      },
      1);
  if (ec) co_return from_client_read_error(ec);
  if (version == socks4::kVersion) co_return co_await negotiate_socks4();
  socks5::Greeting greeting;
  ec = co_await channel_->read_message(
      [&](std::span<const uint8_t> in, size_t* consumed) {
        return socks5::parse_greeting(in, &greeting, consumed);
      },
      socks5::kMaxGreetingSize);
  if (ec == socks5::Errc::kNoMethods) {
    co_await channel_->write_all(socks5::encode_method_selection(auth::kMethodNoAcceptable));
    json j = base_record("auth_failure", rec_);
    j["reason"] = "no_acceptable_method";
    audit(std::move(j));
    state_.metrics.auth_failed(rec_.method, "no_acceptable_method", {});
    co_return CloseReason::kNoAcceptableMethod;
  }
  if (ec) co_return from_client_read_error(ec);

  std::unique_ptr<auth::Authenticator> method;
  for (const auto& name : listener_->methods) {
    auto code = auth::method_code(name);
    if (code && std::find(greeting.methods.begin(), greeting.methods.end(), *code) !=
                    greeting.methods.end()) {
      method = auth::make_authenticator(name, snap_->backends, rec_.listener);
      if (method) break;
    }
  }
  if (!method) {
    co_await channel_->write_all(socks5::encode_method_selection(auth::kMethodNoAcceptable));
    json j = base_record("auth_failure", rec_);
    j["reason"] = "no_acceptable_method";
    audit(std::move(j));
    state_.metrics.auth_failed(rec_.method, "no_acceptable_method", {});
    co_return CloseReason::kNoAcceptableMethod;
  }
  rec_.method = std::string(method->name());
  if (ec = co_await channel_->write_all(socks5::encode_method_selection(method->method_code()));
      ec) {
    co_return CloseReason::kClientReset;
  }

  // RFC 1929 / RFC 1961: the method's subnegotiation.
  rec_.phase = SessionPhase::kAuthentication;
  auth::AuthContext actx{rec_.client.address(), rec_.listener, &state_.blocking, {}};
  actx.required_protection = [this](const auth::Identity& id) {
    policy::DecisionRequest r;
    r.user = id.user;
    r.groups = id.groups;
    r.method = id.method;
    r.client_certificate = tls_ != nullptr && tls_->client_cert().has_value();
    r.listener = rec_.listener;
    r.client = to_policy_address(rec_.client.address());
    return snap_->policy->required_protection(r);
  };
  auth::AuthOutcome outcome;
  ec = co_await method->authenticate(*channel_, actx, &outcome);
  if (ec) co_return from_client_read_error(ec);
  if (!outcome.ok) {
    json j = base_record("auth_failure", rec_);
    j["user"] = escape_untrusted(outcome.claimed_user);
    if (!outcome.identity.principal.empty())
      j["principal"] = escape_untrusted(outcome.identity.principal);
    j["reason"] = outcome.failure_reason;
    if (!outcome.failure_detail.empty()) j["detail"] = escape_untrusted(outcome.failure_detail);
    audit(std::move(j));
    state_.metrics.auth_failed(rec_.method, outcome.failure_reason, outcome.claimed_user);
    rec_.user = outcome.claimed_user;
    co_return outcome.failure_reason == "busy" ? CloseReason::kBusy : CloseReason::kAuthFailed;
  }
  identity_ = std::move(outcome.identity);
  if (std::string why = apply_client_certificate(); !why.empty()) {
    json j = base_record("auth_failure", rec_);
    if (!identity_.user.empty()) j["user"] = escape_untrusted(identity_.user);
    j["reason"] = why;
    if (!tls_->client_cert()->identity_error.empty()) {
      j["detail"] = tls_->client_cert()->identity_error;
    }
    audit(std::move(j));
    state_.metrics.auth_failed(identity_.method, why, identity_.user);
    rec_.user = identity_.user;
    co_return CloseReason::kAuthFailed;
  }
  rec_.method = identity_.method;
  rec_.user = identity_.user;
  rec_.principal = identity_.principal;
  rec_.protection = identity_.protection;
  rec_.channel_bound = identity_.channel_bound;
  // RFC 1961 section 5: from here on every message is encapsulated.
  if (outcome.channel) wrapped_ = std::move(outcome.channel);
  state_.metrics.auth_succeeded(identity_.method, identity_.user);

  // RFC 1928 section 4: the request.
  rec_.phase = SessionPhase::kRequest;
  ec = co_await io().read_message(
      [&](std::span<const uint8_t> in, size_t* consumed) {
        return socks5::parse_request(in, &request_, consumed);
      },
      socks5::kMaxRequestSize);
  if (ec == socks5::Errc::kUnknownCommand) {
    co_await send_reply(socks5::Reply::kCommandNotSupported);
    co_return CloseReason::kUnsupportedCommand;
  }
  if (ec == socks5::Errc::kUnknownAddressType) {
    co_await send_reply(socks5::Reply::kAddressTypeNotSupported);
    co_return CloseReason::kUnsupportedAddressType;
  }
  if (ec.category() == socks5::category()) {
    co_await send_reply(socks5::Reply::kGeneralFailure);
    co_return CloseReason::kProtocolError;
  }
  if (ec && gss_failed()) co_return CloseReason::kGssProtection;
  if (ec) co_return from_client_read_error(ec);
  rec_.requested = request_.dst;
  rec_.port = request_.port;
  auto cmd = to_policy_command(request_.command);
  rec_.command = std::string(policy::to_string(*cmd));
  if (!identity_.user.empty() &&
      !state_.sessions.admit_user(numeric_id_, identity_.user, cfg.limits.max_sessions_per_user)) {
    json j = base_record("denied", rec_);
    j["stage"] = "limit";
    j["reason"] = "limit:sessions_per_user";
    audit(std::move(j));
    state_.metrics.limit_hit("sessions_per_user", identity_.user);
    co_await send_reply(socks5::Reply::kNotAllowed);
    co_return CloseReason::kLimitSessions;
  }
  co_return std::nullopt;
}

// TLS listeners: the handshake comes first, under its own deadline. A client that does not
// speak TLS (a plaintext SOCKS greeting, an HTTP request) gets no SOCKS answer at all.
asio::awaitable<bool> Session::start_tls() {
  rec_.phase = SessionPhase::kTlsHandshake;
  auto it = snap_->tls.find(rec_.listener);
  if (it == snap_->tls.end()) {
    finish(CloseReason::kInternalError);
    co_return false;
  }
  auto& tcp = static_cast<crypto::TcpChannel&>(*channel_);
  auto tls = std::make_unique<crypto::TlsChannel>(std::move(tcp.socket()), it->second);
  tls_ = tls.get();
  channel_ = std::move(tls);
  auto r = co_await with_timeout(sniff_then_handshake(), listener_->tls->handshake_timeout);
  if (!r || *r) {
    if (!extra_.contains("tls_error")) {
      extra_["tls_error"] = r ? tls_->last_error() : "no TLS handshake within the deadline";
    }
    finish(r ? CloseReason::kTlsHandshakeFailed : CloseReason::kTlsHandshakeTimeout);
    co_return false;
  }
  rec_.tls =
      TlsRecord{tls_->version(), tls_->cipher(), tls_->sni(), tls_->resumed(), tls_->client_cert()};
  co_return true;
}

// A TLS client opens with a handshake record (0x16). A client that sends a SOCKS greeting (or
// anything else) in clear is told nothing and recorded as such, without waiting for the
// handshake deadline.
asio::awaitable<std::error_code> Session::sniff_then_handshake() {
  auto& sock = tls_->lowest_layer();
  for (;;) {
    uint8_t first = 0;
    ssize_t n = ::recv(sock.native_handle(), &first, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 1) {
      if (first == 0x16) break;
      extra_["tls_error"] = first == socks5::kVersion || first == socks4::kVersion
                                ? "plaintext SOCKS on a TLS listener"
                                : "not a TLS handshake";
      co_return crypto::TlsErrc::kHandshakeFailed;
    }
    if (n == 0) break;  // EOF: let the handshake report it
    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) break;
    auto [ec] = co_await sock.async_wait(asio::socket_base::wait_read, kUse);
    if (ec) co_return ec;
  }
  co_return co_await tls_->handshake();
}

// A verified client certificate is an identity of its own: with method "none" it is the
// session's user (method "certificate"); with a password or a Kerberos ticket both must name
// the same user unless the listener says otherwise. Returns an auth failure reason or "".
std::string Session::apply_client_certificate() {
  if (tls_ == nullptr || !tls_->client_cert()) return {};
  const crypto::ClientCertInfo& c = *tls_->client_cert();
  if (identity_.method == "none") {
    if (!c.user) return "certificate_no_identity";
    identity_.user = *c.user;
    identity_.method = "certificate";
    return {};
  }
  if (listener_->tls->same_user) {
    if (!c.user) return "certificate_no_identity";
    if (*c.user != identity_.user) return "certificate_user_mismatch";
  }
  return {};
}

// SOCKS4/4a: no authentication, so the identity is anonymous with method "socks4" (the
// USERID field is recorded, never trusted) and only rules naming "socks4" apply. Off unless
// the listener enables it.
asio::awaitable<std::optional<CloseReason>> Session::negotiate_socks4() {
  socks4_ = true;
  rec_.method = "socks4";
  rec_.phase = SessionPhase::kRequest;
  socks4::Request r4;
  std::error_code ec = co_await channel_->read_message(
      [&](std::span<const uint8_t> in, size_t* consumed) {
        return socks4::parse_request(in, &r4, consumed);
      },
      socks4::kMaxRequestSize);
  if (ec.category() == socks4::category()) {
    co_await send_reply(socks5::Reply::kGeneralFailure);
    co_return ec == socks4::Errc::kUnknownCommand ? CloseReason::kUnsupportedCommand
                                                  : CloseReason::kProtocolError;
  }
  if (ec) co_return from_client_read_error(ec);
  extra_["socks4_userid"] = escape_untrusted(r4.user_id);
  request_.command = r4.command;
  request_.port = r4.port;
  if (!r4.host.empty()) {
    request_.dst.type = socks5::AddressType::kDomain;
    request_.dst.domain = r4.host;
  } else {
    request_.dst.type = socks5::AddressType::kIpv4;
    request_.dst.ip = r4.ip;
  }
  rec_.requested = request_.dst;
  rec_.port = request_.port;
  rec_.command = std::string(policy::to_string(*to_policy_command(request_.command)));
  if (!listener_->socks4) {
    json j = base_record("denied", rec_);
    j["stage"] = "protocol";
    j["reason"] = "SOCKS4 is not enabled on listener " + rec_.listener;
    audit(std::move(j));
    co_await send_reply(socks5::Reply::kNotAllowed);
    co_return CloseReason::kSocks4Disabled;
  }
  identity_.method = "socks4";
  co_return std::nullopt;
}

asio::awaitable<void> Session::run() {
  const Config& cfg = *snap_->config;
  listener_ = cfg.find_listener(rec_.listener);
  if (listener_ == nullptr) {  // the listener vanished in a reload between accept and here
    finish(CloseReason::kShutdown);
    co_return;
  }
  policy::IpAddress client_ip = to_policy_address(rec_.client.address());

  // Session caps that do not need to know the user.
  state_.metrics.connection_accepted(rec_.listener);
  SessionRegistry::Origin origin{rec_.listener, format_endpoint(rec_.client), live_up_, live_down_};
  auto admit =
      state_.sessions.admit(numeric_id_, rec_.client.address().to_string(), cfg.limits.max_sessions,
                            cfg.limits.max_sessions_per_source, closer_, std::move(origin));
  if (admit != SessionRegistry::Admit::kOk) {
    json j = base_record("denied", rec_);
    j["stage"] = "limit";
    bool global = admit == SessionRegistry::Admit::kGlobalLimit;
    j["reason"] = global ? "limit:sessions_total" : "limit:sessions_per_source";
    audit(std::move(j));
    state_.metrics.limit_hit(global ? "sessions_total" : "sessions_per_source");
    finish(CloseReason::kLimitSessions);
    co_return;
  }
  admitted_ = true;

  // Client rules: may this source talk to the gateway at all?
  policy::Decision cd = snap_->policy->decide_client({client_ip, rec_.listener});
  if (!cd.allowed()) {
    rec_.rule_id = cd.rule_id;
    rec_.decision = "block";
    audit_denied("client", cd);
    finish(CloseReason::kClientDenied);
    co_return;
  }

  if (listener_->tls && !co_await start_tls()) co_return;

  auto negotiated = co_await with_timeout(negotiate(), cfg.limits.negotiation_timeout);
  if (!negotiated) {
    finish(CloseReason::kNegotiationTimeout);
    co_return;
  }
  if (*negotiated) {
    finish(**negotiated);
    co_return;
  }
  std::string command = rec_.command.value_or(""), target = target_text();
  state_.sessions.describe(numeric_id_, identity_.user, rec_.method, command, target);

  if (request_.command == static_cast<uint8_t>(socks5::Command::kBind)) {
    co_await run_bind();
  } else if (request_.command == static_cast<uint8_t>(socks5::Command::kUdpAssociate)) {
    co_await run_udp();
  } else if (request_.command == static_cast<uint8_t>(socks5::Command::kUdpInStream)) {
    co_await run_udp(/*in_stream=*/true);
  } else {
    co_await run_connect();
  }
}

// CONNECT: policy on the name and every resolved address, connect, reply, relay.
asio::awaitable<void> Session::run_connect() {
  const Config& cfg = *snap_->config;
  rec_.phase = SessionPhase::kConnect;
  ConnectOutcome oc = co_await connect_upstream(
      request_.dst, request_.port, decision_request(policy::Command::kConnect), *snap_->policy,
      state_.resolver, cfg.limits.connect_timeout,
      EgressSources{&listener_->external_addrs, &snap_->egress}, cfg.upstream.congestion_control,
      &upstream_, [this](const policy::Decision& d) { return admit_limits(d); });
  rec_.rule_id = oc.decision.rule_id;
  rec_.decision = oc.decision.allowed() ? "pass" : "block";
  if (oc.remote) rec_.remote = oc.remote;
  if (!oc.ok) {
    if (oc.reason == CloseReason::kPolicyDenied) audit_denied("request", oc.decision);
    if (!oc.detail.empty()) log::debug("session ", rec_.id, ": ", oc.detail);
    co_await send_reply(describe(oc.reason).reply);
    finish(oc.reason);
    co_return;
  }
  std::error_code ec;
  rec_.bound = upstream_.local_endpoint(ec);
  if (!co_await commit_start()) {
    co_await send_reply(describe(CloseReason::kAuditUnavailable).reply);
    finish(CloseReason::kAuditUnavailable);
    co_return;
  }
  co_await send_reply(socks5::Reply::kSucceeded);
  co_await relay_and_finish();
}

void Session::watch_reloads() {
  if (!recheck_) return;
  state_.sessions.set_recheck(numeric_id_, recheck_);
  // Decided under a snapshot a reload has replaced meanwhile: check now (the reload's own
  // round of re-checks may have run before this session was reachable).
  if (state_.snapshot.load() != snap_) recheck();
}

void Session::recheck() {
  if (aborted_ || rec_.phase != SessionPhase::kRelay) return;
  std::shared_ptr<const Snapshot> snap = state_.snapshot.load();
  if (!snap) return;
  // The identity first: a user removed from the password file loses their sessions whatever
  // the rules say.
  std::string rule_id, reason;
  bool allowed = true;
  const auto& up = snap->backends.userpass;
  if (identity_.method == "userpass" && up &&
      up->settings().backend == auth::userpass::UserPassBackendKind::kFile &&
      !up->file().find(identity_.user)) {
    allowed = false;
    reason = "the user is no longer in the password file";
  }
  if (allowed) {
    const bool udp = request_.command == static_cast<uint8_t>(socks5::Command::kUdpAssociate) ||
                     request_.command == static_cast<uint8_t>(socks5::Command::kUdpInStream);
    policy::DecisionRequest req;
    if (udp) {
      req = decision_request(policy::Command::kUdpAssociate);
    } else {
      bool bind = request_.command == static_cast<uint8_t>(socks5::Command::kBind);
      req = decision_request(bind ? policy::Command::kBind : policy::Command::kConnect);
      req.port = request_.port;
      if (request_.dst.type == socks5::AddressType::kDomain) req.host = request_.dst.domain;
      if (rec_.remote) req.address = to_policy_address(rec_.remote->address());
    }
    policy::Decision d =
        udp ? snap->policy->decide_any_destination(req) : snap->policy->decide(req);
    allowed = d.allowed();
    rule_id = d.rule_id;
    reason = d.reason;
    if (!allowed && !udp && !rec_.rule_id.empty()) {
      // Say why the rule that let the session in no longer does ("when: Fri 18:00
      // Europe/Berlin is outside mon-fri 08:00-18:00", "users: bob not in [alice]", ...).
      std::vector<policy::TraceStep> trace;
      snap->policy->decide(req, &trace);
      for (const policy::TraceStep& step : trace) {
        if (step.rule_id == rec_.rule_id && !step.matched && !step.detail.empty()) {
          reason = "rule " + rec_.rule_id + " no longer matches (" + step.detail + "); " + reason;
          break;
        }
      }
    }
  }
  if (allowed) {
    // A later reload allowed it again within the grace: it goes on.
    if (revoke_timer_) {
      revoke_timer_->cancel();
      revoke_timer_.reset();
      extra_.erase("revoked_rule");
      extra_.erase("revoked_reason");
    }
    return;
  }
  if (!rule_id.empty()) extra_["revoked_rule"] = rule_id;
  extra_["revoked_reason"] = escape_untrusted(reason);
  std::chrono::seconds grace = snap->config->revoke_grace;
  if (grace.count() == 0) {
    abort(CloseReason::kRevoked);
    return;
  }
  if (revoke_timer_) return;  // the first grace keeps running
  revoke_timer_.emplace(channel_->lowest_layer().get_executor(), grace);
  revoke_timer_->async_wait([closer = closer_](std::error_code ec) {
    if (!ec && closer) closer(CloseReason::kRevoked);
  });
}

asio::awaitable<void> Session::relay_and_finish() {
  rec_.phase = SessionPhase::kRelay;
  watch_reloads();
  // Named, not a temporary: GCC 12 destroys non-trivial temporaries of a co_await expression
  // twice (the taps hold shared_ptrs).
  RelayOptions opts{snap_->config->limits.idle_timeout,
                    true,
                    tap(true),
                    tap(false),
                    limits_ ? limits_->up() : nullptr,
                    limits_ ? limits_->down() : nullptr};
  RelayResult rr = co_await run_relay(io(), upstream_, opts);
  rec_.bytes_up = rr.bytes_up;
  rec_.bytes_down = rr.bytes_down;
  if (rr.bulk_entries > 0) {
    log::debug("session ", rec_.id, ": relay went into bulk mode ", rr.bulk_entries, " times");
  }
  // A token that failed verification (or came with the wrong protection) ended the relay:
  // that, not the reset it caused, is why the session closed.
  if (gss_failed()) rr.reason = CloseReason::kGssProtection;
  finish(rr.reason);
}

// BIND: decide which peers may connect, listen on the external address, reply with it, wait
// for the expected peer (bounded, and ending early if the client goes away), reply with the
// peer's address, relay.
asio::awaitable<void> Session::run_bind() {
  const Config& cfg = *snap_->config;
  const policy::Policy& pol = *snap_->policy;
  rec_.phase = SessionPhase::kConnect;
  policy::DecisionRequest req = decision_request(policy::Command::kBind);
  req.port = request_.port;

  // Which peers may connect: the host the client named (every address it resolves to that
  // policy allows). An unspecified DST (0.0.0.0 / ::) means "whoever connects", and then each
  // peer is decided by policy as it connects.
  std::vector<policy::IpAddress> expected;
  bool any_peer = false;
  std::optional<policy::Decision> deciding;
  std::vector<asio::ip::address> candidates;
  if (request_.dst.type == socks5::AddressType::kDomain) {
    req.host = request_.dst.domain;
    policy::Decision pre = pol.decide(req);
    if (pre.allowed()) {
      std::string err;
      CloseReason why = CloseReason::kResolveFailed;
      candidates = co_await resolve_host(request_.dst.domain, state_.resolver, &err, &why);
      if (candidates.empty()) {
        co_await send_reply(describe(why).reply);
        finish(why);
        co_return;
      }
    } else {
      deciding = std::move(pre);
    }
  } else if (request_.dst.ip.is_unspecified()) {
    any_peer = true;
  } else {
    candidates.push_back(request_.dst.ip);
  }
  for (const auto& a : candidates) {
    req.address = to_policy_address(a);
    policy::Decision d = pol.decide(req);
    if (d.allowed()) {
      expected.push_back(*req.address);
      if (!deciding || !deciding->allowed()) deciding = std::move(d);
    } else if (!deciding) {
      deciding = std::move(d);
    }
  }
  req.address.reset();
  if (deciding) {
    rec_.rule_id = deciding->rule_id;
    rec_.decision = deciding->allowed() ? "pass" : "block";
  }
  if (!any_peer && expected.empty()) {
    audit_denied("request", *deciding);
    co_await send_reply(socks5::Reply::kNotAllowed);
    finish(CloseReason::kPolicyDenied);
    co_return;
  }
  if (auto why = admit_limits(deciding ? *deciding : pol.decide_any_destination(req))) {
    co_await send_reply(describe(*why).reply);
    finish(*why);
    co_return;
  }
  if (!state_.sessions.admit_bind(numeric_id_, identity_.user, cfg.bind.max_per_user)) {
    json j = base_record("denied", rec_);
    j["stage"] = "limit";
    j["reason"] = "limit:binds_per_user";
    audit(std::move(j));
    state_.metrics.limit_hit("binds_per_user", identity_.user);
    co_await send_reply(socks5::Reply::kNotAllowed);
    finish(CloseReason::kLimitBinds);
    co_return;
  }

  std::error_code ec;
  // Listen on the rule's egress, else the listener's external address, else where the client
  // reached us.
  asio::ip::address ext = channel_->lowest_layer().local_endpoint(ec).address();
  const HostAddresses* src = &listener_->external_addrs;
  if (deciding && !deciding->egress.empty()) {
    if (auto it = snap_->egress.find(deciding->egress); it != snap_->egress.end())
      src = &it->second;
  }
  if (!src->empty()) ext = src->for_family(ext.is_v6()).value_or(src->v4 ? *src->v4 : *src->v6);
  std::vector<uint16_t> reserved;
  for (const auto& l : cfg.listeners) reserved.push_back(l.port);
  asio::ip::tcp::acceptor acceptor(channel_->lowest_layer().get_executor());
  ec = open_bind_listener(acceptor, ext, cfg.bind, reserved);
  if (ec) {
    log::warn("session ", rec_.id, ": BIND: cannot listen on ", ext.to_string(), ": ",
              ec.message());
    co_await send_reply(socks5::Reply::kGeneralFailure);
    finish(CloseReason::kBindFailed);
    co_return;
  }
  // The peer's connection is an upstream one: it inherits the listening socket's setting.
  apply_congestion_control(acceptor.native_handle(), cfg.upstream.congestion_control,
                           "BIND listener");
  rec_.bound = acceptor.local_endpoint(ec);
  if (!co_await commit_start()) {
    co_await send_reply(describe(CloseReason::kAuditUnavailable).reply);
    finish(CloseReason::kAuditUnavailable);
    co_return;
  }
  if (co_await write_reply(socks5::Reply::kSucceeded, *rec_.bound)) {
    finish(CloseReason::kClientReset);
    co_return;
  }

  rec_.phase = SessionPhase::kBindWait;
  auto peer =
      co_await with_timeout(accept_bind_peer(acceptor, expected, any_peer, req), cfg.bind.timeout);
  acceptor.close(ec);
  reply_sent_ = false;  // the second reply is still due
  if (!peer) {
    co_await send_reply(describe(CloseReason::kBindTimeout).reply);
    finish(CloseReason::kBindTimeout);
    co_return;
  }
  if (!*peer) {  // the client went away while we waited
    finish(CloseReason::kClientClosed);
    co_return;
  }
  upstream_ = std::move(**peer);
  rec_.remote = upstream_.remote_endpoint(ec);
  upstream_.set_option(asio::ip::tcp::no_delay(true), ec);
  reply_sent_ = true;
  if (co_await write_reply(socks5::Reply::kSucceeded,
                           rec_.remote.value_or(asio::ip::tcp::endpoint{}))) {
    finish(CloseReason::kClientReset);
    co_return;
  }
  co_await relay_and_finish();
}

// UDP ASSOCIATE: policy must allow some UDP destination for this user; then a relay socket on
// the address the client reached, the reply, and datagrams until the control connection ends.
asio::awaitable<void> Session::run_udp(bool in_stream) {
  const Config& cfg = *snap_->config;
  rec_.phase = SessionPhase::kConnect;
  policy::DecisionRequest req = decision_request(policy::Command::kUdpAssociate);
  policy::Decision pre = snap_->policy->decide_any_destination(req);
  rec_.rule_id = pre.rule_id;
  rec_.decision = pre.allowed() ? "pass" : "block";
  if (!pre.allowed()) {
    audit_denied("request", pre);
    co_await send_reply(socks5::Reply::kNotAllowed);
    finish(CloseReason::kPolicyDenied);
    co_return;
  }
  if (auto why = admit_limits(pre)) {
    co_await send_reply(describe(*why).reply);
    finish(*why);
    co_return;
  }
  // Where the client will send from: DST, or (zeros / a name) the control connection's address
  // with the port learnt from its first datagram.
  asio::ip::address client_ip = rec_.client.address();
  if (request_.dst.type != socks5::AddressType::kDomain && !request_.dst.ip.is_unspecified()) {
    client_ip = request_.dst.ip;
  }
  std::error_code ec;
  asio::ip::address local = channel_->lowest_layer().local_endpoint(ec).address();
  UdpSettings us;
  us.idle_timeout = cfg.udp.idle_timeout;
  us.max_datagrams_per_s = cfg.udp.max_datagrams_per_s;
  us.max_bytes_per_s = cfg.udp.max_bytes_per_s;
  us.max_destinations = cfg.udp.max_destinations;
  us.source = listener_->external_addrs;
  us.egress = &snap_->egress;
  us.tap_up = tap(true);
  us.tap_down = tap(false);
  if (limits_) {
    us.limit_up = limits_->up();
    us.limit_down = limits_->down();
  }
  // GSS-API: datagrams are protected like the stream (RFC 1961 section 5). In stream mode they
  // travel inside the protected stream itself.
  std::optional<GssDatagrams> gss_datagrams;
  auto* gss = in_stream ? nullptr : dynamic_cast<crypto::GssChannel*>(wrapped_.get());
  if (gss != nullptr) {
    gss_datagrams.emplace(*gss);
    us.protection = &*gss_datagrams;
  }
  UdpAssociation assoc(channel_->lowest_layer().get_executor(), client_ip, request_.port, req,
                       *snap_->policy, state_.resolver, us, [this](json d) {
                         json j = base_record("denied", rec_);
                         j.update(d);
                         j["decision"] = "block";
                         audit(std::move(j));
                       });
  if (in_stream) {
    extra_["udp_in_stream"] = true;
    rec_.bound = asio::ip::tcp::endpoint(asio::ip::address_v4::any(), 0);
    co_await send_reply(socks5::Reply::kSucceeded);
    rec_.phase = SessionPhase::kRelay;
    watch_reloads();
    CloseReason reason = co_await assoc.run_stream(io());
    rec_.bytes_up = assoc.counters().bytes_up;
    rec_.bytes_down = assoc.counters().bytes_down;
    extra_["udp"] = assoc.summary();
    finish(reason);
    co_return;
  }
  asio::ip::udp::endpoint relay;
  if ((ec = assoc.open(local, &relay))) {
    log::warn("session ", rec_.id, ": UDP: cannot open relay socket: ", ec.message());
    co_await send_reply(socks5::Reply::kGeneralFailure);
    finish(CloseReason::kInternalError);
    co_return;
  }
  asio::ip::address advertised = relay.address();
  if (!listener_->udp_advertise.empty())
    advertised = asio::ip::make_address(listener_->udp_advertise, ec);
  rec_.bound = asio::ip::tcp::endpoint(advertised, relay.port());
  if (!co_await commit_start()) {
    co_await send_reply(describe(CloseReason::kAuditUnavailable).reply);
    finish(CloseReason::kAuditUnavailable);
    co_return;
  }
  co_await send_reply(socks5::Reply::kSucceeded);
  rec_.phase = SessionPhase::kRelay;
  watch_reloads();
  CloseReason reason = co_await assoc.run(channel_->lowest_layer());
  rec_.bytes_up = assoc.counters().bytes_up;
  rec_.bytes_down = assoc.counters().bytes_down;
  extra_["udp"] = assoc.summary();
  finish(reason);
}

// Accepts connections until one comes from an allowed peer; others are closed and audited.
// Returns nullopt when the client's control connection ends first.
asio::awaitable<std::optional<asio::ip::tcp::socket>> Session::accept_bind_peer(
    asio::ip::tcp::acceptor& acceptor, const std::vector<policy::IpAddress>& expected,
    bool any_peer, const policy::DecisionRequest& base) {
  using namespace asio::experimental::awaitable_operators;
  auto accept_one = [&]() -> asio::awaitable<std::optional<asio::ip::tcp::socket>> {
    for (;;) {
      asio::ip::tcp::endpoint from;
      auto [ec, sock] = co_await acceptor.async_accept(from, kUse);
      if (ec) co_return std::nullopt;
      policy::IpAddress pa = to_policy_address(from.address());
      bool ok;
      std::string why;
      if (any_peer) {
        policy::DecisionRequest r = base;
        r.address = pa;
        policy::Decision d = snap_->policy->decide(r);
        ok = d.allowed();
        if (ok) {
          rec_.rule_id = d.rule_id;
          rec_.decision = "pass";
        }
        why = d.reason;
      } else {
        ok = std::find(expected.begin(), expected.end(), pa) != expected.end();
        why = "BIND peer " + pa.to_string() + " is not the expected host";
      }
      if (ok) co_return std::move(sock);
      json j = base_record("denied", rec_);
      j["stage"] = "bind_peer";
      j["peer"] = format_endpoint(from);
      j["reason"] = why;
      audit(std::move(j));
      std::error_code ignored;
      sock.close(ignored);
    }
  };
  // The control connection: EOF or an error ends the wait; data the client sends early stays
  // in the socket for the relay.
  auto client_gone = [&]() -> asio::awaitable<void> {
    auto [ec] = co_await channel_->lowest_layer().async_wait(asio::socket_base::wait_read, kUse);
    if (!ec) {
      uint8_t b;
      ssize_t n = ::recv(channel_->lowest_layer().native_handle(), &b, 1, MSG_PEEK | MSG_DONTWAIT);
      if (n > 0 || (n < 0 && errno == EAGAIN)) {
        asio::steady_timer forever(co_await asio::this_coro::executor,
                                   std::chrono::hours(24 * 365));
        co_await forever.async_wait(kUse);
      }
    }
  };
  auto r = co_await (accept_one() || client_gone());
  if (r.index() == 0) co_return std::move(std::get<0>(r));
  co_return std::nullopt;
}

std::optional<CloseReason> Session::admit_limits(const policy::Decision& d) {
  LimitRefusal why = LimitRefusal::kNone;
  limits_ = state_.limits.admit(identity_.user, d.rule_id, d.limits, &why);
  if (limits_) return std::nullopt;
  std::string_view name = limit_name(why);
  json j = base_record("denied", rec_);
  j["stage"] = "limit";
  j["rule"] = d.rule_id;
  j["decision"] = "block";
  j["reason"] = "limit:" + std::string(name);
  audit(std::move(j));
  state_.metrics.limit_hit(name, identity_.user);
  if (why == LimitRefusal::kNewSessionsPerMinute) return CloseReason::kLimitNewSessions;
  if (why == LimitRefusal::kUserSessions || why == LimitRefusal::kRuleSessions) {
    return CloseReason::kLimitSessions;
  }
  return CloseReason::kLimitQuota;
}

void Session::finish(CloseReason reason) {
  if (aborted_) reason = abort_reason_;
  if (admitted_) state_.sessions.remove(numeric_id_);
  limits_.reset();
  SessionPhase at = rec_.phase;
  rec_.phase = SessionPhase::kClosed;
  channel_->close();
  std::error_code ec;
  upstream_.close(ec);
  state_.counters.add(reason);
  state_.metrics.session_ended({rec_.listener, rec_.method, rec_.command.value_or(""),
                                identity_.user, rec_.rule_id, rec_.decision, to_string(reason)});
  if (reason == CloseReason::kTlsError && tls_ != nullptr && !extra_.contains("tls_error")) {
    extra_["tls_error"] = tls_->last_error();
  }
  if (!audit_) return;
  RecordBuilder b("session_end");
  add_base(b, rec_);
  b.str("start", rec_.start_time).str("phase", phase_name(at));
  if (rec_.bound) b.str("bound", format_endpoint(*rec_.bound));
  b.num("bytes_up", rec_.bytes_up)
      .num("bytes_down", rec_.bytes_down)
      .num("duration_ms",
           static_cast<uint64_t>(
               std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - rec_.start)
                   .count()))
      .str("close_reason", to_string(reason));
  if (extra_.is_object()) {
    for (const auto& [k, v] : extra_.items()) b.json(k, v);
  }
  audit_->write_record(AuditRecord{b.take(), identity_.user});
}

std::string Session::target_text() const {
  if (!rec_.requested) return {};
  std::string host = rec_.requested->type == socks5::AddressType::kDomain
                         ? escape_untrusted(rec_.requested->domain)
                         : rec_.requested->ip.to_string();
  if (rec_.requested->type == socks5::AddressType::kIpv6) {
    host.insert(0, 1, '[');
    host.push_back(']');
  }
  host.push_back(':');
  host += std::to_string(rec_.port);
  return host;
}

}  // namespace

std::string format_session_id(uint64_t id) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "%08x%08x", process_id_prefix(), static_cast<uint32_t>(id));
  return buf;
}

asio::awaitable<void> run_session(ServerState& state, std::shared_ptr<const Snapshot> snapshot,
                                  std::string listener, asio::ip::tcp::socket socket,
                                  asio::ip::tcp::endpoint peer, uint64_t id) {
  auto ex = socket.get_executor();
  Session s(state, std::move(snapshot), std::move(listener), std::move(socket), peer, id);
  auto control = std::make_shared<SessionControl>();
  control->session = &s;
  s.closer_ = [ex, weak = std::weak_ptr<SessionControl>(control)](CloseReason why) {
    asio::post(ex, [weak, why] {
      if (auto c = weak.lock(); c && c->session) c->session->abort(why);
    });
  };
  s.recheck_ = [ex, weak = std::weak_ptr<SessionControl>(control)] {
    asio::post(ex, [weak] {
      if (auto c = weak.lock(); c && c->session) c->session->recheck();
    });
  };
  co_await s.run();
  control->session = nullptr;
}

}  // namespace socksgate::gateway
