#include <gtest/gtest.h>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/read.hpp>
#include <asio/write.hpp>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "auth/registry.h"
#include "auth/userpass/credential_cache.h"
#include "auth/userpass/login_throttle.h"
#include "auth/userpass/password_file.h"
#include "auth/userpass/rfc1929.h"
#include "auth/userpass/userpass_authenticator.h"
#include "crypto/channel.h"
#include "crypto/password_hash.h"

namespace socksgate::auth::userpass {
namespace {

using crypto::ParseErrc;
using Bytes = std::vector<uint8_t>;

Bytes request_bytes(const std::string& u, const std::string& p) {
  Bytes b{0x01, static_cast<uint8_t>(u.size())};
  b.insert(b.end(), u.begin(), u.end());
  b.push_back(static_cast<uint8_t>(p.size()));
  b.insert(b.end(), p.begin(), p.end());
  return b;
}

TEST(Rfc1929, ParsesAndReportsConsumed) {
  Bytes b = request_bytes("alice", "secret");
  b.push_back(0x05);  // the next message, merged
  Request r;
  size_t consumed = 0;
  ASSERT_FALSE(parse_request(b, &r, &consumed));
  EXPECT_EQ(r.user, "alice");
  EXPECT_EQ(r.password, "secret");
  EXPECT_EQ(consumed, b.size() - 1);
}

TEST(Rfc1929, EveryTruncationNeedsMoreAndLeavesOutputUntouched) {
  Bytes b = request_bytes("bob", "pw");
  for (size_t k = 0; k < b.size(); ++k) {
    Request r{"keep", "keep"};
    size_t consumed = 99;
    EXPECT_EQ(parse_request(std::span(b).first(k), &r, &consumed), ParseErrc::kNeedMore) << k;
    EXPECT_EQ(r.user, "keep");
    EXPECT_EQ(consumed, 99u);
  }
}

TEST(Rfc1929, FieldBoundaries) {
  for (size_t ulen : {0u, 1u, 254u, 255u}) {
    for (size_t plen : {0u, 1u, 255u}) {
      Bytes b = request_bytes(std::string(ulen, 'u'), std::string(plen, 'p'));
      Request r;
      size_t consumed = 0;
      ASSERT_FALSE(parse_request(b, &r, &consumed)) << ulen << "/" << plen;
      EXPECT_EQ(r.user.size(), ulen);
      EXPECT_EQ(r.password.size(), plen);
      EXPECT_EQ(consumed, b.size());
      EXPECT_LE(consumed, kMaxRequestSize);
    }
  }
}

TEST(Rfc1929, BadVersion) {
  Bytes b = request_bytes("a", "b");
  b[0] = 0x05;
  Request r;
  size_t c = 0;
  EXPECT_EQ(parse_request(b, &r, &c), Rfc1929Errc::kBadVersion);
  EXPECT_EQ(encode_reply(true), (std::array<uint8_t, 2>{0x01, 0x00}));
  EXPECT_EQ(encode_reply(false), (std::array<uint8_t, 2>{0x01, 0x01}));
}

TEST(PasswordFile, ParsesCommentsBlankLinesAndCrlf) {
  std::string y = crypto::hash_password("pw");
  auto pf = PasswordFile::parse("users", "# comment\n\nalice:" + y + "\r\nbob:" + y + ":extra\n");
  EXPECT_EQ(pf.size(), 2u);
  ASSERT_TRUE(pf.find("alice"));
  EXPECT_EQ(*pf.find("alice"), y);
  EXPECT_EQ(*pf.find("bob"), y);
  EXPECT_FALSE(pf.find("carol"));
}

TEST(PasswordFile, ReportsEveryBadLineWithItsNumber) {
  std::string y = crypto::hash_password("pw");
  try {
    PasswordFile::parse("users.passwd",
                        "alice:" + y + "\nnocolon\n:" + y + "\nmd5:$1$ab$cd\nalice:" + y + "\n");
    FAIL() << "expected an error";
  } catch (const PasswordFileError& e) {
    ASSERT_EQ(e.problems().size(), 4u) << e.what();
    EXPECT_EQ(e.problems()[0], "users.passwd:2: expected user:hash");
    EXPECT_EQ(e.problems()[1], "users.passwd:3: empty user name");
    EXPECT_NE(e.problems()[2].find("users.passwd:4: user \"md5\": MD5"), std::string::npos);
    EXPECT_EQ(e.problems()[3], "users.passwd:5: duplicate user \"alice\"");
  }
}

TEST(CredentialCache, HitsOnlyForTheExactCredentialsAndExpires) {
  CredentialCache c(std::chrono::milliseconds(150), 100);
  c.insert("alice", "pw", "$y$hash");
  EXPECT_TRUE(c.lookup("alice", "pw", "$y$hash"));
  EXPECT_FALSE(c.lookup("alice", "pW", "$y$hash"));
  EXPECT_FALSE(c.lookup("alice", "pw", "$y$other")) << "a changed hash invalidates";
  EXPECT_FALSE(c.lookup("alicepw", "", "$y$hash")) << "fields are separated";
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_FALSE(c.lookup("alice", "pw", "$y$hash"));
}

TEST(CredentialCache, BoundedAndDisabledWithZeroTtl) {
  CredentialCache c(std::chrono::seconds(60), 3);
  for (int i = 0; i < 10; ++i) c.insert("u" + std::to_string(i), "pw", "h");
  EXPECT_LE(c.size(), 3u);
  CredentialCache off(std::chrono::milliseconds(0), 10);
  off.insert("a", "b", "c");
  EXPECT_FALSE(off.lookup("a", "b", "c"));
}

TEST(LoginThrottle, LocksOnlyTheAttackingSource) {
  LoginThrottle t({3, std::chrono::seconds(60), std::chrono::seconds(300), 1000});
  auto now = LoginThrottle::Clock::now();
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(t.allowed("alice", "10.0.0.1", now));
    t.record_failure("alice", "10.0.0.1", now);
  }
  EXPECT_FALSE(t.allowed("alice", "10.0.0.1", now));
  EXPECT_TRUE(t.allowed("alice", "10.0.0.2", now)) << "the real user elsewhere is unaffected";
  EXPECT_TRUE(t.allowed("bob", "10.0.0.1", now));
  EXPECT_TRUE(t.allowed("alice", "10.0.0.1", now + std::chrono::seconds(301)));
}

TEST(LoginThrottle, WindowResetsAndSuccessClears) {
  LoginThrottle t({3, std::chrono::seconds(10), std::chrono::seconds(300), 1000});
  auto now = LoginThrottle::Clock::now();
  t.record_failure("a", "s", now);
  t.record_failure("a", "s", now);
  t.record_failure("a", "s", now + std::chrono::seconds(11));  // new window
  EXPECT_TRUE(t.allowed("a", "s", now + std::chrono::seconds(11)));
  t.record_failure("a", "s", now + std::chrono::seconds(12));
  t.record_success("a", "s");
  t.record_failure("a", "s", now + std::chrono::seconds(12));
  EXPECT_TRUE(t.allowed("a", "s", now + std::chrono::seconds(12)));
}

TEST(LoginThrottle, TableIsBounded) {
  LoginThrottle t({5, std::chrono::seconds(60), std::chrono::seconds(60), 50});
  for (int i = 0; i < 500; ++i) t.record_failure("u", "src" + std::to_string(i));
  EXPECT_LE(t.size(), 50u);
}

// End to end over a real loopback TCP connection: the authenticator against a client that
// sends raw RFC 1929 bytes.
struct Exchange {
  AuthOutcome outcome;
  std::error_code ec;
  Bytes reply;
  std::chrono::milliseconds elapsed{0};
};

Exchange run_exchange(std::shared_ptr<const UserPassBackend> backend, Bytes wire) {
  asio::io_context io;
  crypto::BlockingPool pool(1, 8);
  asio::ip::tcp::acceptor acc(io, {asio::ip::make_address("127.0.0.1"), 0});
  asio::ip::tcp::socket client(io);
  client.connect(acc.local_endpoint());
  auto server_sock = acc.accept();
  crypto::TcpChannel channel(std::move(server_sock));
  Exchange ex;
  auto start = std::chrono::steady_clock::now();
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        UserPassAuthenticator a(backend);
        AuthContext ctx{asio::ip::make_address("127.0.0.1"), "test", &pool, {}};
        ex.ec = co_await a.authenticate(channel, ctx, &ex.outcome);
        ex.elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(
            std::chrono::steady_clock::now() - start);
        channel.close();
      },
      asio::detached);
  // Send one byte at a time: the parser must cope with any split.
  for (uint8_t b : wire) asio::write(client, asio::buffer(&b, 1));
  io.run();
  ex.reply.resize(2);
  std::error_code rec;
  size_t n = asio::read(client, asio::buffer(ex.reply), rec);
  ex.reply.resize(n);
  return ex;
}

