#include "gateway/socks4.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "crypto/parse.h"
#include "gateway/socks5.h"

namespace socksgate::gateway::socks4 {
namespace {

using crypto::ParseErrc;
using Bytes = std::vector<uint8_t>;

void append(Bytes* b, const std::string& s) {
  for (char ch : s) b->push_back(static_cast<uint8_t>(ch));
}

// `04 CD PORT IP USERID 00`, then `HOST 00` if host is given (SOCKS4a needs IP 0.0.0.x).
Bytes request(uint8_t cmd, uint16_t port, std::array<uint8_t, 4> ip, const std::string& user,
              const std::string* host = nullptr) {
  Bytes b;
  b.push_back(0x04);
  b.push_back(cmd);
  b.push_back(static_cast<uint8_t>(port >> 8));
  b.push_back(static_cast<uint8_t>(port & 0xff));
  for (uint8_t x : ip) b.push_back(x);
  append(&b, user);
  b.push_back(0x00);
  if (host != nullptr) {
    append(&b, *host);
    b.push_back(0x00);
  }
  return b;
}

Bytes request4a(const std::string& user, const std::string& host, uint16_t port = 80) {
  return request(0x01, port, {0, 0, 0, 1}, user, &host);
}

TEST(Socks4Request, ConnectParses) {
  Bytes b = request(0x01, 8080, {192, 0, 2, 1}, "alice");
  EXPECT_EQ(b, (Bytes{0x04, 0x01, 0x1F, 0x90, 192, 0, 2, 1, 'a', 'l', 'i', 'c', 'e', 0x00}));
  Request r;
  r.host = "stale";
  size_t c = 0;
  ASSERT_FALSE(parse_request(b, &r, &c));
  EXPECT_EQ(r.command, 0x01);
  EXPECT_EQ(r.port, 8080);
  EXPECT_EQ(r.ip.to_string(), "192.0.2.1");
  EXPECT_EQ(r.user_id, "alice");
  EXPECT_EQ(r.host, "") << "plain SOCKS4 clears host";
  EXPECT_EQ(c, b.size());
}

TEST(Socks4Request, BindAndPortAndIpBoundaries) {
  for (uint16_t port : {0, 1, 255, 256, 65535}) {
    for (std::array<uint8_t, 4> ip :
         {std::array<uint8_t, 4>{0, 0, 0, 0}, std::array<uint8_t, 4>{0, 0, 1, 0},
          std::array<uint8_t, 4>{0, 0, 1, 1}, std::array<uint8_t, 4>{1, 0, 0, 1},
          std::array<uint8_t, 4>{255, 255, 255, 255}}) {
      // None of these is 0.0.0.x with x != 0: plain SOCKS4, bytes after the USERID NUL are the
      // next message.
      Bytes b = request(0x02, port, ip, "u");
      size_t len = b.size();
      b.push_back('h');
      b.push_back(0x00);
      Request r;
      size_t c = 0;
      ASSERT_FALSE(parse_request(b, &r, &c));
      EXPECT_EQ(r.command, 0x02);
      EXPECT_EQ(r.port, port);
      EXPECT_EQ(r.ip.to_bytes(), ip);
      EXPECT_EQ(r.host, "");
      EXPECT_EQ(c, len);
    }
  }
}

TEST(Socks4Request, UserIdBoundaries) {
  for (size_t len : {0u, 1u, 2u, 254u, 255u}) {
    Bytes b = request(0x01, 80, {10, 0, 0, 1}, std::string(len, 'u'));
    Request r;
    size_t c = 0;
    ASSERT_FALSE(parse_request(b, &r, &c)) << len;
    EXPECT_EQ(r.user_id, std::string(len, 'u'));
    EXPECT_EQ(c, 8 + len + 1);
  }
  // Any non-NUL byte is kept as is.
  Bytes b = request(0x01, 80, {10, 0, 0, 1}, "\x01\xff ");
  Request r;
  size_t c = 0;
  ASSERT_FALSE(parse_request(b, &r, &c));
  EXPECT_EQ(r.user_id, "\x01\xff ");
}

TEST(Socks4Request, UserIdTooLongIsReportedAtTheBoundNotBefore) {
  Bytes b{0x04, 0x01, 0x00, 0x50, 10, 0, 0, 1};
  for (size_t i = 0; i < 255; ++i) b.push_back('u');
  Request r;
  r.port = 4242;
  size_t c = 9;
  // 255 bytes without NUL: the NUL may still come.
  EXPECT_EQ(parse_request(b, &r, &c), ParseErrc::kNeedMore);
  b.push_back('u');
  EXPECT_EQ(parse_request(b, &r, &c), Errc::kUserIdTooLong);
  for (int i = 0; i < 300; ++i) b.push_back('u');
  b.push_back(0x00);
  EXPECT_EQ(parse_request(b, &r, &c), Errc::kUserIdTooLong);
  EXPECT_EQ(r.port, 4242) << "output untouched";
  EXPECT_EQ(c, 9u);
}

TEST(Socks4aRequest, Parses) {
  Bytes b = request(0x01, 443, {0, 0, 0, 7}, "bob", nullptr);
  append(&b, "example.com");
  b.push_back(0x00);
  Request r;
  size_t c = 0;
  ASSERT_FALSE(parse_request(b, &r, &c));
  EXPECT_EQ(r.command, 0x01);
  EXPECT_EQ(r.port, 443);
  EXPECT_EQ(r.ip.to_string(), "0.0.0.7");
  EXPECT_EQ(r.user_id, "bob");
  EXPECT_EQ(r.host, "example.com");
  EXPECT_EQ(c, b.size());
}

TEST(Socks4aRequest, EveryIpOfTheForm000xWithXNonZeroIsSocks4a) {
  for (uint8_t x : {0x01, 0x02, 0x80, 0xFF}) {
    std::string host = "h";
    Bytes b = request(0x02, 1, {0, 0, 0, x}, "", &host);
    Request r;
    size_t c = 0;
    ASSERT_FALSE(parse_request(b, &r, &c)) << int{x};
    EXPECT_EQ(r.host, "h");
    EXPECT_EQ(r.user_id, "");
    EXPECT_EQ(c, b.size());
  }
}

TEST(Socks4aRequest, HostBoundaries) {
  for (size_t len : {1u, 2u, 63u, 254u, 255u}) {
    Bytes b = request4a("", std::string(len, 'h'));
    Request r;
    size_t c = 0;
    ASSERT_FALSE(parse_request(b, &r, &c)) << len;
    EXPECT_EQ(r.host, std::string(len, 'h'));
    EXPECT_EQ(c, 8 + 1 + len + 1);
  }
  Bytes max = request4a(std::string(255, 'u'), std::string(255, 'h'));
  EXPECT_EQ(max.size(), kMaxRequestSize);
  Request r;
  size_t c = 0;
  ASSERT_FALSE(parse_request(max, &r, &c));
  EXPECT_EQ(c, kMaxRequestSize);
  EXPECT_EQ(r.user_id.size(), 255u);
  EXPECT_EQ(r.host.size(), 255u);
}

TEST(Socks4aRequest, EmptyHostIsAnError) {
  Request r;
  r.port = 4242;
  size_t c = 9;
  EXPECT_EQ(parse_request(request4a("user", ""), &r, &c), Errc::kEmptyHost);
  EXPECT_EQ(parse_request(request4a("", ""), &r, &c), Errc::kEmptyHost);
  EXPECT_EQ(r.port, 4242) << "output untouched";
  EXPECT_EQ(c, 9u);
}

TEST(Socks4aRequest, HostTooLongIsReportedAtTheBoundNotBefore) {
  Bytes b = request(0x01, 80, {0, 0, 0, 1}, "user");
  for (size_t i = 0; i < 255; ++i) b.push_back('h');
  Request r;
  r.port = 4242;
  size_t c = 9;
  EXPECT_EQ(parse_request(b, &r, &c), ParseErrc::kNeedMore);
  b.push_back('h');
  EXPECT_EQ(parse_request(b, &r, &c), Errc::kHostTooLong);
  b.push_back(0x00);
  EXPECT_EQ(parse_request(b, &r, &c), Errc::kHostTooLong);
  EXPECT_EQ(r.port, 4242) << "output untouched";
  EXPECT_EQ(c, 9u);
}

TEST(Socks4Request, TruncationAtEveryOffsetNeedsMore) {
  std::vector<Bytes> msgs = {
      request(0x01, 80, {127, 0, 0, 1}, ""),
      request(0x02, 21, {192, 0, 2, 9}, "someone"),
      request(0x01, 80, {127, 0, 0, 1}, std::string(255, 'u')),
      request4a("", "a"),
      request4a("user", "example.org", 443),
      request4a(std::string(255, 'u'), std::string(255, 'h')),
  };
  for (const auto& m : msgs) {
    for (size_t k = 0; k < m.size(); ++k) {
      Request r;
      r.port = 4242;
      r.user_id = "keep";
      size_t c = 9;
      EXPECT_EQ(parse_request(std::span(m).first(k), &r, &c), ParseErrc::kNeedMore)
          << m.size() << " " << k;
      EXPECT_EQ(r.port, 4242) << "output untouched";
      EXPECT_EQ(r.user_id, "keep");
      EXPECT_EQ(c, 9u);
    }
  }
}

TEST(Socks4Request, MergedWithFollowingBytesConsumesOnlyItself) {
  Bytes first = request(0x01, 80, {10, 1, 2, 3}, "u1");
  Bytes second = request4a("u2", "host.example", 8443);
  Bytes stream = first;
  for (uint8_t x : second) stream.push_back(x);
  for (char ch : std::string("GET / HTTP/1.1\r\n")) stream.push_back(static_cast<uint8_t>(ch));

  Request r;
  size_t c = 0;
  ASSERT_FALSE(parse_request(stream, &r, &c));
  EXPECT_EQ(c, first.size());
  EXPECT_EQ(r.user_id, "u1");
  EXPECT_EQ(r.host, "");

  auto rest = std::span<const uint8_t>(stream).subspan(c);
  ASSERT_FALSE(parse_request(rest, &r, &c));
  EXPECT_EQ(c, second.size());
  EXPECT_EQ(r.user_id, "u2");
  EXPECT_EQ(r.host, "host.example");
  EXPECT_EQ(r.port, 8443);
  EXPECT_EQ(rest[c], 'G');
}

TEST(Socks4Request, VersionAndCommandAreReportedEarly) {
  Request r;
  r.port = 4242;
  size_t c = 9;
  EXPECT_EQ(parse_request(Bytes{0x05}, &r, &c), Errc::kBadVersion);
  EXPECT_EQ(parse_request(Bytes{0x00}, &r, &c), Errc::kBadVersion);
  EXPECT_EQ(parse_request(Bytes{0x05, 0x01, 0x00}, &r, &c), Errc::kBadVersion);
  // Only VN and CD sent: rejected without waiting for the rest.
  for (uint8_t cd : {0x00, 0x03, 0x04, 0x5A, 0xFF}) {
    EXPECT_EQ(parse_request(Bytes{0x04, cd}, &r, &c), Errc::kUnknownCommand) << int{cd};
    Bytes full = request(cd, 80, {1, 2, 3, 4}, "u");
    EXPECT_EQ(parse_request(full, &r, &c), Errc::kUnknownCommand) << int{cd};
  }
  EXPECT_EQ(r.port, 4242) << "output untouched";
  EXPECT_EQ(c, 9u);
}

TEST(Socks4Errc, CategoryAndMessages) {
  std::error_code ec = Errc::kUserIdTooLong;
  EXPECT_STREQ(ec.category().name(), "socks4");
  EXPECT_EQ(ec, Errc::kUserIdTooLong);
  EXPECT_NE(ec, ParseErrc::kNeedMore);
  // Same numeric value, different protocol: not equal.
  EXPECT_NE(std::error_code(Errc::kBadVersion), std::error_code(socks5::Errc::kBadVersion));
  std::vector<std::string> seen;
  for (Errc e : {Errc::kBadVersion, Errc::kUnknownCommand, Errc::kUserIdTooLong, Errc::kHostTooLong,
                 Errc::kEmptyHost}) {
    std::string m = make_error_code(e).message();
    EXPECT_FALSE(m.empty());
    for (const auto& s : seen) EXPECT_NE(s, m);
    seen.push_back(m);
  }
}

TEST(Socks4Reply, EncodesByteExact) {
  EXPECT_EQ(encode_reply(true, {asio::ip::make_address("192.0.2.7"), 1080}),
            (std::array<uint8_t, 8>{0x00, 0x5A, 0x04, 0x38, 192, 0, 2, 7}));
  EXPECT_EQ(encode_reply(false, {asio::ip::make_address("10.0.0.1"), 65535}),
            (std::array<uint8_t, 8>{0x00, 0x5B, 0xFF, 0xFF, 10, 0, 0, 1}));
  EXPECT_EQ(encode_reply(false, {}), (std::array<uint8_t, 8>{0x00, 0x5B, 0, 0, 0, 0, 0, 0}));
}

TEST(Socks4Reply, MappedIsSentAsIpv4AndTrueIpv6AsZeros) {
  EXPECT_EQ(encode_reply(true, {asio::ip::make_address("::ffff:10.1.2.3"), 9}),
            (std::array<uint8_t, 8>{0x00, 0x5A, 0x00, 0x09, 10, 1, 2, 3}));
  EXPECT_EQ(encode_reply(true, {asio::ip::make_address("2001:db8::1"), 443}),
            (std::array<uint8_t, 8>{0x00, 0x5A, 0, 0, 0, 0, 0, 0}));
  EXPECT_EQ(encode_reply(false, {asio::ip::make_address("::1"), 80}),
            (std::array<uint8_t, 8>{0x00, 0x5B, 0, 0, 0, 0, 0, 0}));
}

}  // namespace
}  // namespace socksgate::gateway::socks4
