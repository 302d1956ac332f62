// Property test: the engine (load_policy_text + Policy::decide) against a small reference
// evaluator written here from docs/policy.md, on random policies and 10,000 random requests.
// The reference shares no code with policy/ beyond the public request types: its own CIDR,
// host-pattern, protected-range and time-window logic (fixed-offset zones only, so that the
// reference can convert times without a tz library).
#include <gtest/gtest.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "policy/policy.h"

namespace socksgate::policy {
namespace {

using json = nlohmann::json;
constexpr uint32_t kSeed = 20261127;
constexpr int kPolicies = 200;
constexpr int kRequestsPerPolicy = 50;  // 10,000 requests in all

// ---- the reference model -------------------------------------------------------------------

uint32_t v4(const std::string& s) {
  unsigned a, b, c, d;
  std::sscanf(s.c_str(), "%u.%u.%u.%u", &a, &b, &c, &d);
  return (a << 24) | (b << 16) | (c << 8) | d;
}

struct RefCidr {
  uint32_t base;
  int len;
  bool contains(uint32_t a) const {
    uint32_t mask = len == 0 ? 0 : ~uint32_t{0} << (32 - len);
    return (a & mask) == base;
  }
  std::string text() const {
    return std::to_string(base >> 24) + "." + std::to_string((base >> 16) & 255) + "." +
           std::to_string((base >> 8) & 255) + "." + std::to_string(base & 255) + "/" +
           std::to_string(len);
  }
};

bool ref_protected(uint32_t a) {
  uint8_t b0 = a >> 24, b1 = (a >> 16) & 255;
  return b0 == 0 || b0 == 127 || b0 == 10 || (b0 == 169 && b1 == 254) || (b0 & 0xf0) == 224 ||
         a == 0xffffffffu || (b0 == 172 && (b1 & 0xf0) == 16) || (b0 == 192 && b1 == 168) ||
         (b0 == 100 && (b1 & 0xc0) == 64);
}

struct RefHost {
  std::string text;  // "a.example", "*.example" or "*"
  bool exact() const { return text.find('*') == std::string::npos; }
  bool matches(const std::string& name) const {
    if (text == "*") return true;
    if (text.rfind("*.", 0) == 0) {
      std::string suffix = text.substr(1);  // ".example"
      return name.size() > suffix.size() &&
             name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
    }
    return name == text;
  }
};

struct RefWindow {
  std::vector<int> days;     // 0 = Monday; empty = every day
  int start = -1, end = -1;  // minutes; -1 = whole day
  std::string tz;            // "" = default (UTC)
  int offset_minutes = 0;    // the zone's fixed offset
};

struct RefRule {
  std::string id;
  bool pass = false;
  std::optional<std::vector<std::string>> users, groups, methods, listeners;
  std::optional<std::vector<RefCidr>> from;
  std::optional<std::vector<std::string>> commands;
  std::optional<std::vector<std::pair<int, int>>> ports;
  std::optional<std::vector<RefCidr>> to_cidrs;  // "to" = to_cidrs + to_hosts
  std::vector<RefHost> to_hosts;
  std::optional<std::vector<RefWindow>> when;
  bool cert = false, allow_protected = false, bound = false;
  int min_protection = 0;
};

struct RefPolicy {
  std::vector<std::pair<std::string, std::vector<std::string>>> groups;
  std::vector<RefRule> rules;
};

template <class T>
bool has(const std::vector<T>& v, const T& x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}

bool in_window(const RefWindow& w, std::chrono::system_clock::time_point t) {
  long long secs = std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count() +
                   w.offset_minutes * 60LL;
  long long days = secs >= 0 ? secs / 86400 : (secs - 86399) / 86400;
  int minute = static_cast<int>((secs - days * 86400) / 60);
  int weekday = static_cast<int>(((days % 7) + 7 + 3) % 7);  // 1970-01-01 was a Thursday
  auto day_on = [&](int d) { return w.days.empty() || has(w.days, d); };
  if (w.start < 0) return day_on(weekday);
  if (w.start < w.end) return day_on(weekday) && minute >= w.start && minute < w.end;
  return (day_on(weekday) && minute >= w.start) || (day_on((weekday + 6) % 7) && minute < w.end);
}

int level(const std::string& p) { return p == "confidentiality" ? 2 : p == "integrity" ? 1 : 0; }

std::pair<std::string, Action> reference_decide(const RefPolicy& pol, const DecisionRequest& r,
                                                uint32_t client, uint32_t addr) {
  for (const RefRule& rule : pol.rules) {
    if (rule.users && (r.user.empty() || !has(*rule.users, r.user))) continue;
    if (rule.groups) {
      bool any = false;
      for (const auto& g : *rule.groups) {
        if (has(r.groups, g)) any = true;
        for (const auto& [name, members] : pol.groups) {
          if (name == g && !r.user.empty() && has(members, r.user)) any = true;
        }
      }
      if (!any) continue;
    }
    if (rule.methods ? !has(*rule.methods, r.method) : r.method == "socks4") continue;
    if (rule.listeners && !has(*rule.listeners, r.listener)) continue;
    if (rule.cert && !r.client_certificate) continue;
    if (rule.from && std::none_of(rule.from->begin(), rule.from->end(),
                                  [&](const RefCidr& c) { return c.contains(client); })) {
      continue;
    }
    if (rule.when && std::none_of(rule.when->begin(), rule.when->end(),
                                  [&](const RefWindow& w) { return in_window(w, r.time); })) {
      continue;
    }
    if (level(r.protection) < rule.min_protection) continue;
    if (rule.bound && !r.channel_bound) continue;
    static const char* kCommandNames[] = {"connect", "bind", "udp"};
    if (rule.commands &&
        !has(*rule.commands, std::string(kCommandNames[static_cast<int>(r.command)]))) {
      continue;
    }
    if (rule.ports && std::none_of(rule.ports->begin(), rule.ports->end(), [&](auto pr) {
          return r.port >= pr.first && r.port <= pr.second;
        })) {
      continue;
    }
    bool named = false;
    if (rule.to_cidrs) {
      bool matched = false;
      for (const auto& c : *rule.to_cidrs) {
        if (!c.contains(addr)) continue;
        matched = true;
        if (c.len > 0) named = true;
      }
      for (const auto& h : rule.to_hosts) {
        if (r.host.empty() || !h.matches(r.host)) continue;
        matched = true;
        if (h.exact() || rule.allow_protected) named = true;
      }
      if (!matched) continue;
    }
    if (rule.pass && ref_protected(addr) && !named) continue;  // skipped, evaluation goes on
    return {rule.id, rule.pass ? Action::kPass : Action::kBlock};
  }
  return {"default-deny", Action::kBlock};
}

// ---- random policies and requests ----------------------------------------------------------

const std::vector<std::string> kUsers = {"alice", "bob", "carol"};
const std::vector<std::string> kGroups = {"eng", "ops"};
const std::vector<std::string> kMethods = {"none", "userpass", "gssapi", "certificate", "socks4"};
const std::vector<std::string> kListeners = {"main", "tls"};
const std::vector<std::string> kAddresses = {"198.51.100.7",    "203.0.113.9", "10.1.2.3",
                                             "127.0.0.1",       "192.168.1.1", "8.8.8.8",
                                             "169.254.169.254", "172.16.5.5"};
const std::vector<std::string> kHostPatterns = {"www.example", "*.example", "*", "intranet.corp",
                                                "*.corp"};
const std::vector<std::string> kHosts = {"www.example",   "a.b.example", "example",
                                         "intranet.corp", "x.corp",      "other.net"};
const std::vector<std::string> kCommands = {"connect", "bind", "udp"};
const std::vector<std::pair<std::string, int>> kZones = {
    {"", 0}, {"UTC", 0}, {"Etc/GMT-2", 120}, {"Asia/Tokyo", 540}, {"Etc/GMT+5", -300}};
const char* kDayNames[] = {"mon", "tue", "wed", "thu", "fri", "sat", "sun"};

class Gen {
 public:
  explicit Gen(uint32_t seed) : rng_(seed) {}
  bool chance(int percent) { return std::uniform_int_distribution<int>(0, 99)(rng_) < percent; }
  int range(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }
  template <class T>
  const T& pick(const std::vector<T>& v) {
    return v[static_cast<size_t>(range(0, static_cast<int>(v.size()) - 1))];
  }
  // A non-empty random subset, in the order of `v`.
  std::vector<std::string> subset(const std::vector<std::string>& v) {
    std::vector<std::string> out;
    while (out.empty()) {
      for (const auto& x : v) {
        if (chance(50)) out.push_back(x);
      }
    }
    return out;
  }
  RefCidr cidr() {
    static const int kLens[] = {0, 8, 16, 24, 32};
    int len = kLens[range(0, 4)];
    uint32_t a = v4(pick(kAddresses));
    uint32_t mask = len == 0 ? 0 : ~uint32_t{0} << (32 - len);
    return {a & mask, len};
  }
  std::mt19937& rng() { return rng_; }

