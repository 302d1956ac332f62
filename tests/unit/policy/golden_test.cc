// Golden decisions: one table row per documented rule combination (docs/policy.md): each
// selector alone, combinations, session properties, protected addresses, time windows,
// defaults inheritance and the policy.d precedence user -> group -> main -> default deny.
#include <date/date.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "policy/policy.h"

namespace socksgate::policy {
namespace {

// A request; every field has a default, rows override what they are about.
struct Req {
  std::string user = "alice";
  std::vector<std::string> groups = {};
  std::string method = "userpass";
  std::string listener = "main";
  std::string from = "192.0.2.10";
  Command command = Command::kConnect;
  std::string host = "";              // requested name, if any
  std::string addr = "198.51.100.7";  // "" = name-only pre-check
  uint16_t port = 443;
  bool cert = false;
  std::string protection = "";
  bool bound = false;
  int day = 27;   // 2026-11-27 is a Friday; 28 Saturday, 29 Sunday, 30 Monday
  int hour = 10;  // UTC
};

struct Row {
  const char* what;
  Req req;
  const char* expect;  // deciding rule id; "default-deny" when none
  Action action;
};

struct Golden {
  const char* name;
  const char* policy;
  std::vector<Row> rows;
};

DecisionRequest make(const Req& q) {
  DecisionRequest r;
  r.user = q.user;
  r.groups = q.groups;
  r.method = q.method;
  r.listener = q.listener;
  r.client = *IpAddress::parse(q.from);
  r.command = q.command;
  r.host = q.host;
  if (!q.addr.empty()) r.address = IpAddress::parse(q.addr);
  r.port = q.port;
  r.client_certificate = q.cert;
  r.protection = q.protection;
  r.channel_bound = q.bound;
  auto day = date::sys_days{date::year{2026} / date::November / date::day(q.day)};
  r.time = std::chrono::system_clock::time_point(day + std::chrono::hours(q.hour));
  return r;
}

constexpr Action P = Action::kPass;
constexpr Action B = Action::kBlock;

const std::vector<Golden>& table() {
  static const std::vector<Golden> kTable = {
      {"users",
       R"({"rules": [{"id": "r", "action": "pass", "users": ["alice", "bob"]}]})",
       {{"listed user", {}, "r", P},
        {"other user", {.user = "carol"}, "default-deny", B},
        {"anonymous", {.user = "", .method = "none"}, "default-deny", B},
        {"case-sensitive", {.user = "Alice"}, "default-deny", B}}},
      {"groups",
       R"({"groups": {"eng": ["alice"]}, "rules": [{"id": "r", "action": "pass", "groups": ["eng"]}]})",
       {{"policy group", {}, "r", P},
        {"group from the auth method", {.user = "bob", .groups = {"eng"}}, "r", P},
        {"no group", {.user = "bob", .groups = {"ops"}}, "default-deny", B}}},
      {"methods",
       R"({"rules": [{"id": "r", "action": "pass", "methods": ["gssapi"]}, {"id": "any", "action": "pass"}]})",
       {{"listed method", {.method = "gssapi", .protection = "integrity"}, "r", P},
        {"other method falls through", {}, "any", P},
        {"socks4 matches no rule without methods",
         {.user = "", .method = "socks4"},
         "default-deny",
         B}}},
      {"socks4",
       R"({"rules": [{"id": "r", "action": "pass", "methods": ["socks4"]}]})",
       {{"socks4 named", {.user = "", .method = "socks4"}, "r", P},
        {"userpass not named", {}, "default-deny", B}}},
      {"listeners",
       R"({"rules": [{"id": "r", "action": "pass", "listeners": ["tls"]}]})",
       {{"listed", {.listener = "tls"}, "r", P}, {"other", {}, "default-deny", B}}},
      {"from",
       R"({"rules": [{"id": "r", "action": "pass", "from": ["192.0.2.0/24", "2001:db8::/32"]}]})",
       {{"inside v4", {}, "r", P},
        {"inside v6", {.from = "2001:db8::1"}, "r", P},
        {"v4-mapped is canonicalised", {.from = "::ffff:192.0.2.9"}, "r", P},
        {"outside", {.from = "203.0.113.1"}, "default-deny", B}}},
      {"commands",
       R"({"rules": [{"id": "r", "action": "pass", "commands": ["bind", "udp"]}]})",
       {{"bind", {.command = Command::kBind}, "r", P},
        {"udp", {.command = Command::kUdpAssociate}, "r", P},
        {"connect", {}, "default-deny", B}}},
      {"ports",
       R"({"rules": [{"id": "r", "action": "pass", "ports": [22, "443", "8000-8999"]}]})",
       {{"number", {.port = 22}, "r", P},
        {"string", {}, "r", P},
        {"range low", {.port = 8000}, "r", P},
        {"range high", {.port = 8999}, "r", P},
        {"outside", {.port = 9000}, "default-deny", B}}},
      {"to",
       R"({"rules": [{"id": "r", "action": "pass", "to": ["198.51.100.0/24", "www.example", "*.cdn.example"]}]})",
       {{"cidr", {}, "r", P},
        {"exact name", {.host = "WWW.Example.", .addr = "203.0.113.5"}, "r", P},
        {"subdomain glob", {.host = "a.b.cdn.example", .addr = "203.0.113.5"}, "r", P},
        {"glob is not its apex", {.host = "cdn.example", .addr = "203.0.113.5"}, "default-deny", B},
        {"address outside", {.addr = "203.0.113.5"}, "default-deny", B},
        {"name-only pre-check", {.host = "www.example", .addr = ""}, "r", P}}},
      {"client_certificate",
       R"({"rules": [{"id": "r", "action": "pass", "client_certificate": true, "methods": ["userpass"]}]})",
       {{"certificate and password", {.cert = true}, "r", P},
        {"password only", {}, "default-deny", B}}},
      {"min_protection",
       R"({"rules": [{"id": "conf", "action": "pass", "min_protection": "confidentiality"},
                    {"id": "integ", "action": "pass", "min_protection": "integrity"}]})",
       {{"confidentiality", {.method = "gssapi", .protection = "confidentiality"}, "conf", P},
        {"integrity", {.method = "gssapi", .protection = "integrity"}, "integ", P},
        {"none", {.method = "gssapi", .protection = "none"}, "default-deny", B},
        {"not gssapi", {}, "default-deny", B}}},
      {"require_channel_binding",
       R"({"rules": [{"id": "r", "action": "pass", "require_channel_binding": true}]})",
       {{"bound", {.method = "gssapi", .protection = "integrity", .bound = true}, "r", P},
        {"unbound", {.method = "gssapi", .protection = "integrity"}, "default-deny", B}}},
      {"when",
       R"({"rules": [{"id": "office", "action": "pass",
                     "when": [{"days": ["mon-fri"], "hours": "08:00-18:30", "tz": "Europe/Berlin"}]},
                    {"id": "night", "action": "pass", "when": [{"days": ["sat"], "hours": "22:00-06:00"}]}]})",
       {{"office hours", {}, "office", P},
        {"evening in Berlin", {.hour = 18}, "default-deny", B},
        {"Saturday night", {.day = 28, .hour = 23}, "night", P},
        {"after midnight belongs to Saturday", {.day = 29, .hour = 5}, "night", P},
        {"Sunday evening", {.day = 29, .hour = 23}, "default-deny", B}}},
      {"first match wins and block decides",
       R"({"rules": [{"id": "no-ssh", "action": "block", "ports": [22]},
                    {"id": "alice", "action": "pass", "users": ["alice"]}]})",
       {{"blocked first", {.port = 22}, "no-ssh", B}, {"then pass", {}, "alice", P}}},
      {"combination: all selectors must match",
       R"({"groups": {"eng": ["alice"]}, "rules": [
           {"id": "r", "action": "pass", "users": ["alice"], "groups": ["eng"], "methods": ["userpass"],
            "listeners": ["main"], "from": ["192.0.2.0/24"], "commands": ["connect"],
            "to": ["198.51.100.0/24"], "ports": [443], "when": [{"days": ["fri"]}]}]})",
       {{"everything matches", {}, "r", P},
        {"wrong port", {.port = 80}, "default-deny", B},
        {"wrong day", {.day = 28}, "default-deny", B},
        {"wrong listener", {.listener = "tls"}, "default-deny", B},
        {"wrong command", {.command = Command::kBind}, "default-deny", B}}},
      {"protected addresses",
       R"({"rules": [{"id": "any", "action": "pass", "to": ["0.0.0.0/0", "*"]},
                    {"id": "named", "action": "pass", "to": ["10.1.0.0/16", "intranet.example"]},
                    {"id": "glob-ok", "action": "pass", "to": ["*.corp.example"], "allow_protected": true}]})",
       {{"public via catch-all", {}, "any", P},
        {"private skipped by /0, named by CIDR", {.addr = "10.1.2.3"}, "named", P},
        {"private not named", {.addr = "10.2.0.1"}, "default-deny", B},
        {"loopback not named", {.addr = "127.0.0.1"}, "default-deny", B},
        {"metadata address", {.addr = "169.254.169.254"}, "default-deny", B},
        {"exact name names it", {.host = "intranet.example", .addr = "10.9.9.9"}, "named", P},
        {"glob with allow_protected",
         {.host = "a.corp.example", .addr = "192.168.1.1"},
         "glob-ok",
         P},
        {"mapped v6 is canonicalised", {.addr = "::ffff:10.1.0.1"}, "named", P}}},
      {"block rules match protected addresses",
       R"({"rules": [{"id": "deny-all", "action": "block"}, {"id": "lo", "action": "pass", "to": ["127.0.0.1"]}]})",
       {{"block decides", {.addr = "127.0.0.1"}, "deny-all", B}}},
  };
  return kTable;
}

