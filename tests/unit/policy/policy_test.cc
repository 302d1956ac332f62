#include "policy/policy.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "policy/host_pattern.h"

namespace socksgate::policy {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

Policy load(std::string_view text, const LoadOptions& opts = {}) {
  return load_policy_text("p.json", text, opts);
}

// A CONNECT by alice over userpass on listener "main" from 127.0.0.1 to `to`:`port`, where `to`
// is an address or a host name (then `resolved` is its address, if any).
DecisionRequest req(std::string_view to, uint16_t port = 443,
                    std::optional<std::string_view> resolved = std::nullopt) {
  DecisionRequest r;
  r.user = "alice";
  r.method = "userpass";
  r.listener = "main";
  r.client = *IpAddress::parse("127.0.0.1");
  r.port = port;
  if (auto a = IpAddress::parse(to)) {
    r.address = a;
  } else {
    r.host = std::string(to);
    if (resolved) r.address = IpAddress::parse(*resolved);
  }
  return r;
}

std::string decide_id(const Policy& p, const DecisionRequest& r) { return p.decide(r).rule_id; }

TEST(HostPatternTest, Matching) {
  auto exact = *HostPattern::parse("Host.Example.", nullptr);
  EXPECT_TRUE(exact.is_exact());
  EXPECT_EQ(exact.to_string(), "host.example");
  EXPECT_TRUE(exact.matches(host_name_for_match("HOST.example")));
  EXPECT_TRUE(exact.matches(host_name_for_match("host.example.")));
  EXPECT_FALSE(exact.matches(host_name_for_match("www.host.example")));
  EXPECT_FALSE(exact.matches(host_name_for_match("host.example.com")));

  auto sub = *HostPattern::parse("*.Example", nullptr);
  EXPECT_FALSE(sub.is_exact());
  EXPECT_EQ(sub.to_string(), "*.example");
  EXPECT_TRUE(sub.matches(host_name_for_match("a.example")));
  EXPECT_TRUE(sub.matches(host_name_for_match("a.b.EXAMPLE.")));
  EXPECT_FALSE(sub.matches(host_name_for_match("example")));
  EXPECT_FALSE(sub.matches(host_name_for_match("badexample")));
  EXPECT_FALSE(sub.matches(host_name_for_match("a.example.org")));

  auto any = *HostPattern::parse("*", nullptr);
  EXPECT_TRUE(any.matches(host_name_for_match("x")));
  // Not host names: empty, address-looking, bad characters, too long.
  for (std::string bad :
       {std::string(), std::string("."), std::string("127.0.0.1"), std::string("10.1"),
        std::string("a b"), std::string("a..b"), std::string("a\0b", 3),
        std::string(64, 'a') + ".x", std::string(200, 'a') + "." + std::string(60, 'b')}) {
    EXPECT_TRUE(host_name_for_match(bad).empty()) << bad;
    EXPECT_FALSE(any.matches(host_name_for_match(bad))) << bad;
    EXPECT_NE(host_name_problem(bad), "") << bad;
  }
  EXPECT_EQ(host_name_for_match(std::string(63, 'a') + ".b"), std::string(63, 'a') + ".b");
  EXPECT_EQ(host_name_for_match("_srv._tcp.x-y.example."), "_srv._tcp.x-y.example");
  EXPECT_EQ(host_name_problem("ok.example"), "");
  std::string err;
  EXPECT_FALSE(HostPattern::parse("*.", &err));
  EXPECT_EQ(err, "empty host name");
}

TEST(PolicyTest, DefaultDenyWithoutRules) {
  Policy p = load("{}");
  Decision d = p.decide(req("192.0.2.1"));
  EXPECT_FALSE(d.allowed());
  EXPECT_EQ(d.rule_id, "default-deny");
  EXPECT_EQ(d.origin.file, "");
  EXPECT_EQ(d.reason, "no rule matched");
}

TEST(PolicyTest, FirstMatchWins) {
  Policy p = load(R"({"rules": [
    {"id": "block-ssh", "action": "block", "ports": [22]},
    {"id": "pass-all", "action": "pass", "to": ["0.0.0.0/0", "*"]},
    {"id": "never", "action": "block"}
  ]})");
  Decision d = p.decide(req("192.0.2.1", 22));
  EXPECT_FALSE(d.allowed());
  EXPECT_EQ(d.rule_id, "block-ssh");
  EXPECT_EQ(d.reason, "rule block-ssh matched: block");
  EXPECT_EQ(d.origin.file, "p.json");
  EXPECT_EQ(d.origin.pos.line, 2);
  EXPECT_EQ(d.origin.pos.column, 5);
  d = p.decide(req("192.0.2.1", 443));
  EXPECT_TRUE(d.allowed());
  EXPECT_EQ(d.rule_id, "pass-all");
  EXPECT_EQ(d.reason, "rule pass-all matched: pass");
  EXPECT_EQ(d.origin.pos.line, 3);
}

