#pragma once
// Per-user limits (policy rule key "limits", docs/policy.md): concurrent sessions per user and
// per rule, new sessions per minute per user, bandwidth per session and per user (token
// buckets, up and down apart), byte quotas per user per UTC day / ISO week / month.
//
// One LimitRegistry per server, in ServerState; it outlives reloads, so counters survive a
// reload and a changed limit applies to sessions admitted after it.
//
// Threads: admission and release take the registry's mutex (once per session each). On the
// data path a FlowLimiter touches its own session bucket without a lock and, only when the
// rule sets a per-user bandwidth limit or a quota, the user's entry under that entry's own
// mutex, once per chunk moved (up to a pipe or buffer full).

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "gateway/token_bucket.h"
#include "policy/policy.h"

namespace socksgate::gateway {

// UTC calendar periods of a time: day = days since 1970-01-01, week = ISO weeks (from Monday)
// since the week of 1970-01-01, month = year * 12 + month - 1.
struct QuotaPeriods {
  int64_t day = 0, week = 0, month = 0;
  friend bool operator==(const QuotaPeriods&, const QuotaPeriods&) = default;
};
QuotaPeriods quota_periods(std::chrono::system_clock::time_point t);
// The first day of a period, "YYYY-MM-DD", and back (nullopt for anything malformed).
std::string period_start_text(int64_t days_since_epoch);
std::optional<int64_t> days_from_text(std::string_view yyyy_mm_dd);

enum class LimitRefusal : uint8_t {
  kNone,
  kUserSessions,          // limits.sessions
  kRuleSessions,          // limits.sessions_per_rule
  kNewSessionsPerMinute,  // limits.new_sessions_per_minute
  kQuotaDay,
  kQuotaWeek,
  kQuotaMonth,
};
// The audit reason is "limit:" + this, the metrics label this: "user_sessions",
// "rule_sessions", "new_sessions_per_minute", "quota_day", "quota_week", "quota_month".
std::string_view limit_name(LimitRefusal r);

// "sessions=4 bandwidth.session.down=10485760B/s quota.day=1000B" (socksgate explain); empty
// when there are none.
std::string describe_limits(const policy::Limits& l);

struct UserLimitEntry;
struct RuleLimitEntry;
class LimitRegistry;

// One direction of one session's relay.
class FlowLimiter {
 public:
  using Clock = TokenBucket::Clock;
  FlowLimiter(std::shared_ptr<UserLimitEntry> user, bool up, const policy::Limits& l);

  // True if this direction has a bandwidth limit (the relay then waits for tokens).
  bool throttles() const { return session_rate_ > 0 || user_rate_ > 0; }
  // Bytes that may move now: at most `want`, taken from the buckets. 0: none yet, and *wait
  // says how long until some may (bounded, so that the caller re-checks often).
  size_t acquire(size_t want, Clock::duration* wait);
  // Returns bytes acquire() granted that did not move.
  void give_back(size_t n);
  // Counts bytes that moved against the user's quotas. False: a quota of this session's rule
  // is used up, and the session must end.
  bool moved(size_t n);

 private:
  std::shared_ptr<UserLimitEntry> user_;
  bool up_;
  double session_rate_ = 0, user_rate_ = 0;
  TokenBucket session_;
  uint64_t quota_[3] = {0, 0, 0};  // day, week, month; 0 = none
  bool counts_ = false;            // bytes count towards the user's usage
};

// A session's place in the counters; gives it back when destroyed.
class LimitTicket {
 public:
  ~LimitTicket();
  LimitTicket(const LimitTicket&) = delete;
  LimitTicket& operator=(const LimitTicket&) = delete;
  // Nullptr when the direction has neither bandwidth limits nor quotas.
  FlowLimiter* up() { return up_.get(); }
  FlowLimiter* down() { return down_.get(); }

 private:
  friend class LimitRegistry;
  LimitTicket() = default;
  LimitRegistry* registry_ = nullptr;
  std::shared_ptr<UserLimitEntry> user_;
  std::shared_ptr<RuleLimitEntry> rule_;
  std::unique_ptr<FlowLimiter> up_, down_;
};

class LimitRegistry {
 public:
  LimitRegistry();
  ~LimitRegistry();

  // Admits a session of `user` (empty: anonymous, counted as one user) passed by `rule_id`
  // with `limits`. Nullptr and *why when a limit refuses it. A session whose limits are
  // empty gets a ticket too (it counts towards other sessions' per-user limits).
  std::unique_ptr<LimitTicket> admit(const std::string& user, const std::string& rule_id,
                                     const policy::Limits& limits, LimitRefusal* why);

  // Bytes the user used in the current period (tests, admin).
  uint64_t used(const std::string& user, int period /*0 day, 1 week, 2 month*/);
  size_t active(const std::string& user);

  // The state file (quota usage). load(): a missing file is an empty state; anything
  // unreadable or malformed throws std::runtime_error (the gateway refuses to start: starting
  // from zero would hand every user a fresh quota). save(): write to a temporary file, fsync,
  // rename over, fsync the directory; false and *error on failure.
  void load(const std::string& path);
  bool save(const std::string& path, std::string* error);
  // Whether usage changed since the last save.
  bool dirty() const { return dirty_.load(std::memory_order_relaxed); }

 private:
  friend class LimitTicket;
  friend class FlowLimiter;
  void release(LimitTicket& t);
  std::shared_ptr<UserLimitEntry> user_entry(const std::string& user);  // mu_ held

  std::mutex mu_;
  std::map<std::string, std::shared_ptr<UserLimitEntry>, std::less<>> users_;
  std::map<std::string, std::shared_ptr<RuleLimitEntry>, std::less<>> rules_;
  std::atomic<bool> dirty_{false};
};

}  // namespace socksgate::gateway
