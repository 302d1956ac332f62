#include "crypto/parse.h"

#include <string>

namespace socksgate::crypto {
namespace {
class ParseCategory final : public std::error_category {
 public:
  const char* name() const noexcept override { return "parse"; }
  std::string message(int ev) const override {
    return ev == static_cast<int>(ParseErrc::kNeedMore) ? "incomplete message" : "parse error";
  }
};
}  // namespace

const std::error_category& parse_category() {
  static const ParseCategory c;
  return c;
}

}  // namespace socksgate::crypto
