// lint(): the warnings of `socksgate validate`.
#include "policy/lint.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <string>

namespace socksgate::policy {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

std::vector<std::string> lint_text(std::string_view text, const LintContext& ctx = {}) {
  Policy p = load_policy_text("p.json", text);
  std::vector<std::string> out;
  for (const auto& d : lint(p, ctx)) out.push_back(d.to_string());
  return out;
}

// Two rules: `earlier` then `later` (JSON members without braces).
std::vector<std::string> pair(std::string_view earlier, std::string_view later) {
  std::string text = R"({"rules": [{"id": "a", )" + std::string(earlier) + R"(},
  {"id": "b", )" + std::string(later) +
                     "}]}";
  return lint_text(text);
}

bool shadowed(std::string_view earlier, std::string_view later) {
  auto w = pair(earlier, later);
  return std::any_of(w.begin(), w.end(), [](const std::string& s) {
    return s.find("rule \"b\" can never match") != std::string::npos;
  });
}

TEST(LintTest, CleanPolicyHasNoWarnings) {
  EXPECT_THAT(lint_text(R"({"groups": {"eng": ["alice"]}, "rules": [
    {"id": "a", "action": "pass", "users": ["alice"], "to": ["192.0.2.0/24"]},
    {"id": "b", "action": "pass", "groups": ["eng"], "ports": [443]},
    {"id": "c", "action": "block"}]})"),
              IsEmpty());
}

TEST(LintTest, ShadowedRuleNamesBothRulesWithFileLine) {
  auto w = lint_text(R"({"rules": [
    {"id": "all", "action": "block"},
    {"id": "alice", "action": "pass", "users": ["alice"]}]})");
  ASSERT_EQ(w.size(), 1u);
  EXPECT_EQ(w[0],
            "p.json:3:5: warning: rule \"alice\" can never match: rule \"all\" (p.json:2:5) comes "
            "first and matches every request it would (opposite action)");
}

TEST(LintTest, ShadowingIsProvenSelectorBySelector) {
  // Absent selectors and supersets shadow.
  EXPECT_TRUE(shadowed(R"("action": "pass", "users": ["alice", "bob"])",
                       R"("action": "pass", "users": ["bob"], "ports": [443])"));
  EXPECT_TRUE(shadowed(R"("action": "block", "from": ["10.0.0.0/8"])",
                       R"("action": "pass", "from": ["10.1.0.0/16", "10.2.3.4"])"));
  EXPECT_TRUE(shadowed(R"("action": "block", "ports": ["1-1024"])",
                       R"("action": "pass", "ports": [22, "80-443"])"));
  EXPECT_TRUE(shadowed(R"("action": "block", "commands": ["connect", "bind"])",
                       R"("action": "pass", "commands": ["bind"])"));
  EXPECT_TRUE(shadowed(R"("action": "block", "to": ["*.example"])",
                       R"("action": "pass", "to": ["www.example", "*.a.example"])"));
  EXPECT_TRUE(shadowed(R"("action": "block", "to": ["*"])", R"("action": "block", "to": ["x"])"));
  EXPECT_TRUE(
      shadowed(R"("action": "pass", "methods": ["userpass", "gssapi"])",
               R"("action": "pass", "methods": ["gssapi"], "min_protection": "integrity")"));
  EXPECT_TRUE(shadowed(R"("action": "block")", R"("action": "block", "client_certificate": true)"));
  EXPECT_TRUE(shadowed(R"("action": "block", "listeners": ["a", "b"])",
                       R"("action": "block", "listeners": ["a"])"));

  // Not provable, or really not a superset: no warning.
  EXPECT_FALSE(shadowed(R"("action": "pass", "users": ["alice"])",
                        R"("action": "pass", "users": ["alice", "bob"])"));
  EXPECT_FALSE(shadowed(R"("action": "pass", "users": ["alice"])", R"("action": "pass")"));
  EXPECT_FALSE(shadowed(R"("action": "block", "groups": ["eng"])",
                        R"("action": "pass", "users": ["alice"])"));
  EXPECT_FALSE(shadowed(R"("action": "block", "from": ["10.1.0.0/16"])",
                        R"("action": "pass", "from": ["10.0.0.0/8"])"));
  EXPECT_FALSE(shadowed(R"("action": "block", "ports": ["1-100"])",
                        R"("action": "pass", "ports": ["80-443"])"));
  EXPECT_FALSE(shadowed(R"("action": "block", "to": ["*.example"])",
                        R"("action": "pass", "to": ["example"])"));
  EXPECT_FALSE(
      shadowed(R"("action": "block", "client_certificate": true)", R"("action": "block")"));
  EXPECT_FALSE(shadowed(R"("action": "block", "min_protection": "confidentiality")",
                        R"("action": "block", "min_protection": "integrity")"));
  EXPECT_FALSE(
      shadowed(R"("action": "block", "require_channel_binding": true)", R"("action": "block")"));
  // socks4 requests match only rules that name it: a rule without "methods" does not cover it.
  EXPECT_FALSE(shadowed(R"("action": "block")", R"("action": "pass", "methods": ["socks4"])"));
  EXPECT_TRUE(shadowed(R"("action": "block")", R"("action": "pass", "methods": ["userpass"])"));
}

