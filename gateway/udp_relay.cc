#include "gateway/udp_relay.h"

#include <algorithm>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/ip/v6_only.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>
#include <memory>

#include "gateway/audit.h"
#include "gateway/limits.h"
#include "gateway/udp_header.h"
#include "gateway/upstream.h"

namespace socksgate::gateway {
namespace {

using Clock = std::chrono::steady_clock;
using asio::ip::udp;
constexpr auto kUse = asio::experimental::as_tuple(asio::use_awaitable);
constexpr size_t kMaxDatagram = 65535;
constexpr auto kNameTtl = std::chrono::seconds(60);

std::string format_udp(const udp::endpoint& ep) {
  std::string a = ep.address().to_string();
  if (ep.address().is_v6()) a = "[" + a + "]";
  return a + ":" + std::to_string(ep.port());
}

// Canonical form: IPv4-mapped IPv6 is IPv4 (what policy sees is what we send to).
asio::ip::address canonical(const asio::ip::address& a) {
  return to_asio_address(to_policy_address(a));
}

}  // namespace

UdpAssociation::UdpAssociation(asio::any_io_executor ex, asio::ip::address client_ip,
                               uint16_t client_port, policy::DecisionRequest base,
                               const policy::Policy& pol, crypto::BlockingPool& resolver,
                               UdpSettings settings, AuditFn denied_audit)
    : ex_(ex),
      client_ip_(canonical(client_ip)),
      base_(std::move(base)),
      policy_(pol),
      resolver_(resolver),
      settings_(settings),
      denied_audit_(std::move(denied_audit)),
      client_sock_(ex),
      wake_(ex) {
  if (client_port != 0) client_ep_ = udp::endpoint(client_ip_, client_port);
  for (Bucket* b : {&up_bucket_, &down_bucket_}) {
    b->datagrams = TokenBucket(settings_.max_datagrams_per_s, settings_.max_datagrams_per_s);
    b->bytes = TokenBucket(static_cast<double>(settings_.max_bytes_per_s),
                           static_cast<double>(settings_.max_bytes_per_s));
  }
}

std::error_code UdpAssociation::open(const asio::ip::address& bind_address, udp::endpoint* local) {
  std::error_code ec;
  udp::endpoint ep(bind_address, 0);
  client_sock_.open(ep.protocol(), ec);
  if (!ec && bind_address.is_v6()) client_sock_.set_option(asio::ip::v6_only(true), ec);
  if (!ec) client_sock_.bind(ep, ec);
  if (!ec) *local = client_sock_.local_endpoint(ec);
  return ec;
}

udp::socket* UdpAssociation::outbound(const asio::ip::address& dest, const std::string& egress) {
  const HostAddresses* src = &settings_.source;
  if (!egress.empty() && settings_.egress != nullptr) {
    if (auto it = settings_.egress->find(egress); it != settings_.egress->end()) src = &it->second;
  }
  std::optional<asio::ip::address> from = src->for_family(dest.is_v6());
  if (!src->empty() && !from) return nullptr;
  std::string key = from ? from->to_string() : (dest.is_v6() ? "::" : "0.0.0.0");
  auto it = outs_.find(key);
  if (it != outs_.end()) return it->second.get();
  auto sock = std::make_unique<udp::socket>(ex_);
  std::error_code ec;
  sock->open(dest.is_v4() ? udp::v4() : udp::v6(), ec);
  if (!ec && dest.is_v6()) sock->set_option(asio::ip::v6_only(true), ec);
  udp::endpoint local =
      from ? udp::endpoint(*from, 0) : udp::endpoint(dest.is_v4() ? udp::v4() : udp::v6(), 0);
  if (!ec) sock->bind(local, ec);
  if (!ec) sock->non_blocking(true, ec);
  if (ec) return nullptr;
  udp::socket* raw = sock.get();
  outs_.emplace(key, std::move(sock));
  ++loops_;
  asio::co_spawn(ex_, upstream_task(raw), asio::detached);
  return raw;
}

asio::awaitable<void> UdpAssociation::upstream_task(udp::socket* sock) {
  co_await upstream_loop(*sock);
  --loops_;
}

bool UdpAssociation::take(bool up, size_t bytes) {
  Bucket& b = up ? up_bucket_ : down_bucket_;
  auto now = Clock::now();
  double need = static_cast<double>(bytes);
  if (b.datagrams.available(now) < 1 || b.bytes.available(now) < need) return false;
  b.datagrams.take(1);
  b.bytes.take(need);
  if (FlowLimiter* f = up ? settings_.limit_up : settings_.limit_down) {
    Clock::duration wait{};
    size_t got = f->acquire(bytes, &wait);
    if (got < bytes) {  // the user's bandwidth (or what the quota leaves) cannot cover it now
      if (got > 0) f->give_back(got);
      return false;
    }
  }
  return true;
}

bool UdpAssociation::count_moved(bool up, size_t bytes) {
  FlowLimiter* f = up ? settings_.limit_up : settings_.limit_down;
  if (f == nullptr || f->moved(bytes)) return true;
  // A quota is used up: the association ends, in either mode.
  quota_used_up_ = true;
  closing_ = true;
  stream_end_ = CloseReason::kLimitQuota;
  std::error_code ec;
  client_sock_.close(ec);
  wake_.cancel();
  return false;
}

asio::awaitable<std::optional<udp::endpoint>> UdpAssociation::destination_for(
    const socks5::Address& dst, uint16_t port) {
  std::vector<asio::ip::address> candidates;
  policy::DecisionRequest req = base_;
  req.port = port;
  if (dst.type == socks5::AddressType::kDomain) {
    req.host = dst.domain;
    // A name no rule could allow is refused before any DNS query, as for CONNECT.
    policy::Decision pre = policy_.decide(req);
    if (!pre.allowed()) {
      ++counters_.dropped_denied;
      audit_denied_once(dst, port, pre);
      co_return std::nullopt;
    }
    auto it = names_.find(dst.domain);
    if (it == names_.end() || it->second.expires <= Clock::now()) {
      if (names_.size() >= settings_.max_destinations) names_.clear();
      std::string err;
      CloseReason why;
      auto addrs = co_await resolve_host(dst.domain, resolver_, &err, &why);
      it = names_.insert_or_assign(dst.domain, NameEntry{std::move(addrs), Clock::now() + kNameTtl})
               .first;
    }
    candidates = it->second.addrs;
    if (candidates.empty()) {
      ++counters_.dropped_unresolved;
      co_return std::nullopt;
    }
  } else {
    candidates.push_back(dst.ip);
  }
  std::optional<policy::Decision> first_denial;
  for (const auto& raw : candidates) {
    udp::endpoint ep(canonical(raw), port);
    auto known = decisions_.find(ep);
    if (known != decisions_.end() && dst.type != socks5::AddressType::kDomain) {
      if (known->second.allowed) co_return ep;
      ++counters_.dropped_denied;
      co_return std::nullopt;
    }
    req.address = to_policy_address(ep.address());
    policy::Decision d = policy_.decide(req);
    if (decisions_.size() < settings_.max_destinations * 4)
      decisions_[ep] = {d.allowed(), d.rule_id};
    if (d.allowed()) {
      if (!flows_.contains(ep) && flows_.size() >= settings_.max_destinations) {
        ++counters_.dropped_destinations;  // a bounded flow table: no endless fan-out
        co_return std::nullopt;
      }
      auto& flow = flows_[ep];
      if (flow.rule.empty()) {
        flow.rule = d.rule_id;
        flow.host = req.host;
        flow.egress = d.egress;
      }
      co_return ep;
    }
    if (!first_denial) first_denial = std::move(d);
  }
  ++counters_.dropped_denied;
  if (first_denial) audit_denied_once(dst, port, *first_denial);
  co_return std::nullopt;
}

void UdpAssociation::audit_denied_once(const socks5::Address& dst, uint16_t port,
                                       const policy::Decision& d) {
  // One record per denied destination, and a bounded number of them per association: the
  // counters carry the rest, so a client cannot flood the audit log.
  if (known_denied_.size() >= settings_.max_destinations) return;
  if (!known_denied_.insert(dst.to_string() + ":" + std::to_string(port)).second) return;
  nlohmann::json j;
  j["stage"] = "udp_destination";
  j["rule"] = d.rule_id;
  j["reason"] = d.reason;
  j["host"] =
      dst.type == socks5::AddressType::kDomain ? escape_untrusted(dst.domain) : dst.ip.to_string();
  j["port"] = port;
  denied_audit_(std::move(j));
}

// Both loops wait for readability once and then drain the socket until it would block,
// forwarding each datagram with a non-blocking send: one reactor round trip and one coroutine
// switch per burst instead of per datagram (the kernel work is the floor either way). Any
// error other than a transient one (ICMP-reported ECONNREFUSED and the like) ends a loop, so
// nothing spins on a socket that run() has closed.
namespace {
bool socket_gone(const std::error_code& ec, const udp::socket& s) {
  return !s.is_open() || ec == asio::error::operation_aborted || ec == asio::error::bad_descriptor;
}
}  // namespace

asio::awaitable<void> UdpAssociation::client_loop() {
  auto buf = std::make_unique<uint8_t[]>(kMaxDatagram);
  std::vector<uint8_t> plain;  // GSS-API: the unwrapped request
  std::error_code nb;
  client_sock_.non_blocking(true, nb);
  for (;;) {
    auto [wec] = co_await client_sock_.async_wait(udp::socket::wait_read, kUse);
    if (wec || !client_sock_.is_open()) co_return;
    const auto now = Clock::now();  // once per burst
    const auto wall = std::chrono::system_clock::now();
    for (;;) {
      udp::endpoint from;
      std::error_code ec;
      size_t n = client_sock_.receive_from(asio::buffer(buf.get(), kMaxDatagram), from, 0, ec);
      if (ec == asio::error::would_block) break;
      if (ec) {
        if (socket_gone(ec, client_sock_)) co_return;
        continue;  // e.g. ICMP port unreachable surfacing as ECONNREFUSED
      }
      udp::endpoint src(canonical(from.address()), from.port());
      // Only the association's client.
      if (client_ep_) {
        if (src != *client_ep_) {
          ++counters_.dropped_foreign;
          continue;
        }
      } else if (src.address() == client_ip_) {
        client_ep_ = src;  // DST was zeros: the first datagram from the client's IP fixes it
      } else {
        ++counters_.dropped_foreign;
        continue;
      }
      if (settings_.protection != nullptr) {
        if (!settings_.protection->open(std::span<const uint8_t>(buf.get(), n), &plain) ||
            plain.size() > kMaxDatagram) {
          ++counters_.dropped_unverified;
          continue;
        }
        std::copy(plain.begin(), plain.end(), buf.get());
        n = plain.size();
      }
      if (!co_await forward_up(std::span<const uint8_t>(buf.get(), n), now, wall)) co_return;
    }
  }
}

asio::awaitable<bool> UdpAssociation::forward_up(std::span<const uint8_t> dgram,
                                                 Clock::time_point now,
                                                 std::chrono::system_clock::time_point wall) {
  socks5::UdpHeader h;
  if (socks5::parse_udp_header(dgram, &h)) {
    ++counters_.dropped_malformed;
    co_return true;
  }
  if (h.frag != 0) {
    ++counters_.dropped_frag;
    co_return true;
  }
  size_t payload = dgram.size() - h.header_size;
  if (!take(true, payload)) {
    ++counters_.dropped_rate;
    co_return true;
  }
  // Fast path: an IP destination already allowed needs no coroutine, no policy call.
  std::optional<udp::endpoint> dest;
  if (h.dst.type != socks5::AddressType::kDomain) {
    udp::endpoint ep(canonical(h.dst.ip), h.port);
    if (auto known = decisions_.find(ep);
        known != decisions_.end() && known->second.allowed && flows_.contains(ep)) {
      dest = ep;
    }
  }
  if (!dest) {
    dest = co_await destination_for(h.dst, h.port);
    // The association may have ended while we resolved (a cancellation that arrived
    // when nothing cancellable was pending is only visible through closing_).
    if (closing_ || (stream_ == nullptr && !client_sock_.is_open())) co_return false;
  }
  if (!dest) co_return true;
  UdpFlow& flow = flows_[*dest];  // std::map references stay valid: flows are never erased
  udp::socket* out = outbound(dest->address(), flow.egress);
  if (out == nullptr) {
    ++counters_.dropped_unroutable;
    co_return true;
  }
  auto data = asio::buffer(dgram.data() + h.header_size, payload);
  std::error_code sec;
  size_t sent = out->send_to(data, *dest, 0, sec);
  if (sec == asio::error::would_block) {
    auto [aec, asent] = co_await out->async_send_to(data, *dest, kUse);
    sec = aec;
    sent = asent;
  }
  if (sec) {
    if (closing_ || (stream_ == nullptr && !client_sock_.is_open())) co_return false;
    co_return true;
  }
  last_activity_ = now;
  ++counters_.datagrams_up;
  counters_.bytes_up += sent;
  settings_.tap_up.add(sent);
  ++flow.datagrams_up;
  flow.bytes_up += sent;
  flow.last_seen = wall;
  if (flow.first_seen == std::chrono::system_clock::time_point{}) flow.first_seen = wall;
  co_return count_moved(true, sent);
}

asio::awaitable<void> UdpAssociation::upstream_loop(udp::socket& sock) {
  auto buf = std::make_unique<uint8_t[]>(kMaxDatagram);
  std::vector<uint8_t> out;
  out.reserve(kMaxDatagram + 32);
  std::vector<uint8_t> sealed;  // GSS-API: the wrapped reply
  for (;;) {
    auto [wec] = co_await sock.async_wait(udp::socket::wait_read, kUse);
    if (wec || !sock.is_open()) co_return;
    const auto now = Clock::now();
    const auto wall = std::chrono::system_clock::now();
    for (;;) {
      udp::endpoint from;
      std::error_code ec;
      size_t n = sock.receive_from(asio::buffer(buf.get(), kMaxDatagram), from, 0, ec);
      if (ec == asio::error::would_block) break;
      if (ec) {
        if (socket_gone(ec, sock)) co_return;
        continue;
      }
      udp::endpoint src(canonical(from.address()), from.port());
      auto flow = flows_.find(src);
      if (flow == flows_.end() || (stream_ == nullptr && !client_ep_)) {
        ++counters_.dropped_unsolicited;
        continue;
      }
      // The reply plus its header must fit one datagram to the client; never cut it short.
      size_t header = src.address().is_v4() ? 10 : 22;
      size_t limit = stream_ != nullptr ? 65535 : client_ep_->address().is_v4() ? 65507 : 65527;
      if (n + header > limit) {
        ++counters_.dropped_oversize;
        continue;
      }
      if (!take(false, n)) {
        ++counters_.dropped_rate;
        continue;
      }
      out.clear();
      socks5::encode_udp_header(&out, src.address(), src.port());
      out.insert(out.end(), buf.get(), buf.get() + n);
      if (settings_.protection != nullptr) {
        if (!settings_.protection->seal(out, &sealed) || sealed.size() > limit) {
          ++counters_.dropped_oversize;
          continue;
        }
        out.swap(sealed);
      }
      if (std::error_code sec = co_await deliver_down(out)) {
        if (!sock.is_open() || closing_ || (stream_ == nullptr && !client_sock_.is_open())) {
          co_return;
        }
        if (sec == asio::error::no_buffer_space) ++counters_.dropped_rate;
        continue;
      }
      last_activity_ = now;
      ++counters_.datagrams_down;
      counters_.bytes_down += n;
      settings_.tap_down.add(n);
      ++flow->second.datagrams_down;
      flow->second.bytes_down += n;
      flow->second.last_seen = wall;
      if (!count_moved(false, n)) co_return;
    }
  }
}

asio::awaitable<std::error_code> UdpAssociation::deliver_down(const std::vector<uint8_t>& dgram) {
  if (stream_ != nullptr) {
    constexpr size_t kMaxQueued = 1 << 20;  // bytes waiting for the stream writer
    if (queued_bytes_ + dgram.size() > kMaxQueued) co_return asio::error::no_buffer_space;
    std::vector<uint8_t> frame;
    frame.reserve(dgram.size() + 3);
    socks5::encode_stream_frame(&frame, dgram);
    queued_bytes_ += frame.size();
    frames_.push_back(std::move(frame));
    wake_.cancel();
    co_return std::error_code{};
  }
  std::error_code sec;
  client_sock_.send_to(asio::buffer(dgram), *client_ep_, 0, sec);
  if (sec == asio::error::would_block) {
    auto [aec, asent] = co_await client_sock_.async_send_to(asio::buffer(dgram), *client_ep_, kUse);
    (void)asent;
    sec = aec;
  }
  co_return sec;
}

// Frames from the client, each one datagram, until EOF or a bad frame.
asio::awaitable<void> UdpAssociation::stream_reader(crypto::Channel& ch) {
  std::vector<uint8_t> dgram;
  for (;;) {
    std::error_code ec = co_await ch.read_message(
        [&](std::span<const uint8_t> in, size_t* consumed) {
          std::span<const uint8_t> d;
          std::error_code pec = socks5::parse_stream_frame(in, &d, consumed);
          if (!pec) dgram.assign(d.begin(), d.end());
          return pec;
        },
        socks5::kMaxStreamFrameSize);
    if (ec) {
      if (ec.category() == socks5::udp_category())
        stream_end_ = CloseReason::kProtocolError;
      else
        stream_end_ = from_client_read_error(ec);
      closing_ = true;
      co_return;
    }
    if (!co_await forward_up(dgram, Clock::now(), std::chrono::system_clock::now())) {
      closing_ = true;
      co_return;
    }
  }
}

asio::awaitable<void> UdpAssociation::stream_writer(crypto::Channel& ch) {
  for (;;) {
    while (!frames_.empty()) {
      std::vector<uint8_t> f = std::move(frames_.front());
      frames_.pop_front();
      queued_bytes_ -= f.size();
      if (std::error_code ec = co_await ch.write_all(f)) {
        stream_end_ = from_client_read_error(ec);
        closing_ = true;
        co_return;
      }
    }
    if (closing_) co_return;
    wake_.expires_at(Clock::time_point::max());
    co_await wake_.async_wait(kUse);  // cancelled by deliver_down, or by the end
    if (closing_) co_return;
  }
}

asio::awaitable<CloseReason> UdpAssociation::run_stream(crypto::Channel& client) {
  using namespace asio::experimental::awaitable_operators;
  stream_ = &client;
  client_ep_.reset();
  auto r = co_await (stream_reader(client) || idle_watch() || stream_writer(client));
  closing_ = true;
  std::error_code ec;
  for (auto& [key, sock] : outs_) sock->close(ec);
  asio::steady_timer t(ex_);
  while (loops_ > 0) {  // as in run(): no reply loop may outlive *this
    t.expires_after(std::chrono::milliseconds(1));
    co_await t.async_wait(kUse);
  }
  co_return r.index() == 1 ? CloseReason::kIdleTimeout : stream_end_;
}

asio::awaitable<void> UdpAssociation::control_watch(asio::ip::tcp::socket& control) {
  // The control connection carries nothing after the reply; any byte or EOF ends it, as
  // does an error. (RFC 1928: the association terminates when the TCP connection does.)
  uint8_t b;
  co_await control.async_read_some(asio::buffer(&b, 1), kUse);
  closing_ = true;
}

asio::awaitable<void> UdpAssociation::idle_watch() {
  asio::steady_timer timer(ex_);
  for (;;) {
    auto deadline = last_activity_ + settings_.idle_timeout;
    if (deadline <= Clock::now()) {
      closing_ = true;
      co_return;
    }
    timer.expires_at(deadline);
    auto [ec] = co_await timer.async_wait(kUse);
    if (ec) co_return;
  }
}

asio::awaitable<CloseReason> UdpAssociation::run(asio::ip::tcp::socket& control) {
  using namespace asio::experimental::awaitable_operators;
  auto r = co_await (control_watch(control) || idle_watch() || client_loop());
  std::error_code ec;
  client_sock_.close(ec);
  for (auto& [key, sock] : outs_) sock->close(ec);
  // The reply loops see their sockets closed on this same executor; let them finish before
  // the association (which they point into) goes away.
  asio::steady_timer t(ex_);
  while (loops_ > 0) {  // every loop ends on a closed socket; none may outlive *this
    t.expires_after(std::chrono::milliseconds(1));
    co_await t.async_wait(kUse);
  }
  if (quota_used_up_) co_return CloseReason::kLimitQuota;
  co_return r.index() == 1 ? CloseReason::kIdleTimeout : CloseReason::kClientClosed;
}

nlohmann::json UdpAssociation::summary() const {
  nlohmann::json dests = nlohmann::json::array();
  for (const auto& [ep, f] : flows_) {
    if (f.datagrams_up == 0 && f.datagrams_down == 0) continue;
    nlohmann::json d = {{"address", format_udp(ep)},
                        {"rule", f.rule},
                        {"datagrams_up", f.datagrams_up},
                        {"bytes_up", f.bytes_up},
                        {"datagrams_down", f.datagrams_down},
                        {"bytes_down", f.bytes_down},
                        {"first_seen", to_rfc3339(f.first_seen)},
                        {"last_seen", to_rfc3339(f.last_seen)}};
    if (!f.host.empty()) d["host"] = escape_untrusted(f.host);
    dests.push_back(std::move(d));
  }
  const auto& c = counters_;
  nlohmann::json out = {{"destinations", std::move(dests)},
                        {"datagrams_up", c.datagrams_up},
                        {"datagrams_down", c.datagrams_down},
                        {"dropped",
                         {{"foreign_source", c.dropped_foreign},
                          {"fragmented", c.dropped_frag},
                          {"malformed", c.dropped_malformed},
                          {"denied", c.dropped_denied},
                          {"rate", c.dropped_rate},
                          {"unsolicited", c.dropped_unsolicited},
                          {"unresolved", c.dropped_unresolved},
                          {"destinations", c.dropped_destinations},
                          {"oversize", c.dropped_oversize},
                          {"unroutable", c.dropped_unroutable}}}};
  // Only protected (GSS-API) associations can drop a datagram for failing verification.
  if (settings_.protection != nullptr) out["dropped"]["unverified"] = c.dropped_unverified;
  return out;
}

}  // namespace socksgate::gateway