std::shared_ptr<const UserPassBackend> backend_with(const std::string& user, const std::string& pw,
                                                    std::chrono::milliseconds delay) {
  auto pf = PasswordFile::parse("t", user + ":" + crypto::hash_password(pw) + "\n");
  UserPassSettings s;
  s.failure_delay = delay;
  return std::make_shared<const UserPassBackend>(std::move(pf), s,
                                                 std::make_shared<LoginThrottle>());
}

TEST(UserPassAuthenticator, AcceptsTheRightPassword) {
  auto be = backend_with("alice", "secret", std::chrono::milliseconds(100));
  auto ex = run_exchange(be, request_bytes("alice", "secret"));
  EXPECT_FALSE(ex.ec);
  EXPECT_TRUE(ex.outcome.ok);
  EXPECT_EQ(ex.outcome.identity.user, "alice");
  EXPECT_EQ(ex.outcome.identity.method, "userpass");
  EXPECT_EQ(ex.reply, (Bytes{0x01, 0x00}));
  EXPECT_EQ(be->cache().size(), 1u) << "success is cached";
}

TEST(UserPassAuthenticator, FailuresAnswer0101AfterTheFixedDelay) {
  auto be = backend_with("alice", "secret", std::chrono::milliseconds(300));
  struct Case {
    std::string user, pw, reason;
  };
  for (const auto& c : std::vector<Case>{{"alice", "wrong", "bad_password"},
                                         {"mallory", "secret", "unknown_user"},
                                         {"alice", "", "empty_password"},
                                         {"", "secret", "empty_user"}}) {
    auto ex = run_exchange(be, request_bytes(c.user, c.pw));
    EXPECT_FALSE(ex.ec) << c.reason;
    EXPECT_FALSE(ex.outcome.ok) << c.reason;
    EXPECT_EQ(ex.outcome.failure_reason, c.reason);
    EXPECT_EQ(ex.outcome.claimed_user, c.user);
    EXPECT_EQ(ex.reply, (Bytes{0x01, 0x01})) << c.reason;
    EXPECT_GE(ex.elapsed.count(), 290) << c.reason;
  }
  EXPECT_EQ(be->cache().size(), 0u);
}

