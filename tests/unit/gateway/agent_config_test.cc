#include "gateway/agent_config.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <fstream>
#include <string>

#include "policy/json_source.h"

namespace socksgate::gateway {
namespace {

std::vector<std::string> errors_of(const std::string& text) {
  try {
    load_agent_config_text("/etc/sg/agent.json", text);
  } catch (const policy::LoadError& e) {
    std::vector<std::string> out;
    for (const auto& d : e.diagnostics()) out.push_back(d.to_string());
    return out;
  }
  return {};
}

bool any_contains(const std::vector<std::string>& v, const std::string& needle) {
  for (const auto& s : v) {
    if (s.find(needle) != std::string::npos) return true;
  }
  return false;
}

constexpr const char* kGood = R"({
  // comments are allowed
  "listen": [ { "address": "127.0.0.1", "port": 1080 }, { "name": "v6", "address": "::1" } ],
  "gateway": { "host": "gw.example.test", "port": 1443, "ca": "ca.pem",
               "pin_sha256": "SHA256:ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef0123456789",
               "client_cert": "me.pem", "client_key": "/keys/me.key", "connect_timeout_ms": 3000 },
  "auth": { "method": "userpass", "user": "alice", "password_env": "PW" },
  "backoff": { "initial_ms": 200, "max_ms": 2000 }
})";

TEST(AgentConfig, LoadsAGoodFile) {
  AgentConfig c = load_agent_config_text("/etc/sg/agent.json", kGood);
  ASSERT_EQ(c.listen.size(), 2u);
  EXPECT_EQ(c.listen[0].name, "local0");
  EXPECT_EQ(c.listen[0].port, 1080);
  EXPECT_EQ(c.listen[1].name, "v6");
  EXPECT_EQ(c.gateway.host, "gw.example.test");
  EXPECT_EQ(c.gateway.tls.server_name, "gw.example.test");  // defaults to the host
  EXPECT_EQ(c.gateway.tls.ca_file, "/etc/sg/ca.pem");       // relative to the config file
  EXPECT_EQ(c.gateway.tls.key_file, "/keys/me.key");
  EXPECT_EQ(c.gateway.tls.pin_sha256,
            "abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789");
  EXPECT_EQ(c.gateway.connect_timeout.count(), 3000);
  EXPECT_EQ(c.auth.source, PasswordSource::kEnv);
  EXPECT_EQ(c.backoff.initial.count(), 200);
}

TEST(AgentConfig, ListenMustBeLoopback) {
  for (const char* addr : {"0.0.0.0", "192.0.2.1", "::", "localhost"}) {
    auto e = errors_of(std::string(R"({"listen": [{"address": ")") + addr +
                       R"("}], "gateway": {"host": "g", "port": 1, "ca": "c"},
                          "auth": {"method": "none"}})");
    ASSERT_EQ(e.size(), 1u) << addr;
    EXPECT_NE(e[0].find("/etc/sg/agent.json:1:"), std::string::npos) << e[0];
    EXPECT_NE(e[0].find("loopback"), std::string::npos) << e[0];
  }
  EXPECT_TRUE(errors_of(R"({"listen": [{"address": "127.0.0.2"}],
      "gateway": {"host": "g", "port": 1, "ca": "c"}, "auth": {"method": "none"}})")
                  .empty());
}

TEST(AgentConfig, Errors) {
  auto e = errors_of(R"({"listen": [{"address": "127.0.0.1", "bogus": 1}],
      "gateway": {"host": "g", "port": 0, "pin_sha256": "12ab", "client_cert": "c.pem"},
      "auth": {"method": "userpass", "user": "alice", "password_file": "f", "prompt": true}})");
  EXPECT_TRUE(any_contains(e, "unknown key \"bogus\"")) << e.size();
  EXPECT_TRUE(any_contains(e, "\"port\" must be between 1 and 65535"));
  EXPECT_TRUE(any_contains(e, "64 hex digits"));
  EXPECT_TRUE(any_contains(e, "\"client_cert\" and \"client_key\" go together"));
  EXPECT_TRUE(any_contains(e, "exactly one of \"password_file\""));
  e = errors_of(R"({"listen": [{"address": "127.0.0.1"}], "gateway": {"host": "g", "port": 1},
      "auth": {"method": "kerberos"}})");
  EXPECT_TRUE(any_contains(e, "must be verified"));
  EXPECT_TRUE(any_contains(e, "unknown method \"kerberos\" (known: gssapi, none, userpass)"));
  e = errors_of(R"({"listen": [], "auth": {"method": "none", "user": "x"}})");
  EXPECT_TRUE(any_contains(e, "non-empty array"));
  EXPECT_TRUE(any_contains(e, "missing required key \"gateway\""));
  EXPECT_TRUE(any_contains(e, "method \"none\" takes no"));
}

