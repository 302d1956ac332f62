#include "auth/gssapi/rfc1961.h"

#include <cassert>
#include <string>

#include "crypto/parse.h"

namespace socksgate::auth::gssapi {
namespace {
class Category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "rfc1961"; }
  std::string message(int ev) const override {
    switch (static_cast<Rfc1961Errc>(ev)) {
      case Rfc1961Errc::kBadVersion:
        return "bad GSS-API message version";
      case Rfc1961Errc::kBadType:
        return "unknown GSS-API message type";
      case Rfc1961Errc::kEmptyToken:
        return "empty GSS-API token";
      case Rfc1961Errc::kBadLevel:
        return "bad GSS-API protection level";
    }
    return "GSS-API framing error";
  }
};

bool known_type(uint8_t t) { return t == 0x01 || t == 0x02 || t == 0x03 || t == 0xFF; }
}  // namespace

const std::error_category& rfc1961_category() {
  static const Category c;
  return c;
}

std::error_code parse_message(std::span<const uint8_t> in, MessageView* out, size_t* consumed) {
  if (in.empty()) return crypto::ParseErrc::kNeedMore;
  if (in[0] != kVersion) return Rfc1961Errc::kBadVersion;
  if (in.size() < 2) return crypto::ParseErrc::kNeedMore;
  if (!known_type(in[1])) return Rfc1961Errc::kBadType;
  if (in[1] == 0xFF) {
    out->type = MessageType::kAbort;
    out->token = {};
    *consumed = 2;
    return {};
  }
  if (in.size() < kHeaderSize) return crypto::ParseErrc::kNeedMore;
  size_t len = (size_t{in[2]} << 8) | in[3];
  if (len == 0) return Rfc1961Errc::kEmptyToken;
  if (in.size() < kHeaderSize + len) return crypto::ParseErrc::kNeedMore;
  out->type = static_cast<MessageType>(in[1]);
  out->token = in.subspan(kHeaderSize, len);
  *consumed = kHeaderSize + len;
  return {};
}

void append_message(MessageType type, std::span<const uint8_t> token, std::vector<uint8_t>* out) {
  assert(!token.empty() && token.size() <= kMaxTokenSize);
  out->push_back(kVersion);
  out->push_back(static_cast<uint8_t>(type));
  out->push_back(static_cast<uint8_t>(token.size() >> 8));
  out->push_back(static_cast<uint8_t>(token.size() & 0xFF));
  out->insert(out->end(), token.begin(), token.end());
}

std::vector<uint8_t> encode_message(MessageType type, std::span<const uint8_t> token) {
  std::vector<uint8_t> out;
  out.reserve(kHeaderSize + token.size());
  append_message(type, token, &out);
  return out;
}

std::error_code parse_level(std::span<const uint8_t> token, Level* out) {
  if (token.size() != 1 || token[0] > 3) return Rfc1961Errc::kBadLevel;
  *out = static_cast<Level>(token[0]);
  return {};
}

std::optional<Level> choose_level(Level requested, LevelPolicy policy, bool context_integ,
                                  bool context_conf) {
  if (policy.required == Level::kNone) return Level::kNone;
  if (!context_integ) return std::nullopt;  // both levels need per-message integrity
  if (policy.required == Level::kConfidentiality) {
    if (!context_conf) return std::nullopt;
    return Level::kConfidentiality;
  }
  // Integrity required: more is granted when asked for and possible.
  if (requested == Level::kConfidentiality && context_conf) return Level::kConfidentiality;
  return Level::kIntegrity;
}

}  // namespace socksgate::auth::gssapi
