#include "gateway/close_reason.h"

#include <asio/error.hpp>
#include <cerrno>

#include "crypto/tls.h"

namespace socksgate::gateway {
namespace {
using socks5::Reply;
constexpr std::array<CloseInfo, static_cast<size_t>(CloseReason::kCount_)> kTable = {{
    {"closed", Reply::kSucceeded},
    {"idle_timeout", Reply::kGeneralFailure},
    {"negotiation_timeout", Reply::kGeneralFailure},
    {"client_reset", Reply::kGeneralFailure},
    {"upstream_reset", Reply::kGeneralFailure},
    {"relay_error", Reply::kGeneralFailure},
    {"protocol_error", Reply::kGeneralFailure},
    {"unsupported_command", Reply::kCommandNotSupported},
    {"unsupported_address_type", Reply::kAddressTypeNotSupported},
    {"no_acceptable_method", Reply::kGeneralFailure},
    {"auth_failed", Reply::kGeneralFailure},
    {"client_denied", Reply::kNotAllowed},
    {"policy_denied", Reply::kNotAllowed},
    {"limit:sessions", Reply::kNotAllowed},
    {"resolve_failed", Reply::kHostUnreachable},
    {"network_unreachable", Reply::kNetworkUnreachable},
    {"host_unreachable", Reply::kHostUnreachable},
    {"connection_refused", Reply::kConnectionRefused},
    {"ttl_expired", Reply::kTtlExpired},
    {"connect_timeout", Reply::kHostUnreachable},
    {"connect_failed", Reply::kGeneralFailure},
    {"bind_timeout", Reply::kHostUnreachable},
    {"bind_failed", Reply::kGeneralFailure},
    {"limit:binds", Reply::kNotAllowed},
    {"socks4_disabled", Reply::kNotAllowed},
    {"tls_handshake_failed", Reply::kGeneralFailure},
    {"tls_handshake_timeout", Reply::kGeneralFailure},
    {"tls_error", Reply::kGeneralFailure},
    {"shutdown", Reply::kGeneralFailure},
    {"admin_closed", Reply::kGeneralFailure},
    {"busy", Reply::kGeneralFailure},
    {"internal_error", Reply::kGeneralFailure},
    {"gss_protection_failure", Reply::kGeneralFailure},
    {"audit_unavailable", Reply::kGeneralFailure},
    {"revoked", Reply::kNotAllowed},
    {"limit:quota", Reply::kNotAllowed},
    {"limit:new_sessions", Reply::kNotAllowed},
}};
}  // namespace

const CloseInfo& describe(CloseReason r) { return kTable[static_cast<size_t>(r)]; }

CloseReason from_connect_error(const std::error_code& ec) {
  if (ec == asio::error::timed_out) return CloseReason::kConnectTimeout;
  if (ec.category() != std::system_category() &&
      ec.category() != asio::error::get_system_category()) {
    return CloseReason::kConnectFailed;
  }
  switch (ec.value()) {
    case ECONNREFUSED:
      return CloseReason::kConnectionRefused;
    case ENETUNREACH:
    case ENETDOWN:
    case EAFNOSUPPORT:
    case EADDRNOTAVAIL:
      return CloseReason::kNetworkUnreachable;
    case EHOSTUNREACH:
    case EHOSTDOWN:
      return CloseReason::kHostUnreachable;
    case ETIMEDOUT:
      return CloseReason::kConnectTimeout;
    case ECONNRESET:
      return CloseReason::kUpstreamReset;
    default:
      return CloseReason::kConnectFailed;
  }
}

CloseReason from_client_read_error(const std::error_code& ec) {
  if (ec == asio::error::eof) return CloseReason::kClientClosed;
  if (ec == asio::error::connection_reset || ec == asio::error::broken_pipe ||
      ec == asio::error::connection_aborted) {
    return CloseReason::kClientReset;
  }
  if (ec == asio::error::operation_aborted || ec == asio::error::bad_descriptor) {
    return CloseReason::kShutdown;
  }
  if (ec.category() == crypto::tls_category()) return CloseReason::kTlsError;
  return CloseReason::kProtocolError;
}

}  // namespace socksgate::gateway