TEST(PolicyTest, UsersAndGroups) {
  Policy p = load(R"({
    "groups": {"eng": ["alice", "bob"], "ops": ["carol"]},
    "rules": [
      {"id": "users", "action": "pass", "users": ["dave"]},
      {"id": "eng", "action": "pass", "groups": ["eng"]},
      {"id": "ldap", "action": "pass", "groups": ["from-ldap"]}
    ]})");
  auto r = req("192.0.2.1");
  r.user = "dave";
  EXPECT_EQ(decide_id(p, r), "users");
  r.user = "Dave";  // case-sensitive
  EXPECT_EQ(decide_id(p, r), "default-deny");
  r.user = "bob";
  EXPECT_EQ(decide_id(p, r), "eng");
  r.user = "carol";
  EXPECT_EQ(decide_id(p, r), "default-deny");
  r.groups = {"from-ldap"};  // from the authenticator
  EXPECT_EQ(decide_id(p, r), "ldap");
  r.groups = {"eng"};  // the authenticator may supply a policy group name too
  EXPECT_EQ(decide_id(p, r), "eng");
  r.user = "";  // anonymous: no user, so no policy groups either
  r.groups = {};
  EXPECT_EQ(decide_id(p, r), "default-deny");
  EXPECT_THAT(p.groups_of("alice"), ElementsAre("eng"));
  EXPECT_THAT(p.groups_of("carol"), ElementsAre("ops"));
  EXPECT_THAT(p.groups_of(""), ElementsAre());
}

TEST(PolicyTest, MethodsListenersFromCommands) {
  Policy p = load(R"({"rules": [
    {"id": "gss", "action": "pass", "methods": ["gssapi"]},
    {"id": "tls", "action": "pass", "listeners": ["tls"]},
    {"id": "lan", "action": "pass", "from": ["192.168.0.0/16", "2001:db8::/32"]},
    {"id": "bind", "action": "pass", "commands": ["bind", "udp"]}
  ]})");
  auto r = req("192.0.2.1");
  EXPECT_EQ(decide_id(p, r), "default-deny");
  r.method = "gssapi";
  EXPECT_EQ(decide_id(p, r), "gss");
  r = req("192.0.2.1");
  r.listener = "tls";
  EXPECT_EQ(decide_id(p, r), "tls");
  r = req("192.0.2.1");
  r.client = *IpAddress::parse("::ffff:192.168.7.7");
  EXPECT_EQ(decide_id(p, r), "lan");
  r.client = *IpAddress::parse("2001:db8::5");
  EXPECT_EQ(decide_id(p, r), "lan");
  r = req("192.0.2.1");
  r.command = Command::kUdpAssociate;
  EXPECT_EQ(decide_id(p, r), "bind");
  r.command = Command::kBind;
  EXPECT_EQ(decide_id(p, r), "bind");
  r.command = Command::kConnect;
  EXPECT_EQ(decide_id(p, r), "default-deny");
}

