#include "gateway/metrics.h"

#include <gtest/gtest.h>

#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace socksgate::gateway {
namespace {

// Every line of the exposition: a comment (# HELP / # TYPE) or `name{labels} value`.
void expect_valid_exposition(const std::string& text) {
  static const std::regex kSample(
      R"(^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\\\|\\"|\\n)*")(,[a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\\\|\\"|\\n)*")*\})? -?[0-9.e+Inf]+$)");
  static const std::regex kComment(
      R"(^# (HELP [a-zA-Z_:][a-zA-Z0-9_:]* .*|TYPE [a-zA-Z_:][a-zA-Z0-9_:]* (counter|gauge|histogram))$)");
  std::istringstream in(text);
  std::string line;
  std::set<std::string> types;
  ASSERT_FALSE(text.empty());
  ASSERT_EQ(text.back(), '\n');
  while (std::getline(in, line)) {
    if (line.rfind("# TYPE ", 0) == 0) {
      std::string name = line.substr(7, line.find(' ', 7) - 7);
      EXPECT_TRUE(types.insert(name).second) << "TYPE given twice for " << name;
    }
    EXPECT_TRUE(std::regex_match(line, kComment) || std::regex_match(line, kSample)) << line;
  }
}

TEST(MetricsEscaping, LabelValues) {
  EXPECT_EQ(escape_label_value("plain"), "plain");
  EXPECT_EQ(escape_label_value("a\"b"), "a\\\"b");
  EXPECT_EQ(escape_label_value("a\\b"), "a\\\\b");
  EXPECT_EQ(escape_label_value("a\nb"), "a\\nb");
  EXPECT_EQ(escape_label_value("caf\xc3\xa9"), "caf\xc3\xa9");  // valid UTF-8 stays
  EXPECT_EQ(escape_label_value("x\xff"), "x\\\\xff");           // invalid byte: text \xff
  EXPECT_EQ(escape_label_value("\xc0\xaf"), "\\\\xc0\\\\xaf");  // overlong
  EXPECT_EQ(escape_help("a\\b\nc\"d"), "a\\\\b\\nc\"d");
}

TEST(MetricsFamily, RendersSortedEscapedSeries) {
  std::atomic<uint64_t> dropped{0};
  Family f("x_total", "Help with \\ and\nnewline.", MetricType::kCounter, {"a", "b"}, 10, &dropped);
  f.add({"2", "q\"uote"}, 3);
  f.add({"1", "new\nline"});
  f.add({"1", "new\nline"}, 4);
  std::string out;
  f.render(&out);
  EXPECT_EQ(out,
            "# HELP x_total Help with \\\\ and\\nnewline.\n"
            "# TYPE x_total counter\n"
            "x_total{a=\"1\",b=\"new\\nline\"} 5\n"
            "x_total{a=\"2\",b=\"q\\\"uote\"} 3\n");
  expect_valid_exposition(out);
  EXPECT_EQ(f.value({"1", "new\nline"}), 5u);
  EXPECT_EQ(f.value({"9", "9"}), 0u);
  EXPECT_EQ(f.cell({"only-one"}), nullptr);  // wrong number of values
}

TEST(MetricsFamily, SeriesCapIsHardAndCounted) {
  std::atomic<uint64_t> dropped{0};
  Family f("y_total", "h", MetricType::kCounter, {"k"}, 3, &dropped);
  for (int i = 0; i < 100; ++i) f.add({std::to_string(i)});
  EXPECT_EQ(f.series(), 3u);
  EXPECT_EQ(dropped.load(), 97u);
  f.add({"0"});  // existing series still count
  EXPECT_EQ(f.value({"0"}), 2u);
}

TEST(MetricsFamily, RetainDropsUnconfiguredButCellsStayValid) {
  std::atomic<uint64_t> dropped{0};
  Family f("z_total", "h", MetricType::kCounter, {"rule", "decision"}, 100, &dropped);
  auto held = f.cell({"old", "pass"});
  f.add({"keep", "pass"});
  f.retain(0, {"keep"});
  EXPECT_EQ(f.series(), 1u);
  held->fetch_add(1);  // a session still holding it: no crash, not rendered
  std::string out;
  f.render(&out);
  EXPECT_EQ(out.find("old"), std::string::npos);
  EXPECT_NE(out.find("z_total{rule=\"keep\",decision=\"pass\"} 1"), std::string::npos);
}

TEST(MetricsFamily, GaugeRendersNegativeValues) {
  Family g("g", "h", MetricType::kGauge, {}, 1, nullptr);
  g.set({}, -3);
  std::string out;
  g.render(&out);
  EXPECT_NE(out.find("\ng -3\n"), std::string::npos) << out;
}

TEST(MetricsHistogram, CumulativeBuckets) {
  Histogram h("lat_seconds", "h", {0.001, 0.01, 0.1});
  h.observe(0.0005);
  h.observe(0.001);  // le is inclusive
  h.observe(0.05);
  h.observe(5);
  h.observe(-1);  // clock step: counts as 0
  std::string out;
  h.render(&out);
  EXPECT_NE(out.find("lat_seconds_bucket{le=\"0.001\"} 3\n"), std::string::npos) << out;
  EXPECT_NE(out.find("lat_seconds_bucket{le=\"0.01\"} 3\n"), std::string::npos);
  EXPECT_NE(out.find("lat_seconds_bucket{le=\"0.1\"} 4\n"), std::string::npos);
  EXPECT_NE(out.find("lat_seconds_bucket{le=\"+Inf\"} 5\n"), std::string::npos);
  EXPECT_NE(out.find("lat_seconds_count 5\n"), std::string::npos);
  EXPECT_NE(out.find("lat_seconds_sum 5.0515"), std::string::npos) << out;
  EXPECT_EQ(h.count(), 5u);
  expect_valid_exposition(out);
}

