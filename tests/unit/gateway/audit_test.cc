#include "gateway/audit.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include "gateway/audit_log.h"

namespace socksgate::gateway {
namespace {

TEST(EscapeUntrusted, ValidUtf8PassesBackslashDoubles) {
  EXPECT_EQ(escape_untrusted("alice"), "alice");
  EXPECT_EQ(escape_untrusted("h\xC3\xA9llo \xF0\x9F\x98\x80"), "h\xC3\xA9llo \xF0\x9F\x98\x80");
  EXPECT_EQ(escape_untrusted("a\\b"), "a\\\\b");
  EXPECT_EQ(escape_untrusted("a\\xff"), "a\\\\xff") << "a literal \\xff is not an escape";
}

TEST(EscapeUntrusted, InvalidBytesBecomeHex) {
  EXPECT_EQ(escape_untrusted("\xff"), "\\xff");
  EXPECT_EQ(escape_untrusted("a\xC3"), "a\\xc3");                           // truncated sequence
  EXPECT_EQ(escape_untrusted("\xC0\xAF"), "\\xc0\\xaf");                    // overlong '/'
  EXPECT_EQ(escape_untrusted("\xED\xA0\x80"), "\\xed\\xa0\\x80");           // surrogate
  EXPECT_EQ(escape_untrusted("\xF4\x90\x80\x80"), "\\xf4\\x90\\x80\\x80");  // > U+10FFFF
}

TEST(EscapeUntrusted, RoundTripsRandomBytesAndAlwaysDumpsAsOneJsonLine) {
  std::mt19937 rng(1234);
  for (int i = 0; i < 2000; ++i) {
    std::string s(rng() % 40, '\0');
    for (auto& c : s) c = static_cast<char>(rng() % 256);
    std::string e = escape_untrusted(s);
    EXPECT_EQ(unescape_untrusted(e), s);
    nlohmann::json j;
    j["user"] = e;
    std::string line = j.dump();  // strict: throws on invalid UTF-8
    EXPECT_EQ(line.find('\n'), std::string::npos);
    EXPECT_EQ(nlohmann::json::parse(line)["user"].get<std::string>(), e);
  }
}

TEST(AuditLog, AppendsOneChainedLinePerRecordWithTime) {
  auto path = std::filesystem::temp_directory_path() / ("audit_test_" + std::to_string(::getpid()));
  std::filesystem::remove(path);
  {
    AuditConfig cfg;
    cfg.file = path.string();
    AuditLog log(cfg);
    log.write({{"event", "session_end"}, {"user", escape_untrusted("evil\n\"user\x01")}});
    log.write({{"event", "denied"}});
  }
  std::ifstream in(path);
  std::string l0, l1, l2, l3;
  ASSERT_TRUE(std::getline(in, l0));
  ASSERT_TRUE(std::getline(in, l1));
  ASSERT_TRUE(std::getline(in, l2));
  EXPECT_FALSE(std::getline(in, l3));
  auto j0 = nlohmann::json::parse(l0);
  EXPECT_EQ(j0["event"], "audit_start");
  EXPECT_EQ(j0["seq"], 1);
  auto j1 = nlohmann::json::parse(l1);
  EXPECT_EQ(j1["event"], "session_end");
  EXPECT_EQ(j1["user"], "evil\n\"user\x01");
  EXPECT_EQ(j1["seq"], 2);
  EXPECT_EQ(j1["prev"], j0["hash"]);
  EXPECT_TRUE(j1.contains("time"));
  EXPECT_EQ(std::filesystem::status(path).permissions() & std::filesystem::perms::all,
            std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  std::filesystem::remove(path);
}

TEST(AuditLog, UnopenableFileIsAClearError) {
  try {
    AuditConfig cfg;
    cfg.file = "/nonexistent-dir/audit.jsonl";
    AuditLog log(cfg);
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent-dir/audit.jsonl: cannot open audit log"),
              std::string::npos);
  }
}

}  // namespace
}  // namespace socksgate::gateway
