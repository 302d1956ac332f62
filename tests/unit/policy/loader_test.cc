#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "policy/policy.h"
#include "policy/rule.h"

namespace socksgate::policy {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using Ptr = nlohmann::json::json_pointer;

// Loads `text`, expects failure, returns "line:col: message" for each diagnostic.
std::vector<std::string> errors(std::string_view text, const LoadOptions& opts = {}) {
  try {
    load_policy_text("p.json", text, opts);
  } catch (const LoadError& e) {
    std::vector<std::string> out;
    for (const auto& d : e.diagnostics()) {
      EXPECT_EQ(d.file, "p.json");
      out.push_back(std::to_string(d.pos.line) + ":" + std::to_string(d.pos.column) + ": " +
                    d.message);
    }
    return out;
  }
  ADD_FAILURE() << "policy loaded without errors:\n" << text;
  return {};
}

// One rule on line 2, so that columns are easy to read off.
std::vector<std::string> rule_errors(std::string_view rule) {
  return errors("{\"rules\": [\n" + std::string(rule) + "\n]}");
}

TEST(LoaderTest, LoadsTheDocumentedExample) {
  Policy p = load_policy_text("p.json", R"({
  // comments are allowed
  "groups": { "eng": ["alice", "bob"] },
  "client_rules": [ { "id": "lan", "action": "pass", "from": ["127.0.0.0/8", "::1/128"],
                      "listeners": ["main"], "comment": "free text" } ],
  "rules": [
    { "id": "alice-web", "action": "pass", "users": ["alice"], "groups": ["eng"],
      "methods": ["userpass"], "listeners": ["main"], "from": ["127.0.0.0/8"],
      "commands": ["connect"], "to": ["127.0.0.1/32", "localhost", "*.corp.example"],
      "ports": ["8000-8999", 443, "22"], "allow_protected": false, "comment": "..." },
    { "id": "deny-rest", "action": "block" }
  ]
})");
  EXPECT_EQ(p.rule_count(), 2u);
  EXPECT_EQ(p.client_rule_count(), 1u);
  EXPECT_THAT(p.groups_of("alice"), ElementsAre("eng"));
  EXPECT_THAT(p.groups_of("carol"), ElementsAre());
}

TEST(LoaderTest, EmptyAndMinimalDocuments) {
  Policy p = load_policy_text("p.json", "{}");
  EXPECT_EQ(p.rule_count(), 0u);
  EXPECT_EQ(p.client_rule_count(), 0u);
  p = load_policy_text("p.json", R"({"rules": [], "groups": {}})");
  EXPECT_EQ(p.rule_count(), 0u);
}

TEST(LoaderTest, TopLevelMustBeAnObject) {
  EXPECT_THAT(errors("  [1]"), ElementsAre("1:3: a policy must be a JSON object, got array"));
  EXPECT_THAT(errors("\"rules\""), ElementsAre("1:1: a policy must be a JSON object, got string"));
}

TEST(LoaderTest, SyntaxErrorsAreLoadErrors) {
  EXPECT_THAT(errors("{\"rules\": [\n  {\"id\": \"a\" \"action\": \"pass\"}]}"),
              ElementsAre(HasSubstr("2:14: syntax error while parsing object")));
  EXPECT_THAT(errors("{\"rules\": [], \"rules\": []}"),
              ElementsAre("1:15: duplicate key \"rules\" (first at line 1, column 2)"));
}

TEST(LoaderTest, WhatJoinsAllDiagnosticsWithFileLineCol) {
  try {
    load_policy_text("lab/policy.json", "{\"rulez\": [],\n \"groups\": 1}");
    FAIL() << "expected LoadError";
  } catch (const LoadError& e) {
    EXPECT_STREQ(e.what(),
                 "lab/policy.json:1:2: unknown key \"rulez\" in policy (did you mean \"rules\"?)\n"
                 "lab/policy.json:2:12: \"groups\" must be an object mapping group names to "
                 "arrays of user names, got number");
  }
}

