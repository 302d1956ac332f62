#pragma once
// The shared contract of every wire parser in socksgate (SOCKS5, RFC 1929, later RFC 1961,
// SOCKS4, UDP headers): `std::error_code parse(std::span<const uint8_t> in, Msg* out,
// size_t* consumed)` returns ParseErrc::kNeedMore (consuming nothing, *out untouched) until a
// whole message is in `in`. No I/O, no Asio: parsers build alone for the fuzzers.

#include <system_error>

namespace socksgate::crypto {

enum class ParseErrc { kNeedMore = 1 };
const std::error_category& parse_category();
inline std::error_code make_error_code(ParseErrc e) {
  return {static_cast<int>(e), parse_category()};
}

}  // namespace socksgate::crypto

template <>
struct std::is_error_code_enum<socksgate::crypto::ParseErrc> : std::true_type {};