TEST(UserPassAuthenticator, ThrottledPairIsRefusedEvenWithTheRightPassword) {
  auto be = backend_with("alice", "secret", std::chrono::milliseconds(1));
  for (int i = 0; i < 5; ++i) run_exchange(be, request_bytes("alice", "nope"));
  auto ex = run_exchange(be, request_bytes("alice", "secret"));
  EXPECT_FALSE(ex.outcome.ok);
  EXPECT_EQ(ex.outcome.failure_reason, "throttled");
}

TEST(Registry, KnowsNoneAndUserpass) {
  EXPECT_EQ(method_code("none"), kMethodNone);
  EXPECT_EQ(method_code("userpass"), kMethodUserPass);
  EXPECT_FALSE(method_code("kerberos"));
  AuthBackends none_configured;
  EXPECT_NE(make_authenticator("none", none_configured), nullptr);
  EXPECT_EQ(make_authenticator("userpass", none_configured), nullptr);
}

}  // namespace
}  // namespace socksgate::auth::userpass

namespace socksgate::auth::userpass {
namespace {

// The agent's side of RFC 1929: what it sends parses on the gateway's side, byte for byte.
TEST(Rfc1929Client, RequestRoundTripsAndReplyParses) {
  std::vector<uint8_t> b = encode_request("alice", "pa:ss word");
  Request r;
  size_t c = 0;
  ASSERT_FALSE(parse_request(b, &r, &c));
  EXPECT_EQ(c, b.size());
  EXPECT_EQ(r.user, "alice");
  EXPECT_EQ(r.password, "pa:ss word");
  EXPECT_TRUE(encode_request("", "x").empty());
  EXPECT_TRUE(encode_request("x", "").empty());
  EXPECT_TRUE(encode_request(std::string(256, 'u'), "x").empty());
  EXPECT_EQ(encode_request(std::string(255, 'u'), std::string(255, 'p')).size(), kMaxRequestSize);

  bool ok = false;
  EXPECT_EQ(parse_reply(std::vector<uint8_t>{0x01}, &ok, &c), crypto::ParseErrc::kNeedMore);
  ASSERT_FALSE(parse_reply(encode_reply(true), &ok, &c));
  EXPECT_TRUE(ok);
  EXPECT_EQ(c, 2u);
  ASSERT_FALSE(parse_reply(encode_reply(false), &ok, &c));
  EXPECT_FALSE(ok);
  EXPECT_EQ(parse_reply(std::vector<uint8_t>{0x05, 0x00}, &ok, &c), Rfc1929Errc::kBadVersion);
}

}  // namespace
}  // namespace socksgate::auth::userpass
