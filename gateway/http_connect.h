#pragma once
// HTTP CONNECT (RFC 9110 section 9.3.6) as a proxy sees it: the request head a browser or
// curl sends to open a tunnel, and the status line the proxy answers with. Pure, incremental
// and bounded like the SOCKS parsers: crypto::ParseErrc::kNeedMore until the whole head (up to
// the empty line) is in `in`; the caller bounds the head's size (kMaxRequestHead).

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <system_error>

#include "gateway/socks5.h"

namespace socksgate::gateway::http_connect {

inline constexpr size_t kMaxRequestHead = 8192;

enum class Errc {
  kBadRequest = 1,  // not an HTTP/1.x request line          -> 400
  kNotConnect,      // a method other than CONNECT            -> 405
  kBadTarget,       // not host:port / [v6]:port, port 1..65535 -> 400
};
const std::error_category& category();
inline std::error_code make_error_code(Errc e) { return {static_cast<int>(e), category()}; }

}  // namespace socksgate::gateway::http_connect

template <>
struct std::is_error_code_enum<socksgate::gateway::http_connect::Errc> : std::true_type {};

namespace socksgate::gateway::http_connect {

struct ConnectRequest {
  socks5::Address target;  // an IP literal (v4, or v6 from "[...]") or a domain name
  uint16_t port = 0;
};

// Parses `CONNECT host:port HTTP/1.x` and the header lines up to the empty line (header
// fields are skipped: the agent has nothing to learn from them). Lines end in CRLF or LF.
std::error_code parse_connect(std::span<const uint8_t> in, ConnectRequest* out, size_t* consumed);

// `HTTP/1.1 <status> <reason>` and, for errors, a one-line text body that says why.
std::string encode_response(int status, std::string_view why = {});

}  // namespace socksgate::gateway::http_connect
