#include "gateway/agent.h"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/ip/udp.hpp>
#include <asio/ip/v6_only.hpp>
#include <asio/signal_set.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <optional>
#include <vector>

#include "auth/authenticator.h"
#include "crypto/blocking_pool.h"
#include "crypto/channel.h"
#include "crypto/tls.h"
#include "gateway/http_connect.h"
#include "gateway/log.h"
#include "gateway/ready_file.h"
#include "gateway/relay.h"
#include "gateway/socks5.h"
#include "gateway/timeout.h"
#include "gateway/udp_header.h"
#include "gateway/upstream.h"

namespace socksgate::gateway {
namespace {

using Clock = std::chrono::steady_clock;
using asio::ip::tcp;
using asio::ip::udp;
using namespace asio::experimental::awaitable_operators;
constexpr auto kUse = asio::experimental::as_tuple(asio::use_awaitable);

// Why a session could not get through to the gateway. answer_for() maps each, in one place,
// to what the local client hears.
enum class LinkFailure {
  kNone,
  kUnreachable,    // no TCP connection within the connect budget (retried with backoff)
  kTls,            // the handshake failed: certificate or pin did not verify, alert, ...
  kMethodRefused,  // the gateway accepts none of our methods
  kRejected,       // the gateway refused our credentials
  kProtocol,       // the gateway said something that is not SOCKS5
  kTimeout,        // the handshake, sign-on or request took too long
};

struct LocalAnswer {
  socks5::Reply rep;
  int http_status;
};

LocalAnswer answer_for(LinkFailure f) {
  switch (f) {
    case LinkFailure::kRejected:
    case LinkFailure::kMethodRefused:
      return {socks5::Reply::kNotAllowed, 407};
    case LinkFailure::kTimeout:
      return {socks5::Reply::kGeneralFailure, 504};
    default:
      return {socks5::Reply::kGeneralFailure, 502};
  }
}

// A gateway's REP as an HTTP status for CONNECT clients.
int http_status_for(uint8_t rep) {
  switch (static_cast<socks5::Reply>(rep)) {
    case socks5::Reply::kSucceeded:
      return 200;
    case socks5::Reply::kNotAllowed:
      return 403;
    case socks5::Reply::kTtlExpired:
      return 504;
    default:
      return 502;
  }
}

std::string_view rep_text(uint8_t rep) {
  switch (static_cast<socks5::Reply>(rep)) {
    case socks5::Reply::kSucceeded:
      return "succeeded";
    case socks5::Reply::kGeneralFailure:
      return "general failure";
    case socks5::Reply::kNotAllowed:
      return "not allowed by the gateway's policy";
    case socks5::Reply::kNetworkUnreachable:
      return "network unreachable";
    case socks5::Reply::kHostUnreachable:
      return "host unreachable";
    case socks5::Reply::kConnectionRefused:
      return "connection refused";
    case socks5::Reply::kTtlExpired:
      return "TTL expired";
    case socks5::Reply::kCommandNotSupported:
      return "command not supported";
    case socks5::Reply::kAddressTypeNotSupported:
      return "address type not supported";
  }
  return "unknown reply";
}

// When the gateway is unreachable: one backoff schedule shared by every session (all run on
// the agent's one thread). The first failure marks the gateway down and schedules the next
// attempt after `initial`; a failure after that time is the next step (the wait doubles, up
// to `max`); failures before it belong to the current step and are not logged again. Sessions
// wait for the scheduled time instead of hammering a gateway that is restarting.
class GatewayHealth {
 public:
  GatewayHealth(std::string where, AgentBackoffConfig b) : where_(std::move(where)), b_(b) {}

  // When the next attempt may start (now, if the gateway is not known to be down).
  Clock::time_point next_attempt() const { return down_ ? next_ : Clock::time_point::min(); }
  const std::string& last_error() const { return last_error_; }

  void failed(const std::string& why) {
    auto now = Clock::now();
    last_error_ = why;
    if (down_ && now < next_) return;  // this step is already scheduled (and logged)
    if (!down_) {
      down_ = true;
      since_ = now;
      delay_ = b_.initial;
    }
    log::warn("agent: gateway ", where_, " unreachable: ", why, "; next attempt in ",
              delay_.count(), " ms");
    next_ = now + delay_;
    delay_ = std::min(delay_ * 2, b_.max);
  }

