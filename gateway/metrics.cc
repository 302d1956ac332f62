#include "gateway/metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>

#include "gateway/version.h"

namespace socksgate::gateway {
namespace {

constexpr size_t kMaxSeries = 4096;  // per family: far above what a configuration produces

// Length of the valid UTF-8 sequence at s[i], or 0 (no overlongs, surrogates, > U+10FFFF).
size_t utf8_length(std::string_view s, size_t i) {
  auto c = static_cast<uint8_t>(s[i]);
  if (c < 0x80) return 1;
  size_t n = c >= 0xC2 && c <= 0xDF   ? 2
             : c >= 0xE0 && c <= 0xEF ? 3
             : c >= 0xF0 && c <= 0xF4 ? 4
                                      : 0;
  if (n == 0 || i + n > s.size()) return 0;
  uint32_t cp = c & (n == 2 ? 0x1F : n == 3 ? 0x0F : 0x07);
  for (size_t k = 1; k < n; ++k) {
    auto b = static_cast<uint8_t>(s[i + k]);
    if ((b & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (b & 0x3F);
  }
  if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF))) return 0;
  if (cp >= 0xD800 && cp <= 0xDFFF) return 0;
  return n;
}

// Values that come from code (methods, reasons, limit names) are tokens; anything else (a
// future authenticator's free text) is folded into "other" so it cannot grow the label set.
std::string_view token_or_other(std::string_view v) {
  if (v.empty() || v.size() > 64) return "other";
  for (char c : v) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == ':' ||
              c == '-' || c == '.';
    if (!ok) return "other";
  }
  return v;
}
std::string_view or_unknown(std::string_view v) {
  return v.empty() ? "unknown" : token_or_other(v);
}

void append_u64(std::string* out, uint64_t v) {
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  out->append(buf, r.ptr);
}

void append_double(std::string* out, double v) {
  if (std::isinf(v)) {
    out->append(v > 0 ? "+Inf" : "-Inf");
    return;
  }
  char buf[32];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  out->append(buf, r.ptr);
}

void header(std::string* out, const std::string& name, const std::string& help,
            std::string_view type) {
  out->append("# HELP ").append(name).push_back(' ');
  out->append(escape_help(help)).push_back('\n');
  out->append("# TYPE ").append(name).push_back(' ');
  out->append(type).push_back('\n');
}

}  // namespace

std::string escape_label_value(std::string_view v) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(v.size());
  for (size_t i = 0; i < v.size();) {
    size_t n = utf8_length(v, i);
    if (n == 0) {
      auto c = static_cast<uint8_t>(v[i]);
      out.append("\\\\x");
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
      ++i;
      continue;
    }
    char c = v[i];
    if (c == '\\') {
      out.append("\\\\");
    } else if (c == '"') {
      out.append("\\\"");
    } else if (c == '\n') {
      out.append("\\n");
    } else {
      out.append(v.substr(i, n));
    }
    i += n;
  }
  return out;
}

std::string escape_help(std::string_view v) {
  std::string out;
  for (char c : v) {
    if (c == '\\') {
      out.append("\\\\");
    } else if (c == '\n') {
      out.append("\\n");
    } else {
      out.push_back(c);
    }
  }
  return out;
}

// --- Family -----------------------------------------------------------------------------------

Family::Family(std::string name, std::string help, MetricType type, std::vector<std::string> labels,
               size_t max_series, std::atomic<uint64_t>* dropped)
    : name_(std::move(name)),
      help_(std::move(help)),
      type_(type),
      labels_(std::move(labels)),
      max_series_(max_series),
      dropped_(dropped) {}

std::shared_ptr<Family::Cell> Family::cell(std::span<const std::string_view> values) {
  if (values.size() != labels_.size()) return nullptr;
  std::vector<std::string> key(values.begin(), values.end());
  std::lock_guard lock(mu_);
  auto it = series_.find(key);
  if (it != series_.end()) return it->second;
  if (series_.size() >= max_series_) {
    if (dropped_) dropped_->fetch_add(1, std::memory_order_relaxed);
    return nullptr;
  }
  auto c = std::make_shared<Cell>(0);
  series_.emplace(std::move(key), c);
  return c;
}

void Family::add(std::initializer_list<std::string_view> values, uint64_t n) {
  if (auto c = cell(values)) c->fetch_add(n, std::memory_order_relaxed);
}

void Family::set(std::initializer_list<std::string_view> values, int64_t v) {
  if (auto c = cell(values)) c->store(static_cast<uint64_t>(v), std::memory_order_relaxed);
}

