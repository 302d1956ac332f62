// policy.d: per-user and per-group rule files merged with the main policy.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "policy/policy.h"

namespace socksgate::policy {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

class PolicyDir : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("sg-policy-d-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  void file(const std::string& name, const std::string& text) {
    std::ofstream(dir_ / name) << text;
  }
  Policy load(const std::string& main_text) {
    std::vector<Diagnostic> diags;
    auto src = JsonSource::parse("main.json", main_text, &diags);
    EXPECT_TRUE(src);
    return load_policy_set(*src, nlohmann::json::json_pointer(), dir_.string());
  }
  std::vector<std::string> errors(const std::string& main_text) {
    std::vector<std::string> out;
    try {
      load(main_text);
    } catch (const LoadError& e) {
      for (const auto& d : e.diagnostics()) {
        out.push_back(fs::path(d.file).filename().string() + ":" + std::to_string(d.pos.line) +
                      ": " + d.message);
      }
    }
    return out;
  }
  fs::path dir_;
};

DecisionRequest req(std::string user, std::string to, std::vector<std::string> groups = {}) {
  DecisionRequest r;
  r.user = std::move(user);
  r.groups = std::move(groups);
  r.method = "userpass";
  r.listener = "main";
  r.client = *IpAddress::parse("10.0.0.1");
  r.address = IpAddress::parse(to);
  r.port = 443;
  return r;
}

TEST_F(PolicyDir, UserThenGroupThenGlobalThenDefaultDeny) {
  file("alice.json", R"({"rules": [
    {"id": "alice-no-db", "action": "block", "to": ["192.0.2.10"]},
    {"id": "alice-web", "action": "pass", "to": ["192.0.2.0/24"]}]})");
  file("group-eng.json", R"({"rules": [
    {"id": "eng-db", "action": "pass", "to": ["192.0.2.10", "198.51.100.0/24"]}]})");
  Policy p = load(R"({"groups": {"eng": ["alice", "bob"]}, "rules": [
    {"id": "global-block-db", "action": "block", "to": ["198.51.100.7"]},
    {"id": "global-pass", "action": "pass", "to": ["203.0.113.0/24"]}]})");
  EXPECT_EQ(p.decide(req("alice", "192.0.2.10")).rule_id, "alice-no-db");  // user beats group
  EXPECT_EQ(p.decide(req("bob", "192.0.2.10")).rule_id, "eng-db");
  EXPECT_EQ(p.decide(req("bob", "198.51.100.7")).rule_id, "eng-db");  // group beats global
  EXPECT_EQ(p.decide(req("carol", "198.51.100.7")).rule_id, "global-block-db");
  EXPECT_EQ(p.decide(req("carol", "192.0.2.5")).rule_id, "default-deny");
  EXPECT_EQ(p.decide(req("carol", "198.51.100.7", {"eng"})).rule_id, "eng-db")
      << "groups from the identity (PAM/NSS) count too";
  // explain: each rule knows its file and line.
  auto d = p.decide(req("alice", "192.0.2.20"));
  EXPECT_EQ(d.rule_id, "alice-web");
  EXPECT_THAT(d.origin.file, HasSubstr("alice.json"));
  EXPECT_EQ(d.origin.pos.line, 3u);
}

TEST_F(PolicyDir, DefaultsAreInheritedAndOverridable) {
  file("alice.json", R"({"defaults": {"methods": ["certificate"]}, "rules": [
    {"id": "alice-any", "action": "pass"}]})");
  file("bob.json", R"({"rules": [{"id": "bob-any", "action": "pass"},
    {"id": "bob-udp", "action": "pass", "methods": ["none"], "commands": ["udp"]}]})");
  Policy p = load(R"({"defaults": {"methods": ["userpass"], "listeners": ["main"]},
    "rules": []})");
  auto a = req("alice", "192.0.2.1");
  EXPECT_EQ(p.decide(a).rule_id, "default-deny");  // userpass: alice's file wants certificate
  a.method = "certificate";
  EXPECT_EQ(p.decide(a).rule_id, "alice-any");
  a.listener = "other";
  EXPECT_EQ(p.decide(a).rule_id, "default-deny");  // the main defaults' listeners still apply
  auto b = req("bob", "192.0.2.1");
  EXPECT_EQ(p.decide(b).rule_id, "bob-any");  // main defaults: userpass
  b.method = "none";
  b.command = Command::kUdpAssociate;
  EXPECT_EQ(p.decide(b).rule_id, "bob-udp");  // the rule's own selector wins
}

TEST_F(PolicyDir, ErrorsNameTheFileAndLine) {
  file("alice.json", R"({"rules": [
    {"id": "dup", "action": "pass", "users": ["bob"]}]})");
  file("group-eng.json", R"({"client_rules": [], "rules": [
    {"id": "x", "action": "pass", "groups": ["ops"]}]})");
  file("group-.json", R"({"rules": []})");
  auto errs = errors(R"({"rules": [
    {"id": "dup", "action": "pass"}]})");
  EXPECT_THAT(errs, ::testing::Contains(HasSubstr("alice.json:2: rules in \"alice.json\" apply "
                                                  "to user \"alice\" only")));
  EXPECT_THAT(errs, ::testing::Contains(HasSubstr("group-eng.json:1: unknown key "
                                                  "\"client_rules\"")));
  EXPECT_THAT(errs, ::testing::Contains(HasSubstr("group-eng.json:2: rules in a group's file")));
  EXPECT_THAT(errs, ::testing::Contains(HasSubstr("group-.json")));
  EXPECT_THAT(errs, ::testing::Contains(HasSubstr("duplicate rule id \"dup\"")));
}

TEST_F(PolicyDir, AnEmptyDirectoryChangesNothing) {
  Policy p = load(R"({"rules": [{"id": "all", "action": "pass"}]})");
  EXPECT_EQ(p.rule_count(), 1u);
  EXPECT_EQ(p.decide(req("x", "192.0.2.1")).rule_id, "all");
}

TEST_F(PolicyDir, LimitsInheritFromBothDefaultsKeyByKey) {
  file("alice.json", R"({"defaults": {"limits": {"sessions": 2}}, "rules": [
    {"id": "alice-any", "action": "pass", "limits": {"bandwidth": {"user": {"down": 100}}}}]})");
  file("bob.json", R"({"rules": [{"id": "bob-any", "action": "pass"}]})");
  Policy p = load(R"({"defaults": {"limits": {"sessions": 8, "quota": {"day": 1000}}},
    "rules": []})");
  Decision a = p.decide(req("alice", "192.0.2.1"));
  ASSERT_EQ(a.rule_id, "alice-any");
  EXPECT_EQ(a.limits.sessions, 2u);      // alice.json's defaults over the main policy's
  EXPECT_EQ(a.limits.quota_day, 1000u);  // the main policy's, not overridden
  EXPECT_EQ(a.limits.user_down, 100u);   // the rule's own
  Decision b = p.decide(req("bob", "192.0.2.1"));
  ASSERT_EQ(b.rule_id, "bob-any");
  EXPECT_EQ(b.limits.sessions, 8u);
  EXPECT_EQ(b.limits.quota_day, 1000u);
  EXPECT_EQ(b.limits.user_down, 0u);
}

TEST_F(PolicyDir, BadLimitsInAFileAreReportedInThatFile) {
  file("alice.json", R"({"defaults": {"limits": {"quota": {"month": "lots"}}}, "rules": []})");
  EXPECT_THAT(errors(R"({"rules": []})"),
              ::testing::ElementsAre(HasSubstr("alice.json:1: \"quota.month\" must be")));
}

}  // namespace
}  // namespace socksgate::policy