  void succeeded() {
    if (!down_) return;
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - since_);
    log::info("agent: gateway ", where_, " reachable again after ", ms.count(), " ms");
    down_ = false;
  }

 private:
  std::string where_;
  AgentBackoffConfig b_;
  bool down_ = false;
  Clock::time_point since_;
  Clock::time_point next_;
  std::chrono::milliseconds delay_{0};
  std::string last_error_;
};

std::string host_port(const std::string& host, uint16_t port) {
  std::string h = host;
  if (h.find(':') != std::string::npos) {
    h.insert(h.begin(), '[');
    h.push_back(']');
  }
  return h + ":" + std::to_string(port);
}

// Everything sessions share. Lives on the agent's thread.
struct AgentState {
  AgentState(AgentConfig c, std::unique_ptr<const auth::GatewayAuth> a)
      : cfg(std::move(c)),
        auth(std::move(a)),
        tls(crypto::TlsClientContext::create(cfg.gateway.tls)),
        where(host_port(cfg.gateway.host, cfg.gateway.port)),
        health(where, cfg.backoff) {}
  AgentConfig cfg;
  std::unique_ptr<const auth::GatewayAuth> auth;
  std::shared_ptr<crypto::TlsClientContext> tls;
  std::string where;  // "host:port" of the gateway, for log lines
  GatewayHealth health;
  crypto::BlockingPool resolver{2, 64};
  uint32_t active = 0;
  uint64_t next_id = 0;
};

// An open, signed-on connection to the gateway, or why there is none.
struct Link {
  std::unique_ptr<crypto::TlsChannel> channel;
  // The sign-on's per-message protection (GSS-API), wrapping `channel`; null if none.
  std::unique_ptr<crypto::Channel> wrapped;
  std::string protection;
  bool channel_bound = false;
  LinkFailure failure = LinkFailure::kNone;
  bool retry = false;  // the failure may pass (the gateway restarting): try again
  std::string detail;
};

// One TCP connection to the gateway's address(es) within `budget`.
asio::awaitable<std::optional<tcp::socket>> connect_gateway(AgentState& st, Clock::duration budget,
                                                            std::string* why) {
  auto ex = co_await asio::this_coro::executor;
  const auto& g = st.cfg.gateway;
  std::vector<asio::ip::address> addrs;
  asio::error_code aec;
  auto literal = asio::ip::make_address(g.host, aec);
  if (!aec) {
    addrs.push_back(literal);
  } else {
    CloseReason ignored;
    addrs = co_await resolve_host(g.host, st.resolver, why, &ignored);
    if (addrs.empty()) co_return std::nullopt;
  }
  auto deadline = Clock::now() + budget;
  for (const auto& a : addrs) {
    auto left = deadline - Clock::now();
    if (left <= Clock::duration::zero()) {
      *why = "connect timed out";
      break;
    }
    tcp::socket sock(ex);
    auto r = co_await with_timeout(sock.async_connect(tcp::endpoint(a, g.port), kUse), left);
    if (!r) {
      *why = "connect timed out";
      continue;
    }
    if (auto [ec] = *r; ec) {
      *why = ec.message();
      continue;
    }
    std::error_code ec;
    sock.set_option(tcp::no_delay(true), ec);
    co_return std::move(sock);
  }
  co_return std::nullopt;
}

// An I/O error while talking to the gateway: TLS errors are final; EOF and resets mean the
// gateway went away (restarting?) and are worth another attempt.
void classify(std::error_code ec, const crypto::TlsChannel& ch, std::string_view step, Link* link) {
  if (ec.category() == crypto::tls_category()) {
    link->failure = LinkFailure::kTls;
    link->detail = std::string(step) + ": " + ch.last_error();
  } else if (ec == crypto::ParseErrc::kNeedMore || ec.category() == socks5::category() ||
             ec.category() == crypto::channel_category()) {
    link->failure = LinkFailure::kProtocol;
    link->detail = std::string(step) + ": the gateway does not speak SOCKS5 (" + ec.message() + ")";
  } else {
    link->failure = LinkFailure::kUnreachable;
    link->retry = true;
    link->detail =
        std::string(step) + ": " + (ch.last_error().empty() ? ec.message() : ch.last_error());
  }
}

// TLS handshake, method selection, sign-on.
asio::awaitable<void> sign_on(AgentState& st, Link* link) {
  crypto::TlsChannel& ch = *link->channel;
  if (std::error_code ec = co_await ch.handshake()) {
    classify(ec, ch, "TLS handshake", link);
    co_return;
  }
  const auth::GatewayAuth& a = *st.auth;
  std::array<uint8_t, 1> methods{a.method_code()};
  // Messages are named, never temporaries inside a co_await (GCC 12 may destroy those twice).
  std::vector<uint8_t> greeting = socks5::encode_greeting(methods);
  if (std::error_code ec = co_await ch.write_all(greeting)) {
    classify(ec, ch, "greeting", link);
    co_return;
  }
  uint8_t method = 0;
  std::error_code ec = co_await ch.read_message(
      [&](std::span<const uint8_t> in, size_t* consumed) {
        return socks5::parse_method_selection(in, &method, consumed);
      },
      2);
  if (ec) {
    classify(ec, ch, "method selection", link);
    co_return;
  }
  if (method != a.method_code()) {
    link->failure = LinkFailure::kMethodRefused;
    link->detail =
        "the gateway accepts none of our methods (we offer " + std::string(a.name()) + ")";
    co_return;
  }
  auth::GatewayAuthOutcome outcome;
  if (ec = co_await a.authenticate(ch, &outcome); ec) {
    classify(ec, ch, "sign-on", link);
    co_return;
  }
  if (outcome.rejected) {
    link->failure = LinkFailure::kRejected;
    link->detail = outcome.detail;
    co_return;
  }
  link->wrapped = std::move(outcome.channel);
  link->protection = std::move(outcome.protection);
  link->channel_bound = outcome.channel_bound;
}

// A connection to the gateway, retried with the shared backoff within the connect budget.
asio::awaitable<Link> open_link(AgentState& st) {
  auto ex = co_await asio::this_coro::executor;
  const auto& g = st.cfg.gateway;
  const auto deadline = Clock::now() + g.connect_timeout;
  asio::steady_timer timer(ex);
  for (;;) {
    auto turn = st.health.next_attempt();
    if (turn > Clock::now()) {
      if (turn >= deadline) {
        Link l;
        l.failure = LinkFailure::kUnreachable;
        l.detail = "no connection within " + std::to_string(g.connect_timeout.count()) +
                   " ms (last error: " + st.health.last_error() + ")";
        co_return l;
      }
      timer.expires_at(turn);
      co_await timer.async_wait(kUse);
    }
    std::string why;
    auto sock = co_await connect_gateway(st, deadline - Clock::now(), &why);
    if (!sock) {
      st.health.failed(why);
      if (Clock::now() >= deadline) {
        Link l;
        l.failure = LinkFailure::kUnreachable;
        l.detail = why;
        co_return l;
      }
      continue;
    }
    Link link;
    link.channel = std::make_unique<crypto::TlsChannel>(std::move(*sock), st.tls);
    if (!co_await with_timeout(sign_on(st, &link), g.handshake_timeout)) {
      link.failure = LinkFailure::kTimeout;
      link.detail = "no TLS handshake and sign-on within " +
                    std::to_string(g.handshake_timeout.count()) + " ms";
    }
    if (link.failure == LinkFailure::kNone) {
      st.health.succeeded();
      co_return link;
    }
    link.channel->close();
    if (!link.retry) {
      // The gateway answered: it is up, just not willing.
      st.health.succeeded();
      co_return link;
    }
    st.health.failed(link.detail);
    if (Clock::now() >= deadline) co_return link;
  }
}

// Waits until the peer of `sock` closes (EOF or error). Bytes it sends meanwhile stay in the
// socket (they are for the relay); the wait then lasts until the caller cancels it.
asio::awaitable<void> peer_closed(tcp::socket& sock) {
  auto [ec] = co_await sock.async_wait(asio::socket_base::wait_read, kUse);
  if (ec) co_return;
  uint8_t b;
  ssize_t n = ::recv(sock.native_handle(), &b, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) co_return;
  asio::steady_timer forever(co_await asio::this_coro::executor, std::chrono::hours(24 * 365));
  co_await forever.async_wait(kUse);
}

enum class LocalProtocol { kSocks5, kHttp };

class AgentSession {
 public:
  AgentSession(AgentState& st, tcp::socket sock, tcp::endpoint peer)
      : st_(st), id_(++st.next_id), local_(std::move(sock)), peer_(peer) {
    std::error_code ec;
    local_.socket().set_option(tcp::no_delay(true), ec);
    ++st_.active;
  }
  ~AgentSession() { --st_.active; }

