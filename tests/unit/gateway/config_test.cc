#include "gateway/config.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <set>
#include <string>

#include "gateway/close_reason.h"
#include "gateway/session_registry.h"
#include "gateway/tcp_tuning.h"

namespace socksgate::gateway {
namespace {

std::vector<std::string> errors_of(const std::string& text) {
  try {
    load_snapshot_text("cfg.json", text, nullptr);
  } catch (const policy::LoadError& e) {
    std::vector<std::string> out;
    for (const auto& d : e.diagnostics()) out.push_back(d.to_string());
    return out;
  }
  return {};
}

constexpr const char* kGood = R"({
  // comments are allowed
  "listeners": [ { "name": "main", "address": "127.0.0.1", "port": 0, "methods": ["none"] },
                 { "name": "v6", "address": "::1", "port": 0, "methods": ["none"] } ],
  "policy": { "inline": { "rules": [ { "id": "r1", "action": "pass", "to": ["127.0.0.1"] } ] } },
  "limits": { "connect_timeout_ms": 2500, "idle_timeout_s": 60 },
  "threads": { "io": 3 }
})";

TEST(Config, LoadsAGoodFile) {
  Snapshot s = load_snapshot_text("cfg.json", kGood, nullptr);
  ASSERT_EQ(s.config->listeners.size(), 2u);
  EXPECT_EQ(s.config->listeners[1].address, "::1");
  EXPECT_EQ(s.config->limits.connect_timeout.count(), 2500);
  EXPECT_EQ(s.config->limits.idle_timeout.count(), 60);
  EXPECT_EQ(s.config->threads.io, 3u);
  EXPECT_EQ(s.policy->rule_count(), 1u);
  EXPECT_EQ(s.backends.userpass, nullptr);
  EXPECT_NE(s.config->find_listener("v6"), nullptr);
}

TEST(Config, UnknownKeysAreErrorsWithPosition) {
  auto e = errors_of(
      "{\n  \"listeners\": [ { \"name\": \"m\", \"address\": \"127.0.0.1\", \"methods\": "
      "[\"none\"], \"prot\": 1 } ],\n"
      "  \"policy\": { \"inline\": {} },\n  \"bogus\": true\n}");
  ASSERT_EQ(e.size(), 2u);
  // Sorted by position, whatever order the checks ran in.
  EXPECT_EQ(e[0].rfind("cfg.json:2:78: unknown key \"prot\"", 0), 0u) << e[0];
  EXPECT_EQ(e[1].rfind("cfg.json:4:3: unknown key \"bogus\"", 0), 0u) << e[1];
}

TEST(Config, EveryProblemIsReported) {
  auto e = errors_of(R"({
  "listeners": [ { "name": "a", "address": "localhost", "port": 70000, "methods": ["userpass", "krb"] },
                 { "name": "a", "address": "::1", "methods": [] } ],
  "policy": { "file": "p.json", "inline": {} }
})");
  std::string all;
  for (const auto& s : e) all += s + "\n";
  EXPECT_NE(all.find("cfg.json:2:44: \"localhost\" is neither an IP address"), std::string::npos)
      << all;
  EXPECT_NE(all.find("\"port\" must be between 0 and 65535"), std::string::npos) << all;
  EXPECT_NE(all.find("method \"userpass\" needs \"auth\""), std::string::npos) << all;
  EXPECT_NE(all.find("unknown method \"krb\""), std::string::npos) << all;
  EXPECT_NE(all.find("duplicate listener name \"a\""), std::string::npos) << all;
  EXPECT_NE(all.find("\"methods\" must not be empty"), std::string::npos) << all;
  EXPECT_NE(all.find("exactly one of \"file\" or \"inline\""), std::string::npos) << all;
}

TEST(Config, PolicyErrorsKeepTheirPositionInsideTheConfigFile) {
  auto e = errors_of(R"({
  "listeners": [ { "name": "a", "address": "127.0.0.1", "methods": ["none"] } ],
  "policy": { "inline": {
    "rules": [ { "id": "x", "action": "maybe" } ] } }
})");
  ASSERT_FALSE(e.empty());
  EXPECT_EQ(e[0].rfind("cfg.json:4:", 0), 0u) << e[0];
}

