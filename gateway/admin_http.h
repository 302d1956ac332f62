#pragma once
// The admin listener's HTTP/1.1 wire format (gateway/admin.h): a strict, bounded request
// parser and the small helpers around it. Pure (no I/O, no Asio): it follows the parser
// contract of crypto/parse.h and builds alone for the fuzzer (tests/fuzz/http_request_fuzz.cc).
//
// Strict on purpose (RFC 9112): CRLF line ends only, origin-form targets of visible ASCII,
// HTTP/1.0 or HTTP/1.1, header names are tokens with no whitespace before the colon, no
// obs-fold, no control bytes in values, one Host (HTTP/1.1), no Transfer-Encoding, no body.

#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

namespace socksgate::gateway {

namespace http {

constexpr size_t kMaxHeadSize = 8192;  // request line + headers
constexpr size_t kMaxHeaders = 64;
constexpr size_t kMaxTargetSize = 2048;
constexpr size_t kMaxBodySize = 0;  // no endpoint takes a body

enum class Errc {
  kBadRequestLine = 1,  // 400
  kBadTarget,           // 400: not origin-form, bad characters or percent escapes
  kBadVersion,          // 505: not HTTP/1.0 or HTTP/1.1
  kBadHeader,           // 400: bad name, whitespace before ':', obs-fold, bad value byte
  kTooManyHeaders,      // 431
  kHeadTooLarge,        // 431
  kMissingHost,         // 400: HTTP/1.1 without exactly one Host
  kBadContentLength,    // 400: not a number, or given twice
  kBodyNotAllowed,      // 413
  kTransferEncoding,    // 501: no chunked bodies here
};
const std::error_category& category();
inline std::error_code make_error_code(Errc e) { return {static_cast<int>(e), category()}; }
// The status code a parse error is answered with.
int status_for(const std::error_code& ec);

struct Request {
  std::string method;     // "GET", "POST", ... (case-sensitive token)
  std::string target;     // as sent: "/sessions/close?user=alice"
  std::string path;       // percent-decoded path: "/sessions/close"
  std::string query;      // raw query, without '?'
  int minor_version = 1;  // HTTP/1.<minor_version>
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased, values trimmed
  // The value of header `name` (lower-case), if present exactly once.
  std::optional<std::string> header(std::string_view name) const;
};

// Parses one request head (and its empty body). Returns crypto::ParseErrc::kNeedMore until
// the head is complete; `*out` and `*consumed` are untouched unless it returns success.
// Bounded: kMaxHeadSize bytes always decide.
std::error_code parse_request(std::span<const uint8_t> in, Request* out, size_t* consumed);

// Splits an application/x-www-form-urlencoded query ("a=1&b=x%20y", '+' is a space).
// nullopt on a bad percent escape or a repeated name.
std::optional<std::map<std::string, std::string>> parse_query(std::string_view query);
// Percent-decodes; nullopt on a bad escape.
std::optional<std::string> percent_decode(std::string_view s, bool plus_is_space);
std::string percent_encode(std::string_view s);

// A parsed response (for the subcommands' client).
struct Response {
  int status = 0;
  std::string reason;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
};
// Parses a complete response (head and a body delimited by Content-Length or the end of
// `in`). nullopt if malformed.
std::optional<Response> parse_response(std::string_view in);

}  // namespace http

}  // namespace socksgate::gateway

template <>
struct std::is_error_code_enum<socksgate::gateway::http::Errc> : std::true_type {};
