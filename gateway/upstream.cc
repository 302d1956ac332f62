#include "gateway/upstream.h"

#include <netdb.h>
#include <sys/socket.h>

#include <asio/experimental/as_tuple.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>
#include <cstring>

#include "gateway/tcp_tuning.h"
#include "gateway/timeout.h"

namespace socksgate::gateway {
namespace {
constexpr auto kUse = asio::experimental::as_tuple(asio::use_awaitable);

struct Resolved {
  std::vector<asio::ip::address> addrs;
  int gai_error = 0;
};

Resolved blocking_resolve(const std::string& host) {
  Resolved r;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  r.gai_error = ::getaddrinfo(host.c_str(), nullptr, &hints, &res);
  if (r.gai_error != 0) return r;
  for (addrinfo* p = res; p != nullptr; p = p->ai_next) {
    if (p->ai_family == AF_INET) {
      auto* sin = reinterpret_cast<sockaddr_in*>(p->ai_addr);
      asio::ip::address_v4::bytes_type b;
      std::memcpy(b.data(), &sin->sin_addr, 4);
      r.addrs.emplace_back(asio::ip::address_v4(b));
    } else if (p->ai_family == AF_INET6) {
      auto* sin6 = reinterpret_cast<sockaddr_in6*>(p->ai_addr);
      asio::ip::address_v6::bytes_type b;
      std::memcpy(b.data(), &sin6->sin6_addr, 16);
      r.addrs.emplace_back(asio::ip::address_v6(b));
    }
  }
  ::freeaddrinfo(res);
  return r;
}

}  // namespace

policy::IpAddress to_policy_address(const asio::ip::address& a) {
  if (a.is_v4()) return policy::IpAddress::v4(a.to_v4().to_bytes());
  return policy::IpAddress::v6(a.to_v6().to_bytes());
}

asio::ip::address to_asio_address(const policy::IpAddress& a) {
  if (a.is_v4()) {
    asio::ip::address_v4::bytes_type b;
    std::memcpy(b.data(), a.bytes().data(), 4);
    return asio::ip::address_v4(b);
  }
  asio::ip::address_v6::bytes_type b;
  std::memcpy(b.data(), a.bytes().data(), 16);
  return asio::ip::address_v6(b);
}

std::optional<asio::ip::address> EgressSources::pick(const policy::Decision& d, bool v6,
                                                     bool* unusable) const {
  const HostAddresses* h = nullptr;
  if (!d.egress.empty() && rules != nullptr) {
    auto it = rules->find(d.egress);
    if (it != rules->end()) h = &it->second;
  }
  if (h == nullptr && listener != nullptr && !listener->empty()) h = listener;
  if (h == nullptr) return std::nullopt;
  auto a = h->for_family(v6);
  if (!a) *unusable = true;
  return a;
}

asio::awaitable<std::vector<asio::ip::address>> resolve_host(const std::string& host,
                                                             crypto::BlockingPool& pool,
                                                             std::string* error,
                                                             CloseReason* reason) {
  std::error_code pool_ec;
  auto lookup = [host] { return blocking_resolve(host); };  // named: see BlockingPool::run
  auto r = co_await pool.run(lookup, &pool_ec);
  if (pool_ec) {
    *error = "resolver busy";
    *reason = CloseReason::kBusy;
    co_return std::vector<asio::ip::address>{};
  }
  if (r->gai_error != 0) {
    *error = std::string("cannot resolve: ") + ::gai_strerror(r->gai_error);
    *reason = CloseReason::kResolveFailed;
  } else if (r->addrs.empty()) {
    *error = "name has no addresses";
    *reason = CloseReason::kResolveFailed;
  }
  co_return std::move(r->addrs);
}

asio::awaitable<ConnectOutcome> connect_upstream(
    const socks5::Address& dst, uint16_t port, policy::DecisionRequest req,
    const policy::Policy& pol, crypto::BlockingPool& resolver,
    std::chrono::milliseconds connect_timeout, const EgressSources& egress,
    const std::string& congestion_control, asio::ip::tcp::socket* out, const AdmitFn& admit) {
  ConnectOutcome oc;
  req.port = port;
  std::vector<asio::ip::address> candidates;
  if (dst.type == socks5::AddressType::kDomain) {
    req.host = dst.domain;
    req.address.reset();
    // Fail fast (and leak no DNS query) for names no rule could allow.
    oc.decision = pol.decide(req);
    if (!oc.decision.allowed()) {
      oc.reason = CloseReason::kPolicyDenied;
      co_return oc;
    }
    std::string err;
    CloseReason why = CloseReason::kResolveFailed;
    candidates = co_await resolve_host(dst.domain, resolver, &err, &why);
    if (candidates.empty()) {
      oc.reason = why;
      oc.detail = err;
      co_return oc;
    }
  } else {
    candidates.push_back(dst.ip);
  }

  // Decide every address first; keep the allowed ones in resolver order.
  std::vector<std::pair<asio::ip::address, policy::Decision>> allowed;
  std::optional<policy::Decision> first_denial;
  for (const auto& a : candidates) {
    policy::IpAddress pa = to_policy_address(a);
    req.address = pa;
    policy::Decision d = pol.decide(req);
    if (d.allowed()) {
      // Connect to the canonical form: what policy saw is what we dial.
      allowed.emplace_back(to_asio_address(pa), std::move(d));
    } else if (!first_denial) {
      first_denial = std::move(d);
      oc.remote = asio::ip::tcp::endpoint(to_asio_address(pa), port);
    }
  }
  if (allowed.empty()) {
    oc.reason = CloseReason::kPolicyDenied;
    oc.decision = std::move(*first_denial);
    co_return oc;
  }
  if (admit) {
    if (auto why = admit(allowed.front().second)) {
      oc.reason = *why;
      oc.decision = allowed.front().second;
      co_return oc;
    }
  }

  auto ex = co_await asio::this_coro::executor;
  for (auto& [addr, decision] : allowed) {
    asio::ip::tcp::endpoint ep(addr, port);
    asio::ip::tcp::socket sock(ex);
    oc.remote = ep;
    oc.decision = decision;
    bool unusable = false;
    auto source = egress.pick(decision, addr.is_v6(), &unusable);
    if (unusable) {
      oc.reason = CloseReason::kNetworkUnreachable;
      oc.detail = "egress has no " + std::string(addr.is_v6() ? "IPv6" : "IPv4") + " address";
      continue;
    }
    if (source) {
      std::error_code bec;
      sock.open(ep.protocol(), bec);
      if (!bec) sock.bind(asio::ip::tcp::endpoint(*source, 0), bec);
      if (bec) {
        oc.reason = from_connect_error(bec);
        oc.detail = "bind to egress " + source->to_string() + ": " + bec.message();
        continue;
      }
    }
    if (!congestion_control.empty()) {
      std::error_code oec;
      if (!sock.is_open()) sock.open(ep.protocol(), oec);
      if (!oec) apply_congestion_control(sock.native_handle(), congestion_control, "upstream");
    }
    auto r = co_await with_timeout(sock.async_connect(ep, kUse), connect_timeout);
    if (!r) {
      oc.reason = CloseReason::kConnectTimeout;
      oc.detail = "connect to " + ep.address().to_string() + " timed out";
      continue;
    }
    auto [ec] = *r;
    if (ec) {
      oc.reason = from_connect_error(ec);
      oc.detail = "connect to " + ep.address().to_string() + ": " + ec.message();
      continue;
    }
    std::error_code ignored;
    sock.set_option(asio::ip::tcp::no_delay(true), ignored);
    *out = std::move(sock);
    oc.ok = true;
    co_return oc;
  }
  co_return oc;
}

}  // namespace socksgate::gateway
