#include "gateway/udp_header.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "crypto/parse.h"
#include "gateway/socks5.h"

namespace socksgate::gateway::socks5 {
namespace {

using Bytes = std::vector<uint8_t>;

Bytes ipv4_datagram(std::array<uint8_t, 4> ip, uint16_t port, const std::string& data) {
  Bytes b{0x00, 0x00, 0x00, 0x01};
  for (uint8_t x : ip) b.push_back(x);
  b.push_back(static_cast<uint8_t>(port >> 8));
  b.push_back(static_cast<uint8_t>(port & 0xff));
  for (char ch : data) b.push_back(static_cast<uint8_t>(ch));
  return b;
}

Bytes ipv6_datagram(const std::string& ip, uint16_t port, const std::string& data) {
  Bytes b{0x00, 0x00, 0x00, 0x04};
  for (uint8_t x : asio::ip::make_address_v6(ip).to_bytes()) b.push_back(x);
  b.push_back(static_cast<uint8_t>(port >> 8));
  b.push_back(static_cast<uint8_t>(port & 0xff));
  for (char ch : data) b.push_back(static_cast<uint8_t>(ch));
  return b;
}

Bytes domain_datagram(const std::string& host, uint16_t port, const std::string& data) {
  Bytes b{0x00, 0x00, 0x00, 0x03, static_cast<uint8_t>(host.size())};
  for (char ch : host) b.push_back(static_cast<uint8_t>(ch));
  b.push_back(static_cast<uint8_t>(port >> 8));
  b.push_back(static_cast<uint8_t>(port & 0xff));
  for (char ch : data) b.push_back(static_cast<uint8_t>(ch));
  return b;
}

TEST(UdpHeader, Ipv4) {
  Bytes b = ipv4_datagram({192, 0, 2, 1}, 53, "payload");
  UdpHeader h;
  ASSERT_FALSE(parse_udp_header(b, &h));
  EXPECT_EQ(h.frag, 0);
  EXPECT_EQ(h.dst.type, AddressType::kIpv4);
  EXPECT_EQ(h.dst.ip.to_string(), "192.0.2.1");
  EXPECT_EQ(h.port, 53);
  EXPECT_EQ(h.header_size, 10u);
  EXPECT_EQ(std::string(b.begin() + static_cast<ptrdiff_t>(h.header_size), b.end()), "payload");
}

TEST(UdpHeader, Ipv6) {
  Bytes b = ipv6_datagram("2001:db8::1", 443, "x");
  UdpHeader h;
  ASSERT_FALSE(parse_udp_header(b, &h));
  EXPECT_EQ(h.dst.type, AddressType::kIpv6);
  EXPECT_EQ(h.dst.ip.to_string(), "2001:db8::1");
  EXPECT_EQ(h.port, 443);
  EXPECT_EQ(h.header_size, 22u);
  EXPECT_EQ(h.dst.to_string(), "[2001:db8::1]");
}

TEST(UdpHeader, DomainBoundaries) {
  for (size_t len : {1u, 2u, 63u, 254u, 255u}) {
    Bytes b = domain_datagram(std::string(len, 'a'), 65535, "data");
    UdpHeader h;
    ASSERT_FALSE(parse_udp_header(b, &h)) << len;
    EXPECT_EQ(h.dst.type, AddressType::kDomain);
    EXPECT_EQ(h.dst.domain, std::string(len, 'a'));
    EXPECT_EQ(h.port, 65535);
    EXPECT_EQ(h.header_size, 4 + 1 + len + 2);
    EXPECT_EQ(h.header_size + 4, b.size());
  }
  Bytes max = domain_datagram(std::string(255, 'a'), 1, "");
  UdpHeader h;
  ASSERT_FALSE(parse_udp_header(max, &h));
  EXPECT_EQ(h.header_size, kMaxUdpHeaderSize);
}

TEST(UdpHeader, EmptyPayloadAndPortBoundaries) {
  for (uint16_t port : {0, 1, 255, 256, 65535}) {
    Bytes b = ipv4_datagram({10, 0, 0, 1}, port, "");
    UdpHeader h;
    ASSERT_FALSE(parse_udp_header(b, &h));
    EXPECT_EQ(h.port, port);
    EXPECT_EQ(h.header_size, b.size());
  }
}

TEST(UdpHeader, ReservedBytesAreIgnoredAndFragIsReported) {
  for (uint8_t rsv0 : {0x00, 0x01, 0xFF}) {
    for (uint8_t rsv1 : {0x00, 0x80, 0xFF}) {
      for (uint8_t frag : {0x00, 0x01, 0x7F, 0x80, 0xFF}) {
        Bytes b = ipv4_datagram({1, 2, 3, 4}, 80, "d");
        b[0] = rsv0;
        b[1] = rsv1;
        b[2] = frag;
        UdpHeader h;
        ASSERT_FALSE(parse_udp_header(b, &h));
        EXPECT_EQ(h.frag, frag);
        EXPECT_EQ(h.dst.ip.to_string(), "1.2.3.4");
        EXPECT_EQ(h.header_size, 10u);
      }
    }
  }
}

TEST(UdpHeader, TruncationAtEveryOffsetIsAnErrorForEveryAddressType) {
  std::vector<Bytes> msgs = {
      ipv4_datagram({127, 0, 0, 1}, 80, ""),
      ipv6_datagram("::1", 22, ""),
      domain_datagram("example.com", 443, ""),
      domain_datagram(std::string(255, 'a'), 443, ""),
  };
  for (const auto& m : msgs) {
    for (size_t k = 0; k < m.size(); ++k) {
      UdpHeader h;
      h.port = 4242;
      h.header_size = 9;
      EXPECT_EQ(parse_udp_header(std::span(m).first(k), &h), UdpErrc::kTruncated)
          << m.size() << " " << k;
      EXPECT_EQ(h.port, 4242) << "output untouched";
      EXPECT_EQ(h.header_size, 9u);
    }
  }
}

TEST(UdpHeader, Errors) {
  UdpHeader h;
  h.port = 4242;
  for (uint8_t atyp : {0x00, 0x02, 0x05, 0xFF}) {
    // Reported as soon as ATYP is there, like in a request.
    EXPECT_EQ(parse_udp_header(Bytes{0x00, 0x00, 0x00, atyp}, &h), Errc::kUnknownAddressType);
    Bytes b = ipv4_datagram({1, 2, 3, 4}, 80, "data");
    b[3] = atyp;
    EXPECT_EQ(parse_udp_header(b, &h), Errc::kUnknownAddressType) << int{atyp};
  }
  EXPECT_EQ(parse_udp_header(Bytes{0x00, 0x00, 0x00, 0x03, 0x00}, &h), Errc::kEmptyDomain);
  EXPECT_EQ(parse_udp_header(domain_datagram("", 80, "data"), &h), Errc::kEmptyDomain);
  EXPECT_EQ(parse_udp_header(domain_datagram(std::string("a\0b", 3), 80, "data"), &h),
            Errc::kBadDomain);
  EXPECT_EQ(parse_udp_header(domain_datagram(std::string("\0", 1), 80, ""), &h), Errc::kBadDomain);
  EXPECT_EQ(h.port, 4242) << "output untouched";
}

TEST(UdpHeader, NulInPayloadIsNotADomainError) {
  Bytes b = domain_datagram("host", 80, std::string("\0\0", 2));
  UdpHeader h;
  ASSERT_FALSE(parse_udp_header(b, &h));
  EXPECT_EQ(h.dst.domain, "host");
  EXPECT_EQ(h.header_size, b.size() - 2);
}

TEST(UdpErrc, Category) {
  std::error_code ec = UdpErrc::kTruncated;
  EXPECT_STREQ(ec.category().name(), "socks5-udp");
  EXPECT_FALSE(ec.message().empty());
  EXPECT_NE(ec, crypto::ParseErrc::kNeedMore);
  EXPECT_NE(ec, std::error_code(Errc::kBadVersion)) << "same value, other category";
}

TEST(UdpHeaderEncode, Ipv4ByteExactAndAppends) {
  Bytes out{0xAA};
  encode_udp_header(&out, asio::ip::make_address("192.0.2.7"), 1080);
  EXPECT_EQ(out, (Bytes{0xAA, 0x00, 0x00, 0x00, 0x01, 192, 0, 2, 7, 0x04, 0x38}));
}

TEST(UdpHeaderEncode, Ipv6ByteExact) {
  Bytes out;
  encode_udp_header(&out, asio::ip::make_address("2001:db8::1"), 65535);
  Bytes want{0x00, 0x00, 0x00, 0x04, 0x20, 0x01, 0x0d, 0xb8};
  for (int i = 0; i < 11; ++i) want.push_back(0x00);
  want.push_back(0x01);
  want.push_back(0xFF);
  want.push_back(0xFF);
  ASSERT_EQ(want.size(), 22u);
  EXPECT_EQ(out, want);
}

TEST(UdpHeaderEncode, MappedIsSentAsIpv4) {
  Bytes out;
  encode_udp_header(&out, asio::ip::make_address("::ffff:10.1.2.3"), 9);
  EXPECT_EQ(out, (Bytes{0x00, 0x00, 0x00, 0x01, 10, 1, 2, 3, 0x00, 0x09}));
}

TEST(UdpHeaderEncode, AddressOverloadWritesDomains) {
  Address dst;
  dst.type = AddressType::kDomain;
  dst.domain = "example.com";
  Bytes out;
  encode_udp_header(&out, dst, 443);
  EXPECT_EQ(out, domain_datagram("example.com", 443, ""));

  Address v4;
  v4.type = AddressType::kIpv4;
  v4.ip = asio::ip::make_address("1.2.3.4");
  Bytes out4;
  encode_udp_header(&out4, v4, 80);
  EXPECT_EQ(out4, ipv4_datagram({1, 2, 3, 4}, 80, ""));
}

TEST(UdpHeaderEncode, RoundTripsThroughTheParser) {
  std::vector<Bytes> msgs = {
      ipv4_datagram({203, 0, 113, 5}, 5353, "q"),
      ipv6_datagram("fe80::1:2:3:4", 1, "q"),
      domain_datagram("a.example", 65535, "q"),
      domain_datagram(std::string(255, 'z'), 0, "q"),
  };
  for (const auto& m : msgs) {
    UdpHeader h;
    ASSERT_FALSE(parse_udp_header(m, &h));
    Bytes out;
    encode_udp_header(&out, h.dst, h.port);
    out.push_back('q');
    EXPECT_EQ(out, m);
  }
}

TEST(StreamFrame, ParsesIncrementallyAndRoundTrips) {
  Bytes dgram = ipv4_datagram({127, 0, 0, 1}, 53, "hello");
  Bytes wire;
  encode_stream_frame(&wire, dgram);
  ASSERT_EQ(wire.size(), 3 + dgram.size());
  EXPECT_EQ(wire[0], 0x01);
  EXPECT_EQ((size_t{wire[1]} << 8) | wire[2], dgram.size());
  // Two frames back to back: each prefix needs more, the whole first frame parses alone.
  Bytes two = wire;
  encode_stream_frame(&two, dgram);
  for (size_t k = 0; k < wire.size(); ++k) {
    std::span<const uint8_t> d;
    size_t consumed = 0;
    EXPECT_EQ(parse_stream_frame(std::span<const uint8_t>(two).first(k), &d, &consumed),
              crypto::ParseErrc::kNeedMore)
        << k;
  }
  std::span<const uint8_t> d;
  size_t consumed = 0;
  ASSERT_FALSE(parse_stream_frame(two, &d, &consumed));
  EXPECT_EQ(consumed, wire.size());
  EXPECT_EQ(Bytes(d.begin(), d.end()), dgram);
}

TEST(StreamFrame, RejectsUnknownVersionAndEmptyFrames) {
  std::span<const uint8_t> d;
  size_t consumed = 0;
  Bytes v2 = {0x02, 0x00, 0x01, 0x00};
  EXPECT_EQ(parse_stream_frame(v2, &d, &consumed), UdpErrc::kBadFrameVersion);
  Bytes v2_short = {0x02};
  EXPECT_EQ(parse_stream_frame(v2_short, &d, &consumed), UdpErrc::kBadFrameVersion);
  Bytes empty = {0x01, 0x00, 0x00};
  EXPECT_EQ(parse_stream_frame(empty, &d, &consumed), UdpErrc::kEmptyFrame);
}

}  // namespace
}  // namespace socksgate::gateway::socks5