TEST(LintTest, ProtectedAddressesLimitWhatAPassRuleShadows) {
  // A pass rule without "to" skips protected addresses; a later rule that names one, or a
  // block rule (which matches them anyway), still decides those.
  EXPECT_FALSE(shadowed(R"("action": "pass")", R"("action": "pass", "to": ["10.0.0.0/8"])"));
  EXPECT_FALSE(shadowed(R"("action": "pass")", R"("action": "block")"));
  EXPECT_FALSE(shadowed(R"("action": "pass", "to": ["0.0.0.0/0"])",
                        R"("action": "pass", "to": ["10.0.0.0/8"])"));
  EXPECT_FALSE(shadowed(R"("action": "pass", "to": ["*"])",
                        R"("action": "pass", "to": ["intranet.example"])"));
  EXPECT_FALSE(shadowed(R"("action": "pass", "to": ["0.0.0.0/0"])",
                        R"("action": "block", "to": ["0.0.0.0/0"])"));
  // ... but a rule whose matches can never be protected is shadowed.
  EXPECT_TRUE(shadowed(R"("action": "pass")", R"("action": "pass", "ports": [443])"));
  EXPECT_TRUE(
      shadowed(R"("action": "pass")", R"("action": "pass", "to": ["0.0.0.0/0", "*.example"])"));
  EXPECT_TRUE(shadowed(R"("action": "pass", "to": ["10.0.0.0/8"])",
                       R"("action": "pass", "to": ["10.1.0.0/16"])"));
  EXPECT_TRUE(shadowed(R"("action": "pass", "to": ["*"], "allow_protected": true)",
                       R"("action": "pass", "to": ["intranet.example"])"));
  // A block rule matches protected addresses like any other.
  EXPECT_TRUE(shadowed(R"("action": "block")", R"("action": "pass", "to": ["10.0.0.0/8"])"));
}

TEST(LintTest, WindowsShadowOnlyWhenProvablyInside) {
  EXPECT_TRUE(shadowed(R"("action": "block", "when": [{"days": ["mon-fri"]}])",
                       R"("action": "pass", "when": [{"days": ["tue"], "hours": "09:00-10:00"}])"));
  EXPECT_TRUE(
      shadowed(R"("action": "block", "when": [{"hours": "22:00-24:00"}, {"hours": "00:00-06:00"}])",
               R"("action": "pass", "when": [{"days": ["sun"], "hours": "23:00-02:00"}])"));
  EXPECT_FALSE(shadowed(R"("action": "block", "when": [{"days": ["mon-fri"]}])",
                        R"("action": "pass", "when": [{"days": ["fri-sat"]}])"));
  EXPECT_FALSE(
      shadowed(R"("action": "block", "when": [{"days": ["mon-fri"]}])", R"("action": "pass")"));
  // Different zones: not provable.
  EXPECT_FALSE(shadowed(R"("action": "block", "when": [{"days": ["mon-sun"]}])",
                        R"("action": "pass", "when": [{"days": ["tue"], "tz": "Asia/Tokyo"}])"));
  EXPECT_TRUE(shadowed(R"("action": "block")", R"("action": "pass", "when": [{"days": ["tue"]}])"));
}

