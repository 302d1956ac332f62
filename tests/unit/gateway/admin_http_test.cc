#include "gateway/admin_http.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "crypto/parse.h"

namespace socksgate::gateway::http {
namespace {

std::error_code parse(const std::string& s, Request* r, size_t* consumed) {
  return parse_request(
      std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(s.data()), s.size()), r, consumed);
}

std::error_code parse(const std::string& s) {
  Request r;
  size_t c = 0;
  return parse(s, &r, &c);
}

TEST(AdminHttp, ParsesAGet) {
  std::string msg =
      "GET /sessions/close?user=al%20ice HTTP/1.1\r\nHost: 127.0.0.1:9\r\n"
      "Authorization:   Bearer abc \r\nX-Empty:\r\n\r\nEXTRA";
  Request r;
  size_t consumed = 0;
  ASSERT_FALSE(parse(msg, &r, &consumed));
  EXPECT_EQ(consumed, msg.size() - 5);
  EXPECT_EQ(r.method, "GET");
  EXPECT_EQ(r.path, "/sessions/close");
  EXPECT_EQ(r.query, "user=al%20ice");
  EXPECT_EQ(r.minor_version, 1);
  EXPECT_EQ(r.header("authorization"), "Bearer abc");
  EXPECT_EQ(r.header("x-empty"), "");
  EXPECT_EQ(r.header("missing"), std::nullopt);
  auto q = parse_query(r.query);
  ASSERT_TRUE(q);
  EXPECT_EQ(q->at("user"), "al ice");
}

TEST(AdminHttp, EveryPrefixNeedsMore) {
  std::string msg = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
  for (size_t k = 0; k < msg.size(); ++k) {
    Request r;
    r.method = "untouched";
    size_t c = 77;
    EXPECT_EQ(parse(msg.substr(0, k), &r, &c), crypto::ParseErrc::kNeedMore) << k;
    EXPECT_EQ(r.method, "untouched");
    EXPECT_EQ(c, 77u);
  }
  EXPECT_FALSE(parse(msg));
}

TEST(AdminHttp, Http10NeedsNoHost) {
  EXPECT_FALSE(parse("GET /healthz HTTP/1.0\r\n\r\n"));
  EXPECT_EQ(parse("GET /healthz HTTP/1.1\r\n\r\n"), Errc::kMissingHost);
  EXPECT_EQ(parse("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), Errc::kMissingHost);
}

TEST(AdminHttp, RejectsMalformedRequestLines) {
  EXPECT_EQ(parse("GET /x HTTP/1.1\n\n"), Errc::kBadRequestLine);  // bare LF
  EXPECT_EQ(parse("\r\nGET / HTTP/1.1\r\n"), Errc::kBadRequestLine);
  EXPECT_EQ(parse("GET  / HTTP/1.1\r\n"), Errc::kBadRequestLine);
  EXPECT_EQ(parse("GET / HTTP/1.1 \r\n"), Errc::kBadRequestLine);
  EXPECT_EQ(parse("G(T / HTTP/1.1\r\n"), Errc::kBadRequestLine);
  EXPECT_EQ(parse("GET / HTTP/2.0\r\n"), Errc::kBadVersion);
  EXPECT_EQ(parse("GET / HTTP/1.2\r\n"), Errc::kBadVersion);
  EXPECT_EQ(parse("GET / http/1.1\r\n"), Errc::kBadRequestLine);
  EXPECT_EQ(parse("GET http://x/ HTTP/1.1\r\n"), Errc::kBadTarget);
  EXPECT_EQ(parse("GET * HTTP/1.1\r\n"), Errc::kBadTarget);
  EXPECT_EQ(parse("GET /a#b HTTP/1.1\r\n"), Errc::kBadTarget);
  EXPECT_EQ(parse("GET /%zz HTTP/1.1\r\n"), Errc::kBadTarget);
  EXPECT_EQ(parse("GET /%00 HTTP/1.1\r\n"), Errc::kBadTarget);
  EXPECT_EQ(parse("GET /\x7f HTTP/1.1\r\n"), Errc::kBadTarget);
  EXPECT_EQ(parse("GET /" + std::string(kMaxTargetSize, 'a') + " HTTP/1.1\r\n"), Errc::kBadTarget);
}

TEST(AdminHttp, RejectsMalformedHeaders) {
  const std::string l = "GET / HTTP/1.1\r\n";
  EXPECT_EQ(parse(l + "Host : x\r\n\r\n"), Errc::kBadHeader);  // space before the colon
  EXPECT_EQ(parse(l + "Host: x\r\n folded\r\n\r\n"), Errc::kBadHeader);
  EXPECT_EQ(parse(l + "NoColon\r\n\r\n"), Errc::kBadHeader);
  EXPECT_EQ(parse(l + "Host: a\rb\r\n\r\n"), Errc::kBadHeader);
  EXPECT_EQ(parse(l + "Host: a\x01\r\n\r\n"), Errc::kBadHeader);
  EXPECT_EQ(parse(l + "Host: a\n\r\n"), Errc::kBadHeader);
  EXPECT_EQ(parse(l + "Host: x\r\nTransfer-Encoding: chunked\r\n\r\n"), Errc::kTransferEncoding);
  EXPECT_EQ(parse(l + "Host: x\r\nContent-Length: 5\r\n\r\n"), Errc::kBodyNotAllowed);
  EXPECT_EQ(parse(l + "Host: x\r\nContent-Length: -1\r\n\r\n"), Errc::kBadContentLength);
  EXPECT_EQ(parse(l + "Host: x\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n"),
            Errc::kBadContentLength);
  EXPECT_FALSE(parse(l + "Host: x\r\nContent-Length: 0\r\n\r\n"));
  EXPECT_FALSE(parse(l + "Host: x\r\nX: caf\xc3\xa9\r\n\r\n"));  // obs-text is allowed
}

TEST(AdminHttp, Bounded) {
  std::string many = "GET / HTTP/1.1\r\nHost: x\r\n";
  for (size_t i = 0; i < kMaxHeaders; ++i) many += "X-" + std::to_string(i) + ": y\r\n";
  EXPECT_EQ(parse(many + "\r\n"), Errc::kTooManyHeaders);
  std::string big = "GET / HTTP/1.1\r\nHost: x\r\nX: " + std::string(kMaxHeadSize, 'a');
  EXPECT_EQ(parse(big), Errc::kHeadTooLarge);
  // Exactly at the bound without an end: decided, not "need more".
  EXPECT_EQ(parse(big.substr(0, kMaxHeadSize)), Errc::kHeadTooLarge);
  EXPECT_EQ(parse(big.substr(0, kMaxHeadSize - 1)), crypto::ParseErrc::kNeedMore);
  EXPECT_EQ(status_for(make_error_code(Errc::kHeadTooLarge)), 431);
  EXPECT_EQ(status_for(make_error_code(Errc::kBadVersion)), 505);
  EXPECT_EQ(status_for(make_error_code(Errc::kBadHeader)), 400);
}

TEST(AdminHttp, Query) {
  EXPECT_EQ(parse_query("user=a+b%2Bc&x="),
            (std::map<std::string, std::string>{{"user", "a b+c"}, {"x", ""}}));
  EXPECT_EQ(parse_query("user=a&user=b"), std::nullopt);
  EXPECT_EQ(parse_query("user=%4"), std::nullopt);
  EXPECT_EQ(parse_query("user=%g0"), std::nullopt);
  EXPECT_EQ(percent_encode("a b/\xff~"), "a%20b%2F%FF~");
  EXPECT_EQ(percent_decode(percent_encode("al\"ice\n"), false), "al\"ice\n");
}

TEST(AdminHttp, Responses) {
  auto r = parse_response("HTTP/1.1 401 Unauthorized\r\nContent-Length: 4\r\nX: y\r\n\r\nbodyjunk");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
  EXPECT_EQ(r->reason, "Unauthorized");
  EXPECT_EQ(r->body, "body");
  EXPECT_FALSE(parse_response("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort"));
  EXPECT_FALSE(parse_response("garbage\r\n\r\n"));
  auto eof = parse_response("HTTP/1.0 200 OK\r\n\r\nuntil eof");
  ASSERT_TRUE(eof);
  EXPECT_EQ(eof->body, "until eof");
}

}  // namespace
}  // namespace socksgate::gateway::http
