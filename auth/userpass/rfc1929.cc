#include "auth/userpass/rfc1929.h"

#include "crypto/parse.h"

namespace socksgate::auth::userpass {
namespace {
class Category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "rfc1929"; }
  std::string message(int) const override { return "bad username/password subnegotiation version"; }
};
}  // namespace

const std::error_category& rfc1929_category() {
  static const Category c;
  return c;
}

std::error_code parse_request(std::span<const uint8_t> in, Request* out, size_t* consumed) {
  if (in.empty()) return crypto::ParseErrc::kNeedMore;
  if (in[0] != 0x01) return Rfc1929Errc::kBadVersion;
  if (in.size() < 2) return crypto::ParseErrc::kNeedMore;
  size_t ulen = in[1];
  if (in.size() < 2 + ulen + 1) return crypto::ParseErrc::kNeedMore;
  size_t plen = in[2 + ulen];
  size_t total = 2 + ulen + 1 + plen;
  if (in.size() < total) return crypto::ParseErrc::kNeedMore;
  out->user.assign(reinterpret_cast<const char*>(in.data() + 2), ulen);
  out->password.assign(reinterpret_cast<const char*>(in.data() + 3 + ulen), plen);
  *consumed = total;
  return {};
}

std::vector<uint8_t> encode_request(std::string_view user, std::string_view password) {
  if (user.empty() || user.size() > 255 || password.empty() || password.size() > 255) return {};
  std::vector<uint8_t> out;
  out.reserve(3 + user.size() + password.size());
  out.push_back(0x01);
  out.push_back(static_cast<uint8_t>(user.size()));
  out.insert(out.end(), user.begin(), user.end());
  out.push_back(static_cast<uint8_t>(password.size()));
  out.insert(out.end(), password.begin(), password.end());
  return out;
}

std::error_code parse_reply(std::span<const uint8_t> in, bool* success, size_t* consumed) {
  if (in.empty()) return crypto::ParseErrc::kNeedMore;
  if (in[0] != 0x01) return Rfc1929Errc::kBadVersion;
  if (in.size() < 2) return crypto::ParseErrc::kNeedMore;
  *success = in[1] == 0x00;
  *consumed = 2;
  return {};
}

}  // namespace socksgate::auth::userpass