TEST(Config, SyntaxErrorAndMissingPolicy) {
  auto e = errors_of("{ \"listeners\": [ }");
  ASSERT_EQ(e.size(), 1u);
  EXPECT_EQ(e[0].rfind("cfg.json:1:", 0), 0u);
  e = errors_of(
      R"({ "listeners": [ { "name": "a", "address": "127.0.0.1", "methods": ["none"] } ] })");
  ASSERT_EQ(e.size(), 1u);
  EXPECT_NE(e[0].find("missing required key \"policy\""), std::string::npos);
}

TEST(Config, ListenersMustBeANonEmptyArray) {
  auto e = errors_of(R"({ "policy": { "inline": { "rules": [] } } })");
  ASSERT_FALSE(e.empty());
  EXPECT_NE(e[0].find("cfg.json:1:1: missing required key \"listeners\""), std::string::npos)
      << e[0];
  for (const char* bad : {"[]", "{}", "\"main\""}) {
    e = errors_of(std::string(R"({ "listeners": )") + bad +
                  R"(, "policy": { "inline": { "rules": [] } } })");
    ASSERT_FALSE(e.empty()) << bad;
    EXPECT_NE(e[0].find("\"listeners\" must be a non-empty array"), std::string::npos) << e[0];
  }
}

TEST(Config, MissingPolicyFileIsAnErrorAtTheKey) {
  auto e =
      errors_of(R"({ "listeners": [ { "name": "a", "address": "127.0.0.1", "methods": ["none"] } ],
  "policy": { "file": "/nonexistent/policy.json" } })");
  ASSERT_EQ(e.size(), 1u);
  EXPECT_NE(e[0].find("/nonexistent/policy.json: cannot open"), std::string::npos) << e[0];
}

TEST(Config, EmbeddedDefaultLoads) {
  Snapshot s = default_snapshot("pw", nullptr);
  EXPECT_EQ(s.config->listeners.size(), 2u);
  ASSERT_NE(s.backends.userpass, nullptr);
  EXPECT_TRUE(s.backends.userpass->file().find("demo"));
  policy::DecisionRequest r;
  r.user = "demo";
  r.method = "userpass";
  r.listener = "loopback4";
  r.address = policy::IpAddress::parse("127.0.0.1");
  r.port = 8000;
  EXPECT_TRUE(s.policy->decide(r).allowed());
  r.port = 22;
  EXPECT_FALSE(s.policy->decide(r).allowed()) << "privileged loopback ports stay closed";
  r.user = "eve";
  r.port = 8000;
  EXPECT_FALSE(s.policy->decide(r).allowed());
}

TEST(CloseReason, ErrnoMapsToReplyCodes) {
  auto rep = [](int e) { return describe(from_connect_error({e, std::system_category()})).reply; };
  EXPECT_EQ(rep(ECONNREFUSED), socks5::Reply::kConnectionRefused);
  EXPECT_EQ(rep(ENETUNREACH), socks5::Reply::kNetworkUnreachable);
  EXPECT_EQ(rep(EHOSTUNREACH), socks5::Reply::kHostUnreachable);
  EXPECT_EQ(rep(ETIMEDOUT), socks5::Reply::kHostUnreachable);
  EXPECT_EQ(rep(EPERM), socks5::Reply::kGeneralFailure);
  EXPECT_EQ(describe(CloseReason::kPolicyDenied).reply, socks5::Reply::kNotAllowed);
  EXPECT_EQ(describe(CloseReason::kUnsupportedCommand).reply, socks5::Reply::kCommandNotSupported);
  EXPECT_EQ(describe(CloseReason::kUnsupportedAddressType).reply,
            socks5::Reply::kAddressTypeNotSupported);
  // Every reason has a distinct token.
  std::set<std::string_view> tokens;
  for (int i = 0; i < static_cast<int>(CloseReason::kCount_); ++i) {
    EXPECT_TRUE(tokens.insert(describe(static_cast<CloseReason>(i)).token).second) << i;
  }
}