TEST(LoaderTest, UnknownKeysAtEveryLevel) {
  EXPECT_THAT(errors(R"({"rules": [], "version": 2})"),
              ElementsAre("1:15: unknown key \"version\" in policy (allowed: groups, "
                          "client_rules, rules, defaults, comment)"));
  EXPECT_THAT(rule_errors(R"({"id": "a", "action": "pass", "user": ["x"], "dst": ["*"]})"),
              ElementsAre("2:31: unknown key \"user\" in rule (did you mean \"users\"?)",
                          "2:46: unknown key \"dst\" in rule (allowed: id, action, users, "
                          "groups, methods, listeners, from, commands, to, ports, "
                          "allow_protected, egress, client_certificate, min_protection, "
                          "require_channel_binding, limits, when, comment)"));
  EXPECT_THAT(errors(R"({"client_rules": [{"id": "c", "action": "pass", "users": ["x"]}]})"),
              ElementsAre("1:49: unknown key \"users\" in client rule (allowed: id, action, "
                          "from, listeners, comment)"));
}

TEST(LoaderTest, IdErrors) {
  EXPECT_THAT(rule_errors(R"({"action": "pass"})"), ElementsAre("2:1: rule has no \"id\""));
  EXPECT_THAT(rule_errors(R"({"id": 7, "action": "pass"})"),
              ElementsAre("2:8: \"id\" must be a string, got number"));
  EXPECT_THAT(rule_errors(R"({"id": "", "action": "pass"})"), ElementsAre("2:8: \"id\" is empty"));
  EXPECT_THAT(rule_errors(R"({"id": "web rule", "action": "pass"})"),
              ElementsAre("2:8: rule id \"web rule\" may only contain letters, digits, '.', "
                          "'_', ':' and '-'"));
  EXPECT_THAT(rule_errors(R"({"id": "default-deny", "action": "block"})"),
              ElementsAre("2:8: rule id \"default-deny\" is reserved for the implicit rule"));
  EXPECT_THAT(rule_errors("{\"id\": \"" + std::string(129, 'a') + "\", \"action\": \"pass\"}"),
              ElementsAre("2:8: \"id\" is longer than 128 characters"));
  // Every allowed character.
  load_policy_text("p.json", R"({"rules": [{"id": "Az09._:-", "action": "pass"}]})");
}

TEST(LoaderTest, DuplicateIdsAcrossClientRulesAndRulesAreReportedAtTheSecond) {
  EXPECT_THAT(errors("{\n"
                     "\"rules\": [{\"id\": \"a\", \"action\": \"pass\"},\n"
                     "          {\"id\": \"b\", \"action\": \"pass\"},\n"
                     "          {\"id\": \"a\", \"action\": \"block\"}],\n"
                     "\"client_rules\": [{\"id\": \"b\", \"action\": \"pass\"}]\n"
                     "}"),
              ElementsAre("4:18: duplicate rule id \"a\" (first used at line 2, column 18)",
                          "5:25: duplicate rule id \"b\" (first used at line 3, column 18)"));
  // "Second" is in file order, even when client_rules comes after rules.
  EXPECT_THAT(errors("{\"client_rules\": [{\"id\": \"x\", \"action\": \"pass\"}],\n"
                     "\"rules\": [{\"id\": \"x\", \"action\": \"pass\"}]}"),
              ElementsAre("2:18: duplicate rule id \"x\" (first used at line 1, column 26)"));
}

TEST(LoaderTest, ActionErrors) {
  EXPECT_THAT(rule_errors(R"({"id": "a"})"),
              ElementsAre("2:1: rule a has no \"action\" (\"pass\" or \"block\")"));
  EXPECT_THAT(rule_errors(R"({"id": "a", "action": "allow"})"),
              ElementsAre("2:23: \"action\" must be \"pass\" or \"block\", got \"allow\""));
  EXPECT_THAT(rule_errors(R"({"id": "a", "action": true})"),
              ElementsAre("2:23: \"action\" must be \"pass\" or \"block\", got boolean"));
}

