// Fuzzes the protection-level subnegotiation: a level token (NEC variant: the bare octet; the
// standard variant is the same octet after gss_unwrap) parsed and decided under every policy
// and context capability. Whatever comes in, the grant never falls below the requirement and
// confidentiality is never granted on a context that cannot do it.
#include <cstdint>
#include <cstdlib>
#include <span>

#include "auth/gssapi/rfc1961.h"
#include "crypto/parse.h"

namespace gs = socksgate::auth::gssapi;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const uint8_t> in(data, size);
  gs::MessageView m;
  size_t consumed = 0;
  std::span<const uint8_t> token = in;
  if (!gs::parse_message(in, &m, &consumed) && m.type == gs::MessageType::kProtection) {
    token = m.token;
  }
  gs::Level requested = gs::Level::kPerMessage;
  if (gs::parse_level(token, &requested)) {
    if (requested != gs::Level::kPerMessage) std::abort();  // untouched on error
    return 0;
  }
  if (token.size() != 1 || token[0] > 3) std::abort();
  for (gs::Level req : {gs::Level::kNone, gs::Level::kIntegrity, gs::Level::kConfidentiality}) {
    for (int caps = 0; caps < 4; ++caps) {
      bool integ = caps & 1, conf = caps & 2;
      auto got = gs::choose_level(requested, gs::LevelPolicy{req}, integ, conf);
      if (!got) {
        if (req == gs::Level::kNone) std::abort();
        continue;
      }
      if (*got == gs::Level::kPerMessage) std::abort();
      if (static_cast<uint8_t>(*got) < static_cast<uint8_t>(req)) std::abort();
      if (*got == gs::Level::kConfidentiality && !conf) std::abort();
      if (*got != gs::Level::kNone && !integ) std::abort();
    }
  }
  return 0;
}