  asio::awaitable<void> run();

 private:
  asio::awaitable<bool> negotiate_local();
  asio::awaitable<bool> negotiate_socks5();
  asio::awaitable<bool> negotiate_http();
  asio::awaitable<void> answer(socks5::Reply rep, int http_status, std::string_view why,
                               const socks5::Address* bound = nullptr, uint16_t port = 0);
  asio::awaitable<std::error_code> read_gateway_reply(socks5::ReplyMessage* reply);
  asio::awaitable<void> run_tcp();
  asio::awaitable<void> run_udp();
  asio::awaitable<void> udp_up(udp::socket& sock, std::optional<udp::endpoint>& client);
  asio::awaitable<void> udp_down(udp::socket& sock, std::optional<udp::endpoint>& client);
  asio::awaitable<void> local_eof();
  std::string what() const {
    std::string cmd = req_.command == static_cast<uint8_t>(socks5::Command::kBind) ? "BIND"
                      : req_.command == static_cast<uint8_t>(socks5::Command::kUdpAssociate)
                          ? "UDP ASSOCIATE"
                          : "CONNECT";
    return "agent session " + std::to_string(id_) + " (" + cmd + " " + req_.dst.to_string() + ":" +
           std::to_string(req_.port) + ")";
  }

  AgentState& st_;
  uint64_t id_;
  crypto::TcpChannel local_;
  tcp::endpoint peer_;
  LocalProtocol proto_ = LocalProtocol::kSocks5;
  socks5::Request req_;
  std::unique_ptr<crypto::TlsChannel> tls_;
  std::unique_ptr<crypto::Channel> wrapped_;  // GSS-API protection over tls_, if any
  // What the session talks to the gateway over: the GSS-API wrapping, else TLS.
  crypto::Channel& gw() { return wrapped_ ? *wrapped_ : static_cast<crypto::Channel&>(*tls_); }
  bool answered_ = false;
};

asio::awaitable<void> AgentSession::answer(socks5::Reply rep, int http_status, std::string_view why,
                                           const socks5::Address* bound, uint16_t port) {
  if (answered_) co_return;
  answered_ = true;
  if (proto_ == LocalProtocol::kHttp) {
    std::string r = http_connect::encode_response(http_status, why);
    co_await local_.write_all(
        std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(r.data()), r.size()));
    co_return;
  }
  std::vector<uint8_t> out{socks5::kVersion, static_cast<uint8_t>(rep), 0x00};
  if (bound != nullptr) {
    socks5::append_address(&out, *bound, port);
  } else {
    socks5::append_address(&out, asio::ip::address_v4::any(), 0);
  }
  co_await local_.write_all(out);
}