TEST(LoaderTest, SelectorShapeErrors) {
  EXPECT_THAT(rule_errors(R"({"id": "a", "action": "pass", "users": []})"),
              ElementsAre("2:40: \"users\" is empty and would match nothing; omit the key to "
                          "match anything"));
  EXPECT_THAT(rule_errors(R"({"id": "a", "action": "pass", "users": "alice"})"),
              ElementsAre("2:40: \"users\" must be an array, got \"alice\" (write [\"alice\"])"));
  EXPECT_THAT(rule_errors(R"({"id": "a", "action": "pass", "ports": 443})"),
              ElementsAre("2:40: \"ports\" must be an array, got number (write [443])"));
  EXPECT_THAT(rule_errors(R"({"id": "a", "action": "pass", "groups": ["eng", 3, ""]})"),
              ElementsAre("2:49: \"groups\" entries must be strings, got number",
                          "2:52: empty entry in \"groups\""));
  EXPECT_THAT(rule_errors(R"({"id": "a", "action": "pass", "comment": 1})"),
              ElementsAre("2:42: \"comment\" must be a string, got number"));
  EXPECT_THAT(rule_errors(R"("rule")"), ElementsAre("2:1: rules must be objects, got string"));
  EXPECT_THAT(errors(R"({"rules": {"id": "a"}})"),
              ElementsAre("1:11: \"rules\" must be an array of rule objects, got object"));
  for (const char* key :
       {"users", "groups", "methods", "listeners", "from", "commands", "to", "ports"}) {
    EXPECT_THAT(
        rule_errors("{\"id\": \"a\", \"action\": \"pass\", \"" + std::string(key) + "\": []}"),
        ElementsAre(HasSubstr("is empty and would match nothing")))
        << key;
  }
}

TEST(LoaderTest, MethodsAndCommands) {
  EXPECT_THAT(rule_errors(R"({"id": "a", "action": "pass", "methods": ["userpass", "kerberos"]})"),
              ElementsAre("2:55: unknown method \"kerberos\" (expected one of: none, userpass, "
                          "gssapi, certificate, socks4)"));
  EXPECT_THAT(rule_errors(R"({"id": "a", "action": "pass", "commands": ["udp_associate"]})"),
              ElementsAre("2:44: unknown command \"udp_associate\" (expected one of: connect, "
                          "bind, udp)"));
  load_policy_text("p.json", R"({"rules": [{"id": "a", "action": "pass",
      "methods": ["none", "userpass", "gssapi", "certificate"],
      "commands": ["connect", "bind", "udp"]}]})");
}

TEST(LoaderTest, PortErrors) {
  EXPECT_THAT(
      rule_errors(R"({"id": "a", "action": "pass", "ports": [0, 65536, "9000-8000", "http",)"
                  R"( 1.5, -3, "1-70000", "080", " 80", true, "80-", 65535, "1-65535"]})"),
      ElementsAre("2:41: port 0 is out of range 1..65535",
                  "2:44: port 65536 is out of range 1..65535",
                  "2:51: invalid port range \"9000-8000\": start is greater than end",
                  "2:64: invalid port \"http\" (expected a number 1..65535 or a range \"N-M\")",
                  "2:72: port 1.5 is not an integer in 1..65535",
                  "2:77: port -3 is not an integer in 1..65535",
                  "2:81: port 70000 is out of range 1..65535",
                  "2:92: invalid port \"080\" (expected a number 1..65535 or a range \"N-M\")",
                  "2:99: invalid port \" 80\" (expected a number 1..65535 or a range \"N-M\")",
                  "2:106: \"ports\" entries must be numbers or strings, got boolean",
                  "2:112: invalid port \"80-\" (expected a number 1..65535 or a range \"N-M\")"));
}

