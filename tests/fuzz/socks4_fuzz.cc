// Fuzzes the SOCKS4/4a request parser and checks its incremental contract: every proper prefix
// of a message that parses is "need more"; any other result is final (more bytes never change
// it); kMaxRequestSize bytes always decide (the parser never waits forever); *out and *consumed
// are untouched unless it succeeds; and a parsed message re-encodes to exactly the bytes
// consumed.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <vector>

#include "crypto/parse.h"
#include "gateway/socks4.h"

namespace s4 = socksgate::gateway::socks4;
using socksgate::crypto::ParseErrc;

namespace {

struct Result {
  std::error_code ec;
  size_t consumed = 0;
  s4::Request req;
};

constexpr size_t kSentinelConsumed = 0xC0FFEE;

Result parse(std::span<const uint8_t> in) {
  Result r;
  r.consumed = kSentinelConsumed;
  r.req.command = 0xEE;
  r.req.port = 4242;
  r.req.user_id = "sentinel";
  r.req.host = "sentinel";
  r.ec = s4::parse_request(in, &r.req, &r.consumed);
  if (r.ec) {
    bool untouched = r.consumed == kSentinelConsumed && r.req.command == 0xEE &&
                     r.req.port == 4242 && r.req.user_id == "sentinel" &&
                     r.req.host == "sentinel" && r.req.ip.to_uint() == 0;
    if (!untouched) std::abort();
  }
  return r;
}

bool same(const Result& a, const Result& b) {
  if (a.ec != b.ec) return false;
  if (a.ec) return true;
  return a.consumed == b.consumed && a.req.command == b.req.command && a.req.port == b.req.port &&
         a.req.ip == b.req.ip && a.req.user_id == b.req.user_id && a.req.host == b.req.host;
}

std::vector<uint8_t> encode(const s4::Request& r) {
  std::vector<uint8_t> b;
  b.push_back(s4::kVersion);
  b.push_back(r.command);
  b.push_back(static_cast<uint8_t>(r.port >> 8));
  b.push_back(static_cast<uint8_t>(r.port & 0xff));
  for (uint8_t x : r.ip.to_bytes()) b.push_back(x);
  for (char ch : r.user_id) b.push_back(static_cast<uint8_t>(ch));
  b.push_back(0x00);
  if (!r.host.empty()) {
    for (char ch : r.host) b.push_back(static_cast<uint8_t>(ch));
    b.push_back(0x00);
  }
  return b;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const uint8_t> in(data, size);
  Result full = parse(in);
  if (full.ec == ParseErrc::kNeedMore) {
    if (size >= s4::kMaxRequestSize) std::abort();  // bounded: this much always decides
    return 0;
  }
  // Prefixes are "need more" until the message is complete (or the error is decidable), and
  // from then on give exactly the final result.
  size_t limit = std::min(size, s4::kMaxRequestSize);
  bool decided = false;
  for (size_t k = 0; k <= limit; ++k) {
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
    if (full.ec.category() != s4::category()) std::abort();
    return 0;
  }

  const s4::Request& r = full.req;
  if (full.consumed == 0 || full.consumed > size || full.consumed > s4::kMaxRequestSize) {
    std::abort();
  }
  if (r.command != 0x01 && r.command != 0x02) std::abort();
  if (r.user_id.size() > s4::kMaxUserIdSize || r.host.size() > s4::kMaxHostSize) std::abort();
  auto ip = r.ip.to_bytes();
  bool is_4a = ip[0] == 0 && ip[1] == 0 && ip[2] == 0 && ip[3] != 0;
  if (is_4a == r.host.empty()) std::abort();
  std::vector<uint8_t> again = encode(r);
  if (!std::equal(again.begin(), again.end(), in.begin(), in.begin() + full.consumed) ||
      again.size() != full.consumed) {
    std::abort();
  }

  auto reply = s4::encode_reply(full.consumed % 2 == 0, {r.ip, r.port});
  if (reply[0] != 0x00 || (reply[1] != 0x5A && reply[1] != 0x5B)) std::abort();
  if (!std::equal(in.begin() + 2, in.begin() + 8, reply.begin() + 2)) std::abort();
  return 0;
}
