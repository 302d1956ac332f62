// Fuzzes the RFC 1929 username/password request parser and its incremental contract.
#include <cstdint>
#include <cstdlib>
#include <span>

#include "auth/userpass/rfc1929.h"
#include "crypto/parse.h"

namespace up = socksgate::auth::userpass;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const uint8_t> in(data, size);
  up::Request req;
  size_t consumed = 0;
  if (up::parse_request(in, &req, &consumed)) return 0;
  if (consumed > in.size() || consumed > up::kMaxRequestSize) std::abort();
  if (consumed != 3 + req.user.size() + req.password.size()) std::abort();
  for (size_t k = 0; k < consumed; ++k) {
    up::Request part;
    size_t c = 0;
    if (up::parse_request(in.first(k), &part, &c) != socksgate::crypto::ParseErrc::kNeedMore) {
      std::abort();
    }
  }
  return 0;
}