TEST(GoldenDecisionsTest, MainPolicyTable) {
  size_t rows = 0;
  for (const Golden& g : table()) {
    Policy p = load_policy_text("golden.json", g.policy);
    for (const Row& row : g.rows) {
      Decision d = p.decide(make(row.req));
      EXPECT_EQ(d.rule_id, row.expect) << g.name << ": " << row.what;
      EXPECT_EQ(d.action, row.action) << g.name << ": " << row.what;
      ++rows;
    }
  }
  EXPECT_GE(rows, 60u);
}

// policy.d: user rules, then group files in name order, then the main policy, then default
// deny; "defaults" inherited (a file's own over the main policy's).
TEST(GoldenDecisionsTest, PolicyDirectoryPrecedenceAndDefaults) {
  namespace fs = std::filesystem;
  fs::path dir = fs::temp_directory_path() / ("sg-golden-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::ofstream(dir / "alice.json") << R"({"rules": [
    {"id": "alice-no-22", "action": "block", "ports": [22]},
    {"id": "alice-web", "action": "pass", "ports": [443]}]})";
  std::ofstream(dir / "group-eng.json") << R"({"defaults": {"listeners": ["tls"]},
    "rules": [{"id": "eng-ssh", "action": "pass", "ports": [22]},
              {"id": "eng-web", "action": "block", "ports": [443]}]})";
  std::ofstream(dir / "group-ops.json") << R"({"rules": [
    {"id": "ops-any", "action": "pass", "ports": [8080]}]})";
  std::vector<Diagnostic> diags;
  auto src = JsonSource::parse("main.json", R"({
    "groups": {"eng": ["alice", "bob"], "ops": ["bob"]},
    "defaults": {"from": ["192.0.2.0/24"]},
    "rules": [{"id": "main-8080", "action": "block", "ports": [8080]},
              {"id": "main-any", "action": "pass"}]})",
                               &diags);
  ASSERT_TRUE(src);
  Policy p = load_policy_set(*src, nlohmann::json::json_pointer(), dir.string());
  fs::remove_all(dir);
  const std::vector<Row> rows = {
      {"user file before group file", {.listener = "tls", .port = 22}, "alice-no-22", B},
      {"user file before group block", {.listener = "tls"}, "alice-web", P},
      {"group file for a member", {.user = "bob", .listener = "tls", .port = 22}, "eng-ssh", P},
      {"group block before main pass", {.user = "bob", .listener = "tls"}, "eng-web", B},
      {"group defaults: listener", {.user = "bob", .port = 22}, "main-any", P},
      {"second group file before main", {.user = "bob", .port = 8080}, "ops-any", P},
      {"main policy for others", {.user = "carol", .port = 8080}, "main-8080", B},
      {"main defaults inherited by the main rules",
       {.user = "carol", .from = "203.0.113.1"},
       "default-deny",
       B},
      {"main defaults inherited by user files",
       {.from = "203.0.113.1", .port = 22},
       "default-deny",
       B},
  };
  for (const Row& row : rows) {
    Decision d = p.decide(make(row.req));
    EXPECT_EQ(d.rule_id, row.expect) << row.what;
    EXPECT_EQ(d.action, row.action) << row.what;
  }
}

}  // namespace
}  // namespace socksgate::policy