TEST(LintTest, OverlappingWindowsInOneRule) {
  auto w = lint_text(R"({"rules": [{"id": "r", "action": "pass", "when": [
    {"days": ["mon-fri"], "hours": "08:00-12:00", "tz": "Europe/Berlin"},
    {"days": ["sat"], "hours": "08:00-12:00", "tz": "Europe/Berlin"},
    {"days": ["wed"], "hours": "11:00-13:00", "tz": "Europe/Berlin"}]}]})");
  ASSERT_EQ(w.size(), 1u);
  EXPECT_EQ(w[0],
            "p.json:1:12: warning: rule \"r\": \"when\" windows 1 (mon-fri 08:00-12:00 "
            "Europe/Berlin) and 3 (wed 11:00-13:00 Europe/Berlin) overlap");
  // Wrapping past Sunday midnight into Monday.
  EXPECT_EQ(lint_text(R"({"rules": [{"id": "r", "action": "pass", "when": [
    {"days": ["sun"], "hours": "22:00-02:00"}, {"days": ["mon"], "hours": "01:00-03:00"}]}]})")
                .size(),
            1u);
  EXPECT_THAT(lint_text(R"({"rules": [{"id": "r", "action": "pass", "when": [
    {"days": ["sun"], "hours": "22:00-02:00"}, {"days": ["mon"], "hours": "02:00-03:00"}]}]})"),
              IsEmpty());
}

TEST(LintTest, UnknownUsersAndGroups) {
  LintContext ctx;
  std::set<std::string, std::less<>> users = {"alice"};
  ctx.known_user = [&](std::string_view u) { return users.count(u) != 0; };
  ctx.users_source = "the password file users.passwd";
  auto w = lint_text(R"({"groups": {"eng": ["alice"]}, "rules": [
    {"id": "r1", "action": "pass", "users": ["alice", "bob"], "groups": ["eng", "ops"]}]})",
                     ctx);
  EXPECT_THAT(w, ElementsAre("p.json:2:5: warning: rule \"r1\": user \"bob\" is not in the "
                             "password file users.passwd (users of PAM or Kerberos may still "
                             "exist)",
                             "p.json:2:5: warning: rule \"r1\": group \"ops\" is not defined in "
                             "the policy's \"groups\""));
  // Groups an authentication back-end supplies are not reported.
  ctx.external_group = [](std::string_view g) { return g == "ops"; };
  ctx.groups_source = "a group on this host";
  EXPECT_THAT(
      lint_text(R"({"rules": [{"id": "r", "action": "pass", "groups": ["ops", "x"]}]})", ctx),
      ElementsAre(HasSubstr("group \"x\" is not defined in the policy's \"groups\" nor a "
                            "group on this host")));
  // Without a user source, users are not checked.
  EXPECT_THAT(lint_text(R"({"rules": [{"id": "r", "action": "pass", "users": ["bob"]}]})"),
              IsEmpty());
}

TEST(LintTest, PolicyDirectoryFilesInEvaluationOrder) {
  namespace fs = std::filesystem;
  fs::path dir = fs::temp_directory_path() / ("sg-lint-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::ofstream(dir / "carol.json") << R"({"rules": [{"id": "carol-web", "action": "pass"}]})";
  std::ofstream(dir / "group-eng.json") << R"({"rules": [
  {"id": "eng-all", "action": "block"},
  {"id": "eng-web", "action": "pass", "ports": [443]}]})";
  std::vector<Diagnostic> diags;
  auto src = JsonSource::parse(
      "main.json", R"({"groups": {"eng": ["carol"]}, "rules": [{"id": "m", "action": "pass"}]})",
      &diags);
  ASSERT_TRUE(src);
  Policy p = load_policy_set(*src, nlohmann::json::json_pointer(), dir.string());
  LintContext ctx;
  ctx.known_user = [](std::string_view) { return false; };
  ctx.users_source = "the password file users.passwd";
  std::vector<std::string> w;
  for (const auto& d : lint(p, ctx)) w.push_back(d.to_string());
  fs::remove_all(dir);
  ASSERT_EQ(w.size(), 2u);
  EXPECT_THAT(w[0], HasSubstr("carol.json:1:12: warning: rule \"carol-web\": user \"carol\""));
  EXPECT_THAT(w[1], HasSubstr("group-eng.json:3:3: warning: rule \"eng-web\" can never match: "
                              "rule \"eng-all\" ("));
  EXPECT_THAT(w[1], HasSubstr("group-eng.json:2:3)"));
}

}  // namespace
}  // namespace socksgate::policy