TEST(SessionRegistry, CapsGlobalSourceAndUser) {
  SessionRegistry r;
  EXPECT_EQ(r.admit(1, "a", 3, 2, [](CloseReason) {}), SessionRegistry::Admit::kOk);
  EXPECT_EQ(r.admit(2, "a", 3, 2, [](CloseReason) {}), SessionRegistry::Admit::kOk);
  EXPECT_EQ(r.admit(3, "a", 3, 2, [](CloseReason) {}), SessionRegistry::Admit::kSourceLimit);
  EXPECT_EQ(r.admit(4, "b", 3, 2, [](CloseReason) {}), SessionRegistry::Admit::kOk);
  EXPECT_EQ(r.admit(5, "c", 3, 2, [](CloseReason) {}), SessionRegistry::Admit::kGlobalLimit);
  EXPECT_TRUE(r.admit_user(1, "alice", 1));
  EXPECT_FALSE(r.admit_user(2, "alice", 1));
  r.remove(1);
  EXPECT_TRUE(r.admit_user(2, "alice", 1));
  EXPECT_EQ(r.active(), 2u);
  int closed = 0;
  r.admit(6, "d", 0, 0, [&](CloseReason) { ++closed; });
  r.close_all();
  EXPECT_EQ(closed, 1);
}

TEST(SessionRegistry, ListsAndClosesOneUsersSessions) {
  SessionRegistry r;
  std::vector<std::pair<uint64_t, CloseReason>> asked;
  auto closer = [&](uint64_t id) {
    return [&asked, id](CloseReason why) { asked.emplace_back(id, why); };
  };
  auto up = std::make_shared<std::atomic<uint64_t>>(0);
  auto down = std::make_shared<std::atomic<uint64_t>>(0);
  r.admit(1, "a", 0, 0, closer(1), {"main", "127.0.0.1:5000", up, down});
  r.admit(2, "a", 0, 0, closer(2), {"main", "127.0.0.1:5001", nullptr, nullptr});
  r.admit(3, "b", 0, 0, closer(3), {"tls", "[::1]:5002", nullptr, nullptr});
  ASSERT_TRUE(r.admit_user(1, "alice", 0));
  ASSERT_TRUE(r.admit_user(2, "bob", 0));
  r.describe(1, "alice", "userpass", "connect", "example.com:443");
  r.describe(3, "alice", "none", "udp", "");  // anonymous method, user from describe()
  up->store(10);
  down->store(20);
  auto list = r.list();
  ASSERT_EQ(list.size(), 3u);
  std::sort(list.begin(), list.end(), [](auto& a, auto& b) { return a.id < b.id; });
  EXPECT_EQ(list[0].user, "alice");
  EXPECT_EQ(list[0].listener, "main");
  EXPECT_EQ(list[0].client, "127.0.0.1:5000");
  EXPECT_EQ(list[0].target, "example.com:443");
  EXPECT_EQ(list[0].command, "connect");
  EXPECT_EQ(list[0].bytes_up, 10u);
  EXPECT_EQ(list[0].bytes_down, 20u);
  EXPECT_EQ(list[1].user, "bob");
  EXPECT_EQ(list[1].bytes_up, 0u);
  EXPECT_EQ(r.close_user("alice", CloseReason::kAdminClosed), 2u);
  std::sort(asked.begin(), asked.end());
  EXPECT_EQ(asked, (std::vector<std::pair<uint64_t, CloseReason>>{{1, CloseReason::kAdminClosed},
                                                                  {3, CloseReason::kAdminClosed}}));
  EXPECT_EQ(r.close_user("nobody", CloseReason::kAdminClosed), 0u);
  EXPECT_EQ(to_string(CloseReason::kAdminClosed), "admin_closed");
}