void Family::zero() {
  std::lock_guard lock(mu_);
  for (auto& [k, c] : series_) c->store(0, std::memory_order_relaxed);
}

void Family::retain(size_t label, const std::set<std::string, std::less<>>& keep) {
  if (label >= labels_.size()) return;
  std::lock_guard lock(mu_);
  std::erase_if(series_, [&](const auto& kv) { return keep.count(kv.first[label]) == 0; });
}

uint64_t Family::value(std::initializer_list<std::string_view> values) const {
  std::vector<std::string> key(values.begin(), values.end());
  std::lock_guard lock(mu_);
  auto it = series_.find(key);
  return it == series_.end() ? 0 : it->second->load(std::memory_order_relaxed);
}

size_t Family::series() const {
  std::lock_guard lock(mu_);
  return series_.size();
}

void Family::render(std::string* out) const {
  header(out, name_, help_, type_ == MetricType::kCounter ? "counter" : "gauge");
  std::lock_guard lock(mu_);
  for (const auto& [values, c] : series_) {
    out->append(name_);
    if (!labels_.empty()) {
      out->push_back('{');
      for (size_t i = 0; i < labels_.size(); ++i) {
        if (i != 0) out->push_back(',');
        out->append(labels_[i]).append("=\"");
        out->append(escape_label_value(values[i])).push_back('"');
      }
      out->push_back('}');
    }
    out->push_back(' ');
    uint64_t v = c->load(std::memory_order_relaxed);
    if (type_ == MetricType::kGauge && static_cast<int64_t>(v) < 0) {
      out->push_back('-');
      append_u64(out, static_cast<uint64_t>(-static_cast<int64_t>(v)));
    } else {
      append_u64(out, v);
    }
    out->push_back('\n');
  }
}

// --- Histogram --------------------------------------------------------------------------------

Histogram::Histogram(std::string name, std::string help, std::vector<double> bounds)
    : name_(std::move(name)),
      help_(std::move(help)),
      bounds_(std::move(bounds)),
      buckets_(new std::atomic<uint64_t>[bounds_.size() + 1]) {
  for (size_t i = 0; i <= bounds_.size(); ++i) buckets_[i].store(0);
}

void Histogram::observe(double seconds) {
  if (!(seconds >= 0)) seconds = 0;  // NaN and negative clock steps count as 0
  size_t i = std::lower_bound(bounds_.begin(), bounds_.end(), seconds) - bounds_.begin();
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  sum_ns_.fetch_add(static_cast<uint64_t>(std::llround(std::min(seconds, 1e9) * 1e9)),
                    std::memory_order_relaxed);
}

uint64_t Histogram::count() const {
  uint64_t n = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) n += buckets_[i].load(std::memory_order_relaxed);
  return n;
}

void Histogram::render(std::string* out) const {
  header(out, name_, help_, "histogram");
  uint64_t cumulative = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    cumulative += buckets_[i].load(std::memory_order_relaxed);
    out->append(name_).append("_bucket{le=\"");
    append_double(out, i < bounds_.size() ? bounds_[i] : INFINITY);
    out->append("\"} ");
    append_u64(out, cumulative);
    out->push_back('\n');
  }
  out->append(name_).append("_sum ");
  append_double(out, static_cast<double>(sum_ns_.load(std::memory_order_relaxed)) / 1e9);
  out->push_back('\n');
  out->append(name_).append("_count ");
  append_u64(out, cumulative);  // = the +Inf bucket, whatever raced with the rendering
  out->push_back('\n');
}

// --- Metrics ----------------------------------------------------------------------------------