TEST(LoaderTest, FromAndToErrors) {
  EXPECT_THAT(
      rule_errors(R"({"id": "a", "action": "pass", "from": ["10.0.0/8", "10.1.0.0/8", "lan"]})"),
      ElementsAre("2:40: \"from\" entry \"10.0.0/8\" is not an IP address or CIDR block",
                  "2:52: \"from\" entry \"10.1.0.0/8\" has bits set beyond the prefix length "
                  "(did you mean 10.0.0.0/8?)",
                  "2:66: \"from\" entry \"lan\" is not an IP address or CIDR block"));
  EXPECT_THAT(
      rule_errors(R"({"id": "a", "action": "pass", "to": ["10.0.0.0/33", "fe80::1::2",)"
                  R"( "a..b", "*.*.corp", "01.2.3.4", "under_score.ok", "bad!name", "x*.corp"]})"),
      ElementsAre(
          "2:38: \"to\" entry \"10.0.0.0/33\" is not a valid IP address or CIDR block",
          "2:53: \"to\" entry \"fe80::1::2\" is not a valid IP address or CIDR block",
          "2:67: \"to\" entry \"a..b\" is not a valid host name or pattern: empty label in "
          "host name",
          "2:75: \"to\" entry \"*.*.corp\" is not a valid host name or pattern: '*' is only "
          "allowed as \"*\" or at the start of \"*.name\"",
          "2:87: \"to\" entry \"01.2.3.4\" is not a valid host name or pattern: looks like an IP "
          "address but is not one in canonical form (write a.b.c.d without leading zeros, a "
          "full IPv6 address, or a CIDR)",
          "2:117: \"to\" entry \"bad!name\" is not a valid host name or pattern: invalid "
          "character '!' in host name (letters, digits, '-', '_' and '.' only)",
          "2:129: \"to\" entry \"x*.corp\" is not a valid host name or pattern: '*' is only "
          "allowed as \"*\" or at the start of \"*.name\""));
  EXPECT_THAT(rule_errors("{\"id\": \"a\", \"action\": \"pass\", \"to\": [\"" +
                          std::string(64, 'a') + ".example\"]}"),
              ElementsAre(HasSubstr("2:38: \"to\" entry \"aaaa")));
  EXPECT_THAT(rule_errors("{\"id\": \"a\", \"action\": \"pass\", \"to\": [\"b\xc3\xbc.example\"]}"),
              ElementsAre("2:38: \"to\" entry \"b\\xc3\\xbc.example\" is not a valid host name or "
                          "pattern: non-ASCII byte in host name (write international names in "
                          "their xn-- form)"));
}

TEST(LoaderTest, AllowProtectedErrors) {
  EXPECT_THAT(rule_errors(R"({"id": "a", "action": "pass", "allow_protected": "yes"})"),
              ElementsAre("2:50: \"allow_protected\" must be true or false, got \"yes\""));
  EXPECT_THAT(rule_errors(R"({"id": "a", "action": "pass", "to": ["10.0.0.0/8", "db.corp"],)"
                          R"( "allow_protected": true})"),
              ElementsAre(HasSubstr("2:83: \"allow_protected\" only lets host globs")));
  EXPECT_THAT(
      rule_errors(R"({"id": "a", "action": "block", "to": ["*"], "allow_protected": true})"),
      ElementsAre("2:64: \"allow_protected\" has no effect on a block rule (block rules "
                  "apply to protected addresses anyway)"));
  load_policy_text("p.json", R"({"rules": [{"id": "a", "action": "pass", "to": ["*.corp"],
                                             "allow_protected": true}]})");
}

TEST(LoaderTest, GroupErrors) {
  EXPECT_THAT(errors("{\"groups\": {\n"
                     "  \"eng\": \"alice\",\n"
                     "  \"ops\": [\"carol\", 1, \"\"],\n"
                     "  \"\": []\n"
                     "}}"),
              ElementsAre("2:10: group \"eng\" must be an array of user names, got string",
                          "3:20: members of group \"ops\" must be strings, got number",
                          "3:23: empty user name in group \"ops\"", "4:3: group name is empty"));
  // Groups that no rule uses, and rules naming groups defined nowhere, are fine.
  load_policy_text("p.json", R"({"groups": {"idle": []},
      "rules": [{"id": "a", "action": "pass", "groups": ["from-ldap"]}]})");
}

TEST(LoaderTest, ClientRuleErrors) {
  EXPECT_THAT(errors(R"({"client_rules": []})"),
              ElementsAre("1:18: \"client_rules\" is empty and would block every client; omit "
                          "the key to let every client through to the user rules"));
  EXPECT_THAT(errors(R"({"client_rules": {}})"),
              ElementsAre("1:18: \"client_rules\" must be an array of rule objects, got object"));
  EXPECT_THAT(errors(R"({"client_rules": [1]})"),
              ElementsAre("1:19: client rules must be objects, got number"));
  EXPECT_THAT(errors(R"({"client_rules": [{"id": "c"}]})"),
              ElementsAre("1:19: client rule c has no \"action\" (\"pass\" or \"block\")"));
}

