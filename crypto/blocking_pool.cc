#include "crypto/blocking_pool.h"

#include <string>

namespace socksgate::crypto {
namespace {
class PoolCategory final : public std::error_category {
 public:
  const char* name() const noexcept override { return "blocking_pool"; }
  std::string message(int) const override { return "blocking pool is full"; }
};
}  // namespace

const std::error_category& pool_category() {
  static const PoolCategory c;
  return c;
}

}  // namespace socksgate::crypto
