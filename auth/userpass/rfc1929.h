#pragma once
// RFC 1929 username/password subnegotiation wire format. Pure: no I/O, no allocation beyond
// the output strings, bounded (a request is at most 513 bytes).
//
//   request: VER(01) ULEN UNAME(1..255) PLEN PASSWD(1..255)     reply: VER(01) STATUS

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace socksgate::auth::userpass {

inline constexpr size_t kMaxRequestSize = 1 + 1 + 255 + 1 + 255;

enum class Rfc1929Errc { kBadVersion = 1 };
const std::error_category& rfc1929_category();
inline std::error_code make_error_code(Rfc1929Errc e) {
  return {static_cast<int>(e), rfc1929_category()};
}

}  // namespace socksgate::auth::userpass

template <>
struct std::is_error_code_enum<socksgate::auth::userpass::Rfc1929Errc> : std::true_type {};

namespace socksgate::auth::userpass {

struct Request {
  std::string user;      // may be empty on the wire (ULEN 0); the authenticator rejects it
  std::string password;  // may be empty (PLEN 0)
};

// Returns crypto::ParseErrc::kNeedMore until a whole request is in `in`; then fills *out and
// *consumed. On error *out is untouched. Never reads past `in`.
std::error_code parse_request(std::span<const uint8_t> in, Request* out, size_t* consumed);

// The client side (the agent). `user` and `password` must be 1..255 bytes (the agent's
// config loader enforces it); returns an empty vector otherwise. The caller wipes the result.
std::vector<uint8_t> encode_request(std::string_view user, std::string_view password);
// `01 STATUS`: *success = STATUS is 00. Rfc1929Errc::kBadVersion if VER is not 01.
std::error_code parse_reply(std::span<const uint8_t> in, bool* success, size_t* consumed);

inline std::array<uint8_t, 2> encode_reply(bool success) {
  return {0x01, static_cast<uint8_t>(success ? 0x00 : 0x01)};
}

}  // namespace socksgate::auth::userpass
