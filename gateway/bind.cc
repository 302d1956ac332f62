#include "gateway/bind.h"

#include <algorithm>
#include <array>
#include <asio/ip/v6_only.hpp>

#include "crypto/secure.h"

namespace socksgate::gateway {

std::error_code open_bind_listener(asio::ip::tcp::acceptor& acceptor,
                                   const asio::ip::address& address, const BindConfig& cfg,
                                   const std::vector<uint16_t>& reserved) {
  const uint32_t span = uint32_t{cfg.port_max} - cfg.port_min + 1;
  std::array<uint8_t, 4> r;
  crypto::random_bytes(r);
  uint32_t start =
      ((uint32_t{r[0]} << 24) | (uint32_t{r[1]} << 16) | (uint32_t{r[2]} << 8) | r[3]) % span;
  std::error_code ec = asio::error::address_in_use;
  // Random probing, then give up: a full range is an operational problem to report, not
  // something to spin on.
  const uint32_t attempts = std::min<uint32_t>(span, 64);
  for (uint32_t i = 0; i < attempts; ++i) {
    uint16_t port = static_cast<uint16_t>(cfg.port_min + (start + i * 7919u) % span);
    if (std::find(reserved.begin(), reserved.end(), port) != reserved.end()) continue;
    asio::ip::tcp::endpoint ep(address, port);
    std::error_code e;
    if (acceptor.is_open()) acceptor.close(e);
    acceptor.open(ep.protocol(), e);
    if (!e && address.is_v6()) acceptor.set_option(asio::ip::v6_only(true), e);
    if (!e) acceptor.bind(ep, e);
    if (!e) acceptor.listen(8, e);
    if (!e) return {};
    ec = e;
    if (e != asio::error::address_in_use && e != asio::error::access_denied) break;
  }
  std::error_code ignored;
  acceptor.close(ignored);
  return ec;
}

}  // namespace socksgate::gateway