// A certificate and a password together: "methods" and "client_certificate" both apply.
TEST(PolicyTest, ClientCertificateSelector) {
  Policy p = load(R"({"rules": [
    {"id": "cert-and-password", "action": "pass", "methods": ["userpass"],
     "client_certificate": true, "to": ["192.0.2.0/24"]},
    {"id": "cert-only", "action": "pass", "methods": ["certificate"], "to": ["198.51.100.0/24"]}
  ]})");
  auto r = req("192.0.2.1");
  EXPECT_EQ(decide_id(p, r), "default-deny");
  std::vector<TraceStep> trace;
  p.decide(r, &trace);
  ASSERT_FALSE(trace.empty());
  EXPECT_THAT(trace[0].detail, HasSubstr("no verified TLS client certificate"));
  r.client_certificate = true;
  EXPECT_EQ(decide_id(p, r), "cert-and-password");
  r.method = "certificate";
  EXPECT_EQ(decide_id(p, r), "default-deny");
  r = req("198.51.100.9");
  r.method = "certificate";
  r.client_certificate = true;
  EXPECT_EQ(decide_id(p, r), "cert-only");
  EXPECT_THROW(load(R"({"rules": [{"id": "x", "action": "pass", "client_certificate": 1}]})"),
               LoadError);
}

// GSS-API session properties: the protection level is a minimum (confidentiality satisfies
// integrity); channel binding only ever holds for GSS-API; sessions of other methods meet
// neither requirement.
TEST(PolicyTest, ProtectionAndChannelBindingRequirements) {
  Policy p = load(R"({"rules": [
    {"id": "bound", "action": "pass", "require_channel_binding": true, "to": ["192.0.2.0/24"]},
    {"id": "conf", "action": "pass", "min_protection": "confidentiality",
     "to": ["198.51.100.0/24"]},
    {"id": "integ", "action": "pass", "methods": ["gssapi", "userpass"],
     "min_protection": "integrity", "to": ["203.0.113.0/24"]}
  ]})");
  auto gss = [](const char* to, const char* level, bool bound) {
    auto r = req(to);
    r.method = "gssapi";
    r.protection = level;
    r.channel_bound = bound;
    return r;
  };
  EXPECT_EQ(decide_id(p, gss("192.0.2.1", "integrity", true)), "bound");
  EXPECT_EQ(decide_id(p, gss("192.0.2.1", "confidentiality", false)), "default-deny");
  EXPECT_EQ(decide_id(p, req("192.0.2.1")), "default-deny");
  EXPECT_EQ(decide_id(p, gss("198.51.100.1", "confidentiality", false)), "conf");
  EXPECT_EQ(decide_id(p, gss("198.51.100.1", "integrity", true)), "default-deny");
  EXPECT_EQ(decide_id(p, gss("198.51.100.1", "none", true)), "default-deny");
  EXPECT_EQ(decide_id(p, gss("203.0.113.1", "integrity", false)), "integ");
  EXPECT_EQ(decide_id(p, gss("203.0.113.1", "confidentiality", false)), "integ");
  EXPECT_EQ(decide_id(p, gss("203.0.113.1", "none", false)), "default-deny");
  EXPECT_EQ(decide_id(p, req("203.0.113.1")), "default-deny");  // userpass: no GSS protection

  std::vector<TraceStep> trace;
  p.decide(gss("198.51.100.1", "integrity", false), &trace);
  ASSERT_GE(trace.size(), 2u);
  EXPECT_THAT(trace[0].detail, HasSubstr("require_channel_binding: the GSS-API context is not"));
  EXPECT_THAT(trace[1].detail, HasSubstr("min_protection: the session has \"integrity\""));
  trace.clear();
  p.decide(req("192.0.2.1"), &trace);
  EXPECT_THAT(trace[0].detail, HasSubstr("did not sign on with GSS-API"));

  EXPECT_THROW(load(R"({"rules": [{"id": "x", "action": "pass", "min_protection": "high"}]})"),
               LoadError);
  EXPECT_THROW(
      load(R"({"rules": [{"id": "x", "action": "pass", "require_channel_binding": "yes"}]})"),
      LoadError);
  // Only userpass sessions can match this rule, and they never have GSS-API protection.
  EXPECT_THROW(load(R"({"rules": [{"id": "x", "action": "pass", "methods": ["userpass"],
                                   "min_protection": "integrity"}]})"),
               LoadError);
  // What the subnegotiation must grant: the least requirement among the pass rules for the
  // identity (destinations do not count: they are not known yet).
  auto id = [](const char* user, const char* listener) {
    DecisionRequest r;
    r.user = user;
    r.method = "gssapi";
    r.listener = listener;
    r.client = *IpAddress::parse("10.0.0.1");
    return r;
  };
  Policy lv = load(R"({"rules": [
    {"id": "fin", "action": "pass", "users": ["alice"], "min_protection": "confidentiality",
     "to": ["192.0.2.0/24"]},
    {"id": "block-bob", "action": "block", "users": ["bob"]},
    {"id": "bob-web", "action": "pass", "users": ["bob"], "min_protection": "integrity"},
    {"id": "bob-fin", "action": "pass", "users": ["bob"], "listeners": ["fin"],
     "min_protection": "confidentiality"},
    {"id": "carol", "action": "pass", "users": ["carol"], "listeners": ["fin"]}
  ]})");
  EXPECT_EQ(lv.required_protection(id("alice", "main")), 2);  // every rule of hers needs it
  EXPECT_EQ(lv.required_protection(id("bob", "main")), 1);    // block rules do not count
  EXPECT_EQ(lv.required_protection(id("bob", "fin")), 1);     // the least of bob-web, bob-fin
  EXPECT_EQ(lv.required_protection(id("carol", "fin")), 0);   // a rule without requirement
  EXPECT_EQ(lv.required_protection(id("carol", "main")), 0);  // no rule at all
  EXPECT_EQ(lv.required_protection(id("dave", "main")), 0);

  // Inherited from "defaults" like the other session properties.
  Policy d = load(R"({"defaults": {"require_channel_binding": true},
                      "rules": [{"id": "a", "action": "pass", "to": ["192.0.2.0/24"]}]})");
  EXPECT_EQ(decide_id(d, gss("192.0.2.1", "integrity", false)), "default-deny");
  EXPECT_EQ(decide_id(d, gss("192.0.2.1", "integrity", true)), "a");
}