Metrics::Metrics()
    : users_(std::make_shared<const std::set<std::string, std::less<>>>()),
      rules_(std::make_shared<const std::set<std::string, std::less<>>>()),
      connections_("socksgate_connections_total", "Client connections accepted, by listener.",
                   MetricType::kCounter, {"listener"}, kMaxSeries, &dropped_),
      sessions_total_("socksgate_sessions_total",
                      "Sessions that ended (one per session_end audit record), by listener, the "
                      "method selected and the command requested (\"unknown\" when the session "
                      "ended before).",
                      MetricType::kCounter, {"listener", "method", "command"}, kMaxSeries,
                      &dropped_),
      sessions_active_("socksgate_sessions_active",
                       "Sessions open now, by listener, method and command (\"unknown\" while "
                       "still negotiating).",
                       MetricType::kGauge, {"listener", "method", "command"}, kMaxSeries,
                       &dropped_),
      closed_("socksgate_sessions_closed_total", "Sessions that ended, by audit close_reason.",
              MetricType::kCounter, {"reason"}, kMaxSeries, &dropped_),
      bytes_("socksgate_bytes_total",
             "Bytes relayed, by listener and direction (up: client to target, down: target to "
             "client), counted as they are written.",
             MetricType::kCounter, {"listener", "direction"}, kMaxSeries, &dropped_),
      auth_successes_("socksgate_auth_successes_total", "Successful authentications, by method.",
                      MetricType::kCounter, {"method"}, kMaxSeries, &dropped_),
      auth_failures_("socksgate_auth_failures_total",
                     "Failed authentications (one per auth_failure audit record), by method and "
                     "reason.",
                     MetricType::kCounter, {"method", "reason"}, kMaxSeries, &dropped_),
      decisions_("socksgate_policy_decisions_total",
                 "Sessions decided by a policy rule (client rule or rule), by rule id and "
                 "decision; the rule and decision of the session_end record.",
                 MetricType::kCounter, {"rule", "decision"}, kMaxSeries, &dropped_),
      limit_hits_("socksgate_limit_hits_total",
                  "Requests refused by a limit, by limit (the audit reason without \"limit:\").",
                  MetricType::kCounter, {"limit"}, kMaxSeries, &dropped_),
      reloads_("socksgate_reloads_total", "Configuration reloads that succeeded.",
               MetricType::kCounter, {}, 1, &dropped_),
      reload_failures_("socksgate_reload_failures_total",
                       "Configuration reloads that failed (the previous configuration stayed).",
                       MetricType::kCounter, {}, 1, &dropped_),
      audit_failures_("socksgate_audit_write_failures_total",
                      "Audit records that could not be written.", MetricType::kCounter, {}, 1,
                      &dropped_),
      user_sessions_total_("socksgate_user_sessions_total",
                           "Sessions that ended, for the users named in admin.metrics_users.",
                           MetricType::kCounter, {"user"}, kMaxSeries, &dropped_),
      user_sessions_active_("socksgate_user_sessions_active",
                            "Sessions open now, for the users named in admin.metrics_users.",
                            MetricType::kGauge, {"user"}, kMaxSeries, &dropped_),
      user_bytes_("socksgate_user_bytes_total",
                  "Bytes relayed, for the users named in admin.metrics_users, by direction.",
                  MetricType::kCounter, {"user", "direction"}, kMaxSeries, &dropped_),
      user_auth_failures_("socksgate_user_auth_failures_total",
                          "Failed authentications claiming one of the users named in "
                          "admin.metrics_users.",
                          MetricType::kCounter, {"user"}, kMaxSeries, &dropped_),
      user_limit_hits_("socksgate_user_limit_hits_total",
                       "Requests refused by a limit, for the users named in admin.metrics_users.",
                       MetricType::kCounter, {"user", "limit"}, kMaxSeries, &dropped_),
      audit_write_("socksgate_audit_write_seconds", "Time to write one audit record.",
                   {0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                    0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5}) {
  reloads_.add({}, 0);
  reload_failures_.add({}, 0);
  audit_failures_.add({}, 0);
  for (auto l : {"sessions_total", "sessions_per_source", "sessions_per_user", "binds_per_user"}) {
    limit_hits_.add({l}, 0);
  }
}

void Metrics::configure(const std::vector<std::string>& listeners,
                        const std::vector<std::string>& rules,
                        const std::vector<std::string>& users) {
  std::set<std::string, std::less<>> l(listeners.begin(), listeners.end());
  std::set<std::string, std::less<>> r(rules.begin(), rules.end());
  // Implicit decisions (policy/policy.h): no rule matched, or the policy has no client rules.
  r.insert("default-deny");
  r.insert("no-client-rules");
  std::set<std::string, std::less<>> u(users.begin(), users.end());
  connections_.retain(0, l);
  sessions_total_.retain(0, l);
  sessions_active_.retain(0, l);
  bytes_.retain(0, l);
  decisions_.retain(0, r);
  for (Family* f : {&user_sessions_total_, &user_sessions_active_, &user_bytes_,
                    &user_auth_failures_, &user_limit_hits_}) {
    f->retain(0, u);
  }
  for (const auto& name : l) {
    connections_.add({name}, 0);
    bytes_.add({name, "up"}, 0);
    bytes_.add({name, "down"}, 0);
  }
  for (const auto& name : u) {
    user_sessions_total_.add({name}, 0);
    user_auth_failures_.add({name}, 0);
    user_bytes_.add({name, "up"}, 0);
    user_bytes_.add({name, "down"}, 0);
  }
  users_.store(std::make_shared<const std::set<std::string, std::less<>>>(std::move(u)));
  rules_.store(std::make_shared<const std::set<std::string, std::less<>>>(std::move(r)));
}

