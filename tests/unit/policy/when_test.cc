// Time windows ("when"): loading, matching in a named zone (DST included), midnight wrap,
// explain details, inheritance through "defaults".
#include <date/date.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "policy/policy.h"
#include "policy/rule.h"
#include "policy/time_window.h"

namespace socksgate::policy {
namespace {

using ::testing::HasSubstr;
using namespace std::chrono_literals;

// A UTC instant.
std::chrono::system_clock::time_point utc(int y, unsigned mo, unsigned d, int h, int mi,
                                          int s = 0) {
  auto day = date::sys_days{date::year{y} / date::month{mo} / date::day{d}};
  return std::chrono::system_clock::time_point(day + std::chrono::hours(h) +
                                               std::chrono::minutes(mi) + std::chrono::seconds(s));
}

DecisionRequest at(std::chrono::system_clock::time_point t) {
  DecisionRequest r;
  r.user = "alice";
  r.method = "userpass";
  r.listener = "main";
  r.client = *IpAddress::parse("192.0.2.1");
  r.address = IpAddress::parse("198.51.100.7");
  r.port = 443;
  r.time = t;
  return r;
}

Policy load(std::string_view text) { return load_policy_text("p.json", text); }

std::vector<std::string> errors(std::string_view text) {
  try {
    load(text);
  } catch (const LoadError& e) {
    std::vector<std::string> out;
    for (const auto& d : e.diagnostics()) out.push_back(d.to_string());
    return out;
  }
  return {};
}

std::string rule_with_when(std::string_view when) {
  return std::string(R"({"rules": [{"id": "w", "action": "pass", "when": )") + std::string(when) +
         "}]}";
}

TEST(TimeWindowTest, ClockAndDayParsing) {
  EXPECT_EQ(parse_clock("08:30", false), 8 * 3600 + 30 * 60);
  EXPECT_EQ(parse_clock("00:00", false), 0u);
  EXPECT_EQ(parse_clock("24:00", true), kSecondsPerDay);
  EXPECT_FALSE(parse_clock("24:00", false));
  EXPECT_FALSE(parse_clock("24:01", true));
  EXPECT_FALSE(parse_clock("8:30", false));
  EXPECT_FALSE(parse_clock("08:60", false));
  EXPECT_FALSE(parse_clock("08-30", false));
  EXPECT_EQ(weekday_from_name("mon"), 0);
  EXPECT_EQ(weekday_from_name("sun"), 6);
  EXPECT_EQ(weekday_from_name("Monday"), -1);
}

TEST(TimeWindowTest, UtcLocalTime) {
  TimeZone utc_zone;
  auto l = utc_zone.local(utc(2026, 11, 27, 10, 5, 30));  // a Friday
  EXPECT_EQ(l.weekday, 4);
  EXPECT_EQ(l.seconds, 10u * 3600 + 5 * 60 + 30);
  EXPECT_EQ(format_local(l), "Fri 10:05");
}

TEST(TimeWindowTest, UnknownZoneIsRejected) {
  std::string problem;
  EXPECT_FALSE(TimeZone::find("Mars/Olympus_Mons", &problem));
  EXPECT_FALSE(problem.empty());
  EXPECT_FALSE(TimeZone::find("../../etc/passwd", &problem));
  EXPECT_TRUE(TimeZone::find("Europe/Berlin", &problem));
  EXPECT_TRUE(TimeZone::find("UTC", &problem));
}

// Europe/Berlin: CET (+1) until 2026-03-29 01:00Z, CEST (+2) until 2026-10-25 01:00Z.
TEST(TimeWindowTest, DaylightSavingTimeChangesInBerlin) {
  auto berlin = *TimeZone::find("Europe/Berlin", nullptr);
  // Spring forward: 00:59Z is 01:59 CET, 01:00Z is 03:00 CEST (02:xx never happens).
  EXPECT_EQ(format_local(berlin.local(utc(2026, 3, 29, 0, 59))), "Sun 01:59");
  EXPECT_EQ(format_local(berlin.local(utc(2026, 3, 29, 1, 0))), "Sun 03:00");
  // Fall back: 00:30Z and 01:30Z are both 02:30 local.
  EXPECT_EQ(format_local(berlin.local(utc(2026, 10, 25, 0, 30))), "Sun 02:30");
  EXPECT_EQ(format_local(berlin.local(utc(2026, 10, 25, 1, 30))), "Sun 02:30");
  // A window keeps its wall-clock hours on both sides of a change: 08:00 local is 07:00Z in
  // winter and 06:00Z in summer.
  Policy p = load(
      rule_with_when(R"([{"days": ["mon-fri"], "hours": "08:00-18:30", "tz": "Europe/Berlin"}])"));
  EXPECT_EQ(p.decide(at(utc(2026, 3, 27, 6, 59))).rule_id, "default-deny");   // Fri 07:59 CET
  EXPECT_EQ(p.decide(at(utc(2026, 3, 27, 7, 0))).rule_id, "w");               // Fri 08:00 CET
  EXPECT_EQ(p.decide(at(utc(2026, 3, 30, 5, 59))).rule_id, "default-deny");   // Mon 07:59 CEST
  EXPECT_EQ(p.decide(at(utc(2026, 3, 30, 6, 0))).rule_id, "w");               // Mon 08:00 CEST
  EXPECT_EQ(p.decide(at(utc(2026, 3, 30, 16, 29))).rule_id, "w");             // 18:29 CEST
  EXPECT_EQ(p.decide(at(utc(2026, 3, 30, 16, 30))).rule_id, "default-deny");  // 18:30 CEST
  EXPECT_EQ(p.decide(at(utc(2026, 10, 26, 7, 0))).rule_id, "w");              // Mon 08:00 CET again
  EXPECT_EQ(p.decide(at(utc(2026, 10, 26, 6, 0))).rule_id, "default-deny");
}

TEST(TimeWindowTest, SkippedAndRepeatedHours) {
  Policy p = load(rule_with_when(R"([{"hours": "02:00-03:00", "tz": "Europe/Berlin"}])"));
  // 2026-03-29: 02:00-03:00 local does not exist; neither instant around it matches.
  EXPECT_EQ(p.decide(at(utc(2026, 3, 29, 0, 59))).rule_id, "default-deny");
  EXPECT_EQ(p.decide(at(utc(2026, 3, 29, 1, 0))).rule_id, "default-deny");
  // 2026-10-25: 02:00-03:00 local happens twice, both match.
  EXPECT_EQ(p.decide(at(utc(2026, 10, 25, 0, 30))).rule_id, "w");
  EXPECT_EQ(p.decide(at(utc(2026, 10, 25, 1, 30))).rule_id, "w");
  EXPECT_EQ(p.decide(at(utc(2026, 10, 25, 2, 0))).rule_id, "default-deny");  // 03:00 CET
}

TEST(TimeWindowTest, WrapPastMidnightBelongsToTheStartDay) {
  // Friday 22:00 to Saturday 06:00 (UTC).
  Policy p = load(rule_with_when(R"([{"days": ["fri"], "hours": "22:00-06:00"}])"));
  EXPECT_EQ(p.decide(at(utc(2026, 11, 27, 21, 59))).rule_id, "default-deny");  // Fri 21:59
  EXPECT_EQ(p.decide(at(utc(2026, 11, 27, 22, 0))).rule_id, "w");              // Fri 22:00
  EXPECT_EQ(p.decide(at(utc(2026, 11, 28, 5, 59))).rule_id, "w");              // Sat 05:59
  EXPECT_EQ(p.decide(at(utc(2026, 11, 28, 6, 0))).rule_id, "default-deny");    // Sat 06:00
  EXPECT_EQ(p.decide(at(utc(2026, 11, 27, 5, 0))).rule_id, "default-deny");    // Fri 05:00
  EXPECT_EQ(p.decide(at(utc(2026, 11, 28, 22, 30))).rule_id, "default-deny");  // Sat 22:30
  // Sunday's night runs into Monday morning.
  Policy s = load(rule_with_when(R"([{"days": ["sun"], "hours": "23:00-01:00"}])"));
  EXPECT_EQ(s.decide(at(utc(2026, 11, 30, 0, 30))).rule_id, "w");             // Mon 00:30
  EXPECT_EQ(s.decide(at(utc(2026, 11, 29, 0, 30))).rule_id, "default-deny");  // Sun 00:30
}

TEST(TimeWindowTest, DaysRangesListsAndDefaults) {
  Policy p = load(rule_with_when(R"([{"days": ["fri-mon"]}])"));   // wraps: fri sat sun mon
  EXPECT_EQ(p.decide(at(utc(2026, 11, 27, 12, 0))).rule_id, "w");  // Fri
  EXPECT_EQ(p.decide(at(utc(2026, 11, 29, 12, 0))).rule_id, "w");  // Sun
  EXPECT_EQ(p.decide(at(utc(2026, 11, 30, 12, 0))).rule_id, "w");  // Mon
  EXPECT_EQ(p.decide(at(utc(2026, 12, 1, 12, 0))).rule_id, "default-deny");  // Tue
  Policy l = load(rule_with_when(R"([{"days": ["Mon", "wed"], "hours": "12:00-24:00"}])"));
  EXPECT_EQ(l.decide(at(utc(2026, 11, 30, 23, 59))).rule_id, "w");            // Mon
  EXPECT_EQ(l.decide(at(utc(2026, 12, 2, 12, 0))).rule_id, "w");              // Wed
  EXPECT_EQ(l.decide(at(utc(2026, 12, 1, 12, 0))).rule_id, "default-deny");   // Tue
  EXPECT_EQ(l.decide(at(utc(2026, 12, 2, 11, 59))).rule_id, "default-deny");  // Wed morning
}

TEST(TimeWindowTest, PolicySaysWhetherItHasWindows) {
  // The gateway re-checks running sessions at each minute boundary only for such policies.
  EXPECT_TRUE(load(rule_with_when(R"([{"days": ["sat"]}])")).uses_time_windows());
  EXPECT_TRUE(load(R"({"defaults": {"when": [{"hours": "08:00-09:00"}]},
                        "rules": [{"id": "d", "action": "pass"}]})")
                  .uses_time_windows());
  EXPECT_FALSE(load(R"({"rules": [{"id": "n", "action": "pass"}]})").uses_time_windows());
}

TEST(TimeWindowTest, SignOnProtectionCountsOnlyOpenWindows) {
  // By day alice may use integrity; at any time confidentiality. A sign-on at night must ask
  // for confidentiality: the day rule cannot apply then.
  Policy p = load(R"({"rules": [
      {"id": "day", "action": "pass", "users": ["alice"], "min_protection": "integrity",
       "when": [{"hours": "08:00-18:00"}]},
      {"id": "always", "action": "pass", "users": ["alice"], "min_protection": "confidentiality"}]})");
  DecisionRequest day = at(utc(2026, 11, 27, 9, 0)), night = at(utc(2026, 11, 27, 22, 0));
  day.method = night.method = "gssapi";
  EXPECT_EQ(p.required_protection(day), 1);
  EXPECT_EQ(p.required_protection(night), 2);
}

