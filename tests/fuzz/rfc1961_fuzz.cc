// Fuzzes the RFC 1961 message framing: the incremental contract (every prefix of a complete
// message needs more), bounds (a message is at most 4 + 65535 bytes and never longer than the
// input) and that a re-encoded message is byte-identical.
#include <cstdint>
#include <cstdlib>
#include <span>
#include <vector>

#include "auth/gssapi/rfc1961.h"
#include "crypto/parse.h"

namespace gs = socksgate::auth::gssapi;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const uint8_t> in(data, size);
  // Walk a stream of merged messages as the channel does.
  while (!in.empty()) {
    gs::MessageView m;
    size_t consumed = 0;
    std::error_code ec = gs::parse_message(in, &m, &consumed);
    if (ec) {
      if (ec != socksgate::crypto::ParseErrc::kNeedMore &&
          ec.category() != gs::rfc1961_category()) {
        std::abort();
      }
      return 0;
    }
    if (consumed == 0 || consumed > in.size() || consumed > gs::kMaxMessageSize) std::abort();
    if (m.type == gs::MessageType::kAbort) {
      if (consumed != 2 || !m.token.empty()) std::abort();
    } else {
      if (m.token.data() != in.data() + gs::kHeaderSize) std::abort();
      if (consumed != gs::kHeaderSize + m.token.size() || m.token.empty()) std::abort();
      std::vector<uint8_t> again = gs::encode_message(m.type, m.token);
      if (again.size() != consumed || !std::equal(again.begin(), again.end(), in.begin()))
        std::abort();
    }
    for (size_t k = 0; k < consumed; ++k) {
      gs::MessageView part;
      size_t c = 0;
      if (gs::parse_message(in.first(k), &part, &c) != socksgate::crypto::ParseErrc::kNeedMore)
        std::abort();
    }
    in = in.subspan(consumed);
  }
  return 0;
}