TEST(LoaderTest, KnownListeners) {
  LoadOptions opts;
  opts.known_listeners = {"main", "tls"};
  EXPECT_THAT(
      errors(R"({"rules": [{"id": "a", "action": "pass", "listeners": ["main", "mian"]}]})", opts),
      ElementsAre("1:64: unknown listener \"mian\" (the configuration defines 2)"));
  load_policy_text("p.json", R"({"rules": [{"id": "a", "action": "pass", "listeners": ["tls"]}]})",
                   opts);
}

TEST(LoaderTest, AllProblemsAreReportedInFileOrder) {
  auto diags = errors(R"({
  "groups": {"eng": "alice"},
  "rules": [
    {"id": "a", "action": "allow", "ports": [0]},
    {"id": "a", "action": "pass", "to": []},
    {"action": "block", "colour": "red"}
  ],
  "client_rules": [{"id": "c", "action": "pass", "from": ["x"]}],
  "extra": 1
})");
  EXPECT_THAT(diags,
              ElementsAre("2:21: group \"eng\" must be an array of user names, got string",
                          "4:27: \"action\" must be \"pass\" or \"block\", got \"allow\"",
                          "4:46: port 0 is out of range 1..65535",
                          "5:12: duplicate rule id \"a\" (first used at line 4, column 12)",
                          "5:41: \"to\" is empty and would match nothing; omit the key to match "
                          "anything",
                          "6:5: rule has no \"id\"",
                          "6:25: unknown key \"colour\" in rule (allowed: id, action, users, "
                          "groups, methods, listeners, from, commands, to, ports, "
                          "allow_protected, egress, client_certificate, min_protection, "
                          "require_channel_binding, limits, when, comment)",
                          "8:59: \"from\" entry \"x\" is not an IP address or CIDR block",
                          "9:3: unknown key \"extra\" in policy (allowed: groups, client_rules, "
                          "rules, defaults, comment)"));
}

TEST(LoaderTest, InlinedPolicyKeepsPositionsOfTheEnclosingFile) {
  const std::string config = R"({
  "listeners": [{"name": "main", "port": 1080}],
  "policy": {
    "inline": {
      "rules": [
        {"id": "ok", "action": "pass"},
        {"id": "bad", "action": "pass", "ports": ["x"]}
      ]
    }
  }
})";
  std::vector<Diagnostic> diags;
  auto src = JsonSource::parse("gateway.json", config, &diags);
  ASSERT_TRUE(src);
  try {
    load_policy(*src, Ptr("/policy/inline"));
    FAIL() << "expected LoadError";
  } catch (const LoadError& e) {
    EXPECT_STREQ(e.what(),
                 "gateway.json:7:51: invalid port \"x\" (expected a number 1..65535 or a range "
                 "\"N-M\")");
  }
  // Rules remember where they came from.
  const std::string good = R"({"policy": {"inline": {
  "rules": [{"id": "ok", "action": "pass"}]}}})";
  src = JsonSource::parse("gateway.json", good, &diags);
  ASSERT_TRUE(src);
  Policy p = load_policy(*src, Ptr("/policy/inline"));
  Decision d = p.decide({});
  EXPECT_EQ(d.rule_id, "ok");
  EXPECT_EQ(d.origin.file, "gateway.json");
  EXPECT_EQ(d.origin.pos.line, 2);
  EXPECT_EQ(d.origin.pos.column, 13);
  // A pointer to nothing, or to something that is not an object.
  try {
    load_policy(*src, Ptr("/policy/file"));
    FAIL() << "expected LoadError";
  } catch (const LoadError& e) {
    EXPECT_STREQ(e.what(), "gateway.json:1:12: no policy found at \"/policy/file\"");
  }
  try {
    load_policy(*src, Ptr("/policy/inline/rules"));
    FAIL() << "expected LoadError";
  } catch (const LoadError& e) {
    EXPECT_STREQ(e.what(), "gateway.json:2:12: a policy must be a JSON object, got array");
  }
}

TEST(LoaderTest, CompiledForm) {
  Policy p = load_policy_text("p.json", R"({"rules": [{"id": "r", "action": "pass",
    "users": ["bob", "alice", "bob"], "to": ["10.0.0.0/8", "WWW.Example.", "*.corp"],
    "ports": [443, "8000-8999"], "commands": ["bind"]}]})");
  EXPECT_EQ(p.rule_count(), 1u);
  // The behaviour is what matters; see policy_test.cc. Here: the duplicate user did no harm.
  DecisionRequest r;
  r.user = "bob";
  r.command = Command::kBind;
  r.host = "www.example";
  r.address = IpAddress::parse("192.0.2.1");
  r.port = 8080;
  EXPECT_TRUE(p.decide(r).allowed());
}

