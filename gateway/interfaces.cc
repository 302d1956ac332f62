#include "gateway/interfaces.h"

#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>

#include <cstring>

namespace socksgate::gateway {

std::optional<HostAddresses> resolve_host_addresses(std::string_view spec) {
  std::error_code ec;
  asio::ip::address ip = asio::ip::make_address(std::string(spec), ec);
  if (!ec) {
    HostAddresses h;
    if (ip.is_v4()) {
      h.v4 = ip;
    } else {
      h.v6 = ip;
    }
    return h;
  }
  if (spec.empty() || spec.size() >= IFNAMSIZ) return std::nullopt;
  ifaddrs* ifa = nullptr;
  if (getifaddrs(&ifa) != 0) return std::nullopt;
  HostAddresses h;
  std::optional<asio::ip::address> link_local6;
  for (ifaddrs* p = ifa; p != nullptr; p = p->ifa_next) {
    if (p->ifa_addr == nullptr || spec != p->ifa_name) continue;
    if (p->ifa_addr->sa_family == AF_INET && !h.v4) {
      asio::ip::address_v4::bytes_type b;
      std::memcpy(b.data(), &reinterpret_cast<sockaddr_in*>(p->ifa_addr)->sin_addr, 4);
      h.v4 = asio::ip::address_v4(b);
    } else if (p->ifa_addr->sa_family == AF_INET6) {
      asio::ip::address_v6::bytes_type b;
      std::memcpy(b.data(), &reinterpret_cast<sockaddr_in6*>(p->ifa_addr)->sin6_addr, 16);
      asio::ip::address_v6 a(b);
      if (a.is_link_local()) {
        if (!link_local6) link_local6 = a;
      } else if (!h.v6) {
        h.v6 = a;
      }
    }
  }
  freeifaddrs(ifa);
  if (!h.v6 && link_local6) h.v6 = link_local6;
  if (h.empty()) return std::nullopt;
  return h;
}

}  // namespace socksgate::gateway