TEST(AgentConfig, GssapiSignOn) {
  AgentConfig c = load_agent_config_text("/x/agent.json", R"({
      "listen": [{"address": "127.0.0.1"}],
      "gateway": {"host": "gw.corp.example", "port": 1443, "ca": "ca.pem"},
      "auth": {"method": "gssapi", "ccache": "tickets/alice"}})");
  EXPECT_EQ(c.auth.method, "gssapi");
  EXPECT_EQ(c.auth.service, "rcmd@gw.corp.example");  // the name Dante's and curl's clients use
  EXPECT_EQ(c.auth.ccache, "FILE:/x/tickets/alice");
  EXPECT_EQ(c.auth.protection, "confidentiality");
  EXPECT_TRUE(c.auth.channel_binding);
  EXPECT_EQ(read_agent_password(c), "");  // no password source: the ticket is the credential
  c = load_agent_config_text("/x/agent.json", R"({
      "listen": [{"address": "127.0.0.1"}],
      "gateway": {"host": "gw", "port": 1443, "ca": "ca.pem"},
      "auth": {"method": "gssapi", "service": "rcmd/gw.corp.example@CORP.EXAMPLE",
               "ccache": "KEYRING:persistent:1000", "protection": "integrity",
               "channel_binding": false}})");
  EXPECT_EQ(c.auth.service, "rcmd/gw.corp.example@CORP.EXAMPLE");
  EXPECT_EQ(c.auth.ccache, "KEYRING:persistent:1000");
  EXPECT_EQ(c.auth.protection, "integrity");
  EXPECT_FALSE(c.auth.channel_binding);
  auto e = errors_of(R"({"listen": [{"address": "127.0.0.1"}],
      "gateway": {"host": "g", "port": 1, "ca": "ca.pem"},
      "auth": {"method": "gssapi", "user": "alice", "protection": "max",
               "channel_binding": 1}})");
  EXPECT_TRUE(any_contains(e, "method \"gssapi\" takes no \"user\" or password"));
  EXPECT_TRUE(any_contains(e, "\"protection\" must be \"integrity\", \"confidentiality\""));
  EXPECT_TRUE(any_contains(e, "channel_binding"));
  e = errors_of(R"({"listen": [{"address": "127.0.0.1"}],
      "gateway": {"host": "g", "port": 1, "ca": "ca.pem"},
      "auth": {"method": "userpass", "user": "a", "password_env": "P", "ccache": "x"}})");
  EXPECT_TRUE(any_contains(e, "apply to method \"gssapi\" only"));
}

TEST(AgentConfig, PasswordSources) {
  AgentConfig c = load_agent_config_text("/x/agent.json", kGood);
  ::unsetenv("PW");
  EXPECT_THROW(read_agent_password(c), std::runtime_error);
  ::setenv("PW", "", 1);
  EXPECT_THROW(read_agent_password(c), std::runtime_error);
  ::setenv("PW", "s3cret", 1);
  EXPECT_EQ(read_agent_password(c), "s3cret");
  ::unsetenv("PW");

  std::string path = ::testing::TempDir() + "agent_pw";
  { std::ofstream(path) << "file-secret\r\nsecond line\n"; }
  c.auth.source = PasswordSource::kFile;
  c.auth.password_file = path;
  EXPECT_EQ(read_agent_password(c), "file-secret");
  c.auth.password_file = path + ".missing";
  try {
    read_agent_password(c);
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(".missing"), std::string::npos);
  }
}

}  // namespace
}  // namespace socksgate::gateway