TEST(LoaderTest, ByteSizes) {
  EXPECT_EQ(parse_byte_size("512"), 512u);
  EXPECT_EQ(parse_byte_size("100B"), 100u);
  EXPECT_EQ(parse_byte_size("10MiB"), 10u * 1024 * 1024);
  EXPECT_EQ(parse_byte_size("1 GB"), 1000u * 1000 * 1000);
  EXPECT_EQ(parse_byte_size("2KiB"), 2048u);
  EXPECT_EQ(parse_byte_size("3kB"), 3000u);
  EXPECT_EQ(parse_byte_size("1TiB"), uint64_t{1} << 40);
  EXPECT_FALSE(parse_byte_size(""));
  EXPECT_FALSE(parse_byte_size("MiB"));
  EXPECT_FALSE(parse_byte_size("1.5GiB"));
  EXPECT_FALSE(parse_byte_size("10 mib"));
  EXPECT_FALSE(parse_byte_size("-1"));
  EXPECT_FALSE(parse_byte_size("99999999999999999999999"));
  EXPECT_FALSE(parse_byte_size("2000000TiB"));  // beyond 2^60
}

DecisionRequest limits_request(std::string user) {
  DecisionRequest r;
  r.user = std::move(user);
  r.method = "userpass";
  r.listener = "main";
  r.client = *IpAddress::parse("10.0.0.1");
  r.address = IpAddress::parse("192.0.2.1");
  r.port = 443;
  return r;
}

TEST(LoaderTest, LimitsAreParsedAndInheritedKeyByKey) {
  Policy p = load_policy_text("p.json", R"({
  "defaults": {"limits": {"sessions": 4, "bandwidth": {"session": {"up": "1MiB", "down": 2048}},
                          "quota": {"day": "10GiB"}}},
  "rules": [
    {"id": "a", "action": "pass", "users": ["alice"],
     "limits": {"sessions": 10, "sessions_per_rule": 100, "new_sessions_per_minute": 30,
                "bandwidth": {"session": {"down": "10MiB"}, "user": {"up": 5, "down": "1KB"}},
                "quota": {"week": 7, "month": "1TB"}}},
    {"id": "b", "action": "pass", "users": ["bob"]},
    {"id": "c", "action": "block"}
  ]})");
  Decision a = p.decide(limits_request("alice"));
  ASSERT_EQ(a.rule_id, "a");
  EXPECT_EQ(a.limits.sessions, 10u);  // the rule's own
  EXPECT_EQ(a.limits.sessions_per_rule, 100u);
  EXPECT_EQ(a.limits.new_sessions_per_minute, 30u);
  EXPECT_EQ(a.limits.session_up, 1024u * 1024);  // inherited: the rule sets only "down"
  EXPECT_EQ(a.limits.session_down, 10u * 1024 * 1024);
  EXPECT_EQ(a.limits.user_up, 5u);
  EXPECT_EQ(a.limits.user_down, 1000u);
  EXPECT_EQ(a.limits.quota_day, 10ull << 30);
  EXPECT_EQ(a.limits.quota_week, 7u);
  EXPECT_EQ(a.limits.quota_month, 1000ull * 1000 * 1000 * 1000);
  Decision b = p.decide(limits_request("bob"));
  ASSERT_EQ(b.rule_id, "b");
  EXPECT_EQ(b.limits.sessions, 4u);
  EXPECT_EQ(b.limits.session_down, 2048u);
  EXPECT_EQ(b.limits.sessions_per_rule, 0u);
  Decision c = p.decide(limits_request("carol"));
  ASSERT_EQ(c.rule_id, "c");
  EXPECT_FALSE(c.limits.any());  // block rules inherit nothing
}