TEST(TimeWindowTest, AnyWindowMatches) {
  Policy p = load(rule_with_when(
      R"([{"days": ["mon-fri"], "hours": "08:00-12:00"}, {"days": ["sat"], "hours": "10:00-24:00"}])"));
  EXPECT_EQ(p.decide(at(utc(2026, 11, 27, 9, 0))).rule_id, "w");
  EXPECT_EQ(p.decide(at(utc(2026, 11, 28, 23, 59))).rule_id, "w");
  EXPECT_EQ(p.decide(at(utc(2026, 11, 28, 9, 0))).rule_id, "default-deny");
}

TEST(TimeWindowTest, ExplainSaysWhyAWindowDidNotMatch) {
  Policy p = load(R"({"rules": [
    {"id": "office", "action": "pass", "users": ["alice"],
     "when": [{"days": ["mon-fri"], "hours": "08:00-18:30", "tz": "Europe/Berlin"}]},
    {"id": "rest", "action": "block"}]})");
  std::vector<TraceStep> trace;
  // 2026-11-24 is a Tuesday; 18:05Z is 19:05 CET.
  Decision d = p.decide(at(utc(2026, 11, 24, 18, 5)), &trace);
  EXPECT_EQ(d.rule_id, "rest");
  ASSERT_EQ(trace.size(), 2u);
  EXPECT_FALSE(trace[0].matched);
  EXPECT_EQ(trace[0].detail, "when: Tue 19:05 Europe/Berlin is outside mon-fri 08:00-18:30");
  Policy two = load(rule_with_when(R"([{"days": ["sat", "sun"]}, {"hours": "01:00-02:00"}])"));
  trace.clear();
  two.decide(at(utc(2026, 11, 24, 18, 5)), &trace);
  EXPECT_EQ(trace[0].detail,
            "when: Tue 18:05 UTC is outside sat,sun all day; Tue 18:05 UTC is outside every day "
            "01:00-02:00");
}