TEST(PolicyTest, HostGlobsAndAddresses) {
  Policy p = load(R"({"rules": [
    {"id": "exact", "action": "pass", "to": ["www.example"]},
    {"id": "sub", "action": "pass", "to": ["*.corp.example"]},
    {"id": "net", "action": "pass", "to": ["198.51.100.0/24", "2001:db8::/32"]},
    {"id": "any-name", "action": "block", "to": ["*"]}
  ]})");
  EXPECT_EQ(decide_id(p, req("WWW.EXAMPLE.", 443, "192.0.2.1")), "exact");
  EXPECT_EQ(decide_id(p, req("a.b.corp.example", 443, "192.0.2.1")), "sub");
  EXPECT_EQ(decide_id(p, req("corp.example", 443, "192.0.2.1")), "any-name");
  EXPECT_EQ(decide_id(p, req("198.51.100.77")), "net");
  EXPECT_EQ(decide_id(p, req("2001:db8:1::1")), "net");
  EXPECT_EQ(decide_id(p, req("other.example", 443, "198.51.100.1")), "net");
  // "*" matches names, not bare addresses.
  EXPECT_EQ(decide_id(p, req("192.0.2.1")), "default-deny");
  // A name that is an address in disguise is not a host name.
  auto r = req("192.0.2.1");
  r.host = "192.0.2.1";
  EXPECT_EQ(decide_id(p, r), "default-deny");
}

TEST(PolicyTest, Ports) {
  Policy p = load(R"({"rules": [
    {"id": "web", "action": "pass", "ports": [80, "443", "8000-8999"]}
  ]})");
  for (uint16_t port : {80, 443, 8000, 8500, 8999}) {
    EXPECT_EQ(decide_id(p, req("192.0.2.1", port)), "web") << port;
  }
  for (uint16_t port : {0, 79, 81, 442, 7999, 9000, 65535}) {
    EXPECT_EQ(decide_id(p, req("192.0.2.1", port)), "default-deny") << port;
  }
}