asio::awaitable<bool> AgentSession::negotiate_local() {
  uint8_t first = 0;
  std::error_code ec = co_await local_.read_message(
      [&](std::span<const uint8_t> in, size_t* consumed) -> std::error_code {
        if (in.empty()) return crypto::ParseErrc::kNeedMore;
        first = in[0];
        *consumed = 0;
        return {};
      },
      1);
  if (ec) co_return false;
  if (first == socks5::kVersion) co_return co_await negotiate_socks5();
  if (std::isupper(first)) {
    proto_ = LocalProtocol::kHttp;
    co_return co_await negotiate_http();
  }
  log::debug("agent session ", id_, ": neither SOCKS5 nor HTTP (first byte ",
             static_cast<int>(first), "); closing");
  co_return false;
}

asio::awaitable<bool> AgentSession::negotiate_socks5() {
  socks5::Greeting greeting;
  std::error_code ec = co_await local_.read_message(
      [&](std::span<const uint8_t> in, size_t* consumed) {
        return socks5::parse_greeting(in, &greeting, consumed);
      },
      socks5::kMaxGreetingSize);
  if (ec) co_return false;
  // Only "no authentication": the local port is on loopback, the gateway is where users sign on.
  bool none = std::find(greeting.methods.begin(), greeting.methods.end(), auth::kMethodNone) !=
              greeting.methods.end();
  auto sel = socks5::encode_method_selection(none ? auth::kMethodNone : auth::kMethodNoAcceptable);
  if (co_await local_.write_all(sel) || !none) co_return false;
  ec = co_await local_.read_message(
      [&](std::span<const uint8_t> in, size_t* consumed) {
        return socks5::parse_request(in, &req_, consumed);
      },
      socks5::kMaxRequestSize);
  // UDP in stream is between the agent and the gateway; local applications use UDP ASSOCIATE.
  if (ec == socks5::Errc::kUnknownCommand ||
      (!ec && req_.command == static_cast<uint8_t>(socks5::Command::kUdpInStream))) {
    co_await answer(socks5::Reply::kCommandNotSupported, 0, {});
    co_return false;
  }
  if (ec == socks5::Errc::kUnknownAddressType) {
    co_await answer(socks5::Reply::kAddressTypeNotSupported, 0, {});
    co_return false;
  }
  if (ec.category() == socks5::category()) {
    co_await answer(socks5::Reply::kGeneralFailure, 0, {});
    co_return false;
  }
  co_return !ec;
}