TEST(TimeWindowTest, LoadErrorsHaveFileLineColumn) {
  auto e = errors(R"({"rules": [{"id": "w", "action": "pass", "when": [
      {"days": ["mon-fri"], "hours": "08:00-18:30", "tz": "Europe/Berlinn"}]}]})");
  ASSERT_EQ(e.size(), 1u);
  EXPECT_THAT(e[0], HasSubstr("p.json:2:59: \"tz\" must be an IANA time zone name"));
  EXPECT_THAT(e[0], HasSubstr("\"Europe/Berlinn\""));

  EXPECT_THAT(errors(rule_with_when(R"({"days": ["mon"]})"))[0],
              HasSubstr("\"when\" must be an array"));
  EXPECT_THAT(errors(rule_with_when("[]"))[0], HasSubstr("\"when\" is empty"));
  EXPECT_THAT(errors(rule_with_when(R"(["mon"])"))[0], HasSubstr("entries must be objects"));
  EXPECT_THAT(errors(rule_with_when(R"([{"tz": "UTC"}])"))[0],
              HasSubstr("matches at any time; omit \"when\""));
  EXPECT_THAT(errors(rule_with_when(R"([{"days": ["monday"]}])"))[0],
              HasSubstr("invalid day \"monday\""));
  EXPECT_THAT(errors(rule_with_when(R"([{"days": []}])"))[0],
              HasSubstr("\"days\" must be a non-empty array"));
  EXPECT_THAT(errors(rule_with_when(R"([{"hours": "8-18"}])"))[0],
              HasSubstr("\"hours\" must be \"HH:MM-HH:MM\""));
  EXPECT_THAT(errors(rule_with_when(R"([{"hours": "25:00-26:00"}])"))[0],
              HasSubstr("\"hours\" must be \"HH:MM-HH:MM\""));
  EXPECT_THAT(errors(rule_with_when(R"([{"hours": "08:00-08:00"}])"))[0],
              HasSubstr("starts and ends at the same time"));
  EXPECT_THAT(errors(rule_with_when(R"([{"hours": "00:00-24:00"}])"))[0],
              HasSubstr("is the whole day"));
  EXPECT_THAT(errors(rule_with_when(R"([{"days": ["mon"], "hour": "08:00-09:00"}])"))[0],
              HasSubstr("unknown key \"hour\" in a \"when\" window (did you mean \"hours\"?)"));
  EXPECT_THAT(errors(rule_with_when(R"([{"days": ["mon"], "tz": 1}])"))[0],
              HasSubstr("\"tz\" must be an IANA time zone name"));
}