TEST(PolicyTest, ProtectedAddressesNeedARuleThatNamesThem) {
  Policy p = load(R"({"rules": [
    {"id": "everything", "action": "pass"},
    {"id": "zero", "action": "pass", "to": ["0.0.0.0/0", "::/0"]},
    {"id": "glob", "action": "pass", "to": ["*"]}
  ]})");
  for (const char* a :
       {"127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "100.64.0.1", "169.254.169.254",
        "224.0.0.1", "0.0.0.0", "255.255.255.255", "::1", "fe80::1", "fd00::1", "ff02::1",
        "::", "::ffff:127.0.0.1", "64:ff9b::a00:1"}) {
    Decision d = p.decide(req(a));
    EXPECT_FALSE(d.allowed()) << a;
    EXPECT_EQ(d.rule_id, "default-deny") << a;
  }
  Decision d = p.decide(req("10.1.2.3"));
  EXPECT_EQ(d.reason,
            "10.1.2.3 is protected (private) and no rule names it (rule everything would "
            "otherwise pass)");
  d = p.decide(req("intranet.example", 443, "10.1.2.3"));
  EXPECT_EQ(d.reason,
            "\"intranet.example\" (10.1.2.3) is protected (private) and no rule names it (rule "
            "everything would otherwise pass)");
  // Public addresses pass the first rule.
  EXPECT_EQ(decide_id(p, req("192.0.2.1")), "everything");
}

TEST(PolicyTest, NamingAProtectedAddress) {
  Policy p = load(R"({"rules": [
    {"id": "lab", "action": "pass", "to": ["10.1.0.0/16", "127.0.0.1", "::1"]},
    {"id": "db", "action": "pass", "to": ["db.corp.example"]},
    {"id": "corp", "action": "pass", "to": ["*.corp.example"], "allow_protected": true},
    {"id": "web", "action": "pass", "to": ["*.example"]},
    {"id": "block-rest", "action": "block"}
  ]})");
  EXPECT_EQ(decide_id(p, req("10.1.2.3")), "lab");
  EXPECT_EQ(decide_id(p, req("127.0.0.1")), "lab");
  EXPECT_EQ(decide_id(p, req("::ffff:127.0.0.1")), "lab");  // mapped spelling, IPv4 rule
  EXPECT_EQ(decide_id(p, req("::1")), "lab");
  EXPECT_EQ(decide_id(p, req("10.2.0.1")), "block-rest");
  // An exact name unlocks whatever it resolves to (here even loopback).
  EXPECT_EQ(decide_id(p, req("db.corp.example", 5432, "127.0.0.2")), "db");
  // A glob does so only with allow_protected.
  EXPECT_EQ(decide_id(p, req("app.corp.example", 443, "10.9.9.9")), "corp");
  Decision d = p.decide(req("intranet.example", 443, "10.9.9.9"));
  EXPECT_EQ(d.rule_id, "block-rest");
  EXPECT_EQ(d.reason,
            "rule block-rest matched: block (rule web skipped: 10.9.9.9 is protected (private) "
            "and it does not name it)");
  EXPECT_EQ(decide_id(p, req("intranet.example", 443, "192.0.2.1")), "web");
}

TEST(PolicyTest, SlashZeroNeverUnlocks) {
  Policy p = load(R"({"rules": [
    {"id": "zero", "action": "pass", "to": ["0.0.0.0/0", "::/0", "::ffff:0:0/96"]},
    {"id": "one", "action": "pass", "to": ["0.0.0.0/1"]}
  ]})");
  EXPECT_EQ(decide_id(p, req("192.0.2.1")), "zero");
  EXPECT_EQ(decide_id(p, req("2001:db8::1")), "zero");
  EXPECT_EQ(decide_id(p, req("10.0.0.1")), "one");  // /1 names 0.0.0.0-127.255.255.255
  EXPECT_EQ(decide_id(p, req("192.168.0.1")), "default-deny");
  EXPECT_EQ(decide_id(p, req("fd00::1")), "default-deny");
}

TEST(PolicyTest, BlockRulesApplyToProtectedAddresses) {
  Policy p = load(R"({"rules": [
    {"id": "no-metadata", "action": "block", "to": ["*"]},
    {"id": "lab", "action": "pass", "to": ["169.254.0.0/16"]}
  ]})");
  EXPECT_EQ(decide_id(p, req("metadata.example", 80, "169.254.169.254")), "no-metadata");
  EXPECT_EQ(decide_id(p, req("169.254.169.254")), "lab");
}

