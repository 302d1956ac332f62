#include "gateway/limits.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

namespace socksgate::gateway {
namespace {

using namespace std::chrono;
using json = nlohmann::json;

// A grant is at least this much (or the burst, or what was asked): fewer, larger syscalls.
constexpr double kMinChunk = 16 * 1024;
// Throttled pumps re-check at least this often (a reload, a closed session).
constexpr auto kMaxWait = milliseconds(200);
constexpr std::string_view kPeriodNames[3] = {"day", "week", "month"};

int64_t floor_div(int64_t a, int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }

}  // namespace

QuotaPeriods quota_periods(system_clock::time_point t) {
  auto d = std::chrono::floor<days>(t);
  year_month_day ymd{d};
  QuotaPeriods p;
  p.day = d.time_since_epoch().count();
  // 1970-01-01 was a Thursday: Monday-based weeks start 3 days before it.
  p.week = floor_div(p.day + 3, 7);
  p.month = static_cast<int64_t>(static_cast<int>(ymd.year())) * 12 +
            static_cast<unsigned>(ymd.month()) - 1;
  return p;
}

std::string period_start_text(int64_t d) {
  year_month_day ymd{sys_days{days{d}}};
  char buf[32];
  std::snprintf(buf, sizeof buf, "%04d-%02u-%02u", static_cast<int>(ymd.year()),
                static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()));
  return buf;
}

std::optional<int64_t> days_from_text(std::string_view s) {
  if (s.size() != 10 || s[4] != '-' || s[7] != '-') return std::nullopt;
  auto num = [&](size_t from, size_t len) -> std::optional<int> {
    int v = 0;
    for (size_t i = from; i < from + len; ++i) {
      if (s[i] < '0' || s[i] > '9') return std::nullopt;
      v = v * 10 + (s[i] - '0');
    }
    return v;
  };
  auto y = num(0, 4), m = num(5, 2), d = num(8, 2);
  if (!y || !m || !d) return std::nullopt;
  year_month_day ymd{year{*y}, month{static_cast<unsigned>(*m)}, day{static_cast<unsigned>(*d)}};
  if (!ymd.ok()) return std::nullopt;
  return sys_days{ymd}.time_since_epoch().count();
}

std::string_view limit_name(LimitRefusal r) {
  switch (r) {
    case LimitRefusal::kNone:
      return "";
    case LimitRefusal::kUserSessions:
      return "user_sessions";
    case LimitRefusal::kRuleSessions:
      return "rule_sessions";
    case LimitRefusal::kNewSessionsPerMinute:
      return "new_sessions_per_minute";
    case LimitRefusal::kQuotaDay:
      return "quota_day";
    case LimitRefusal::kQuotaWeek:
      return "quota_week";
    case LimitRefusal::kQuotaMonth:
      return "quota_month";
  }
  return "";
}

std::string describe_limits(const policy::Limits& l) {
  const std::pair<const char*, uint64_t> counts[] = {
      {"sessions", l.sessions},
      {"sessions_per_rule", l.sessions_per_rule},
      {"new_sessions_per_minute", l.new_sessions_per_minute}};
  const std::pair<const char*, uint64_t> rates[] = {{"bandwidth.session.up", l.session_up},
                                                    {"bandwidth.session.down", l.session_down},
                                                    {"bandwidth.user.up", l.user_up},
                                                    {"bandwidth.user.down", l.user_down}};
  const std::pair<const char*, uint64_t> bytes[] = {
      {"quota.day", l.quota_day}, {"quota.week", l.quota_week}, {"quota.month", l.quota_month}};
  std::string out;
  auto add = [&](const char* name, uint64_t v, const char* unit) {
    if (v == 0) return;
    if (!out.empty()) out += ' ';
    out += name;
    out += '=';
    out += std::to_string(v);
    out += unit;
  };
  for (const auto& [n, v] : counts) add(n, v, "");
  for (const auto& [n, v] : rates) add(n, v, "B/s");
  for (const auto& [n, v] : bytes) add(n, v, "B");
  return out;
}

struct UserLimitEntry {
  // Under the registry's mutex.
  uint64_t active = 0;
  double new_rate = 0;
  TokenBucket new_sessions;
  // Under `mu`.
  std::mutex mu;
  TokenBucket bandwidth[2];  // up, down
  int64_t period[3] = {0, 0, 0};
  uint64_t used[3] = {0, 0, 0};
  std::atomic<bool>* dirty = nullptr;