TEST(TcpTuning, CongestionControlProblems) {
  const std::vector<std::string> available{"reno", "cubic", "bbr", "vegas"};
  const std::vector<std::string> allowed{"reno", "cubic", "bbr"};
  EXPECT_EQ(congestion_control_problem("cubic", available, allowed), std::nullopt);
  EXPECT_EQ(congestion_control_problem("bbr", available, allowed), std::nullopt);
  auto unknown = congestion_control_problem("htcp", available, allowed);
  ASSERT_TRUE(unknown);
  EXPECT_NE(unknown->find("\"htcp\" is not a congestion control available on this host "
                          "(available: reno, cubic, bbr, vegas"),
            std::string::npos)
      << *unknown;
  auto not_allowed = congestion_control_problem("vegas", available, allowed);
  ASSERT_TRUE(not_allowed);
  EXPECT_NE(not_allowed->find("not in net.ipv4.tcp_allowed_congestion_control"), std::string::npos)
      << *not_allowed;
  EXPECT_NE(not_allowed->find("(allowed: reno, cubic, bbr)"), std::string::npos) << *not_allowed;
  EXPECT_TRUE(congestion_control_problem("", available, allowed));
  EXPECT_TRUE(congestion_control_problem("a-name-too-long-for-linux", available, allowed));
  auto unreadable = congestion_control_problem("cubic", {}, {});
  ASSERT_TRUE(unreadable);
  EXPECT_NE(unreadable->find("not readable"), std::string::npos) << *unreadable;
}

// The host's own lists: every allowed name loads on both legs; a made-up one is an error with
// its position, and so are an empty name and a wrong type.
TEST(Config, CongestionControlOnListenersAndUpstream) {
  auto allowed = kernel_congestion_controls().allowed;
  ASSERT_FALSE(allowed.empty()) << "/proc/sys/net/ipv4/tcp_allowed_congestion_control";
  for (const auto& cc : allowed) {
    std::string text = R"({
  "listeners": [ { "name": "main", "address": "127.0.0.1", "port": 0, "methods": ["none"],
                   "congestion_control": ")" +
                       cc + R"(" } ],
  "upstream": { "congestion_control": ")" +
                       cc + R"(" },
  "policy": { "inline": { "rules": [ { "id": "r1", "action": "pass", "to": ["127.0.0.1"] } ] } }
})";
    Snapshot s = load_snapshot_text("cfg.json", text, nullptr);
    EXPECT_EQ(s.config->listeners[0].congestion_control, cc);
    EXPECT_EQ(s.config->upstream.congestion_control, cc);
  }
  Snapshot plain = load_snapshot_text("cfg.json", kGood, nullptr);
  EXPECT_EQ(plain.config->listeners[0].congestion_control, "");
  EXPECT_EQ(plain.config->upstream.congestion_control, "");

  auto e = errors_of(R"({
  "listeners": [ { "name": "main", "address": "127.0.0.1", "methods": ["none"],
                   "congestion_control": "no-such-cc" } ],
  "upstream": { "congestion_control": "", "pacing": 1 },
  "policy": { "inline": {} }
})");
  ASSERT_EQ(e.size(), 3u);
  EXPECT_EQ(e[0].rfind("cfg.json:3:42: \"congestion_control\" \"no-such-cc\" is not a congestion "
                       "control available on this host",
                       0),
            0u)
      << e[0];
  EXPECT_EQ(e[1].rfind("cfg.json:4:39: \"congestion_control\" must not be empty", 0), 0u) << e[1];
  EXPECT_EQ(e[2].rfind("cfg.json:4:43: unknown key \"pacing\"", 0), 0u) << e[2];
  auto t = errors_of(R"({
  "listeners": [ { "name": "main", "address": "127.0.0.1", "methods": ["none"] } ],
  "upstream": { "congestion_control": 5 },
  "policy": { "inline": {} }
})");
  ASSERT_EQ(t.size(), 1u);
  EXPECT_NE(t[0].find("\"congestion_control\" must be a string"), std::string::npos) << t[0];
}

}  // namespace
}  // namespace socksgate::gateway