 private:
  std::mt19937 rng_;
};

std::pair<RefPolicy, json> random_policy(Gen& g) {
  RefPolicy ref;
  json doc = json::object();
  if (g.chance(60)) {
    doc["groups"] = json::object();
    for (const auto& grp : kGroups) {
      if (!g.chance(70)) continue;
      auto members = g.subset(kUsers);
      doc["groups"][grp] = members;
      ref.groups.emplace_back(grp, members);
    }
  }
  json rules = json::array();
  int n = g.range(1, 8);
  for (int i = 0; i < n; ++i) {
    RefRule r;
    json j;
    r.id = "r" + std::to_string(i);
    r.pass = g.chance(65);
    j["id"] = r.id;
    j["action"] = r.pass ? "pass" : "block";
    if (g.chance(30)) j["users"] = *(r.users = g.subset(kUsers));
    if (g.chance(25)) j["groups"] = *(r.groups = g.subset(kGroups));
    if (g.chance(25)) j["methods"] = *(r.methods = g.subset(kMethods));
    if (g.chance(20)) j["listeners"] = *(r.listeners = g.subset(kListeners));
    if (g.chance(15)) j["client_certificate"] = r.cert = true;
    if (g.chance(15)) {
      r.min_protection = g.range(1, 2);
      j["min_protection"] = r.min_protection == 2 ? "confidentiality" : "integrity";
    }
    if (g.chance(10)) j["require_channel_binding"] = r.bound = true;
    if ((r.min_protection > 0 || r.bound) && r.methods && !has(*r.methods, std::string("gssapi"))) {
      r.methods->push_back("gssapi");
      j["methods"] = *r.methods;
    }
    if (g.chance(25)) {
      r.from.emplace();
      for (int k = g.range(1, 2); k > 0; --k) r.from->push_back(g.cidr());
      for (const auto& c : *r.from) j["from"].push_back(c.text());
    }
    if (g.chance(20)) j["commands"] = *(r.commands = g.subset(kCommands));
    if (g.chance(30)) {
      r.ports.emplace();
      static const std::vector<std::pair<int, int>> kPorts = {
          {22, 22}, {80, 80}, {443, 443}, {1, 1024}, {8000, 8999}};
      for (int k = g.range(1, 2); k > 0; --k) {
        auto pr = g.pick(kPorts);
        r.ports->push_back(pr);
        j["ports"].push_back(pr.first == pr.second ? json(pr.first)
                                                   : json(std::to_string(pr.first) + "-" +
                                                          std::to_string(pr.second)));
      }
    }
    if (g.chance(55)) {
      r.to_cidrs.emplace();
      for (int k = g.range(1, 3); k > 0; --k) {
        if (g.chance(50)) {
          r.to_cidrs->push_back(g.cidr());
          j["to"].push_back(r.to_cidrs->back().text());
        } else {
          r.to_hosts.push_back({g.pick(kHostPatterns)});
          j["to"].push_back(r.to_hosts.back().text);
        }
      }
      bool has_glob = std::any_of(r.to_hosts.begin(), r.to_hosts.end(),
                                  [](const RefHost& h) { return !h.exact(); });
      if (r.pass && has_glob && g.chance(30)) j["allow_protected"] = r.allow_protected = true;
    }
    if (g.chance(30)) {
      r.when.emplace();
      for (int k = g.range(1, 2); k > 0; --k) {
        RefWindow w;
        json jw = json::object();
        bool days = g.chance(60), hours = !days || g.chance(60);
        if (days) {
          int first = g.range(0, 6), last = g.range(0, 6);
          for (int d = first;; d = (d + 1) % 7) {
            w.days.push_back(d);
            if (d == last) break;
          }
          jw["days"].push_back(first == last
                                   ? std::string(kDayNames[first])
                                   : std::string(kDayNames[first]) + "-" + kDayNames[last]);
        }
        if (hours) {
          do {
            w.start = g.range(0, 23) * 60 + 30 * g.range(0, 1);
            w.end = g.range(0, 24) * 60;
          } while (w.start == w.end || (w.start == 0 && w.end == 1440));
          char buf[32];
          std::snprintf(buf, sizeof buf, "%02d:%02d-%02d:%02d", w.start / 60, w.start % 60,
                        w.end / 60, w.end % 60);
          jw["hours"] = buf;
        }
        const auto& [tz, offset] = g.pick(kZones);
        if (!tz.empty()) jw["tz"] = tz;
        w.tz = tz;
        w.offset_minutes = offset;
        r.when->push_back(w);
        j["when"].push_back(jw);
      }
    }
    ref.rules.push_back(std::move(r));
    rules.push_back(std::move(j));
  }
  doc["rules"] = std::move(rules);
  return {std::move(ref), std::move(doc)};
}

struct RandomRequest {
  DecisionRequest r;
  uint32_t client = 0, addr = 0;
  std::string text;
};

RandomRequest random_request(Gen& g) {
  RandomRequest q;
  DecisionRequest& r = q.r;
  r.user = g.chance(85) ? g.pick(kUsers) : std::string();
  for (const auto& grp : kGroups) {
    if (g.chance(20)) r.groups.push_back(grp);
  }
  r.method = g.pick(kMethods);
  if (r.method == "gssapi") {
    static const std::vector<std::string> kLevels = {"none", "integrity", "confidentiality"};
    r.protection = g.pick(kLevels);
    r.channel_bound = g.chance(50);
  }
  r.client_certificate = g.chance(30);
  r.listener = g.pick(kListeners);
  std::string client = g.pick(kAddresses), addr = g.pick(kAddresses);
  r.client = *IpAddress::parse(client);
  r.address = IpAddress::parse(addr);
  q.client = v4(client);
  q.addr = v4(addr);
  if (g.chance(50)) r.host = g.pick(kHosts);
  r.command = static_cast<Command>(g.range(0, 2));
  static const std::vector<int> kPorts = {22, 80, 443, 1024, 1025, 8080, 8999, 9000};
  r.port = static_cast<uint16_t>(g.pick(kPorts));
  // Two weeks from 2026-11-23 (a Monday), at minute resolution plus some seconds.
  long long base = 1795392000;  // 2026-11-23T00:00:00Z
  long long t = base + g.range(0, 14 * 24 * 60) * 60LL + g.range(0, 59);
  r.time = std::chrono::system_clock::time_point(std::chrono::seconds(t));
  q.text = "user=" + r.user + " method=" + r.method + " protection=" + r.protection +
           " bound=" + std::to_string(r.channel_bound) +
           " cert=" + std::to_string(r.client_certificate) + " listener=" + r.listener +
           " from=" + client + " to=" + r.host + "/" + addr + ":" + std::to_string(r.port) +
           " command=" + std::string(to_string(r.command)) + " time=" + std::to_string(t);
  return q;
}

TEST(PolicyPropertyTest, EngineAgreesWithReferenceOnRandomRequests) {
  Gen g(kSeed);
  int compared = 0, passes = 0;
  for (int i = 0; i < kPolicies; ++i) {
    auto [ref, doc] = random_policy(g);
    std::string text = doc.dump();
    std::optional<Policy> engine;
    try {
      engine.emplace(load_policy_text("random.json", text));
    } catch (const LoadError& e) {
      FAIL() << "seed " << kSeed << ", policy " << i << " does not load: " << e.what() << "\n"
             << text;
    }
    for (int k = 0; k < kRequestsPerPolicy; ++k) {
      RandomRequest q = random_request(g);
      Decision d = engine->decide(q.r);
      auto [id, action] = reference_decide(ref, q.r, q.client, q.addr);
      ASSERT_EQ(d.rule_id, id) << "seed " << kSeed << ", policy " << i << ", request " << k
                               << "\npolicy: " << text << "\nrequest: " << q.text;
      ASSERT_EQ(d.action, action) << "seed " << kSeed << ", policy " << i << ", request " << k;
      ++compared;
      if (action == Action::kPass) ++passes;
    }
  }
  EXPECT_EQ(compared, 10000);
  // The generator must exercise both outcomes, not only default deny.
  EXPECT_GT(passes, 1000);
  EXPECT_LT(passes, 9000);
}

}  // namespace
}  // namespace socksgate::policy