TEST(PolicyTest, OwnAddressesAreProtected) {
  LoadOptions opts;
  opts.own_addresses = {*IpAddress::parse("203.0.113.5"), *IpAddress::parse("2001:db8::5")};
  Policy p = load(R"({"rules": [
    {"id": "all", "action": "pass", "to": ["0.0.0.0/0", "::/0"]},
    {"id": "self", "action": "pass", "to": ["203.0.113.5/32"]}
  ]})",
                  opts);
  EXPECT_EQ(decide_id(p, req("203.0.113.6")), "all");
  Decision d = p.decide(req("203.0.113.5"));
  EXPECT_EQ(d.rule_id, "self");
  d = p.decide(req("::ffff:203.0.113.5", 443));
  EXPECT_EQ(d.rule_id, "self");
  d = p.decide(req("2001:db8::5"));
  EXPECT_EQ(d.rule_id, "default-deny");
  EXPECT_EQ(d.reason,
            "2001:db8::5 is protected (gateway's own address) and no rule names it (rule all "
            "would otherwise pass)");
}

TEST(PolicyTest, MappedIpv6AgainstIpv4Rules) {
  Policy p = load(R"({"rules": [
    {"id": "block-net", "action": "block", "to": ["198.51.100.0/24"]},
    {"id": "pass", "action": "pass", "to": ["0.0.0.0/0", "::/0"]}
  ]})");
  for (const char* a : {"198.51.100.7", "::ffff:198.51.100.7", "::ffff:c633:6407",
                        "64:ff9b::198.51.100.7", "::198.51.100.7"}) {
    EXPECT_EQ(decide_id(p, req(a)), "block-net") << a;
  }
  EXPECT_EQ(decide_id(p, req("2001:db8::c633:6407")), "pass");
}

TEST(PolicyTest, NameOnlyPreCheck) {
  Policy p = load(R"({"rules": [
    {"id": "block-bad", "action": "block", "to": ["*.bad.example"]},
    {"id": "block-net", "action": "block", "to": ["10.0.0.0/8"]},
    {"id": "ssh", "action": "block", "ports": [22]},
    {"id": "corp", "action": "pass", "to": ["*.corp.example"]},
    {"id": "lab", "action": "pass", "to": ["192.0.2.0/24"]}
  ]})");
  // A block rule decides only when it matches whatever the name resolves to.
  Decision d = p.decide(req("x.bad.example"));
  EXPECT_EQ(d.rule_id, "block-bad");
  EXPECT_FALSE(d.allowed());
  EXPECT_EQ(decide_id(p, req("x.corp.example", 22)), "ssh");
  // block-net depends on the address: not decisive; corp may pass.
  d = p.decide(req("x.corp.example"));
  EXPECT_TRUE(d.allowed());
  EXPECT_EQ(d.rule_id, "corp");
  EXPECT_EQ(d.reason,
            "rule corp may pass (name-only pre-check; each resolved address is decided on its "
            "own)");
  // lab could match some address of any name.
  EXPECT_EQ(decide_id(p, req("www.example")), "lab");
  // Once resolved, each address is decided for real.
  EXPECT_EQ(decide_id(p, req("x.corp.example", 443, "10.1.1.1")), "block-net");
  EXPECT_EQ(decide_id(p, req("www.example", 443, "192.0.2.9")), "lab");
  EXPECT_EQ(decide_id(p, req("www.example", 443, "198.51.100.1")), "default-deny");

  Policy names_only = load(R"({"rules": [{"id": "corp", "action": "pass", "to": ["*.corp"]}]})");
  EXPECT_EQ(decide_id(names_only, req("www.example")), "default-deny");
  EXPECT_EQ(decide_id(names_only, req("a.corp")), "corp");
}