bool Metrics::user_listed(std::string_view user) const {
  if (user.empty()) return false;
  auto u = users_.load();
  return u->find(user) != u->end();
}

void Metrics::connection_accepted(std::string_view listener) { connections_.add({listener}); }

void Metrics::auth_succeeded(std::string_view method, std::string_view /*user*/) {
  auth_successes_.add({or_unknown(method)});
}

void Metrics::auth_failed(std::string_view method, std::string_view reason,
                          std::string_view claimed_user) {
  auth_failures_.add({or_unknown(method), token_or_other(reason)});
  if (user_listed(claimed_user)) user_auth_failures_.add({claimed_user});
}

void Metrics::limit_hit(std::string_view limit, std::string_view user) {
  limit_hits_.add({token_or_other(limit)});
  if (user_listed(user)) user_limit_hits_.add({user, token_or_other(limit)});
}

void Metrics::session_ended(const SessionSummary& s) {
  sessions_total_.add({s.listener, or_unknown(s.method), or_unknown(s.command)});
  if (!s.rule.empty()) {
    // Rule ids come from the configuration; one from a snapshot that was since replaced is
    // still counted until the next reload prunes it.
    decisions_.add({s.rule, s.decision.empty() ? "unknown" : s.decision});
  }
  if (user_listed(s.user)) user_sessions_total_.add({s.user});
}

ByteTap Metrics::tap(std::string_view listener, std::string_view user, bool up,
                     std::shared_ptr<std::atomic<uint64_t>> live) {
  std::string_view dir = up ? "up" : "down";
  ByteTap t;
  t.cells[0] = std::move(live);
  t.cells[1] = bytes_.cell({listener, dir});
  if (user_listed(user)) t.cells[2] = user_bytes_.cell({user, dir});
  return t;
}

void Metrics::reload_succeeded() { reloads_.add({}); }
void Metrics::reload_failed() { reload_failures_.add({}); }
void Metrics::observe_audit_write(double seconds) { audit_write_.observe(seconds); }
void Metrics::audit_write_failed() { audit_failures_.add({}); }

std::string Metrics::render(const Scrape& s) const {
  // Gauges derived from the live sessions: every combination seen so far is shown (0 when no
  // session has it now), so a series does not vanish between scrapes.
  sessions_active_.zero();
  user_sessions_active_.zero();
  for (const auto& l : s.live) {
    if (auto c = sessions_active_.cell({l.listener, or_unknown(l.method), or_unknown(l.command)}))
      c->fetch_add(1, std::memory_order_relaxed);
    if (user_listed(l.user)) {
      if (auto c = user_sessions_active_.cell({l.user})) c->fetch_add(1, std::memory_order_relaxed);
    }
  }
  for (const auto& name : *users_.load()) user_sessions_active_.add({name}, 0);
  for (const auto& [reason, n] : s.closed_by_reason) closed_.set({reason}, static_cast<int64_t>(n));

  std::string out;
  out.reserve(16384);
  header(&out, "socksgate_build_info", "socksgate version (value 1).", "gauge");
  out.append("socksgate_build_info{version=\"")
      .append(escape_label_value(kVersion))
      .append("\"} 1\n");
  header(&out, "socksgate_start_time_seconds", "When the process started (Unix time).", "gauge");
  out.append("socksgate_start_time_seconds ");
  append_u64(
      &out,
      static_cast<uint64_t>(
          std::chrono::duration_cast<std::chrono::seconds>(start_.time_since_epoch()).count()));
  out.push_back('\n');
  header(&out, "socksgate_draining", "1 while the gateway drains (SIGTERM), else 0.", "gauge");
  out.append(s.draining ? "socksgate_draining 1\n" : "socksgate_draining 0\n");
  for (const Family* f : {&connections_, &sessions_active_, &sessions_total_, &closed_, &bytes_,
                          &auth_successes_, &auth_failures_, &decisions_, &limit_hits_, &reloads_,
                          &reload_failures_, &audit_failures_}) {
    f->render(&out);
  }
  audit_write_.render(&out);
  for (const Family* f : {&user_sessions_active_, &user_sessions_total_, &user_bytes_,
                          &user_auth_failures_, &user_limit_hits_}) {
    f->render(&out);
  }
  header(&out, "socksgate_metrics_series_dropped_total",
         "Events not counted because a metric family was at its series cap.", "counter");
  out.append("socksgate_metrics_series_dropped_total ");
  append_u64(&out, dropped_.load(std::memory_order_relaxed));
  out.push_back('\n');
  return out;
}

}  // namespace socksgate::gateway
