#pragma once
// BIND (RFC 1928 section 4, SOCKS4 CD 02): the gateway listens on its external address for
// one connection from the peer the client named, for the client's reverse connection (FTP
// active mode and the like).

#include <asio/awaitable.hpp>
#include <asio/ip/tcp.hpp>
#include <optional>
#include <system_error>
#include <vector>

#include "gateway/config.h"

namespace socksgate::gateway {

// Opens `acceptor` on `address`, on a free port from the configured range, never one of
// `reserved` (the gateway's own listener ports). Tries random ports; returns the last error
// (address_in_use when the range is exhausted).
std::error_code open_bind_listener(asio::ip::tcp::acceptor& acceptor,
                                   const asio::ip::address& address, const BindConfig& cfg,
                                   const std::vector<uint16_t>& reserved);

}  // namespace socksgate::gateway