TEST(LoaderTest, BadLimitsAreReportedWhereTheyAre) {
  EXPECT_THAT(rule_errors(R"({"id": "r", "action": "pass", "limits": {"sessions": 0}})"),
              ElementsAre(HasSubstr("2:54: \"sessions\" must be a positive integer, got number")));
  EXPECT_THAT(rule_errors(R"({"id": "r", "action": "pass", "limits": {"sessions": "4"}})"),
              ElementsAre(HasSubstr("\"sessions\" must be a positive integer")));
  EXPECT_THAT(
      rule_errors(R"({"id": "r", "action": "pass", "limits": {"quota": {"day": "10 parsecs"}}})"),
      ElementsAre(HasSubstr("\"quota.day\" must be a positive number of bytes")));
  EXPECT_THAT(
      rule_errors(
          R"({"id": "r", "action": "pass", "limits": {"bandwidth": {"user": {"up": -1}}}})"),
      ElementsAre(HasSubstr("\"bandwidth.user.up\" must be a positive number of bytes "
                            "per second")));
  EXPECT_THAT(rule_errors(R"({"id": "r", "action": "pass", "limits": {"sesions": 3}})"),
              ElementsAre(HasSubstr("unknown key \"sesions\" in limits (did you mean "
                                    "\"sessions\"?)")));
  EXPECT_THAT(rule_errors(R"({"id": "r", "action": "pass", "limits": {"bandwidth": {"all": {}}}})"),
              ElementsAre(HasSubstr("unknown key \"all\" in limits.bandwidth")));
  EXPECT_THAT(rule_errors(R"({"id": "r", "action": "pass", "limits": []})"),
              ElementsAre(HasSubstr("\"limits\" must be an object, got array")));
  EXPECT_THAT(rule_errors(R"({"id": "r", "action": "block", "limits": {"sessions": 1}})"),
              ElementsAre(HasSubstr("\"limits\" has no effect on a block rule")));
  // A bad default is reported once, at the default.
  EXPECT_THAT(errors(R"({"defaults": {"limits": {"sessions": -2}},
  "rules": [{"id": "a", "action": "pass"}, {"id": "b", "action": "pass"}]})"),
              ElementsAre(HasSubstr("1:38: \"sessions\" must be a positive integer")));
}

}  // namespace
}  // namespace socksgate::policy

namespace socksgate::policy {
namespace {

// Huge lists: a valid one loads and decides; one full of bad entries is rejected with the first
// 100 problems and a note, not with 100,000 diagnostics.
TEST(LoaderTest, HugeLists) {
  std::string users;
  for (int i = 0; i < 100000; ++i) users += (i ? ",\"u" : "\"u") + std::to_string(i) + "\"";
  Policy p = load_policy_text(
      "p.json", R"({"rules": [{"id": "r", "action": "pass", "users": [)" + users + "]}]}");
  DecisionRequest r;
  r.user = "u99999";
  r.address = IpAddress::parse("198.51.100.1");
  EXPECT_EQ(p.decide(r).rule_id, "r");

  std::string bad;
  for (int i = 0; i < 100000; ++i) bad += i ? ",0" : "0";
  try {
    load_policy_text("p.json",
                     R"({"rules": [{"id": "r", "action": "pass", "ports": ["x", )" + bad + "]}]}");
    FAIL() << "loaded";
  } catch (const LoadError& e) {
    ASSERT_EQ(e.diagnostics().size(), 101u);
    EXPECT_THAT(e.diagnostics()[0].to_string(), ::testing::HasSubstr("invalid port \"x\""));
    EXPECT_EQ(e.diagnostics()[100].message, "too many problems; only the first 100 are reported");
  }
}

TEST(LoaderTest, BadUtf8AnywhereIsASyntaxError) {
  for (std::string text : {std::string("{\"rules\": [{\"id\": \"r\xff\", \"action\": \"pass\"}]}"),
                           std::string("{\"rules\": [{\"id\": \"r\", \"action\": \"pass\", "
                                       "\"when\": [{\"tz\": \"Europe/\xc3\"}]}]}"),
                           std::string("{\"groups\": {\"\xed\xa0\x80\": []}}")}) {
    try {
      load_policy_text("p.json", text);
      FAIL() << "loaded";
    } catch (const LoadError& e) {
      ASSERT_EQ(e.diagnostics().size(), 1u);
      EXPECT_THAT(e.diagnostics()[0].message, ::testing::HasSubstr("ill-formed UTF-8"));
    }
  }
}

}  // namespace
}  // namespace socksgate::policy