asio::awaitable<bool> AgentSession::negotiate_http() {
  http_connect::ConnectRequest creq;
  std::error_code ec = co_await local_.read_message(
      [&](std::span<const uint8_t> in, size_t* consumed) {
        return http_connect::parse_connect(in, &creq, consumed);
      },
      http_connect::kMaxRequestHead);
  if (ec == http_connect::Errc::kNotConnect) {
    co_await answer(socks5::Reply::kCommandNotSupported, 405,
                    "socksgate agent: only CONNECT is supported (use it as an HTTPS proxy or "
                    "as a SOCKS5 proxy)");
    co_return false;
  }
  if (ec.category() == http_connect::category() || ec == crypto::ChannelErrc::kMessageTooLarge) {
    std::string why = "socksgate agent: " + ec.message();
    co_await answer(socks5::Reply::kGeneralFailure, 400, why);
    co_return false;
  }
  if (ec) co_return false;
  req_.command = static_cast<uint8_t>(socks5::Command::kConnect);
  req_.dst = std::move(creq.target);
  req_.port = creq.port;
  co_return true;
}

asio::awaitable<void> AgentSession::run() {
  if (st_.active > st_.cfg.limits.max_sessions) {
    log::warn("agent: ", st_.active - 1, " sessions open (limits.max_sessions); refusing one");
    co_return;
  }
  auto ok = co_await with_timeout(negotiate_local(), st_.cfg.limits.negotiation_timeout);
  if (!ok || !*ok) {
    local_.close();
    co_return;
  }
  Link link = co_await open_link(st_);
  if (link.failure != LinkFailure::kNone) {
    std::string msg = "gateway " + st_.where + ": " + link.detail;
    switch (link.failure) {
      case LinkFailure::kTls:
        msg += " (check gateway.ca, gateway.pin_sha256 and gateway.server_name)";
        break;
      case LinkFailure::kRejected:
      case LinkFailure::kMethodRefused:
        msg += " (check auth in the agent's config)";
        break;
      default:
        break;
    }
    log::error(what(), ": ", msg);
    LocalAnswer a = answer_for(link.failure);
    std::string why = "socksgate agent: " + msg;
    co_await answer(a.rep, a.http_status, why);
    local_.close();
    co_return;
  }
  tls_ = std::move(link.channel);
  wrapped_ = std::move(link.wrapped);
  log::debug(what(), ": signed on to ", st_.where, " (", tls_->version(),
             tls_->resumed() ? ", resumed" : "",
             link.protection.empty() ? "" : ", GSS-API " + link.protection,
             link.channel_bound ? ", channel-bound" : "", ")");
  if (req_.command == static_cast<uint8_t>(socks5::Command::kUdpAssociate)) {
    co_await run_udp();
  } else {
    co_await run_tcp();
  }
  tls_->close();
  local_.close();
}

