// Fuzzes the auth-monitor protocol (auth/pam/monitor_protocol.h) in both directions: the
// monitor's request parser and sequencer (what an unprivileged, possibly compromised gateway
// can send to root) and the gateway's reply parser. Checks the incremental contract and that
// what parses re-encodes to the same bytes.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "auth/pam/monitor_protocol.h"
#include "crypto/parse.h"

namespace pam = socksgate::auth::pam;

namespace {
template <typename Msg, typename Parse>
void check_prefixes(std::span<const uint8_t> in, size_t consumed, Parse parse) {
  for (size_t k = 0; k < consumed; ++k) {
    Msg part;
    size_t c = 0;
    if (parse(in.first(k), &part, &c) != socksgate::crypto::ParseErrc::kNeedMore) std::abort();
  }
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const uint8_t> in(data, size);
  // The monitor's side: a stream of requests until the first error.
  pam::RequestSequencer seq;
  std::span<const uint8_t> rest = in;
  while (!rest.empty()) {
    pam::Request req;
    size_t used = 0;
    if (pam::parse_request(rest, &req, &used)) break;
    if (used == 0 || used > rest.size() || used > pam::kMaxFrame) std::abort();
    check_prefixes<pam::Request>(rest, used, pam::parse_request);
    if (req.type == pam::FrameType::kAuth) {
      auto again = pam::encode_auth(req.auth);
      if (again.size() != used || !std::equal(again.begin(), again.end(), rest.begin())) {
        std::abort();
      }
    }
    if (seq.accept(req)) break;  // the monitor drops the link here
    rest = rest.subspan(used);
  }
  // The gateway's side.
  pam::Reply rep;
  size_t used = 0;
  if (!pam::parse_reply(in, &rep, &used)) {
    if (used > in.size()) std::abort();
    check_prefixes<pam::Reply>(in, used, pam::parse_reply);
    if (rep.type == pam::FrameType::kResult) {
      auto again = pam::encode_result(rep.result);
      if (again.size() != used || !std::equal(again.begin(), again.end(), in.begin())) {
        std::abort();
      }
    }
  }
  return 0;
}
