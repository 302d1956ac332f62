// Fuzzes the parsers the agent runs on what others send it: SOCKS5 replies and method
// selections (from the gateway) and HTTP CONNECT heads (from local applications); UDP-in-stream
// frames are fuzzed by udp_header_fuzz. The first byte picks the parser; each must honour the
// incremental contract (every proper prefix of a message that parses is "need more").
#include <cstdint>
#include <cstdlib>
#include <span>

#include "crypto/parse.h"
#include "gateway/http_connect.h"
#include "gateway/socks5.h"

namespace s5 = socksgate::gateway::socks5;
namespace http_connect = socksgate::gateway::http_connect;

template <typename Msg, typename Parse>
static void check(std::span<const uint8_t> in, Parse parse) {
  Msg full{};
  size_t consumed = 0;
  if (parse(in, &full, &consumed)) return;
  if (consumed == 0 || consumed > in.size()) std::abort();
  for (size_t k = 0; k < consumed; ++k) {
    Msg part{};
    size_t c2 = 0;
    if (parse(in.first(k), &part, &c2) != socksgate::crypto::ParseErrc::kNeedMore) std::abort();
  }
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::span<const uint8_t> in(data + 1, size - 1);
  switch (data[0] % 3) {
    case 0:
      check<s5::ReplyMessage>(in, s5::parse_reply);
      break;
    case 1:
      check<uint8_t>(in, s5::parse_method_selection);
      break;
    default:
      if (in.size() <= http_connect::kMaxRequestHead)
        check<http_connect::ConnectRequest>(in, http_connect::parse_connect);
      break;
  }
  return 0;
}
