#include "gateway/socks5.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "crypto/channel.h"

namespace socksgate::gateway::socks5 {
namespace {

using crypto::ParseErrc;
using Bytes = std::vector<uint8_t>;

Bytes domain_request(uint8_t cmd, const std::string& host, uint16_t port) {
  Bytes b{0x05, cmd, 0x00, 0x03, static_cast<uint8_t>(host.size())};
  for (char ch : host) b.push_back(static_cast<uint8_t>(ch));
  b.push_back(port >> 8);
  b.push_back(port & 0xff);
  return b;
}

TEST(Greeting, Parses) {
  Bytes b{0x05, 0x02, 0x00, 0x02, 0xAA};
  Greeting g;
  size_t c = 0;
  ASSERT_FALSE(parse_greeting(b, &g, &c));
  EXPECT_EQ(g.methods, (std::vector<uint8_t>{0x00, 0x02}));
  EXPECT_EQ(c, 4u);
}

TEST(Greeting, TruncationAtEveryOffsetNeedsMore) {
  Bytes b{0x05, 0x03, 0x00, 0x01, 0x02};
  for (size_t k = 0; k < b.size(); ++k) {
    Greeting g{{0x42}};
    size_t c = 7;
    EXPECT_EQ(parse_greeting(std::span(b).first(k), &g, &c), ParseErrc::kNeedMore) << k;
    EXPECT_EQ(g.methods, std::vector<uint8_t>{0x42});
    EXPECT_EQ(c, 7u);
  }
}

TEST(Greeting, Errors) {
  Greeting g;
  size_t c = 0;
  EXPECT_EQ(parse_greeting(Bytes{0x04, 0x01, 0x00}, &g, &c), Errc::kBadVersion);
  EXPECT_EQ(parse_greeting(Bytes{0x05, 0x00}, &g, &c), Errc::kNoMethods);
  Bytes max{0x05, 0xFF};
  max.resize(2 + 255, 0x02);
  ASSERT_FALSE(parse_greeting(max, &g, &c));
  EXPECT_EQ(g.methods.size(), 255u);
  EXPECT_EQ(c, kMaxGreetingSize);
}

TEST(Request, Ipv4) {
  Bytes b{0x05, 0x01, 0x00, 0x01, 192, 0, 2, 1, 0x1F, 0x90};
  Request r;
  size_t c = 0;
  ASSERT_FALSE(parse_request(b, &r, &c));
  EXPECT_EQ(r.command, 0x01);
  EXPECT_EQ(r.dst.type, AddressType::kIpv4);
  EXPECT_EQ(r.dst.ip.to_string(), "192.0.2.1");
  EXPECT_EQ(r.port, 8080);
  EXPECT_EQ(c, b.size());
  EXPECT_EQ(r.dst.to_string(), "192.0.2.1");
}

TEST(Request, Ipv6) {
  Bytes b{0x05, 0x01, 0x00, 0x04, 0x20, 0x01, 0x0d, 0xb8, 0, 0,    0,
          0,    0,    0,    0,    0,    0,    0,    0,    1, 0x01, 0xBB};
  Request r;
  size_t c = 0;
  ASSERT_FALSE(parse_request(b, &r, &c));
  EXPECT_EQ(r.dst.type, AddressType::kIpv6);
  EXPECT_EQ(r.dst.ip.to_string(), "2001:db8::1");
  EXPECT_EQ(r.port, 443);
  EXPECT_EQ(r.dst.to_string(), "[2001:db8::1]");
}

TEST(Request, DomainBoundaries) {
  for (size_t len : {1u, 2u, 63u, 254u, 255u}) {
    Bytes b = domain_request(0x01, std::string(len, 'a'), 65535);
    Request r;
    size_t c = 0;
    ASSERT_FALSE(parse_request(b, &r, &c)) << len;
    EXPECT_EQ(r.dst.domain.size(), len);
    EXPECT_EQ(r.port, 65535);
    EXPECT_EQ(c, b.size());
  }
  Request r;
  size_t c = 0;
  EXPECT_EQ(parse_request(domain_request(0x01, "", 80), &r, &c), Errc::kEmptyDomain);
  EXPECT_EQ(parse_request(domain_request(0x01, std::string("a\0b", 3), 80), &r, &c),
            Errc::kBadDomain);
}

TEST(Request, TruncationAtEveryOffsetNeedsMoreForEveryAddressType) {
  std::vector<Bytes> msgs = {
      {0x05, 0x01, 0x00, 0x01, 127, 0, 0, 1, 0x00, 0x50},
      domain_request(0x01, "example.com", 443),
      {0x05, 0x01, 0x00, 0x04, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0x00, 0x16},
  };
  for (const auto& m : msgs) {
    for (size_t k = 0; k < m.size(); ++k) {
      Request r;
      r.port = 4242;
      size_t c = 9;
      EXPECT_EQ(parse_request(std::span(m).first(k), &r, &c), ParseErrc::kNeedMore) << k;
      EXPECT_EQ(r.port, 4242) << "output untouched";
      EXPECT_EQ(c, 9u);
    }
  }
}

TEST(Request, MergedWithFollowingBytesConsumesOnlyItself) {
  Bytes m = domain_request(0x01, "host", 80);
  size_t len = m.size();
  m.insert(m.end(), {'G', 'E', 'T'});
  Request r;
  size_t c = 0;
  ASSERT_FALSE(parse_request(m, &r, &c));
  EXPECT_EQ(c, len);
}

TEST(Request, UnknownCommandAndAddressTypeAreReportedEarly) {
  Request r;
  size_t c = 0;
  // Only VER and CMD sent: REP 07 without waiting for the rest.
  EXPECT_EQ(parse_request(Bytes{0x05, 0x04}, &r, &c), Errc::kUnknownCommand);
  EXPECT_EQ(parse_request(Bytes{0x05, 0x00}, &r, &c), Errc::kUnknownCommand);
  EXPECT_EQ(parse_request(Bytes{0x05, 0x81}, &r, &c), Errc::kUnknownCommand);
  EXPECT_EQ(parse_request(Bytes{0x05, 0x7F}, &r, &c), Errc::kUnknownCommand);
  EXPECT_EQ(parse_request(Bytes{0x05, 0x01, 0x00, 0x02}, &r, &c), Errc::kUnknownAddressType);
  EXPECT_EQ(parse_request(Bytes{0x04, 0x01}, &r, &c), Errc::kBadVersion);
  for (uint8_t cmd : {0x01, 0x02, 0x03, 0x80}) {  // 0x80: UDP in stream
    Bytes b{0x05, cmd, 0x00, 0x01, 1, 2, 3, 4, 0, 1};
    EXPECT_FALSE(parse_request(b, &r, &c));
    EXPECT_EQ(r.command, cmd);
  }
}

TEST(Reply, EncodesIpv4Ipv6AndMappedAsIpv4) {
  auto v4 = encode_reply(Reply::kSucceeded, {asio::ip::make_address("192.0.2.7"), 1080});
  EXPECT_EQ(v4, (Bytes{0x05, 0x00, 0x00, 0x01, 192, 0, 2, 7, 0x04, 0x38}));
  auto v6 = encode_reply(Reply::kHostUnreachable, {asio::ip::make_address("::1"), 80});
  ASSERT_EQ(v6.size(), 22u);
  EXPECT_EQ(v6[1], 0x04);
  EXPECT_EQ(v6[3], 0x04);
  EXPECT_EQ(v6[19], 0x01);
  auto mapped = encode_reply(Reply::kSucceeded, {asio::ip::make_address("::ffff:10.1.2.3"), 9});
  EXPECT_EQ(mapped, (Bytes{0x05, 0x00, 0x00, 0x01, 10, 1, 2, 3, 0x00, 0x09}));
  EXPECT_EQ(encode_method_selection(0xFF), (std::array<uint8_t, 2>{0x05, 0xFF}));
}

}  // namespace
}  // namespace socksgate::gateway::socks5
