// The auth-monitor protocol codec and sequencer, and the real monitor process behind a real
// supervisor: a malformed or out-of-order request ends the link, and the supervisor hands out
// a fresh monitor.
#include "auth/pam/monitor.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>

#include "auth/pam/monitor_protocol.h"
#include "crypto/parse.h"

namespace socksgate::auth::pam {
namespace {

AuthRequest auth(uint32_t id, std::string user = "alice", std::string pw = "secret") {
  AuthRequest r;
  r.id = id;
  r.timeout_ms = 30000;
  r.service = "socksgate";
  r.user = std::move(user);
  r.password = std::move(pw);
  r.rhost = "127.0.0.1";
  return r;
}

TEST(MonitorProtocol, AuthRoundTripsAndParsesIncrementally) {
  auto bytes = encode_auth(auth(5));
  ASSERT_FALSE(bytes.empty());
  for (size_t k = 0; k < bytes.size(); ++k) {
    Request part;
    size_t used = 0;
    EXPECT_EQ(parse_request(std::span(bytes).first(k), &part, &used), crypto::ParseErrc::kNeedMore)
        << k;
  }
  bytes.push_back(0x00);  // the next frame's first byte
  Request r;
  size_t used = 0;
  ASSERT_FALSE(parse_request(bytes, &r, &used));
  EXPECT_EQ(used, bytes.size() - 1);
  EXPECT_EQ(r.type, FrameType::kAuth);
  EXPECT_EQ(r.auth.id, 5u);
  EXPECT_EQ(r.auth.user, "alice");
  EXPECT_EQ(r.auth.password, "secret");
  EXPECT_EQ(r.auth.service, "socksgate");
  EXPECT_EQ(r.auth.rhost, "127.0.0.1");
}

TEST(MonitorProtocol, ResultRoundTrips) {
  AuthResult a;
  a.id = 9;
  a.status = PamStatus::kOk;
  a.pam_code = 0;
  a.user = "alice";
  a.groups = {"alice", "eng"};
  a.messages = {{4, "welcome"}, {3, "expires soon"}};
  auto bytes = encode_result(a);
  Reply r;
  size_t used = 0;
  ASSERT_FALSE(parse_reply(bytes, &r, &used));
  EXPECT_EQ(used, bytes.size());
  EXPECT_EQ(r.result.user, "alice");
  EXPECT_EQ(r.result.groups, a.groups);
  ASSERT_EQ(r.result.messages.size(), 2u);
  EXPECT_EQ(r.result.messages[1].text, "expires soon");
  EXPECT_EQ(r.result.messages[1].kind, 3);
}

TEST(MonitorProtocol, RejectsWhatTheTableDoesNotHold) {
  Request r;
  size_t used = 0;
  // A reply type sent to the monitor.
  auto ok = encode_hello_ok();
  EXPECT_EQ(parse_request(ok, &r, &used), ProtocolErrc::kBadType);
  // LEN out of bounds.
  std::vector<uint8_t> huge = {0x7f, 0xff, 0xff, 0xff, 0x01};
  EXPECT_EQ(parse_request(huge, &r, &used), ProtocolErrc::kBadLength);
  // Trailing bytes inside a frame.
  auto h = encode_hello();
  h.push_back(0);
  h[3] += 1;
  EXPECT_EQ(parse_request(h, &r, &used), ProtocolErrc::kMalformed);
  // Strings past their bound are refused by the encoder, not cut.
  EXPECT_TRUE(encode_auth(auth(1, std::string(256, 'a'))).empty());
  // Too many groups on the way back.
  AuthResult many;
  many.groups.assign(kMaxGroups + 1, "g");
  EXPECT_TRUE(encode_result(many).empty());
}

TEST(MonitorProtocol, SequencerRejectsOutOfOrderRequests) {
  auto parse = [](const std::vector<uint8_t>& b) {
    Request r;
    size_t used = 0;
    EXPECT_FALSE(parse_request(b, &r, &used));
    return r;
  };
  {
    RequestSequencer s;  // AUTH before HELLO
    EXPECT_EQ(s.accept(parse(encode_auth(auth(1)))), ProtocolErrc::kOutOfOrder);
  }
  {
    RequestSequencer s;
    EXPECT_FALSE(s.accept(parse(encode_hello())));
    EXPECT_EQ(s.accept(parse(encode_hello())), ProtocolErrc::kOutOfOrder);  // HELLO twice
  }
  {
    RequestSequencer s;
    EXPECT_FALSE(s.accept(parse(encode_hello())));
    EXPECT_FALSE(s.accept(parse(encode_auth(auth(3)))));
    EXPECT_EQ(s.accept(parse(encode_auth(auth(3)))), ProtocolErrc::kOutOfOrder);  // replayed ID
    EXPECT_EQ(s.accept(parse(encode_auth(auth(2)))), ProtocolErrc::kOutOfOrder);  // going back
    EXPECT_FALSE(s.accept(parse(encode_auth(auth(4)))));
    EXPECT_EQ(s.accept(parse(encode_auth(auth(5, "bob", "")))), ProtocolErrc::kEmptyField);
  }
  {
    RequestSequencer s;
    EXPECT_EQ(s.accept(parse(encode_hello(2))), ProtocolErrc::kBadVersion);
  }
}

// Reads until EOF or `timeout`; returns what came.
std::vector<uint8_t> read_until_eof(int fd, bool* eof, int timeout_ms = 10000) {
  std::vector<uint8_t> got;
  *eof = false;
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, timeout_ms) <= 0) return got;
    uint8_t buf[4096];
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) {
      *eof = true;
      return got;
    }
    got.insert(got.end(), buf, buf + n);
  }
}

