#pragma once
// The upstream connector: from a SOCKS destination to a connected socket, with policy in the
// loop. Names are resolved by the gateway (getaddrinfo on the resolver pool); every resolved
// address is decided by policy before it is connected to (no DNS-rebinding bypass), and the
// allowed addresses are tried in turn, each with the connect timeout.

#include <asio/awaitable.hpp>
#include <asio/ip/tcp.hpp>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "crypto/blocking_pool.h"
#include "gateway/close_reason.h"
#include "gateway/interfaces.h"
#include "gateway/socks5.h"
#include "policy/policy.h"

namespace socksgate::gateway {

struct ConnectOutcome {
  bool ok = false;
  CloseReason reason = CloseReason::kConnectFailed;  // when !ok
  policy::Decision decision;  // of the address connected to, or the deciding denial
  std::optional<asio::ip::tcp::endpoint> remote;  // the address actually used / last tried
  std::string detail;  // e.g. resolver or connect error text, for the log
};

// Converts between asio and policy address types (canonicalising mapped IPv6 to IPv4).
policy::IpAddress to_policy_address(const asio::ip::address& a);
asio::ip::address to_asio_address(const policy::IpAddress& a);

// Resolves `host` (blocking getaddrinfo on `pool`). Empty result with *error set on failure.
asio::awaitable<std::vector<asio::ip::address>> resolve_host(const std::string& host,
                                                             crypto::BlockingPool& pool,
                                                             std::string* error,
                                                             CloseReason* reason);

// Where upstream connections come from: the deciding rule's "egress" if it has one, else the
// listener's "external", else the kernel's choice.
struct EgressSources {
  const HostAddresses* listener = nullptr;
  const std::map<std::string, HostAddresses, std::less<>>* rules = nullptr;
  // The source address for a connection to an address of that family: nullopt = the kernel
  // chooses; an error when an egress is configured but has no address of that family.
  std::optional<asio::ip::address> pick(const policy::Decision& d, bool v6, bool* unusable) const;
};

// Asked once the deciding pass decision (of the first allowed address) is known, before any
// connect: a reason refuses the session (limits). The caller audits the refusal.
using AdmitFn = std::function<std::optional<CloseReason>(const policy::Decision&)>;

// `base` carries user, groups, method, listener, client, command; host/address/port are set
// here from `dst` and `port`. `congestion_control` (empty = the kernel's default) is set on
// each socket before it connects (gateway/tcp_tuning.h).
asio::awaitable<ConnectOutcome> connect_upstream(
    const socks5::Address& dst, uint16_t port, policy::DecisionRequest base,
    const policy::Policy& pol, crypto::BlockingPool& resolver,
    std::chrono::milliseconds connect_timeout, const EgressSources& egress,
    const std::string& congestion_control, asio::ip::tcp::socket* out, const AdmitFn& admit = {});

}  // namespace socksgate::gateway