asio::awaitable<std::error_code> AgentSession::read_gateway_reply(socks5::ReplyMessage* reply) {
  auto r = co_await with_timeout(gw().read_message(
                                     [reply](std::span<const uint8_t> in, size_t* consumed) {
                                       return socks5::parse_reply(in, reply, consumed);
                                     },
                                     socks5::kMaxReplySize),
                                 st_.cfg.gateway.request_timeout);
  if (!r) co_return std::error_code(asio::error::timed_out);
  co_return *r;
}

asio::awaitable<void> AgentSession::run_tcp() {
  const bool bind = req_.command == static_cast<uint8_t>(socks5::Command::kBind);
  std::vector<uint8_t> req = socks5::encode_request(req_.command, req_.dst, req_.port);
  if (std::error_code ec = co_await gw().write_all(req)) {
    log::warn(what(), ": gateway ", st_.where, ": ", ec.message());
    co_await answer(socks5::Reply::kGeneralFailure, 502, "socksgate agent: gateway went away");
    co_return;
  }
  socks5::ReplyMessage reply;
  if (std::error_code ec = co_await read_gateway_reply(&reply)) {
    log::warn(what(), ": no reply from gateway ", st_.where, ": ", ec.message());
    co_await answer(socks5::Reply::kGeneralFailure, ec == asio::error::timed_out ? 504 : 502,
                    "socksgate agent: no reply from the gateway");
    co_return;
  }
  if (reply.rep != 0) {
    log::info(what(), ": the gateway answered ", static_cast<int>(reply.rep), " (",
              rep_text(reply.rep), ")");
    std::string why = "socksgate agent: the gateway answered: " + std::string(rep_text(reply.rep));
    co_await answer(static_cast<socks5::Reply>(reply.rep), http_status_for(reply.rep), why,
                    &reply.bound, reply.port);
    co_return;
  }
  co_await answer(socks5::Reply::kSucceeded, 200, {}, &reply.bound, reply.port);
  if (bind) {
    // The second reply comes when the peer connects to the gateway's listener; the local
    // client may give up meanwhile.
    socks5::ReplyMessage second;
    auto r = co_await (gw().read_message(
                           [&second](std::span<const uint8_t> in, size_t* consumed) {
                             return socks5::parse_reply(in, &second, consumed);
                           },
                           socks5::kMaxReplySize) ||
                       peer_closed(local_.socket()));
    if (r.index() == 1) {
      log::debug(what(), ": the local client left while waiting for the peer");
      co_return;
    }
    answered_ = false;
    if (std::error_code ec = std::get<0>(r)) {
      log::warn(what(), ": no second reply from gateway ", st_.where, ": ", ec.message());
      co_await answer(socks5::Reply::kGeneralFailure, 502, {});
      co_return;
    }
    co_await answer(static_cast<socks5::Reply>(second.rep), 502, {}, &second.bound, second.port);
    if (second.rep != 0) {
      log::info(what(), ": the gateway answered ", static_cast<int>(second.rep), " (",
                rep_text(second.rep), ")");
      co_return;
    }
  }
  // Bytes the local client sent ahead go first.
  if (auto p = local_.pending(); !p.empty()) {
    if (co_await gw().write_all(p)) co_return;
    local_.drop_pending();
  }
  // Named, not a temporary inside co_await (GCC 12; RelayOptions holds shared_ptrs).
  RelayOptions opts;
  opts.idle_timeout = st_.cfg.limits.idle_timeout;
  opts.allow_splice = false;
  RelayResult rr = co_await run_relay(gw(), local_.socket(), opts);
  log::debug(what(), ": ended (", to_string(rr.reason), "), ", rr.bytes_up, " bytes from the ",
             "gateway, ", rr.bytes_down, " to it");
}

