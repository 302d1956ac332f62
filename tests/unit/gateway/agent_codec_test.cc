// The wire codecs the agent uses: SOCKS5 client side (greeting, method selection, request,
// reply) and HTTP CONNECT.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "crypto/parse.h"
#include "gateway/http_connect.h"
#include "gateway/socks5.h"

namespace socksgate::gateway {
namespace {

using crypto::ParseErrc;
using Bytes = std::vector<uint8_t>;

Bytes bytes(std::string_view s) { return Bytes(s.begin(), s.end()); }

TEST(Socks5Reply, Ipv4AndEveryPrefixNeedsMore) {
  Bytes b{0x05, 0x00, 0x00, 0x01, 127, 0, 0, 1, 0x04, 0x38, 0xAA};
  socks5::ReplyMessage r;
  size_t c = 0;
  ASSERT_FALSE(socks5::parse_reply(b, &r, &c));
  EXPECT_EQ(c, 10u);
  EXPECT_EQ(r.rep, 0);
  EXPECT_EQ(r.bound.ip.to_string(), "127.0.0.1");
  EXPECT_EQ(r.port, 1080);
  for (size_t k = 0; k < 10; ++k) {
    socks5::ReplyMessage p;
    p.rep = 0x42;
    size_t c2 = 9;
    EXPECT_EQ(socks5::parse_reply(std::span(b).first(k), &p, &c2), ParseErrc::kNeedMore) << k;
    EXPECT_EQ(p.rep, 0x42);
    EXPECT_EQ(c2, 9u);
  }
}

TEST(Socks5Reply, Ipv6DomainAndErrors) {
  Bytes v6{0x05, 0x02, 0x00, 0x04};
  for (int i = 0; i < 15; ++i) v6.push_back(0);
  v6.push_back(1);
  v6.push_back(0);
  v6.push_back(80);
  socks5::ReplyMessage r;
  size_t c = 0;
  ASSERT_FALSE(socks5::parse_reply(v6, &r, &c));
  EXPECT_EQ(r.rep, 2);
  EXPECT_EQ(r.bound.to_string(), "[::1]");
  EXPECT_EQ(c, v6.size());
  Bytes dom{0x05, 0x00, 0x00, 0x03, 3, 'a', 'b', 'c', 0, 1};
  ASSERT_FALSE(socks5::parse_reply(dom, &r, &c));
  EXPECT_EQ(r.bound.domain, "abc");
  EXPECT_EQ(socks5::parse_reply(Bytes{0x04, 0x5a}, &r, &c), socks5::Errc::kBadVersion);
  EXPECT_EQ(socks5::parse_reply(Bytes{0x05, 0x00, 0x00, 0x09}, &r, &c),
            socks5::Errc::kUnknownAddressType);
  EXPECT_EQ(socks5::parse_reply(Bytes{0x05, 0x00, 0x00, 0x03, 0x00}, &r, &c),
            socks5::Errc::kEmptyDomain);
}

TEST(Socks5Client, RequestRoundTripsThroughTheServerParser) {
  socks5::Address dom;
  dom.type = socks5::AddressType::kDomain;
  dom.domain = "example.test";
  for (uint8_t cmd : {uint8_t{1}, uint8_t{2}, uint8_t{3}}) {
    Bytes b = socks5::encode_request(cmd, dom, 443);
    socks5::Request r;
    size_t c = 0;
    ASSERT_FALSE(socks5::parse_request(b, &r, &c));
    EXPECT_EQ(c, b.size());
    EXPECT_EQ(r.command, cmd);
    EXPECT_EQ(r.dst.domain, "example.test");
    EXPECT_EQ(r.port, 443);
  }
  socks5::Address zeros;
  zeros.ip = asio::ip::address_v4::any();
  EXPECT_EQ(socks5::encode_request(static_cast<uint8_t>(socks5::Command::kUdpInStream), zeros, 0),
            (Bytes{0x05, 0x80, 0x00, 0x01, 0, 0, 0, 0, 0, 0}));
}

TEST(Socks5Client, GreetingAndMethodSelection) {
  Bytes methods{0x02};
  EXPECT_EQ(socks5::encode_greeting(methods), (Bytes{0x05, 0x01, 0x02}));
  uint8_t m = 0;
  size_t c = 0;
  EXPECT_EQ(socks5::parse_method_selection(Bytes{0x05}, &m, &c), ParseErrc::kNeedMore);
  ASSERT_FALSE(socks5::parse_method_selection(Bytes{0x05, 0xFF, 0x01}, &m, &c));
  EXPECT_EQ(m, 0xFF);
  EXPECT_EQ(c, 2u);
  EXPECT_EQ(socks5::parse_method_selection(Bytes{0x01, 0x00}, &m, &c), socks5::Errc::kBadVersion);
}

TEST(HttpConnect, ParsesTargetsOfEveryKind) {
  http_connect::ConnectRequest r;
  size_t c = 0;
  Bytes b = bytes("CONNECT example.test:443 HTTP/1.1\r\nHost: example.test:443\r\n\r\nextra");
  ASSERT_FALSE(http_connect::parse_connect(b, &r, &c));
  EXPECT_EQ(c, b.size() - 5);
  EXPECT_EQ(r.target.type, socks5::AddressType::kDomain);
  EXPECT_EQ(r.target.domain, "example.test");
  EXPECT_EQ(r.port, 443);
  ASSERT_FALSE(http_connect::parse_connect(bytes("CONNECT 127.0.0.1:8080 HTTP/1.0\n\n"), &r, &c));
  EXPECT_EQ(r.target.type, socks5::AddressType::kIpv4);
  EXPECT_EQ(r.port, 8080);
  ASSERT_FALSE(http_connect::parse_connect(bytes("CONNECT [::1]:22 HTTP/1.1\r\n\r\n"), &r, &c));
  EXPECT_EQ(r.target.type, socks5::AddressType::kIpv6);
  EXPECT_EQ(r.target.ip.to_string(), "::1");
  EXPECT_EQ(r.port, 22);
}

TEST(HttpConnect, EveryPrefixNeedsMore) {
  Bytes b = bytes("CONNECT h:1 HTTP/1.1\r\nUser-Agent: x\r\n\r\n");
  for (size_t k = 0; k < b.size(); ++k) {
    http_connect::ConnectRequest r;
    size_t c = 3;
    EXPECT_EQ(http_connect::parse_connect(std::span(b).first(k), &r, &c), ParseErrc::kNeedMore)
        << k;
    EXPECT_EQ(c, 3u);
  }
}

TEST(HttpConnect, Errors) {
  http_connect::ConnectRequest r;
  r.port = 7;
  size_t c = 0;
  auto parse = [&](std::string_view s) { return http_connect::parse_connect(bytes(s), &r, &c); };
  EXPECT_EQ(parse("GET http://x/ HTTP/1.1\r\n\r\n"), http_connect::Errc::kNotConnect);
  EXPECT_EQ(parse("CONNECT x:1\r\n\r\n"), http_connect::Errc::kBadRequest);
  EXPECT_EQ(parse("CONNECT x:1 HTTP/2\r\n\r\n"), http_connect::Errc::kBadRequest);
  EXPECT_EQ(parse("connect x:1 HTTP/1.1\r\n\r\n"), http_connect::Errc::kBadRequest);
  EXPECT_EQ(parse("CONNECT x HTTP/1.1\r\n\r\n"), http_connect::Errc::kBadTarget);
  EXPECT_EQ(parse("CONNECT x:0 HTTP/1.1\r\n\r\n"), http_connect::Errc::kBadTarget);
  EXPECT_EQ(parse("CONNECT x:65536 HTTP/1.1\r\n\r\n"), http_connect::Errc::kBadTarget);
  EXPECT_EQ(parse("CONNECT x:+1 HTTP/1.1\r\n\r\n"), http_connect::Errc::kBadTarget);
  EXPECT_EQ(parse("CONNECT :80 HTTP/1.1\r\n\r\n"), http_connect::Errc::kBadTarget);
  EXPECT_EQ(parse("CONNECT u@x:80 HTTP/1.1\r\n\r\n"), http_connect::Errc::kBadTarget);
  EXPECT_EQ(parse("CONNECT [::1:80 HTTP/1.1\r\n\r\n"), http_connect::Errc::kBadTarget);
  EXPECT_EQ(parse("CONNECT [nope]:80 HTTP/1.1\r\n\r\n"), http_connect::Errc::kBadTarget);
  EXPECT_EQ(parse("CONNECT ::1:80 HTTP/1.1\r\n\r\n"), http_connect::Errc::kBadTarget);
  EXPECT_EQ(r.port, 7);  // untouched on error
}

TEST(HttpConnect, Responses) {
  EXPECT_EQ(http_connect::encode_response(200), "HTTP/1.1 200 Connection established\r\n\r\n");
  std::string r = http_connect::encode_response(502, "gateway unreachable");
  EXPECT_EQ(r.rfind("HTTP/1.1 502 Bad Gateway\r\n", 0), 0u);
  EXPECT_NE(r.find("Content-Length: 20\r\n\r\ngateway unreachable\n"), std::string::npos);
  EXPECT_NE(http_connect::encode_response(407, "x").find("Proxy-Authenticate: "),
            std::string::npos);
}

}  // namespace
}  // namespace socksgate::gateway