TEST(TimeWindowTest, CompiledForm) {
  auto p = load(rule_with_when(R"([{"days": ["Mon", "wed-thu"], "hours": "22:00-06:00"}])"));
  EXPECT_EQ(p.rule_count(), 1u);
}

// "when" is inherited through "defaults" like "methods": the main policy's, then a policy.d
// file's own.
TEST(TimeWindowTest, InheritedThroughDefaults) {
  namespace fs = std::filesystem;
  fs::path dir = fs::temp_directory_path() / ("sg-when-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::ofstream(dir / "alice.json") << R"({"defaults": {"when": [{"days": ["sat", "sun"]}]},
    "rules": [{"id": "alice-weekend", "action": "pass"}]})";
  std::ofstream(dir / "bob.json") << R"({"rules": [{"id": "bob-office", "action": "pass"},
    {"id": "bob-always", "action": "pass", "when": [{"days": ["mon-sun"]}]}]})";
  std::vector<Diagnostic> diags;
  auto src = JsonSource::parse("main.json", R"({"defaults": {"when": [
      {"days": ["mon-fri"], "hours": "08:00-18:00", "tz": "Europe/Berlin"}]},
    "rules": [{"id": "office", "action": "pass", "users": ["carol"]}]})",
                               &diags);
  ASSERT_TRUE(src);
  Policy p = load_policy_set(*src, nlohmann::json::json_pointer(), dir.string());
  fs::remove_all(dir);
  auto who = [&](std::string user, std::chrono::system_clock::time_point t) {
    DecisionRequest r = at(t);
    r.user = std::move(user);
    return p.decide(r).rule_id;
  };
  auto friday_noon = utc(2026, 11, 27, 11, 0), saturday_noon = utc(2026, 11, 28, 11, 0);
  EXPECT_EQ(who("carol", friday_noon), "office");
  EXPECT_EQ(who("carol", saturday_noon), "default-deny");
  EXPECT_EQ(who("alice", friday_noon), "default-deny");  // her file's own defaults win
  EXPECT_EQ(who("alice", saturday_noon), "alice-weekend");
  EXPECT_EQ(who("bob", friday_noon), "bob-office");  // the main policy's defaults
  EXPECT_EQ(who("bob", saturday_noon), "bob-always");
}

TEST(TimeWindowTest, DecideAnyDestinationHonoursWindows) {
  Policy p = load(rule_with_when(R"([{"days": ["mon-fri"]}])"));
  DecisionRequest r = at(utc(2026, 11, 27, 12, 0));
  r.command = Command::kUdpAssociate;
  EXPECT_TRUE(p.decide_any_destination(r).allowed());
  r.time = utc(2026, 11, 28, 12, 0);
  EXPECT_FALSE(p.decide_any_destination(r).allowed());
}

}  // namespace
}  // namespace socksgate::policy
