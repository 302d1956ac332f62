#include "gateway/udp_header.h"

#include <cstring>
#include <utility>

#include "crypto/parse.h"

namespace socksgate::gateway::socks5 {
namespace {

class UdpCategory final : public std::error_category {
 public:
  const char* name() const noexcept override { return "socks5-udp"; }
  std::string message(int ev) const override {
    switch (static_cast<UdpErrc>(ev)) {
      case UdpErrc::kTruncated:
        return "truncated SOCKS5 UDP request header";
      case UdpErrc::kBadFrameVersion:
        return "UDP-in-stream frame with an unknown version";
      case UdpErrc::kEmptyFrame:
        return "empty UDP-in-stream frame";
    }
    return "unknown SOCKS5 UDP error";
  }
};

}  // namespace

const std::error_category& udp_category() {
  static const UdpCategory c;
  return c;
}

std::error_code parse_udp_header(std::span<const uint8_t> datagram, UdpHeader* out) {
  const std::span<const uint8_t> in = datagram;
  if (in.size() < 4) return UdpErrc::kTruncated;
  // in[0..1] is RSV. RFC 1928 says 0000; the field carries no meaning, so for robustness (as
  // with the RSV byte of a request) we accept anything there rather than drop the datagram.
  uint8_t frag = in[2];
  Address addr;
  uint16_t port = 0;
  size_t pos = 0;
  std::error_code ec = parse_address_port(in, 3, &addr, &port, &pos);
  // A datagram is always whole: running out of bytes is truncation, not "need more".
  if (ec == crypto::ParseErrc::kNeedMore) return UdpErrc::kTruncated;
  if (ec) return ec;
  out->frag = frag;
  out->dst = std::move(addr);
  out->port = port;
  out->header_size = pos;
  return {};
}

void encode_udp_header(std::vector<uint8_t>* out, const asio::ip::address& addr, uint16_t port) {
  out->push_back(0x00);  // RSV
  out->push_back(0x00);
  out->push_back(0x00);  // FRAG
  append_address(out, addr, port);
}

void encode_udp_header(std::vector<uint8_t>* out, const Address& dst, uint16_t port) {
  out->push_back(0x00);  // RSV
  out->push_back(0x00);
  out->push_back(0x00);  // FRAG
  append_address(out, dst, port);
}

std::error_code parse_stream_frame(std::span<const uint8_t> in, std::span<const uint8_t>* datagram,
                                   size_t* consumed) {
  if (in.empty()) return crypto::ParseErrc::kNeedMore;
  if (in[0] != kStreamFrameVersion) return UdpErrc::kBadFrameVersion;
  if (in.size() < 3) return crypto::ParseErrc::kNeedMore;
  size_t len = (size_t{in[1]} << 8) | in[2];
  if (len == 0) return UdpErrc::kEmptyFrame;
  if (in.size() < 3 + len) return crypto::ParseErrc::kNeedMore;
  *datagram = in.subspan(3, len);
  *consumed = 3 + len;
  return {};
}

void encode_stream_frame(std::vector<uint8_t>* out, std::span<const uint8_t> datagram) {
  out->push_back(kStreamFrameVersion);
  out->push_back(static_cast<uint8_t>(datagram.size() >> 8));
  out->push_back(static_cast<uint8_t>(datagram.size() & 0xff));
  out->insert(out->end(), datagram.begin(), datagram.end());
}

}  // namespace socksgate::gateway::socks5