  // Starts a new period's count when the period changed (mu held).
  void roll(const QuotaPeriods& p) {
    const int64_t now[3] = {p.day, p.week, p.month};
    for (int i = 0; i < 3; ++i) {
      if (period[i] != now[i]) {
        period[i] = now[i];
        used[i] = 0;
      }
    }
  }
};

struct RuleLimitEntry {
  uint64_t active = 0;  // under the registry's mutex
};

FlowLimiter::FlowLimiter(std::shared_ptr<UserLimitEntry> user, bool up, const policy::Limits& l)
    : user_(std::move(user)), up_(up) {
  session_rate_ = static_cast<double>(up ? l.session_up : l.session_down);
  user_rate_ = static_cast<double>(up ? l.user_up : l.user_down);
  if (session_rate_ > 0) session_ = TokenBucket(session_rate_, session_rate_);
  quota_[0] = l.quota_day;
  quota_[1] = l.quota_week;
  quota_[2] = l.quota_month;
  counts_ = l.quota();
}

size_t FlowLimiter::acquire(size_t want, Clock::duration* wait) {
  *wait = Clock::duration::zero();
  if (!throttles() && !counts_) return want;
  auto now = Clock::now();
  double avail = static_cast<double>(want);
  double need = std::min(avail, kMinChunk);
  Clock::duration w{};
  if (session_rate_ > 0) {
    avail = std::min(avail, session_.available(now));
    need = std::min(need, session_.burst());
    w = session_.time_until(need, now);
  }
  size_t n = 0;
  if (user_rate_ > 0 || counts_) {
    std::lock_guard lk(user_->mu);
    if (counts_) {
      user_->roll(quota_periods(system_clock::now()));
      for (int i = 0; i < 3; ++i) {
        if (quota_[i] == 0) continue;
        if (user_->used[i] >= quota_[i]) return 0;  // used up: *wait stays zero
        avail = std::min(avail, static_cast<double>(quota_[i] - user_->used[i]));
        need = std::min(need, static_cast<double>(quota_[i] - user_->used[i]));
      }
    }
    if (user_rate_ > 0) {
      TokenBucket& b = user_->bandwidth[up_ ? 0 : 1];
      avail = std::min(avail, b.available(now));
      need = std::min(need, b.burst());
      if (avail >= need && avail >= 1) {
        n = static_cast<size_t>(avail);
        b.take(static_cast<double>(n));
      } else {
        w = std::max(w, b.time_until(need, now));
      }
    } else if (avail >= need && avail >= 1) {
      n = static_cast<size_t>(avail);
    }
  } else if (avail >= need && avail >= 1) {
    n = static_cast<size_t>(avail);
  }
  if (n > 0) {
    if (session_rate_ > 0) session_.take(static_cast<double>(n));
    return n;
  }
  *wait = std::clamp<Clock::duration>(w, milliseconds(1), kMaxWait);
  return 0;
}

void FlowLimiter::give_back(size_t n) {
  if (n == 0) return;
  if (session_rate_ > 0) session_.give_back(static_cast<double>(n));
  if (user_rate_ > 0) {
    std::lock_guard lk(user_->mu);
    user_->bandwidth[up_ ? 0 : 1].give_back(static_cast<double>(n));
  }
}

bool FlowLimiter::moved(size_t n) {
  if (!counts_ || n == 0) return true;
  std::lock_guard lk(user_->mu);
  user_->roll(quota_periods(system_clock::now()));
  bool ok = true;
  for (int i = 0; i < 3; ++i) {
    user_->used[i] += n;
    if (quota_[i] != 0 && user_->used[i] >= quota_[i]) ok = false;
  }
  user_->dirty->store(true, std::memory_order_relaxed);
  return ok;
}

LimitTicket::~LimitTicket() {
  if (registry_ != nullptr) registry_->release(*this);
}

LimitRegistry::LimitRegistry() = default;
LimitRegistry::~LimitRegistry() = default;

