// Fuzzes the admin listener's HTTP request parser (gateway/admin_http.h) and checks its
// incremental contract: every proper prefix of a request that parses is "need more"; any other
// result is final (more bytes never change it); kMaxHeadSize bytes always decide; *out and
// *consumed are untouched unless it succeeds; a parsed request has a well-formed method, an
// origin-form target, lower-case header names and (for HTTP/1.1) exactly one Host. The query
// helpers must not crash on the input either, and percent_encode/percent_decode round-trip.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string>

#include "crypto/parse.h"
#include "gateway/admin_http.h"

namespace http = socksgate::gateway::http;
using socksgate::crypto::ParseErrc;

namespace {

struct Result {
  std::error_code ec;
  size_t consumed = 0;
  http::Request req;
};

constexpr size_t kSentinel = 0xC0FFEE;

Result parse(std::span<const uint8_t> in) {
  Result r;
  r.consumed = kSentinel;
  r.req.method = "sentinel";
  r.ec = http::parse_request(in, &r.req, &r.consumed);
  if (r.ec && (r.consumed != kSentinel || r.req.method != "sentinel" || !r.req.headers.empty()))
    std::abort();
  return r;
}

bool same(const Result& a, const Result& b) {
  if (a.ec != b.ec) return false;
  if (a.ec) return true;
  return a.consumed == b.consumed && a.req.method == b.req.method && a.req.target == b.req.target &&
         a.req.headers == b.req.headers;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const uint8_t> in(data, size);
  std::string_view text(reinterpret_cast<const char*>(data), size);
  // The helpers: no crash, and encoding round-trips.
  (void)http::parse_query(text);
  (void)http::parse_response(text);
  if (http::percent_decode(http::percent_encode(text), false) != std::string(text)) std::abort();

  Result full = parse(in);
  if (full.ec == ParseErrc::kNeedMore) {
    if (size >= http::kMaxHeadSize) std::abort();
    return 0;
  }
  size_t limit = std::min(size, http::kMaxHeadSize);
  // Prefixes: checking every one is quadratic; step through them (all of them for short input).
  size_t step = limit <= 512 ? 1 : limit / 256;
  bool decided = false;
  for (size_t k = 0; k <= limit; k += step) {
    Result part = parse(in.first(k));
    if (part.ec == ParseErrc::kNeedMore) {
      if (decided || (!full.ec && k >= full.consumed)) std::abort();
      continue;
    }
    decided = true;
    if (!full.ec && k < full.consumed) std::abort();
    if (!same(part, full)) std::abort();
  }
  if (full.ec) {
    if (full.ec.category() != http::category()) std::abort();
    int status = http::status_for(full.ec);
    if (status < 400 || status > 599) std::abort();
    return 0;
  }
  const http::Request& r = full.req;
  if (full.consumed == 0 || full.consumed > size || full.consumed > http::kMaxHeadSize) {
    std::abort();
  }
  if (text.substr(0, full.consumed).size() < 4 || text.substr(full.consumed - 4, 4) != "\r\n\r\n") {
    std::abort();
  }
  if (r.method.empty() || r.target.empty() || r.target[0] != '/' ||
      r.target.size() > http::kMaxTargetSize || r.path.empty() || r.path[0] != '/') {
    std::abort();
  }
  if (r.minor_version != 0 && r.minor_version != 1) std::abort();
  if (r.headers.size() > http::kMaxHeaders) std::abort();
  size_t hosts = 0;
  for (const auto& [n, v] : r.headers) {
    if (n.empty()) std::abort();
    for (char c : n) {
      if (c >= 'A' && c <= 'Z') std::abort();
    }
    if (n == "host") ++hosts;
    if (n == "transfer-encoding") std::abort();
    if (!v.empty() && (v.front() == ' ' || v.back() == ' ')) std::abort();
  }
  if (hosts > 1 || (r.minor_version == 1 && hosts != 1)) std::abort();
  return 0;
}
