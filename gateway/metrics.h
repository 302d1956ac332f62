#pragma once
// Metrics in the Prometheus text exposition format (version 0.0.4), served by the admin
// listener (gateway/admin.h). Reference for operators: docs/metrics.md.
//
// Counting is lock-free: every series is a relaxed std::atomic<uint64_t>. Finding a series by
// its label values takes a family's mutex (a few times per session, never per relayed byte:
// the relay adds to cells it was handed, see ByteTap).
//
// Cardinality is bounded by construction: label values come from the configuration (listener
// names, rule ids, the users named in admin.metrics_users) or from fixed sets in the code
// (methods, commands, close reasons, auth failure reasons, limit names), never from a client
// (host names, claimed user names). Each family also has a hard cap on its series; an event
// that would need a series beyond it is counted in socksgate_metrics_series_dropped_total.
//
// Thread-safety: every member function may be called from any thread.

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "gateway/shared_slot.h"

namespace socksgate::gateway {

// Escapes a label value for the text format: `\` -> `\\`, `"` -> `\"`, newline -> `\n`; bytes
// that are not valid UTF-8 become the text `\xNN` (so its backslash is escaped too).
std::string escape_label_value(std::string_view v);
// Escapes HELP text: `\` -> `\\`, newline -> `\n`.
std::string escape_help(std::string_view v);

enum class MetricType { kCounter, kGauge };

// One metric name with fixed label names; series are created on first use.
class Family {
 public:
  using Cell = std::atomic<uint64_t>;

  Family(std::string name, std::string help, MetricType type, std::vector<std::string> labels,
         size_t max_series, std::atomic<uint64_t>* dropped);

  // The series for `values` (one per label name), created at 0 if new. Null when the family
  // is at its series cap (the drop is counted) or the number of values is wrong. The cell
  // stays valid for as long as the caller holds it, even if retain() drops the series.
  std::shared_ptr<Cell> cell(std::span<const std::string_view> values);
  std::shared_ptr<Cell> cell(std::initializer_list<std::string_view> values) {
    return cell(std::span<const std::string_view>(values.begin(), values.size()));
  }
  void add(std::initializer_list<std::string_view> values, uint64_t n = 1);
  // Gauges: the value to show for `values` (replaces what was there).
  void set(std::initializer_list<std::string_view> values, int64_t v);
  // Sets every existing series to 0 (for gauges recomputed at each scrape).
  void zero();
  // Drops every series whose label number `label` is not in `keep` (label sets that came from
  // a configuration that was replaced).
  void retain(size_t label, const std::set<std::string, std::less<>>& keep);
  // The value of one series (0 if absent); for tests and the close-user reply.
  uint64_t value(std::initializer_list<std::string_view> values) const;
  size_t series() const;

  void render(std::string* out) const;
  const std::string& name() const { return name_; }

 private:
  std::string name_;
  std::string help_;
  MetricType type_;
  std::vector<std::string> labels_;
  size_t max_series_;
  std::atomic<uint64_t>* dropped_;
  mutable std::mutex mu_;
  std::map<std::vector<std::string>, std::shared_ptr<Cell>> series_;  // GUARDED_BY(mu_)
};

// A histogram with fixed buckets (seconds). Observations are lock-free.
class Histogram {
 public:
  Histogram(std::string name, std::string help, std::vector<double> bounds);
  void observe(double seconds);
  uint64_t count() const;
  void render(std::string* out) const;

 private:
  std::string name_;
  std::string help_;
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> buckets_;  // non-cumulative; [bounds_.size()] = +Inf
  std::atomic<uint64_t> sum_ns_{0};
};

// Where the relay adds the bytes it moves, in one direction: the session's live count (for
// /sessions), its listener's total and (for users named in admin.metrics_users) the user's.
// Any pointer may be null. Relaxed atomics; the relay's own exact count stays in RelayResult.
struct ByteTap {
  std::array<std::shared_ptr<std::atomic<uint64_t>>, 3> cells;
  void add(uint64_t n) const {
    for (const auto& c : cells) {
      if (c) c->fetch_add(n, std::memory_order_relaxed);
    }
  }
};

// What a session was, for the counters updated when it ends (one per session_end record).
struct SessionSummary {
  std::string_view listener;
  std::string_view method;    // "" = none was selected
  std::string_view command;   // "" = no request was read
  std::string_view user;      // authenticated user, "" if none
  std::string_view rule;      // deciding rule id, "" if no decision was made
  std::string_view decision;  // "pass" | "block" | ""
  std::string_view close_reason;
};

// A live session as the admin listener sees it (from the session registry).
struct LiveSessionLabels {
  std::string listener, method, command, user;
};

// All of socksgate's metrics. One per server (ServerState::metrics).
class Metrics {
 public:
  Metrics();

  // Label sets that come from the configuration, applied at start and on every reload:
  // series of rules, listeners and users no longer configured are dropped.
  void configure(const std::vector<std::string>& listeners, const std::vector<std::string>& rules,
                 const std::vector<std::string>& users);
  // True if `user` gets per-user series (is named in admin.metrics_users).
  bool user_listed(std::string_view user) const;

  void connection_accepted(std::string_view listener);
  void auth_succeeded(std::string_view method, std::string_view user);
  // `claimed_user` comes from the client: it is only ever compared with configured names.
  void auth_failed(std::string_view method, std::string_view reason, std::string_view claimed_user);
  // `limit`: the audit reason without its "limit:" prefix, e.g. "sessions_per_user".
  void limit_hit(std::string_view limit, std::string_view user = {});
  void session_ended(const SessionSummary& s);
  // The taps for a session's relay (see ByteTap): `live_up`/`live_down` are the session's own.
  ByteTap tap(std::string_view listener, std::string_view user, bool up,
              std::shared_ptr<std::atomic<uint64_t>> live);

  void reload_succeeded();
  void reload_failed();
  // The audit log reports each write (latency) and each failed write.
  void observe_audit_write(double seconds);
  void audit_write_failed();

  // Values read at scrape time by the caller (admin listener).
  struct Scrape {
    std::vector<LiveSessionLabels> live;
    std::vector<std::pair<std::string, uint64_t>> closed_by_reason;
    bool draining = false;
  };
  std::string render(const Scrape& s) const;

  // For tests.
  const Family& sessions_total() const { return sessions_total_; }
  const Family& auth_failures() const { return auth_failures_; }
  const Family& decisions() const { return decisions_; }
  const Family& limit_hits() const { return limit_hits_; }
  const Family& bytes() const { return bytes_; }
  const Histogram& audit_write_seconds() const { return audit_write_; }

 private:
  std::atomic<uint64_t> dropped_{0};
  std::chrono::system_clock::time_point start_ = std::chrono::system_clock::now();
  SharedSlot<const std::set<std::string, std::less<>>> users_;
  SharedSlot<const std::set<std::string, std::less<>>> rules_;

  mutable Family connections_;
  mutable Family sessions_total_;
  mutable Family sessions_active_;  // recomputed from the registry at each scrape
  mutable Family closed_;           // copied from CloseCounters at each scrape
  mutable Family bytes_;
  mutable Family auth_successes_;
  mutable Family auth_failures_;
  mutable Family decisions_;
  mutable Family limit_hits_;
  mutable Family reloads_;
  mutable Family reload_failures_;
  mutable Family audit_failures_;
  mutable Family user_sessions_total_;
  mutable Family user_sessions_active_;
  mutable Family user_bytes_;
  mutable Family user_auth_failures_;
  mutable Family user_limit_hits_;
  Histogram audit_write_;
};

}  // namespace socksgate::gateway