TEST(Metrics, PerUserSeriesOnlyForConfiguredUsers) {
  Metrics m;
  m.configure({"main"}, {"r1"}, {"alice"});
  m.auth_failed("userpass", "bad_password", "alice");
  m.auth_failed("userpass", "unknown_user", "mallory\"\n{evil}");
  m.session_ended({"main", "userpass", "connect", "alice", "r1", "pass", "closed"});
  m.session_ended({"main", "userpass", "connect", "bob", "r1", "pass", "closed"});
  std::string out = m.render({});
  expect_valid_exposition(out);
  EXPECT_NE(out.find("socksgate_user_auth_failures_total{user=\"alice\"} 1"), std::string::npos);
  EXPECT_NE(out.find("socksgate_user_sessions_total{user=\"alice\"} 1"), std::string::npos);
  EXPECT_EQ(out.find("mallory"), std::string::npos);
  EXPECT_EQ(out.find("bob"), std::string::npos);
  EXPECT_EQ(m.sessions_total().value({"main", "userpass", "connect"}), 2u);
  EXPECT_EQ(m.decisions().value({"r1", "pass"}), 2u);
  // A reload that no longer lists alice drops her series.
  m.configure({"main"}, {"r1"}, {});
  out = m.render({});
  EXPECT_EQ(out.find("user=\"alice\""), std::string::npos);
}

TEST(Metrics, ClientTextNeverBecomesALabel) {
  Metrics m;
  m.configure({"main"}, {}, {});
  // Reasons and methods are code tokens; anything else is folded.
  m.auth_failed("userpass", "Bad \"reason\" from a plugin", {});
  m.auth_failed("we\nird", "bad_password", {});
  m.limit_hit("sessions_per_user", "nobody");
  EXPECT_EQ(m.auth_failures().value({"userpass", "other"}), 1u);
  EXPECT_EQ(m.auth_failures().value({"other", "bad_password"}), 1u);
  EXPECT_EQ(m.limit_hits().value({"sessions_per_user"}), 1u);
  expect_valid_exposition(m.render({}));
}

TEST(Metrics, RuleSeriesBoundedByConfiguration) {
  Metrics m;
  m.configure({"main"}, {"a", "b"}, {});
  for (int i = 0; i < 5; ++i) m.session_ended({"main", "none", "connect", "", "a", "pass", "x"});
  m.session_ended({"main", "none", "connect", "", "old-rule", "block", "x"});
  EXPECT_EQ(m.decisions().series(), 2u);
  m.configure({"main"}, {"b"}, {});  // reload: "a" and "old-rule" are gone
  EXPECT_EQ(m.decisions().series(), 0u);
  m.session_ended({"main", "none", "connect", "", "b", "block", "x"});
  EXPECT_EQ(m.decisions().value({"b", "block"}), 1u);
}

TEST(Metrics, ActiveGaugesComeFromLiveSessions) {
  Metrics m;
  m.configure({"main", "tls"}, {}, {"alice"});
  Metrics::Scrape s;
  s.live = {{"main", "userpass", "connect", "alice"},
            {"main", "userpass", "connect", "bob"},
            {"tls", "", "", ""}};
  s.closed_by_reason = {{"closed", 7}, {"limit:sessions", 2}};
  s.draining = true;
  std::string out = m.render(s);
  expect_valid_exposition(out);
  EXPECT_NE(out.find("socksgate_sessions_active{listener=\"main\",method=\"userpass\",command="
                     "\"connect\"} 2"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("socksgate_sessions_active{listener=\"tls\",method=\"unknown\",command="
                     "\"unknown\"} 1"),
            std::string::npos);
  EXPECT_NE(out.find("socksgate_user_sessions_active{user=\"alice\"} 1"), std::string::npos);
  EXPECT_NE(out.find("socksgate_sessions_closed_total{reason=\"limit:sessions\"} 2"),
            std::string::npos);
  EXPECT_NE(out.find("socksgate_draining 1"), std::string::npos);
  // The next scrape with no live session shows the same series at 0.
  out = m.render({});
  EXPECT_NE(out.find("socksgate_sessions_active{listener=\"main\",method=\"userpass\",command="
                     "\"connect\"} 0"),
            std::string::npos);
}

TEST(Metrics, ByteTapsAreSharedAndThreadSafe) {
  Metrics m;
  m.configure({"main"}, {}, {"alice"});
  auto live = std::make_shared<std::atomic<uint64_t>>(0);
  ByteTap up = m.tap("main", "alice", true, live);
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t) {
    ts.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) up.add(3);
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(live->load(), 120000u);
  EXPECT_EQ(m.bytes().value({"main", "up"}), 120000u);
  std::string out = m.render({});
  EXPECT_NE(out.find("socksgate_user_bytes_total{user=\"alice\",direction=\"up\"} 120000"),
            std::string::npos);
}

TEST(Metrics, AuditWriteHooks) {
  Metrics m;
  m.observe_audit_write(0.0002);
  m.audit_write_failed();
  std::string out = m.render({});
  EXPECT_EQ(m.audit_write_seconds().count(), 1u);
  EXPECT_NE(out.find("socksgate_audit_write_failures_total 1"), std::string::npos);
  EXPECT_NE(out.find("socksgate_audit_write_seconds_count 1"), std::string::npos);
}

}  // namespace
}  // namespace socksgate::gateway
