#pragma once
// Addresses given as an IP literal or as an interface name (like Dante's `external: eth1`),
// for listeners, BIND/UDP external addresses and rule egress. Names are resolved when the
// configuration is loaded (at start and on every reload), so an interface that changed its
// address is picked up by SIGHUP.

#include <asio/ip/address.hpp>
#include <optional>
#include <string>
#include <string_view>

namespace socksgate::gateway {

// The addresses of one spec: an IP literal gives itself (in its family); an interface name
// gives its first IPv4 and first (non-link-local when possible) IPv6 address.
struct HostAddresses {
  std::optional<asio::ip::address> v4;
  std::optional<asio::ip::address> v6;
  std::optional<asio::ip::address> for_family(bool v6_wanted) const { return v6_wanted ? v6 : v4; }
  bool empty() const { return !v4 && !v6; }
};

// nullopt when `spec` is neither an IP literal nor the name of an interface with an address.
std::optional<HostAddresses> resolve_host_addresses(std::string_view spec);

}  // namespace socksgate::gateway
