// Per-user limits: the token bucket, quota periods, admission, flow limiting and the state file.
#include "gateway/limits.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

#include "gateway/token_bucket.h"

namespace socksgate::gateway {
namespace {

using namespace std::chrono;
using ::testing::HasSubstr;
namespace fs = std::filesystem;

TEST(TokenBucketTest, StartsFullRefillsAtTheRateAndCapsAtTheBurst) {
  auto t0 = TokenBucket::Clock::now();
  TokenBucket b(100, 50, t0);
  EXPECT_DOUBLE_EQ(b.available(t0), 50);
  EXPECT_TRUE(b.try_take(50, t0));
  EXPECT_FALSE(b.try_take(1, t0));
  EXPECT_NEAR(b.available(t0 + milliseconds(100)), 10, 1e-6);
  EXPECT_NEAR(b.available(t0 + seconds(10)), 50, 1e-6);  // never beyond the burst
  EXPECT_TRUE(b.try_take(50, t0 + seconds(10)));
  // 25 tokens at 100/s: 250 ms.
  EXPECT_NEAR(duration<double>(b.time_until(25, t0 + seconds(10))).count(), 0.25, 1e-6);
  // More than the burst is never there at once: the wait is for a full burst.
  EXPECT_NEAR(duration<double>(b.time_until(500, t0 + seconds(10))).count(), 0.5, 1e-6);
  b.give_back(1000);
  EXPECT_DOUBLE_EQ(b.available(t0 + seconds(10)), 50);
  // A clock that goes backwards (another thread's older `now`) adds nothing.
  EXPECT_TRUE(b.try_take(50, t0 + seconds(10)));
  EXPECT_DOUBLE_EQ(b.available(t0 + seconds(9)), 0);
}

TEST(TokenBucketTest, ReconfigureKeepsTokensUpToTheNewBurst) {
  auto t0 = TokenBucket::Clock::now();
  TokenBucket b(10, 10, t0);
  b.reconfigure(1000, 5, t0);
  EXPECT_DOUBLE_EQ(b.available(t0), 5);
  EXPECT_NEAR(b.available(t0 + milliseconds(1)), 5, 1e-9);  // capped
  EXPECT_TRUE(b.try_take(5, t0 + milliseconds(1)));
  EXPECT_NEAR(b.available(t0 + milliseconds(3)), 2, 1e-6);
}

system_clock::time_point utc(int y, unsigned m, unsigned d, int hour = 0) {
  return sys_days{year{y} / month{m} / day{d}} + hours(hour);
}

TEST(QuotaPeriodsTest, CalendarDaysIsoWeeksAndMonthsInUtc) {
  QuotaPeriods a = quota_periods(utc(1970, 1, 1));
  EXPECT_EQ(a.day, 0);
  EXPECT_EQ(a.week, 0);  // Thursday: the week that began Monday 1969-12-29
  EXPECT_EQ(a.month, 1970 * 12);
  EXPECT_EQ(quota_periods(utc(1969, 12, 29)).week, 0);
  EXPECT_EQ(quota_periods(utc(1969, 12, 28, 23)).week, -1);  // Sunday before
  EXPECT_EQ(quota_periods(utc(1970, 1, 5)).week, 1);         // the next Monday
  // 2026-11-27 is a Friday; its week began Monday 2026-11-23 and ends Sunday 2026-11-29.
  QuotaPeriods f = quota_periods(utc(2026, 11, 27, 23));
  EXPECT_EQ(f.week, quota_periods(utc(2026, 11, 23)).week);
  EXPECT_EQ(f.week, quota_periods(utc(2026, 11, 29, 23)).week);
  EXPECT_EQ(f.week + 1, quota_periods(utc(2026, 11, 30)).week);
  EXPECT_EQ(f.day + 1, quota_periods(utc(2026, 11, 28)).day);
  EXPECT_EQ(f.month, quota_periods(utc(2026, 11, 1)).month);
  EXPECT_EQ(f.month + 1, quota_periods(utc(2026, 12, 1)).month);
  EXPECT_EQ(f.month + 2, quota_periods(utc(2027, 1, 31)).month);
  // Leap day.
  EXPECT_EQ(quota_periods(utc(2028, 2, 29)).day + 1, quota_periods(utc(2028, 3, 1)).day);
  EXPECT_EQ(period_start_text(f.day), "2026-11-27");
  EXPECT_EQ(period_start_text(f.week * 7 - 3), "2026-11-23");
  EXPECT_EQ(days_from_text("2026-11-27"), f.day);
  EXPECT_FALSE(days_from_text("2026-02-30"));
  EXPECT_FALSE(days_from_text("2026-1-27"));
  EXPECT_FALSE(days_from_text("yesterday!"));
}

policy::Limits sessions(uint64_t per_user, uint64_t per_rule = 0) {
  policy::Limits l;
  l.sessions = per_user;
  l.sessions_per_rule = per_rule;
  return l;
}

TEST(LimitRegistryTest, ConcurrentSessionsPerUserAndPerRule) {
  LimitRegistry reg;
  LimitRefusal why;
  std::vector<std::unique_ptr<LimitTicket>> held;
  for (int i = 0; i < 3; ++i) {
    held.push_back(reg.admit("alice", "r1", sessions(3), &why));
    ASSERT_TRUE(held.back());
  }
  EXPECT_FALSE(reg.admit("alice", "r1", sessions(3), &why));
  EXPECT_EQ(why, LimitRefusal::kUserSessions);
  EXPECT_EQ(limit_name(why), "user_sessions");
  // The user's sessions count whatever rule passed them.
  EXPECT_FALSE(reg.admit("alice", "r2", sessions(3), &why));
  EXPECT_TRUE(reg.admit("bob", "r1", sessions(3), &why));
  held.pop_back();
  EXPECT_EQ(reg.active("alice"), 2u);
  held.push_back(reg.admit("alice", "r1", sessions(3), &why));
  EXPECT_TRUE(held.back());

  // Per rule: all users together.
  std::vector<std::unique_ptr<LimitTicket>> rule;
  rule.push_back(reg.admit("u1", "shared", sessions(0, 2), &why));
  rule.push_back(reg.admit("u2", "shared", sessions(0, 2), &why));
  ASSERT_TRUE(rule[0] && rule[1]);
  EXPECT_FALSE(reg.admit("u3", "shared", sessions(0, 2), &why));
  EXPECT_EQ(why, LimitRefusal::kRuleSessions);
  rule.clear();
  EXPECT_TRUE(reg.admit("u3", "shared", sessions(0, 2), &why));
}

TEST(LimitRegistryTest, NewSessionsPerMinuteCountsOnlyAdmittedSessions) {
  LimitRegistry reg;
  LimitRefusal why;
  policy::Limits l;
  l.new_sessions_per_minute = 3;
  l.sessions = 10;
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(reg.admit("alice", "r", l, &why));
  EXPECT_FALSE(reg.admit("alice", "r", l, &why));
  EXPECT_EQ(why, LimitRefusal::kNewSessionsPerMinute);
  EXPECT_TRUE(reg.admit("bob", "r", l, &why));  // per user
  // A session refused by another limit does not use one up.
  policy::Limits one = l;
  one.sessions = 1;
  auto held = reg.admit("carol", "r", one, &why);
  ASSERT_TRUE(held);
  EXPECT_FALSE(reg.admit("carol", "r", one, &why));
  EXPECT_EQ(why, LimitRefusal::kUserSessions);
  held.reset();
  EXPECT_TRUE(reg.admit("carol", "r", one, &why));
  EXPECT_TRUE(reg.admit("carol", "r", l, &why));
  EXPECT_FALSE(reg.admit("carol", "r", l, &why));
}

TEST(FlowLimiterTest, NoLimitsNoLimiter) {
  LimitRegistry reg;
  LimitRefusal why;
  auto t = reg.admit("alice", "r", sessions(5), &why);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->up(), nullptr);
  EXPECT_EQ(t->down(), nullptr);
  policy::Limits l;
  l.session_down = 1000;
  auto d = reg.admit("alice", "r", l, &why);
  EXPECT_EQ(d->up(), nullptr);
  ASSERT_NE(d->down(), nullptr);
  EXPECT_TRUE(d->down()->throttles());
}

TEST(FlowLimiterTest, GrantsTheBurstThenWaits) {
  LimitRegistry reg;
  LimitRefusal why;
  policy::Limits l;
  l.session_down = 100000;
  auto t = reg.admit("alice", "r", l, &why);
  FlowLimiter& f = *t->down();
  FlowLimiter::Clock::duration wait;
  EXPECT_EQ(f.acquire(1 << 20, &wait), 100000u);  // one second's worth
  EXPECT_EQ(f.acquire(1 << 20, &wait), 0u);
  EXPECT_GT(wait, FlowLimiter::Clock::duration::zero());
  EXPECT_LE(wait, milliseconds(200));
  f.give_back(40000);
  size_t got = f.acquire(1 << 20, &wait);  // plus what refilled meanwhile (slow builds)
  EXPECT_GE(got, 40000u);
  EXPECT_LT(got, 45000u);
}

TEST(FlowLimiterTest, UserBucketIsSharedBySessions) {
  LimitRegistry reg;
  LimitRefusal why;
  policy::Limits l;
  l.user_up = 50000;
  auto a = reg.admit("alice", "r", l, &why);
  auto b = reg.admit("alice", "r", l, &why);
  FlowLimiter::Clock::duration wait;
  size_t got = a->up()->acquire(30000, &wait);
  EXPECT_EQ(got, 30000u);
  got = b->up()->acquire(1 << 20, &wait);  // what is left of the user's second
  EXPECT_GE(got, 20000u);
  EXPECT_LT(got, 25000u);
  EXPECT_EQ(a->up()->acquire(1 << 20, &wait), 0u);
  auto c = reg.admit("bob", "r", l, &why);
  EXPECT_EQ(c->up()->acquire(1 << 20, &wait), 50000u);  // bob has his own
}

TEST(FlowLimiterTest, QuotaClampsGrantsRefusesNewSessionsAndEndsRunningOnes) {
  LimitRegistry reg;
  LimitRefusal why;
  policy::Limits l;
  l.quota_day = 1000;
  l.quota_month = 5000;
  auto t = reg.admit("alice", "r", l, &why);
  ASSERT_TRUE(t);
  FlowLimiter::Clock::duration wait;
  EXPECT_EQ(t->up()->acquire(600, &wait), 600u);
  EXPECT_TRUE(t->up()->moved(600));
  EXPECT_EQ(t->down()->acquire(1 << 20, &wait), 400u);  // what the day has left
  EXPECT_FALSE(t->down()->moved(400));                  // used up
  EXPECT_EQ(t->down()->acquire(1 << 20, &wait), 0u);
  EXPECT_EQ(wait, FlowLimiter::Clock::duration::zero());  // zero wait: used up, end it
  EXPECT_EQ(reg.used("alice", 0), 1000u);
  EXPECT_EQ(reg.used("alice", 2), 1000u);
  EXPECT_TRUE(reg.dirty());
  EXPECT_FALSE(reg.admit("alice", "r", l, &why));
  EXPECT_EQ(why, LimitRefusal::kQuotaDay);
  policy::Limits month_only;
  month_only.quota_month = 1000;
  EXPECT_FALSE(reg.admit("alice", "r2", month_only, &why));
  EXPECT_EQ(why, LimitRefusal::kQuotaMonth);
  // A rule without a quota lets the user through (its bytes are not counted).
  EXPECT_TRUE(reg.admit("alice", "r3", policy::Limits{}, &why));
}

// TSan: admissions, releases and byte counts of one user from several threads at once.
TEST(LimitRegistryTest, ThreadsShareOneUser) {
  LimitRegistry reg;
  policy::Limits l;
  l.sessions = 1000;
  l.user_down = 1u << 30;
  l.quota_day = 1ull << 40;
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&] {
      for (int k = 0; k < 500; ++k) {
        LimitRefusal why;
        auto t = reg.admit("alice", "r", l, &why);
        ASSERT_TRUE(t);
        FlowLimiter::Clock::duration wait;
        size_t n = t->down()->acquire(100, &wait);
        t->down()->moved(n);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(reg.active("alice"), 0u);
  EXPECT_EQ(reg.used("alice", 0), 4u * 500 * 100);
}

class StateFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("sg-limits-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
    path_ = (dir_ / "limits.json").string();
  }
  void TearDown() override { fs::remove_all(dir_); }
  void write(const std::string& text) { std::ofstream(path_) << text; }
  std::string read() {
    std::ifstream in(path_);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  static void use(LimitRegistry& reg, const std::string& user, uint64_t bytes) {
    policy::Limits l;
    l.quota_week = 1ull << 40;
    LimitRefusal why;
    auto t = reg.admit(user, "r", l, &why);
    t->up()->moved(bytes);
  }
  fs::path dir_;
  std::string path_;
};

TEST_F(StateFileTest, SavesAtomicallyAndLoadsBack) {
  LimitRegistry reg;
  use(reg, "alice", 1234);
  use(reg, "b\"ob", 5);
  std::string err;
  ASSERT_TRUE(reg.save(path_, &err)) << err;
  EXPECT_FALSE(reg.dirty());
  EXPECT_FALSE(fs::exists(path_ + ".tmp"));
  struct stat st;
  ASSERT_EQ(::stat(path_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_THAT(read(), HasSubstr("\"version\": 1"));
  QuotaPeriods now = quota_periods(system_clock::now());
  EXPECT_THAT(read(), HasSubstr(period_start_text(now.week * 7 - 3)));

  LimitRegistry again;
  again.load(path_);
  for (int p = 0; p < 3; ++p) EXPECT_EQ(again.used("alice", p), 1234u);
  EXPECT_EQ(again.used("b\"ob", 1), 5u);
  EXPECT_EQ(again.used("carol", 1), 0u);
}

TEST_F(StateFileTest, AMissingFileIsAFreshStartAndOldPeriodsDoNotCount) {
  LimitRegistry reg;
  reg.load(path_);  // no file yet
  EXPECT_EQ(reg.used("alice", 0), 0u);
  QuotaPeriods now = quota_periods(system_clock::now());
  write(R"({"version": 1, "users": {"alice": {
    "day": {"since": "2001-01-01", "bytes": 99},
    "week": {"since": ")" +
        period_start_text(now.week * 7 - 3) + R"(", "bytes": 77}}}})");
  reg.load(path_);
  EXPECT_EQ(reg.used("alice", 0), 0u);  // a day long gone
  EXPECT_EQ(reg.used("alice", 1), 77u);
}

TEST_F(StateFileTest, ADamagedFileStopsTheStartAndIsLeftAlone) {
  for (const char* bad :
       {"{\"version\": 1, \"users\": {\"alice\": {\"day\": {\"since\": \"2026-11-2", "[]",
        "{\"version\": 2, \"users\": {}}",
        "{\"version\": 1, \"users\": {\"alice\": {\"day\": {\"since\": \"x\", \"bytes\": 1}}}}",
        "{\"version\": 1, \"users\": {\"alice\": {\"day\": {\"since\": \"2026-11-27\", "
        "\"bytes\": -1}}}}"}) {
    write(bad);
    LimitRegistry reg;
    try {
      reg.load(path_);
      ADD_FAILURE() << "loaded: " << bad;
    } catch (const std::runtime_error& e) {
      EXPECT_THAT(e.what(), HasSubstr("limits.state_file " + path_));
      EXPECT_THAT(e.what(), HasSubstr("move it away to start from zero"));
    }
    EXPECT_EQ(read(), bad);
  }
}

TEST_F(StateFileTest, AnUnwritableDirectoryIsAnErrorAndStaysDirty) {
  LimitRegistry reg;
  use(reg, "alice", 1);
  std::string err;
  EXPECT_FALSE(reg.save((dir_ / "missing" / "limits.json").string(), &err));
  EXPECT_THAT(err, HasSubstr("cannot create"));
  EXPECT_TRUE(reg.dirty());
}

}  // namespace
}  // namespace socksgate::gateway
