#pragma once
// SOCKS4 and SOCKS4a wire format: request and reply. Pure, incremental and bounded, with the
// same contract as socks5.h: parse_request returns crypto::ParseErrc::kNeedMore (consuming
// nothing) until a whole message is in `in`, never reads past `in`, and leaves *out untouched
// on error. A message split over many reads or merged with the next one parses exactly as if
// it came in one read. Any kMaxRequestSize bytes are always enough to decide.
//
//   request: VN(04) CD(01|02) DSTPORT(2) DSTIP(4) USERID(0..255) NUL [HOSTNAME(1..255) NUL]
//   reply:   VN(00) CD(5A|5B) DSTPORT(2) DSTIP(4)
//
// HOSTNAME (SOCKS4a) is present iff DSTIP is 0.0.0.x with x != 0.

#include <array>
#include <asio/ip/address_v4.hpp>
#include <asio/ip/tcp.hpp>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <system_error>

namespace socksgate::gateway::socks4 {

inline constexpr uint8_t kVersion = 0x04;
inline constexpr uint8_t kReplyVersion = 0x00;
inline constexpr size_t kMaxUserIdSize = 255;
inline constexpr size_t kMaxHostSize = 255;
// Fixed part, USERID + NUL, HOSTNAME + NUL.
inline constexpr size_t kMaxRequestSize = 8 + 256 + 256;

enum class Command : uint8_t { kConnect = 0x01, kBind = 0x02 };

// Reply CD values.
enum class Reply : uint8_t { kGranted = 0x5A, kRejected = 0x5B };

enum class Errc {
  kBadVersion = 1,  // first byte is not 04
  kUnknownCommand,  // CD not 01/02
  kUserIdTooLong,   // 256 USERID bytes without a NUL
  kHostTooLong,     // 256 SOCKS4a HOSTNAME bytes without a NUL
  kEmptyHost,       // SOCKS4a HOSTNAME of length 0
};
const std::error_category& category();
inline std::error_code make_error_code(Errc e) { return {static_cast<int>(e), category()}; }

}  // namespace socksgate::gateway::socks4

template <>
struct std::is_error_code_enum<socksgate::gateway::socks4::Errc> : std::true_type {};

namespace socksgate::gateway::socks4 {

struct Request {
  uint8_t command = 0;  // raw CD byte; see Command
  uint16_t port = 0;
  asio::ip::address_v4 ip;  // as sent; 0.0.0.x (x != 0) for SOCKS4a
  std::string user_id;      // 0..255 bytes, no NUL (not otherwise validated)
  std::string host;         // SOCKS4a only: 1..255 bytes, no NUL; empty for plain SOCKS4
};

// On kUnknownCommand the error is returned as soon as CD is readable. kUserIdTooLong and
// kHostTooLong are returned as soon as 256 bytes of the field are present without a NUL.
std::error_code parse_request(std::span<const uint8_t> in, Request* out, size_t* consumed);

// `00 5A|5B PORT IP`. An IPv4-mapped IPv6 address is sent as IPv4; a true IPv6 endpoint
// (which SOCKS4 cannot express) is sent as 0.0.0.0 port 0.
std::array<uint8_t, 8> encode_reply(bool granted, const asio::ip::tcp::endpoint& bound);

}  // namespace socksgate::gateway::socks4