TEST(PolicyTest, TraceExplainsEachRule) {
  Policy p = load(R"({
    "groups": {"eng": ["bob"]},
    "rules": [
      {"id": "r-users", "action": "pass", "users": ["bob", "carol"]},
      {"id": "r-groups", "action": "pass", "groups": ["eng", "ops"]},
      {"id": "r-methods", "action": "pass", "methods": ["gssapi"]},
      {"id": "r-listeners", "action": "pass", "listeners": ["tls"]},
      {"id": "r-from", "action": "pass", "from": ["192.168.0.0/16"]},
      {"id": "r-commands", "action": "pass", "commands": ["bind", "udp"]},
      {"id": "r-ports", "action": "pass", "ports": [80, "8000-8999"]},
      {"id": "r-to", "action": "pass", "to": ["192.0.2.0/24", "*.corp"]},
      {"id": "r-zero", "action": "pass", "to": ["0.0.0.0/0"]},
      {"id": "r-glob", "action": "pass", "to": ["*.example"]},
      {"id": "r-none", "action": "pass"},
      {"id": "r-match", "action": "block", "users": ["alice"]},
      {"id": "r-after", "action": "pass"}
    ]})");
  std::vector<TraceStep> trace;
  Decision d = p.decide(req("intranet.example", 443, "10.1.2.3"), &trace);
  EXPECT_EQ(d.rule_id, "r-match");
  std::vector<std::string> lines;
  for (const auto& s : trace) {
    lines.push_back(s.rule_id + (s.matched ? " + " : " - ") + s.detail);
  }
  EXPECT_THAT(
      lines,
      ElementsAre(
          "r-users - users: \"alice\" not in [\"bob\", \"carol\"]",
          "r-groups - groups: none of [] in [\"eng\", \"ops\"]",
          "r-methods - methods: \"userpass\" not in [\"gssapi\"]",
          "r-listeners - listeners: \"main\" not in [\"tls\"]",
          "r-from - from: 127.0.0.1 not in [192.168.0.0/16]",
          "r-commands - commands: connect not in [bind, udp]",
          "r-ports - ports: 443 not in [80, 8000-8999]",
          "r-to - to: \"intranet.example\" (10.1.2.3) not in [192.0.2.0/24, *.corp]",
          "r-zero - to: 10.1.2.3 is protected (private) and the rule does not name it (a /0 "
          "matches every address but names none)",
          "r-glob - to: 10.1.2.3 is protected (private) and the rule does not name it (a host "
          "glob matched; globs reach protected addresses only with \"allow_protected\": true)",
          "r-none - to: 10.1.2.3 is protected (private) and the rule does not name it (it has "
          "no \"to\")",
          "r-match + matched"));
  EXPECT_EQ(trace[0].origin.file, "p.json");
  EXPECT_EQ(trace[0].origin.pos.line, 4);

  trace.clear();
  auto r = req("192.0.2.1");
  r.user = "";
  r.groups = {"staff"};
  p.decide(r, &trace);
  EXPECT_EQ(trace[0].detail, "users: anonymous request not in [\"bob\", \"carol\"]");
  EXPECT_EQ(trace[1].detail, "groups: none of [\"staff\"] in [\"eng\", \"ops\"]");

  // Client-supplied names are escaped in details and reasons.
  trace.clear();
  r = req("evil\n\"name", 443, "198.51.100.1");
  p.decide(r, &trace);
  EXPECT_EQ(trace[7].detail,
            "to: \"evil\\x0a\\\"name\" (198.51.100.1) not in [192.0.2.0/24, *.corp] (the requested "
            "name is not a valid host name)");
}

TEST(PolicyTest, PreCheckTrace) {
  Policy p = load(R"({"rules": [
    {"id": "block-net", "action": "block", "to": ["10.0.0.0/8"]},
    {"id": "corp", "action": "pass", "to": ["*.corp"]}
  ]})");
  std::vector<TraceStep> trace;
  p.decide(req("a.corp"), &trace);
  ASSERT_EQ(trace.size(), 2u);
  EXPECT_EQ(trace[0].detail,
            "to: \"a.corp\" may or may not be in [10.0.0.0/8] depending on the resolved address; "
            "a block rule does not decide a name-only pre-check");
  EXPECT_TRUE(trace[1].matched);
}