// UDP ASSOCIATE: the datagrams travel inside this TLS connection (UDP in stream, framing v1).
asio::awaitable<void> AgentSession::run_udp() {
  socks5::Address zeros;
  zeros.type = socks5::AddressType::kIpv4;
  zeros.ip = asio::ip::address_v4::any();
  std::vector<uint8_t> req =
      socks5::encode_request(static_cast<uint8_t>(socks5::Command::kUdpInStream), zeros, 0);
  if (std::error_code ec = co_await gw().write_all(req)) {
    log::warn(what(), ": gateway ", st_.where, ": ", ec.message());
    co_await answer(socks5::Reply::kGeneralFailure, 502, {});
    co_return;
  }
  socks5::ReplyMessage reply;
  if (std::error_code ec = co_await read_gateway_reply(&reply)) {
    log::warn(what(), ": no reply from gateway ", st_.where, ": ", ec.message());
    co_await answer(socks5::Reply::kGeneralFailure, 502, {});
    co_return;
  }
  if (reply.rep != 0) {
    if (reply.rep == static_cast<uint8_t>(socks5::Reply::kCommandNotSupported)) {
      log::warn(what(), ": the gateway does not support UDP over TLS (command 0x80)");
    } else {
      log::info(what(), ": the gateway answered ", static_cast<int>(reply.rep), " (",
                rep_text(reply.rep), ")");
    }
    co_await answer(static_cast<socks5::Reply>(reply.rep), 0, {});
    co_return;
  }
  // The local relay socket, on the loopback address the client reached us on.
  std::error_code ec;
  asio::ip::address local_ip = local_.socket().local_endpoint(ec).address();
  udp::socket sock(local_.socket().get_executor());
  sock.open(local_ip.is_v6() ? udp::v6() : udp::v4(), ec);
  if (!ec) sock.bind(udp::endpoint(local_ip, 0), ec);
  udp::endpoint relay;
  if (!ec) relay = sock.local_endpoint(ec);
  if (ec) {
    log::warn(what(), ": cannot open the local UDP socket: ", ec.message());
    co_await answer(socks5::Reply::kGeneralFailure, 0, {});
    co_return;
  }
  socks5::Address bound;
  bound.type = relay.address().is_v6() ? socks5::AddressType::kIpv6 : socks5::AddressType::kIpv4;
  bound.ip = relay.address();
  co_await answer(socks5::Reply::kSucceeded, 0, {}, &bound, relay.port());
  // Datagrams are accepted from the control connection's address only; the port is the one
  // the request named, or the first datagram's.
  std::optional<udp::endpoint> client;
  if (req_.port != 0) client = udp::endpoint(peer_.address(), req_.port);
  co_await (udp_up(sock, client) || udp_down(sock, client) || local_eof());
  log::debug(what(), ": association ended");
}

asio::awaitable<void> AgentSession::udp_up(udp::socket& sock,
                                           std::optional<udp::endpoint>& client) {
  std::vector<uint8_t> buf(0xffff);
  std::vector<uint8_t> frame;
  frame.reserve(socks5::kMaxStreamFrameSize);
  for (;;) {
    udp::endpoint from;
    auto [ec, n] = co_await sock.async_receive_from(asio::buffer(buf), from, kUse);
    if (ec) co_return;
    if (from.address() != peer_.address()) continue;  // not our local client
    if (client && from != *client) continue;
    socks5::UdpHeader h;
    std::span<const uint8_t> dg(buf.data(), n);
    if (socks5::parse_udp_header(dg, &h) || h.frag != 0) continue;
    if (!client) client = from;
    frame.clear();
    socks5::encode_stream_frame(&frame, dg);
    if (co_await gw().write_all(frame)) co_return;
  }
}

asio::awaitable<void> AgentSession::udp_down(udp::socket& sock,
                                             std::optional<udp::endpoint>& client) {
  std::vector<uint8_t> datagram;
  for (;;) {
    std::error_code ec = co_await gw().read_message(
        [&datagram](std::span<const uint8_t> in, size_t* consumed) {
          std::span<const uint8_t> dg;
          std::error_code e = socks5::parse_stream_frame(in, &dg, consumed);
          if (!e) datagram.assign(dg.begin(), dg.end());
          return e;
        },
        socks5::kMaxStreamFrameSize);
    if (ec) {
      if (ec != asio::error::eof) log::debug(what(), ": gateway stream: ", ec.message());
      co_return;
    }
    if (!client) continue;  // nobody to deliver to yet
    auto [sec, sent] = co_await sock.async_send_to(asio::buffer(datagram), *client, kUse);
    (void)sent;
    if (sec && sec != asio::error::connection_refused) co_return;
  }
}