bool send_bytes(int fd, const std::vector<uint8_t>& b) {
  return ::send(fd, b.data(), b.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(b.size());
}

class MonitorProcess : public ::testing::Test {
 protected:
  void SetUp() override { sv_ = start_supervisor(); }
  void TearDown() override {
    ::close(sv_.control_fd);  // the supervisor (and its monitor) end on EOF
    int status = 0;
    EXPECT_EQ(::waitpid(sv_.pid, &status, 0), sv_.pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  }
  int link(pid_t* pid) {
    int fd = request_monitor_link(sv_.control_fd, pid, std::chrono::seconds(10));
    EXPECT_GE(fd, 0) << std::strerror(errno);
    return fd;
  }
  Supervisor sv_;
};

TEST_F(MonitorProcess, OutOfOrderRequestEndsTheLinkAndANewMonitorServes) {
  pid_t first = -1;
  int fd = link(&first);
  ASSERT_GE(fd, 0);
  // AUTH before HELLO: the monitor drops the link without answering.
  ASSERT_TRUE(send_bytes(fd, encode_auth(auth(1))));
  bool eof = false;
  EXPECT_TRUE(read_until_eof(fd, &eof).empty());
  EXPECT_TRUE(eof);
  ::close(fd);

  pid_t second = -1;
  fd = link(&second);
  ASSERT_GE(fd, 0);
  EXPECT_NE(first, second);
  ASSERT_TRUE(send_bytes(fd, encode_hello()));
  std::vector<uint8_t> got;
  for (int i = 0; i < 100 && got.size() < encode_hello_ok().size(); ++i) {
    pollfd p{fd, POLLIN, 0};
    ASSERT_GT(::poll(&p, 1, 10000), 0);
    uint8_t buf[64];
    ssize_t n = ::read(fd, buf, sizeof buf);
    ASSERT_GT(n, 0);
    got.insert(got.end(), buf, buf + n);
  }
  EXPECT_EQ(got, encode_hello_ok());
  // A replayed ID after HELLO: the link ends too.
  auto a = encode_auth(auth(0));  // ID 0 is HELLO's
  ASSERT_TRUE(send_bytes(fd, a));
  EXPECT_TRUE(read_until_eof(fd, &eof).empty());
  EXPECT_TRUE(eof);
  ::close(fd);
}

TEST_F(MonitorProcess, GarbageEndsTheLink) {
  pid_t pid = -1;
  int fd = link(&pid);
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(send_bytes(fd, {0x7f, 0xff, 0xff, 0xff, 0x01, 0x02}));
  bool eof = false;
  EXPECT_TRUE(read_until_eof(fd, &eof).empty());
  EXPECT_TRUE(eof);
  ::close(fd);
}

TEST_F(MonitorProcess, RequestingANewMonitorEndsTheOldOne) {
  pid_t first = -1;
  int fd1 = link(&first);
  ASSERT_GE(fd1, 0);
  pid_t second = -1;
  int fd2 = link(&second);
  ASSERT_GE(fd2, 0);
  bool eof = false;
  read_until_eof(fd1, &eof);
  EXPECT_TRUE(eof);  // at most one monitor: the first one was killed
  ::close(fd1);
  ::close(fd2);
}

}  // namespace
}  // namespace socksgate::auth::pam