TEST(PolicyTest, ClientRules) {
  Policy open = load("{}");
  Decision d = open.decide_client({*IpAddress::parse("192.0.2.1"), "main"});
  EXPECT_TRUE(d.allowed());
  EXPECT_EQ(d.rule_id, "no-client-rules");

  Policy p = load(R"({"client_rules": [
    {"id": "bad-host", "action": "block", "from": ["127.0.0.2"]},
    {"id": "lan", "action": "pass", "from": ["127.0.0.0/8", "::1"], "listeners": ["main"]},
    {"id": "tls", "action": "pass", "listeners": ["tls"]}
  ]})");
  EXPECT_EQ(p.decide_client({*IpAddress::parse("127.0.0.1"), "main"}).rule_id, "lan");
  EXPECT_EQ(p.decide_client({*IpAddress::parse("::ffff:127.0.0.1"), "main"}).rule_id, "lan");
  EXPECT_EQ(p.decide_client({*IpAddress::parse("::1"), "main"}).rule_id, "lan");
  EXPECT_EQ(p.decide_client({*IpAddress::parse("127.0.0.2"), "main"}).rule_id, "bad-host");
  EXPECT_FALSE(p.decide_client({*IpAddress::parse("127.0.0.2"), "main"}).allowed());
  EXPECT_EQ(p.decide_client({*IpAddress::parse("192.0.2.1"), "tls"}).rule_id, "tls");
  std::vector<TraceStep> trace;
  d = p.decide_client({*IpAddress::parse("192.0.2.1"), "main"}, &trace);
  EXPECT_FALSE(d.allowed());
  EXPECT_EQ(d.rule_id, "default-deny");
  EXPECT_EQ(d.reason, "no client rule matched 192.0.2.1 on listener \"main\"");
  ASSERT_EQ(trace.size(), 3u);
  EXPECT_EQ(trace[0].detail, "from: 192.0.2.1 not in [127.0.0.2/32]");
  EXPECT_EQ(trace[2].detail, "listeners: \"main\" not in [\"tls\"]");
  EXPECT_EQ(p.decide_client({*IpAddress::parse("127.0.0.1"), "main"}).reason,
            "client rule lan matched: pass");
}

TEST(PolicyTest, CommandNames) {
  for (Command c : {Command::kConnect, Command::kBind, Command::kUdpAssociate}) {
    EXPECT_EQ(command_from_string(to_string(c)), c);
  }
  EXPECT_FALSE(command_from_string("CONNECT"));
}

TEST(PolicyTest, MovedPolicyStaysUsable) {
  Policy a = load(R"({"rules": [{"id": "x", "action": "pass"}]})");
  Policy b = std::move(a);
  EXPECT_EQ(decide_id(b, req("192.0.2.1")), "x");
  // A moved-from policy denies rather than crashing.
  EXPECT_EQ(decide_id(a, req("192.0.2.1")), "default-deny");  // NOLINT(bugprone-use-after-move)
  EXPECT_EQ(a.rule_count(), 0u);                              // NOLINT(bugprone-use-after-move)
}

}  // namespace
}  // namespace socksgate::policy

namespace socksgate::policy {
namespace {

TEST(Socks4Policy, OnlyRulesNamingSocks4Apply) {
  Policy p = load_policy_text("p.json", R"({"rules": [
    {"id": "everyone", "action": "pass", "to": ["127.0.0.1/32"]},
    {"id": "legacy", "action": "pass", "methods": ["socks4"], "to": ["127.0.0.2/32"]}]})");
  DecisionRequest r;
  r.method = "socks4";
  r.address = IpAddress::parse("127.0.0.1");
  r.port = 80;
  EXPECT_FALSE(p.decide(r).allowed()) << "a rule without a methods selector is not for SOCKS4";
  r.address = IpAddress::parse("127.0.0.2");
  EXPECT_EQ(p.decide(r).rule_id, "legacy");
  r.method = "userpass";
  r.user = "alice";
  r.address = IpAddress::parse("127.0.0.1");
  EXPECT_EQ(p.decide(r).rule_id, "everyone");
}

}  // namespace
}  // namespace socksgate::policy