std::shared_ptr<UserLimitEntry> LimitRegistry::user_entry(const std::string& user) {
  auto it = users_.find(user);
  if (it != users_.end()) return it->second;
  auto e = std::make_shared<UserLimitEntry>();
  e->dirty = &dirty_;
  users_.emplace(user, e);
  return e;
}

std::unique_ptr<LimitTicket> LimitRegistry::admit(const std::string& user,
                                                  const std::string& rule_id,
                                                  const policy::Limits& l, LimitRefusal* why) {
  *why = LimitRefusal::kNone;
  std::lock_guard lk(mu_);
  auto u = user_entry(user);
  std::shared_ptr<RuleLimitEntry> r;
  if (auto it = rules_.find(rule_id); it != rules_.end()) {
    r = it->second;
  } else {
    r = std::make_shared<RuleLimitEntry>();
    rules_.emplace(rule_id, r);
  }
  if (l.sessions != 0 && u->active >= l.sessions) {
    *why = LimitRefusal::kUserSessions;
    return nullptr;
  }
  if (l.sessions_per_rule != 0 && r->active >= l.sessions_per_rule) {
    *why = LimitRefusal::kRuleSessions;
    return nullptr;
  }
  if (l.quota() || l.user_up != 0 || l.user_down != 0) {
    std::lock_guard ulk(u->mu);
    if (l.quota()) {
      u->roll(quota_periods(system_clock::now()));
      const uint64_t q[3] = {l.quota_day, l.quota_week, l.quota_month};
      constexpr LimitRefusal kWhich[3] = {LimitRefusal::kQuotaDay, LimitRefusal::kQuotaWeek,
                                          LimitRefusal::kQuotaMonth};
      for (int i = 0; i < 3; ++i) {
        if (q[i] != 0 && u->used[i] >= q[i]) {
          *why = kWhich[i];
          return nullptr;
        }
      }
    }
    // The user's buckets run at the rate of the rule of the user's latest session.
    const uint64_t rates[2] = {l.user_up, l.user_down};
    for (int i = 0; i < 2; ++i) {
      double rate = static_cast<double>(rates[i]);
      if (rate == 0 || u->bandwidth[i].rate() == rate) continue;
      if (u->bandwidth[i].rate() == 0) {
        u->bandwidth[i] = TokenBucket(rate, rate);
      } else {
        u->bandwidth[i].reconfigure(rate, rate);
      }
    }
  }
  // Last: only an admitted session uses up one of the minute's new sessions.
  if (l.new_sessions_per_minute != 0) {
    double n = static_cast<double>(l.new_sessions_per_minute);
    double rate = n / 60.0;
    if (u->new_rate == 0) {
      u->new_sessions = TokenBucket(rate, n);
    } else if (u->new_rate != rate) {
      u->new_sessions.reconfigure(rate, n);
    }
    u->new_rate = rate;
    if (!u->new_sessions.try_take(1)) {
      *why = LimitRefusal::kNewSessionsPerMinute;
      return nullptr;
    }
  }
  ++u->active;
  ++r->active;
  std::unique_ptr<LimitTicket> t(new LimitTicket());
  t->registry_ = this;
  t->user_ = u;
  t->rule_ = r;
  if (l.bandwidth() || l.quota()) {
    if (l.session_up != 0 || l.user_up != 0 || l.quota()) {
      t->up_ = std::make_unique<FlowLimiter>(u, true, l);
    }
    if (l.session_down != 0 || l.user_down != 0 || l.quota()) {
      t->down_ = std::make_unique<FlowLimiter>(u, false, l);
    }
  }
  return t;
}

void LimitRegistry::release(LimitTicket& t) {
  std::lock_guard lk(mu_);
  if (t.user_ && t.user_->active > 0) --t.user_->active;
  if (t.rule_ && t.rule_->active > 0) --t.rule_->active;
}

uint64_t LimitRegistry::used(const std::string& user, int period) {
  std::lock_guard lk(mu_);
  auto it = users_.find(user);
  if (it == users_.end() || period < 0 || period > 2) return 0;
  std::lock_guard ulk(it->second->mu);
  it->second->roll(quota_periods(system_clock::now()));
  return it->second->used[period];
}

size_t LimitRegistry::active(const std::string& user) {
  std::lock_guard lk(mu_);
  auto it = users_.find(user);
  return it == users_.end() ? 0 : it->second->active;
}

