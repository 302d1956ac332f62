#include "gateway/udp_header.h"

#include <cstring>
#include <utility>

namespace socksgate::gateway::socks5 {
namespace {

class UdpCategory final : public std::error_category {
 public:
  const char* name() const noexcept override { return "socks5-udp"; }
  std::string message(int ev) const override {
    switch (static_cast<UdpErrc>(ev)) {
      case UdpErrc::kTruncated:
        return "truncated SOCKS5 UDP request header";
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
  size_t pos = 4;
  switch (in[3]) {
    case static_cast<uint8_t>(AddressType::kIpv4): {
      if (in.size() < pos + 4 + 2) return UdpErrc::kTruncated;
      asio::ip::address_v4::bytes_type b;
      std::memcpy(b.data(), in.data() + pos, 4);
      addr.type = AddressType::kIpv4;
      addr.ip = asio::ip::address_v4(b);
      pos += 4;
      break;
    }
    case static_cast<uint8_t>(AddressType::kIpv6): {
      if (in.size() < pos + 16 + 2) return UdpErrc::kTruncated;
      asio::ip::address_v6::bytes_type b;
      std::memcpy(b.data(), in.data() + pos, 16);
      addr.type = AddressType::kIpv6;
      addr.ip = asio::ip::address_v6(b);
      pos += 16;
      break;
    }
    case static_cast<uint8_t>(AddressType::kDomain): {
      if (in.size() < pos + 1) return UdpErrc::kTruncated;
      size_t len = in[pos];
      if (len == 0) return Errc::kEmptyDomain;
      if (in.size() < pos + 1 + len + 2) return UdpErrc::kTruncated;
      const char* p = reinterpret_cast<const char*>(in.data() + pos + 1);
      if (std::memchr(p, 0, len) != nullptr) return Errc::kBadDomain;
      addr.type = AddressType::kDomain;
      addr.domain.assign(p, len);
      pos += 1 + len;
      break;
    }
    default:
      return Errc::kUnknownAddressType;
  }
  uint16_t port = static_cast<uint16_t>((in[pos] << 8) | in[pos + 1]);
  pos += 2;
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
  if (dst.type != AddressType::kDomain) {
    encode_udp_header(out, dst.ip, port);
    return;
  }
  out->push_back(0x00);  // RSV
  out->push_back(0x00);
  out->push_back(0x00);  // FRAG
  out->push_back(static_cast<uint8_t>(AddressType::kDomain));
  out->push_back(static_cast<uint8_t>(dst.domain.size()));
  for (char ch : dst.domain) out->push_back(static_cast<uint8_t>(ch));
  out->push_back(static_cast<uint8_t>(port >> 8));
  out->push_back(static_cast<uint8_t>(port & 0xff));
}

}  // namespace socksgate::gateway::socks5