// The association lives as long as the local control connection.
asio::awaitable<void> AgentSession::local_eof() {
  std::array<uint8_t, 512> sink;
  for (;;) {
    auto [ec, n] = co_await local_.read_some(sink);
    if (ec) co_return;
  }
}

}  // namespace

struct Agent::Impl {
  Impl(AgentConfig cfg, std::unique_ptr<const auth::GatewayAuth> auth, AgentOptions o)
      : opts(std::move(o)), state(std::move(cfg), std::move(auth)) {}

  asio::awaitable<void> accept_loop(tcp::acceptor& acceptor) {
    asio::steady_timer backoff(io);
    for (;;) {
      tcp::endpoint peer;
      auto [ec, sock] = co_await acceptor.async_accept(peer, kUse);
      if (ec == asio::error::operation_aborted || !acceptor.is_open()) co_return;
      if (ec) {
        log::warn("agent: accept: ", ec.message());
        backoff.expires_after(std::chrono::milliseconds(100));
        co_await backoff.async_wait(kUse);
        continue;
      }
      asio::co_spawn(
          io,
          [this, s = std::move(sock), peer]() mutable -> asio::awaitable<void> {
            AgentSession session(state, std::move(s), peer);
            co_await session.run();
          },
          [](std::exception_ptr e) {
            if (!e) return;
            try {
              std::rethrow_exception(e);
            } catch (const std::exception& ex) {
              log::error("agent session failed: ", ex.what());
            }
          });
    }
  }

  void write_ready_file() {
    if (opts.ready_file.empty()) return;
    std::vector<ReadyListener> ready;
    for (size_t i = 0; i < acceptors.size(); ++i) {
      std::error_code ec;
      ready.push_back({state.cfg.listen[i].name, acceptors[i]->local_endpoint(ec)});
    }
    gateway::write_ready_file(opts.ready_file, ready);
  }

  int run() {
    for (const auto& l : state.cfg.listen) {
      tcp::endpoint ep(asio::ip::make_address(l.address), l.port);
      auto a = std::make_unique<tcp::acceptor>(io);
      std::error_code ec;
      a->open(ep.protocol(), ec);
      if (!ec) a->set_option(asio::socket_base::reuse_address(true), ec);
      if (!ec && ep.address().is_v6()) a->set_option(asio::ip::v6_only(true), ec);
      if (!ec) a->bind(ep, ec);
      if (!ec) a->listen(1024, ec);
      if (ec) {
        throw std::runtime_error("listen \"" + l.name + "\": cannot listen on " + l.address +
                                 " port " + std::to_string(l.port) + ": " + ec.message());
      }
      auto bound = a->local_endpoint();
      log::info("agent: listening name=", l.name, " address=", bound.address().to_string(),
                " port=", bound.port(), " (SOCKS5 and HTTP CONNECT)");
      acceptors.push_back(std::move(a));
    }
    for (auto& a : acceptors) asio::co_spawn(io, accept_loop(*a), asio::detached);
    signals.async_wait([this](std::error_code ec, int sig) {
      if (ec) return;
      log::info("agent: signal ", sig, ": stopping");
      for (auto& a : acceptors) {
        std::error_code ignored;
        a->close(ignored);
      }
      io.stop();
    });
    write_ready_file();
    log::info("agent ready: gateway ", state.where, " (", state.cfg.auth.method,
              state.auth->user().empty() ? "" : " as ", state.auth->user(), ")");
    io.run();
    log::info("agent stopped");
    return 0;
  }

  // Declaration order is destruction order, reversed: the io_context (whose session frames
  // point into state) goes before state.
  AgentOptions opts;
  AgentState state;
  asio::io_context io{1};
  asio::signal_set signals{io, SIGTERM, SIGINT};
  std::vector<std::unique_ptr<tcp::acceptor>> acceptors;
};

Agent::Agent(AgentConfig cfg, std::unique_ptr<const auth::GatewayAuth> auth, AgentOptions opts)
    : impl_(std::make_unique<Impl>(std::move(cfg), std::move(auth), std::move(opts))) {}
Agent::~Agent() = default;
int Agent::run() { return impl_->run(); }

}  // namespace socksgate::gateway
