// Fuzzes the SOCKS5 UDP request header parser (one input = one datagram) and checks: errors
// leave *out untouched and are one of the documented codes; every proper prefix of a parsed
// header is kTruncated; the header does not depend on the payload; and encoding the parsed
// destination gives back the header bytes with RSV and FRAG zeroed (an IPv4-mapped IPv6 address
// comes back as IPv4).
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <vector>

#include "crypto/parse.h"
#include "gateway/socks5.h"
#include "gateway/udp_header.h"

namespace s5 = socksgate::gateway::socks5;

namespace {

s5::UdpHeader sentinel() {
  s5::UdpHeader h;
  h.frag = 0xEE;
  h.port = 4242;
  h.header_size = 0xC0FFEE;
  h.dst.type = s5::AddressType::kDomain;
  h.dst.domain = "sentinel";
  return h;
}

bool same(const s5::UdpHeader& a, const s5::UdpHeader& b) {
  return a.frag == b.frag && a.port == b.port && a.header_size == b.header_size &&
         a.dst.type == b.dst.type && a.dst.ip == b.dst.ip && a.dst.domain == b.dst.domain;
}

}  // namespace

// The same bytes as a UDP-in-stream byte stream: frames parse back to back, every frame
// re-encodes to its own bytes, and a stream never yields more than it holds.
void fuzz_stream_frames(std::span<const uint8_t> in) {
  while (!in.empty()) {
    std::span<const uint8_t> d;
    size_t consumed = 0;
    std::error_code ec = s5::parse_stream_frame(in, &d, &consumed);
    if (ec == socksgate::crypto::ParseErrc::kNeedMore) return;
    if (ec) {
      if (ec != s5::UdpErrc::kBadFrameVersion && ec != s5::UdpErrc::kEmptyFrame) std::abort();
      return;
    }
    if (consumed != 3 + d.size() || consumed > in.size() || d.empty()) std::abort();
    std::vector<uint8_t> again;
    s5::encode_stream_frame(&again, d);
    if (!std::equal(again.begin(), again.end(), in.begin())) std::abort();
    in = in.subspan(consumed);
  }
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const uint8_t> in(data, size);
  fuzz_stream_frames(in);
  s5::UdpHeader h = sentinel();
  std::error_code ec = s5::parse_udp_header(in, &h);
  if (ec) {
    if (!same(h, sentinel())) std::abort();
    if (ec != s5::UdpErrc::kTruncated && ec != s5::Errc::kUnknownAddressType &&
        ec != s5::Errc::kEmptyDomain && ec != s5::Errc::kBadDomain) {
      std::abort();
    }
    return 0;
  }
  // Shortest: a one-byte domain (8 bytes); longest: a 255-byte domain.
  if (h.header_size < 8 || h.header_size > size || h.header_size > s5::kMaxUdpHeaderSize) {
    std::abort();
  }
  for (size_t k = 0; k < h.header_size; ++k) {
    s5::UdpHeader part;
    if (s5::parse_udp_header(in.first(k), &part) != s5::UdpErrc::kTruncated) std::abort();
  }
  s5::UdpHeader bare;
  if (s5::parse_udp_header(in.first(h.header_size), &bare) || !same(bare, h)) std::abort();

  // Round trip.
  std::vector<uint8_t> want(in.begin(), in.begin() + h.header_size);
  want[0] = want[1] = want[2] = 0x00;
  if (h.dst.type == s5::AddressType::kIpv6 && h.dst.ip.to_v6().is_v4_mapped()) {
    std::vector<uint8_t> v4{0x00, 0x00, 0x00, 0x01};
    for (size_t i = 16; i < 22; ++i) v4.push_back(want[i]);  // last 4 address bytes + port
    want = v4;
  }
  std::vector<uint8_t> got;
  s5::encode_udp_header(&got, h.dst, h.port);
  if (got != want) std::abort();
  if (h.dst.type != s5::AddressType::kDomain) {
    std::vector<uint8_t> by_ip;
    s5::encode_udp_header(&by_ip, h.dst.ip, h.port);
    if (by_ip != got) std::abort();
  }
  (void)h.dst.to_string();
  return 0;
}