// {"version": 1, "users": {"alice": {"day": {"since": "2026-11-27", "bytes": 123},
//                                     "week": {"since": "2026-11-23", ...}, "month": ...}}}
void LimitRegistry::load(const std::string& path) {
  auto fail = [&](const std::string& why) {
    throw std::runtime_error(
        "limits.state_file " + path + ": " + why +
        "; the gateway does not start on a damaged quota state (starting from zero would give "
        "every user a fresh quota): restore the file, or move it away to start from zero");
  };
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    if (errno == ENOENT) return;  // first start: nothing used yet
    fail(std::string("cannot read it: ") + std::strerror(errno));
  }
  std::stringstream ss;
  ss << in.rdbuf();
  json doc = json::parse(ss.str(), nullptr, false);
  if (doc.is_discarded()) fail("not valid JSON");
  if (!doc.is_object() || doc.value("version", json()) != json(1) || !doc.contains("users") ||
      !doc["users"].is_object()) {
    fail("not a socksgate limits state (expected {\"version\": 1, \"users\": {...}})");
  }
  QuotaPeriods now = quota_periods(system_clock::now());
  std::lock_guard lk(mu_);
  for (const auto& [user, periods] : doc["users"].items()) {
    if (!periods.is_object()) fail("user " + json(user).dump() + ": expected an object");
    auto u = user_entry(user);
    std::lock_guard ulk(u->mu);
    u->roll(now);
    for (int i = 0; i < 3; ++i) {
      auto it = periods.find(kPeriodNames[i]);
      if (it == periods.end()) continue;
      std::string where = "user " + json(user).dump() + ", " + std::string(kPeriodNames[i]);
      if (!it->is_object() || !(*it)["bytes"].is_number_unsigned() || !(*it)["since"].is_string()) {
        fail(where + ": expected {\"since\": \"YYYY-MM-DD\", \"bytes\": N}");
      }
      auto d = days_from_text((*it)["since"].get<std::string>());
      if (!d) fail(where + ": bad date");
      int64_t period = i == 0   ? *d
                       : i == 1 ? floor_div(*d + 3, 7)
                                : quota_periods(system_clock::time_point(days{*d})).month;
      // Usage of a period that is over does not count.
      if (period == u->period[i]) u->used[i] = (*it)["bytes"].get<uint64_t>();
    }
  }
}

bool LimitRegistry::save(const std::string& path, std::string* error) {
  dirty_.store(false, std::memory_order_relaxed);
  json users = json::object();
  {
    QuotaPeriods now = quota_periods(system_clock::now());
    std::lock_guard lk(mu_);
    for (const auto& [name, u] : users_) {
      std::lock_guard ulk(u->mu);
      u->roll(now);
      json periods = json::object();
      const int64_t start[3] = {u->period[0], u->period[1] * 7 - 3,
                                days_from_text(period_start_text(u->period[0]).substr(0, 8) + "01")
                                    .value_or(u->period[0])};
      for (int i = 0; i < 3; ++i) {
        if (u->used[i] == 0) continue;
        periods[std::string(kPeriodNames[i])] = {{"since", period_start_text(start[i])},
                                                 {"bytes", u->used[i]}};
      }
      if (!periods.empty()) users[name] = std::move(periods);
    }
  }
  json doc = {{"version", 1}, {"users", std::move(users)}};
  std::string text = doc.dump(1) + "\n";
  std::string tmp = path + ".tmp";
  auto fail = [&](const std::string& what) {
    *error = what + ": " + std::strerror(errno);
    dirty_.store(true, std::memory_order_relaxed);
    return false;
  };
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return fail("cannot create " + tmp);
  size_t off = 0;
  while (off < text.size()) {
    ssize_t n = ::write(fd, text.data() + off, text.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ::close(fd);
      return fail("cannot write " + tmp);
    }
    off += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    ::close(fd);
    return fail("cannot fsync " + tmp);
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) return fail("cannot rename " + tmp);
  std::string dir = std::filesystem::path(path).parent_path().string();
  if (dir.empty()) dir = ".";
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return fail("cannot open " + dir);
  int rc = ::fsync(dfd);
  ::close(dfd);
  if (rc != 0) return fail("cannot fsync " + dir);
  return true;
}

}  // namespace socksgate::gateway
