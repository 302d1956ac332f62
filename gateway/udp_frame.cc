#include "gateway/udp_frame.h"

#include <string>

#include "crypto/parse.h"

namespace socksgate::gateway::socks5 {
namespace {
class Category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "udp_frame"; }
  std::string message(int) const override { return "unknown UDP-in-stream framing version"; }
};
}  // namespace

const std::error_category& udp_frame_category() {
  static const Category c;
  return c;
}

std::error_code parse_udp_frame(std::span<const uint8_t> in, std::span<const uint8_t>* datagram,
                                size_t* consumed) {
  if (in.empty()) return crypto::ParseErrc::kNeedMore;
  if (in[0] != kUdpFrameVersion) return UdpFrameErrc::kBadVersion;
  if (in.size() < kUdpFrameHeaderSize) return crypto::ParseErrc::kNeedMore;
  size_t len = (size_t{in[1]} << 8) | in[2];
  if (in.size() < kUdpFrameHeaderSize + len) return crypto::ParseErrc::kNeedMore;
  *datagram = in.subspan(kUdpFrameHeaderSize, len);
  *consumed = kUdpFrameHeaderSize + len;
  return {};
}

std::array<uint8_t, kUdpFrameHeaderSize> encode_udp_frame_header(uint16_t len) {
  return {kUdpFrameVersion, static_cast<uint8_t>(len >> 8), static_cast<uint8_t>(len & 0xff)};
}

}  // namespace socksgate::gateway::socks5
