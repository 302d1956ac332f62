// Policy document -> compiled Policy. Every problem becomes a Diagnostic at the key or value it
// is about; loading goes on after a problem so that an admin sees all of them in one run.

#include <algorithm>
#include <array>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <span>
#include <sstream>
#include <utility>

#include "policy/policy.h"
#include "policy/rule.h"

namespace socksgate::policy {
namespace {

using json = nlohmann::json;
using Ptr = json::json_pointer;

constexpr size_t kMaxIdLength = 128;
// Problems reported per document: a generated file with a huge list of bad entries gets the
// first ones and a note, not a flood.
constexpr size_t kMaxDiagnostics = 100;
constexpr std::array<std::string_view, 2> kReservedIds = {"default-deny", "no-client-rules"};
constexpr std::array<std::string_view, 5> kMethods = {"none", "userpass", "gssapi", "certificate",
                                                      "socks4"};

constexpr std::string_view kTopKeys[] = {"groups", "client_rules", "rules", "defaults", "comment"};
// A policy.d file: rules of one user or one group, and the defaults its rules inherit.
constexpr std::string_view kPartKeys[] = {"rules", "defaults", "comment"};
// Selectors a rule inherits from "defaults" when it does not set them.
constexpr std::string_view kDefaultKeys[] = {"methods",        "listeners",
                                             "from",           "client_certificate",
                                             "min_protection", "require_channel_binding",
                                             "limits",         "when",
                                             "comment"};
constexpr std::string_view kClientRuleKeys[] = {"id", "action", "from", "listeners", "comment"};
constexpr std::string_view kRuleKeys[] = {"id",
                                          "action",
                                          "users",
                                          "groups",
                                          "methods",
                                          "listeners",
                                          "from",
                                          "commands",
                                          "to",
                                          "ports",
                                          "allow_protected",
                                          "egress",
                                          "client_certificate",
                                          "min_protection",
                                          "require_channel_binding",
                                          "limits",
                                          "when",
                                          "comment"};
// One window of a rule's "when".
constexpr std::string_view kWindowKeys[] = {"days", "hours", "tz", "comment"};

// "limits": where each value sits in the object and which Limits field it sets.
struct LimitField {
  std::string_view group;  // "" top level, else "bandwidth" / "quota"
  std::string_view sub;    // "session" / "user" under "bandwidth", else ""
  std::string_view key;
  uint64_t Limits::*field;
  bool bytes;  // a byte count (units allowed), else a plain count
};
constexpr LimitField kLimitFields[] = {
    {"", "", "sessions", &Limits::sessions, false},
    {"", "", "sessions_per_rule", &Limits::sessions_per_rule, false},
    {"", "", "new_sessions_per_minute", &Limits::new_sessions_per_minute, false},
    {"bandwidth", "session", "up", &Limits::session_up, true},
    {"bandwidth", "session", "down", &Limits::session_down, true},
    {"bandwidth", "user", "up", &Limits::user_up, true},
    {"bandwidth", "user", "down", &Limits::user_down, true},
    {"quota", "", "day", &Limits::quota_day, true},
    {"quota", "", "week", &Limits::quota_week, true},
    {"quota", "", "month", &Limits::quota_month, true},
};
constexpr size_t kLimitFieldCount = std::size(kLimitFields);
constexpr std::string_view kLimitsKeys[] = {
    "sessions", "sessions_per_rule", "new_sessions_per_minute", "bandwidth", "quota", "comment"};
constexpr std::string_view kBandwidthKeys[] = {"session", "user"};
constexpr std::string_view kDirectionKeys[] = {"up", "down"};
constexpr std::string_view kQuotaKeys[] = {"day", "week", "month"};
constexpr uint64_t kMaxCount = 1000000000;         // sessions, sessions per minute
constexpr uint64_t kMaxBytes = uint64_t{1} << 60;  // 1 EiB

// Limits as one document level states them: nullopt = not set here (inherited, if anything).
using LimitSpec = std::array<std::optional<uint64_t>, kLimitFieldCount>;

void overlay(LimitSpec* into, const LimitSpec& from) {
  for (size_t i = 0; i < kLimitFieldCount; ++i) {
    if (from[i]) (*into)[i] = from[i];
  }
}

}  // namespace

std::optional<uint64_t> parse_byte_size(std::string_view s) {
  size_t i = 0;
  uint64_t v = 0;
  while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
    if (v > kMaxBytes) return std::nullopt;
    v = v * 10 + static_cast<uint64_t>(s[i] - '0');
    ++i;
  }
  if (i == 0) return std::nullopt;
  while (i < s.size() && s[i] == ' ') ++i;
  std::string_view unit = s.substr(i);
  static constexpr std::pair<std::string_view, uint64_t> kUnits[] = {
      {"", 1},
      {"B", 1},
      {"kB", 1000},
      {"KB", 1000},
      {"MB", 1000 * 1000},
      {"GB", 1000 * 1000 * 1000},
      {"TB", uint64_t{1000} * 1000 * 1000 * 1000},
      {"KiB", 1024},
      {"MiB", 1024 * 1024},
      {"GiB", 1024 * 1024 * 1024},
      {"TiB", uint64_t{1024} * 1024 * 1024 * 1024}};
  for (const auto& [name, mult] : kUnits) {
    if (unit != name) continue;
    if (v > kMaxBytes / mult) return std::nullopt;
    return v * mult;
  }
  return std::nullopt;
}

namespace {

size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

bool contains_string(const std::vector<std::string>& v, std::string_view s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

std::string joined(std::span<const std::string_view> words) {
  std::string out;
  for (auto w : words) {
    if (!out.empty()) out += ", ";
    out += w;
  }
  return out;
}

bool valid_id_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == ':' || c == '-';
}

std::string quote(std::string_view s) { return quote_for_message(s, 64); }

bool before(const SourcePosition& a, const SourcePosition& b) {
  return a.line != b.line ? a.line < b.line : a.column < b.column;
}

std::string at_text(const SourcePosition& p) {
  return "line " + std::to_string(p.line) + ", column " + std::to_string(p.column);
}

}  // namespace

class PolicyLoader {
 public:
  // Whose rules a document holds: the main policy's, or (policy.d) one user's or one group's.
  struct Scope {
    enum Kind { kMain, kUser, kGroup } kind = kMain;
    std::string name;
    const json* inherited_defaults = nullptr;     // the main policy's "defaults"
    const LimitSpec* inherited_limits = nullptr;  // its "limits", already checked
  };

  PolicyLoader(const JsonSource& src, const Ptr& at, const LoadOptions& opts)
      : src_(src), at_(at), opts_(opts) {}
  PolicyLoader(const JsonSource& src, const Ptr& at, const LoadOptions& opts, Scope scope)
      : src_(src), at_(at), opts_(opts), scope_(std::move(scope)) {}

  std::vector<Diagnostic> take_diagnostics() {
    note_truncation();
    return std::move(diags_);
  }
  // Loads without throwing (diagnostics kept for take_diagnostics()).
  Policy load_collect() {
    Policy policy;
    Policy::Impl& impl = *policy.impl_;
    impl.own_addresses = opts_.own_addresses;
    if (const json* top = locate()) load_document(*top, &impl);
    return policy;
  }

  Policy load() {
    Policy policy;
    Policy::Impl& impl = *policy.impl_;
    impl.own_addresses = opts_.own_addresses;
    const json* top = locate();
    if (top != nullptr) load_document(*top, &impl);
    check_ids();
    if (!diags_.empty()) {
      std::stable_sort(diags_.begin(), diags_.end(), [](const Diagnostic& a, const Diagnostic& b) {
        return before(a.pos, b.pos);
      });
      note_truncation();
      throw LoadError(std::move(diags_));
    }
    return policy;
  }

  struct IdUse {
    std::string id;
    Ptr ptr;
    SourcePosition pos;
  };

 private:
  void error_value(const Ptr& p, std::string message) {
    if (room()) diags_.push_back(src_.at_value(p, std::move(message)));
  }
  void error_key(const Ptr& p, std::string message) {
    if (room()) diags_.push_back(src_.at_key(p, std::move(message)));
  }
  bool room() {
    if (diags_.size() < kMaxDiagnostics) return true;
    truncated_ = true;
    return false;
  }
  // After sorting: says that more problems were not reported.
  void note_truncation() {
    if (!truncated_) return;
    diags_.push_back(
        {src_.file(), src_.value_pos(at_),
         "too many problems; only the first " + std::to_string(kMaxDiagnostics) + " are reported"});
    truncated_ = false;
  }

  const json* locate() {
    const json& root = src_.root();
    if (!root.contains(at_)) {
      error_value(at_, "no policy found at " + quote(at_.to_string()));
      return nullptr;
    }
    const json& top = root.at(at_);
    if (!top.is_object()) {
      error_value(at_, std::string("a policy must be a JSON object, got ") + top.type_name());
      return nullptr;
    }
    return &top;
  }

  void check_keys(const json& obj, const Ptr& p, std::span<const std::string_view> allowed,
                  std::string_view what) {
    for (const auto& [key, value] : obj.items()) {
      if (std::find(allowed.begin(), allowed.end(), key) != allowed.end()) continue;
      std::string message = "unknown key " + quote(key) + " in " + std::string(what);
      std::string_view best;
      size_t best_distance = 3;
      for (auto candidate : allowed) {
        size_t d = edit_distance(key, candidate);
        if (d < best_distance) {
          best = candidate;
          best_distance = d;
        }
      }
      if (!best.empty()) {
        message += " (did you mean \"" + std::string(best) + "\"?)";
      } else {
        message += " (allowed: " + joined(allowed) + ")";
      }
      error_key(p / key, std::move(message));
    }
  }

  void load_document(const json& top, Policy::Impl* impl) {
    if (scope_.kind != Scope::kMain) {
      check_keys(top, at_, kPartKeys,
                 scope_.kind == Scope::kUser ? "a user's policy file" : "a group's policy file");
    } else {
      check_keys(top, at_, kTopKeys, "policy");
    }
    if (auto it = top.find("defaults"); it != top.end()) {
      if (!it->is_object()) {
        error_value(at_ / "defaults",
                    std::string("\"defaults\" must be an object, got ") + it->type_name());
      } else {
        check_keys(*it, at_ / "defaults", kDefaultKeys, "defaults");
        defaults_ = &*it;
        if (auto l = it->find("limits"); l != it->end()) {
          defaults_limits_ = load_limits(*l, at_ / "defaults" / "limits");
        }
      }
    }
    if (scope_.kind != Scope::kMain) {
      // groups and client_rules belong to the main policy only (checked by check_keys).
    } else if (auto it = top.find("groups"); it != top.end()) {
      load_groups(*it, at_ / "groups", impl);
    }
    if (auto it = top.find("client_rules"); scope_.kind == Scope::kMain && it != top.end()) {
      Ptr p = at_ / "client_rules";
      impl->has_client_rules = true;
      if (!it->is_array()) {
        error_value(p, std::string("\"client_rules\" must be an array of rule objects, got ") +
                           it->type_name());
      } else if (it->empty()) {
        // [] would block every client, while a missing key passes every client: too easy to
        // get wrong by accident.
        error_value(p,
                    "\"client_rules\" is empty and would block every client; omit the key to "
                    "let every client through to the user rules");
      } else {
        for (size_t i = 0; i < it->size(); ++i) {
          if (auto r = load_client_rule((*it)[i], p / i)) {
            impl->client_rules.push_back(std::move(*r));
          }
        }
      }
    }
    if (auto it = top.find("rules"); it != top.end()) {
      Ptr p = at_ / "rules";
      if (!it->is_array()) {
        error_value(
            p, std::string("\"rules\" must be an array of rule objects, got ") + it->type_name());
      } else {
        for (size_t i = 0; i < it->size(); ++i) {
          if (auto r = load_rule((*it)[i], p / i)) impl->rules.push_back(std::move(*r));
        }
      }
    }
  }

  void load_groups(const json& groups, const Ptr& p, Policy::Impl* impl) {
    if (!groups.is_object()) {
      error_value(p, std::string("\"groups\" must be an object mapping group names to arrays of "
                                 "user names, got ") +
                         groups.type_name());
      return;
    }
    for (const auto& [name, members] : groups.items()) {
      Ptr gp = p / name;
      if (name.empty()) error_key(gp, "group name is empty");
      if (!members.is_array()) {
        error_value(gp, "group " + quote(name) + " must be an array of user names, got " +
                            members.type_name());
        continue;
      }
      std::vector<std::string> users;
      for (size_t i = 0; i < members.size(); ++i) {
        const json& m = members[i];
        if (!m.is_string()) {
          error_value(gp / i, std::string("members of group ") + quote(name) +
                                  " must be strings, got " + m.type_name());
        } else if (m.get_ref<const std::string&>().empty()) {
          error_value(gp / i, "empty user name in group " + quote(name));
        } else {
          users.push_back(m.get<std::string>());
        }
      }
      std::sort(users.begin(), users.end());
      users.erase(std::unique(users.begin(), users.end()), users.end());
      for (const auto& u : users) impl->user_groups[u].push_back(name);
      impl->group_members[name] = std::move(users);
    }
    // std::map iterates groups in name order, so each user's list is already sorted.
  }

  // "id", "action" and "comment", shared by both kinds of rule.
  template <class R>
  void load_common(const json& obj, const Ptr& p, std::string_view kind, R* rule) {
    rule->origin = {src_.file(), src_.value_pos(p)};
    if (auto it = obj.find("id"); it == obj.end()) {
      error_value(p, std::string(kind) + " has no \"id\"");
    } else if (!it->is_string()) {
      error_value(p / "id", std::string("\"id\" must be a string, got ") + it->type_name());
    } else {
      const auto& id = it->get_ref<const std::string&>();
      if (id.empty()) {
        error_value(p / "id", "\"id\" is empty");
      } else if (id.size() > kMaxIdLength) {
        error_value(p / "id",
                    "\"id\" is longer than " + std::to_string(kMaxIdLength) + " characters");
      } else if (!std::all_of(id.begin(), id.end(), valid_id_char)) {
        error_value(p / "id", "rule id " + quote(id) +
                                  " may only contain letters, digits, '.', '_', ':' and '-'");
      } else if (std::find(kReservedIds.begin(), kReservedIds.end(), id) != kReservedIds.end()) {
        error_value(p / "id", "rule id " + quote(id) + " is reserved for the implicit rule");
      } else {
        rule->id = id;
        ids_.push_back({id, p / "id", src_.value_pos(p / "id")});
      }
    }
    std::string who = rule->id.empty() ? std::string(kind) : std::string(kind) + " " + rule->id;
    if (auto it = obj.find("action"); it == obj.end()) {
      error_value(p, who + " has no \"action\" (\"pass\" or \"block\")");
    } else if (it->is_string() && *it == "pass") {
      rule->action = Action::kPass;
    } else if (it->is_string() && *it == "block") {
      rule->action = Action::kBlock;
    } else {
      error_value(p / "action", "\"action\" must be \"pass\" or \"block\", got " + describe(*it));
    }
    if (auto it = obj.find("comment"); it != obj.end()) {
      if (it->is_string()) {
        rule->comment = it->get<std::string>();
      } else {
        error_value(p / "comment",
                    std::string("\"comment\" must be a string, got ") + it->type_name());
      }
    }
  }

  static std::string describe(const json& v) {
    if (v.is_string()) return quote(v.get_ref<const std::string&>());
    return v.type_name();
  }

  // A selector's array: present, an array, not empty. Returns nullptr (after reporting) if not.
  const json* selector_array(const json& obj, const Ptr& p, const char* key) {
    auto it = obj.find(key);
    if (it == obj.end()) return nullptr;
    if (!it->is_array()) {
      std::string message = "\"" + std::string(key) + "\" must be an array, got " + describe(*it);
      if (it->is_string() || it->is_number()) message += " (write [" + it->dump() + "])";
      error_value(p / key, std::move(message));
      return nullptr;
    }
    if (it->empty()) {
      error_value(p / key, "\"" + std::string(key) +
                               "\" is empty and would match nothing; omit the key to match "
                               "anything");
      return nullptr;
    }
    return &*it;
  }

  // Each entry of a selector array as a string (reports non-strings and empty strings).
  template <class F>
  bool for_each_string(const json& arr, const Ptr& p, const char* key, F&& f) {
    bool ok = true;
    for (size_t i = 0; i < arr.size(); ++i) {
      const json& v = arr[i];
      if (!v.is_string()) {
        error_value(p / key / i,
                    "\"" + std::string(key) + "\" entries must be strings, got " + v.type_name());
        ok = false;
      } else if (v.get_ref<const std::string&>().empty()) {
        error_value(p / key / i, "empty entry in \"" + std::string(key) + "\"");
        ok = false;
      } else {
        ok = f(v.get_ref<const std::string&>(), p / key / i) && ok;
      }
    }
    return ok;
  }

  std::optional<std::vector<std::string>> string_set(const json& obj, const Ptr& p,
                                                     const char* key) {
    const json* arr = selector_array(obj, p, key);
    if (arr == nullptr) return std::nullopt;
    std::vector<std::string> out;
    for_each_string(*arr, p, key, [&](const std::string& s, const Ptr&) {
      out.push_back(s);
      return true;
    });
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
    return out;
  }

  std::optional<std::vector<std::string>> listeners(const json& obj, const Ptr& p) {
    const json* arr = selector_array(obj, p, "listeners");
    if (arr == nullptr) return std::nullopt;
    std::vector<std::string> out;
    const auto& known = opts_.known_listeners;
    for_each_string(*arr, p, "listeners", [&](const std::string& s, const Ptr& ep) {
      if (!known.empty() && std::find(known.begin(), known.end(), s) == known.end()) {
        error_value(ep, "unknown listener " + quote(s) + " (the configuration defines " +
                            std::to_string(known.size()) + ")");
        return false;
      }
      out.push_back(s);
      return true;
    });
    return out;
  }

  std::optional<Cidr> parse_cidr(const std::string& s, const Ptr& ep, std::string_view key) {
    bool host_bits = false;
    auto c = Cidr::parse(s, &host_bits);
    if (c && host_bits) {
      error_value(ep, "\"" + std::string(key) + "\" entry " + quote(s) +
                          " has bits set beyond the prefix length (did you mean " + c->to_string() +
                          "?)");
    }
    return c;
  }

  std::optional<std::vector<Cidr>> from(const json& obj, const Ptr& p) {
    const json* arr = selector_array(obj, p, "from");
    if (arr == nullptr) return std::nullopt;
    std::vector<Cidr> out;
    for_each_string(*arr, p, "from", [&](const std::string& s, const Ptr& ep) {
      auto c = parse_cidr(s, ep, "from");
      if (!c) {
        error_value(ep, "\"from\" entry " + quote(s) + " is not an IP address or CIDR block");
        return false;
      }
      out.push_back(*c);
      return true;
    });
    return out;
  }

  void to(const json& obj, const Ptr& p, Rule* rule) {
    const json* arr = selector_array(obj, p, "to");
    if (arr == nullptr) return;
    rule->has_to = true;
    for_each_string(*arr, p, "to", [&](const std::string& s, const Ptr& ep) {
      if (auto c = parse_cidr(s, ep, "to")) {
        rule->to_cidrs.push_back(*c);
        return true;
      }
      if (s.find_first_of("/:") != std::string::npos) {
        error_value(ep, "\"to\" entry " + quote(s) + " is not a valid IP address or CIDR block");
        return false;
      }
      std::string problem;
      auto h = HostPattern::parse(s, &problem);
      if (!h) {
        error_value(
            ep, "\"to\" entry " + quote(s) + " is not a valid host name or pattern: " + problem);
        return false;
      }
      rule->to_hosts.push_back(std::move(*h));
      return true;
    });
  }

  // "when": [{"days": ["mon-fri"], "hours": "08:00-18:30", "tz": "Europe/Berlin"}, ...].
  std::optional<std::vector<TimeWindow>> when(const json& obj, const Ptr& p) {
    const json* arr = selector_array(obj, p, "when");
    if (arr == nullptr) return std::nullopt;
    std::vector<TimeWindow> out;
    for (size_t i = 0; i < arr->size(); ++i) {
      const json& w = (*arr)[i];
      Ptr wp = p / "when" / i;
      if (!w.is_object()) {
        error_value(wp, std::string("\"when\" entries must be objects such as {\"days\": "
                                    "[\"mon-fri\"], \"hours\": \"08:00-18:00\", \"tz\": "
                                    "\"Europe/Berlin\"}, got ") +
                            w.type_name());
        continue;
      }
      check_keys(w, wp, kWindowKeys, "a \"when\" window");
      TimeWindow tw;
      bool ok = true;
      if (auto it = w.find("days"); it != w.end()) {
        ok = window_days(*it, wp / "days", &tw) && ok;
      }
      if (auto it = w.find("hours"); it != w.end()) {
        ok = window_hours(*it, wp / "hours", &tw) && ok;
      }
      if (auto it = w.find("tz"); it != w.end()) {
        std::string problem;
        std::optional<TimeZone> tz;
        if (it->is_string() && !it->get_ref<const std::string&>().empty() &&
            it->get_ref<const std::string&>().size() <= 64) {
          tz = TimeZone::find(it->get_ref<const std::string&>(), &problem);
        }
        if (!tz) {
          error_value(wp / "tz",
                      "\"tz\" must be an IANA time zone name such as "
                      "\"Europe/Berlin\" or \"UTC\" (from the OS tzdata in "
                      "/usr/share/zoneinfo), got " +
                          describe(*it) +
                          (problem.empty() || problem.find("not found") != std::string::npos
                               ? std::string()
                               : " (" + problem + ")"));
          ok = false;
        } else {
          tw.tz = std::move(*tz);
        }
      }
      if (ok && !w.contains("days") && !w.contains("hours")) {
        error_value(wp,
                    "a \"when\" window without \"days\" or \"hours\" matches at any "
                    "time; omit \"when\" instead");
        ok = false;
      }
      if (ok) out.push_back(std::move(tw));
    }
    return out;
  }

  bool window_days(const json& v, const Ptr& p, TimeWindow* tw) {
    if (!v.is_array() || v.empty()) {
      error_value(p,
                  "\"days\" must be a non-empty array such as [\"mon-fri\"] or [\"sat\", "
                  "\"sun\"], got " +
                      describe(v));
      return false;
    }
    uint8_t bits = 0;
    bool ok = true;
    std::string text;
    for (size_t i = 0; i < v.size(); ++i) {
      const json& d = v[i];
      std::string s = d.is_string() ? d.get<std::string>() : std::string();
      std::transform(s.begin(), s.end(), s.begin(),
                     [](char c) { return static_cast<char>(std::tolower(c)); });
      size_t dash = s.find('-');
      int first = weekday_from_name(std::string_view(s).substr(0, dash));
      int last = dash == std::string::npos
                     ? first
                     : weekday_from_name(std::string_view(s).substr(dash + 1));
      if (first < 0 || last < 0) {
        error_value(p / i, "invalid day " + describe(d) +
                               " (expected mon, tue, wed, thu, fri, sat, sun or a range such as "
                               "\"mon-fri\")");
        ok = false;
        continue;
      }
      // A range runs forward through the week and may wrap: "fri-mon" is fri, sat, sun, mon.
      for (int wd = first;; wd = (wd + 1) % 7) {
        bits = static_cast<uint8_t>(bits | (1u << wd));
        if (wd == last) break;
      }
      if (!text.empty()) text += ',';
      text += s;
    }
    tw->days = bits;
    tw->days_text = std::move(text);
    return ok;
  }

  bool window_hours(const json& v, const Ptr& p, TimeWindow* tw) {
    std::string s = v.is_string() ? v.get<std::string>() : std::string();
    size_t dash = s.find('-');
    std::optional<uint32_t> start, end;
    if (dash != std::string::npos) {
      start = parse_clock(std::string_view(s).substr(0, dash), false);
      end = parse_clock(std::string_view(s).substr(dash + 1), true);
    }
    if (!start || !end) {
      error_value(p,
                  "\"hours\" must be \"HH:MM-HH:MM\" (24-hour clock, end may be 24:00), "
                  "got " +
                      describe(v));
      return false;
    }
    if (*start == *end || (*start == 0 && *end == kSecondsPerDay)) {
      error_value(p,
                  "\"hours\" " + quote(s) +
                      (*start == *end ? " starts and ends at the same time" : " is the whole day") +
                      "; omit \"hours\" for the whole day");
      return false;
    }
    tw->start = *start;
    tw->end = *end;
    tw->hours_text = s;
    return true;
  }

  static bool parse_port_number(std::string_view s, uint32_t* out) {
    if (s.empty() || s.size() > 5 || s[0] == '0') return false;
    uint32_t v = 0;
    for (char c : s) {
      if (c < '0' || c > '9') return false;
      v = v * 10 + static_cast<uint32_t>(c - '0');
    }
    *out = v;
    return true;
  }

  std::optional<std::vector<PortRange>> ports(const json& obj, const Ptr& p) {
    const json* arr = selector_array(obj, p, "ports");
    if (arr == nullptr) return std::nullopt;
    std::vector<PortRange> out;
    auto out_of_range = [&](const Ptr& ep, uint64_t v) {
      error_value(ep, "port " + std::to_string(v) + " is out of range 1..65535");
    };
    for (size_t i = 0; i < arr->size(); ++i) {
      const json& v = (*arr)[i];
      Ptr ep = p / "ports" / i;
      if (v.is_number_unsigned()) {
        uint64_t n = v.get<uint64_t>();
        if (n < 1 || n > 65535) {
          out_of_range(ep, n);
        } else {
          out.push_back({static_cast<uint16_t>(n), static_cast<uint16_t>(n)});
        }
      } else if (v.is_number()) {
        error_value(ep, "port " + v.dump() + " is not an integer in 1..65535");
      } else if (v.is_string()) {
        const auto& s = v.get_ref<const std::string&>();
        size_t dash = s.find('-');
        uint32_t first = 0, last = 0;
        bool ok = dash == std::string::npos
                      ? parse_port_number(s, &first) && (last = first, true)
                      : parse_port_number(std::string_view(s).substr(0, dash), &first) &&
                            parse_port_number(std::string_view(s).substr(dash + 1), &last);
        if (!ok) {
          error_value(
              ep, "invalid port " + quote(s) + " (expected a number 1..65535 or a range \"N-M\")");
        } else if (first > 65535 || last > 65535) {
          out_of_range(ep, std::max(first, last));
        } else if (first > last) {
          error_value(ep, "invalid port range " + quote(s) + ": start is greater than end");
        } else {
          out.push_back({static_cast<uint16_t>(first), static_cast<uint16_t>(last)});
        }
      } else {
        error_value(
            ep, std::string("\"ports\" entries must be numbers or strings, got ") + v.type_name());
      }
    }
    return out;
  }

  std::optional<ClientRule> load_client_rule(const json& obj, const Ptr& p) {
    if (!obj.is_object()) {
      error_value(p, std::string("client rules must be objects, got ") + obj.type_name());
      return std::nullopt;
    }
    ClientRule rule;
    load_common(obj, p, "client rule", &rule);
    check_keys(obj, p, kClientRuleKeys, "client rule");
    rule.from = from(obj, p);
    rule.listeners = listeners(obj, p);
    return rule;
  }

  // A rule of this document: the file's user or group is implied, "defaults" are inherited
  // (the file's own over the main policy's) for selectors the rule does not set.
  std::optional<Rule> load_rule(const json& raw, const Ptr& p) {
    if (!raw.is_object()) return load_rule_object(raw, p);
    const json* obj = &raw;
    json merged;
    for (const json* d : {defaults_, scope_.inherited_defaults}) {
      if (d == nullptr) continue;
      for (const auto& [k, v] : d->items()) {
        // "limits" merge key by key (below), not as a whole.
        if (k == "comment" || k == "limits" || obj->contains(k)) continue;
        if (obj != &merged) merged = *obj;
        obj = &merged;
        merged[k] = v;
      }
    }
    if (scope_.kind == Scope::kUser && raw.contains("users")) {
      error_key(p / "users", "rules in " + quote(scope_.name + ".json") + " apply to user " +
                                 quote(scope_.name) + " only: \"users\" is not allowed here");
    }
    if (scope_.kind == Scope::kGroup && raw.contains("groups")) {
      error_key(p / "groups", "rules in a group's file apply to group " + quote(scope_.name) +
                                  " only: \"groups\" is not allowed here");
    }
    auto rule = load_rule_object(*obj, p);
    if (rule) {
      // Limits: the main policy's defaults, then this file's, then the rule's own, key by key.
      LimitSpec spec{};
      if (scope_.inherited_limits != nullptr) overlay(&spec, *scope_.inherited_limits);
      overlay(&spec, defaults_limits_);
      if (auto it = raw.find("limits"); it != raw.end()) {
        overlay(&spec, load_limits(*it, p / "limits"));
        if (rule->action == Action::kBlock) {
          error_key(p / "limits", "\"limits\" has no effect on a block rule");
        }
      }
      if (rule->action == Action::kPass) {
        for (size_t i = 0; i < kLimitFieldCount; ++i) {
          if (spec[i]) rule->limits.*(kLimitFields[i].field) = *spec[i];
        }
      }
    }
    if (rule && scope_.kind == Scope::kUser) rule->users = std::vector<std::string>{scope_.name};
    if (rule && scope_.kind == Scope::kGroup) rule->groups = std::vector<std::string>{scope_.name};
    return rule;
  }

  // "limits": {"sessions": N, "sessions_per_rule": N, "new_sessions_per_minute": N,
  // "bandwidth": {"session"|"user": {"up"|"down": bytes/s}}, "quota": {"day"|"week"|"month":
  // bytes}}. Bytes are positive integers or strings with a unit ("10MiB", "1 GB").
  LimitSpec load_limits(const json& v, const Ptr& p) {
    LimitSpec spec{};
    if (!v.is_object()) {
      error_value(p, std::string("\"limits\" must be an object, got ") + v.type_name());
      return spec;
    }
    check_keys(v, p, kLimitsKeys, "limits");
    auto object_at = [&](const json& parent, const Ptr& pp, std::string_view key,
                         std::span<const std::string_view> keys, const std::string& what) {
      auto it = parent.find(key);
      if (it == parent.end()) return static_cast<const json*>(nullptr);
      if (!it->is_object()) {
        error_value(pp / std::string(key),
                    "\"" + what + "\" must be an object, got " + std::string(it->type_name()));
        return static_cast<const json*>(nullptr);
      }
      check_keys(*it, pp / std::string(key), keys, what);
      return &*it;
    };
    const json* bandwidth = object_at(v, p, "bandwidth", kBandwidthKeys, "limits.bandwidth");
    const json* bw_session = bandwidth ? object_at(*bandwidth, p / "bandwidth", "session",
                                                   kDirectionKeys, "limits.bandwidth.session")
                                       : nullptr;
    const json* bw_user = bandwidth ? object_at(*bandwidth, p / "bandwidth", "user", kDirectionKeys,
                                                "limits.bandwidth.user")
                                    : nullptr;
    const json* quota = object_at(v, p, "quota", kQuotaKeys, "limits.quota");
    for (size_t i = 0; i < kLimitFieldCount; ++i) {
      const LimitField& f = kLimitFields[i];
      const json* parent = &v;
      Ptr fp = p;
      if (f.group == "bandwidth") {
        parent = f.sub == "session" ? bw_session : bw_user;
        fp = p / "bandwidth" / std::string(f.sub);
      } else if (f.group == "quota") {
        parent = quota;
        fp = p / "quota";
      }
      if (parent == nullptr) continue;
      auto it = parent->find(f.key);
      if (it == parent->end()) continue;
      fp = fp / std::string(f.key);
      std::string name = std::string(f.key);
      if (!f.group.empty()) {
        name = std::string(f.group) + "." + (f.sub.empty() ? "" : std::string(f.sub) + ".") + name;
      }
      std::optional<uint64_t> n;
      if (it->is_number_unsigned()) {
        n = it->get<uint64_t>();
      } else if (it->is_string() && f.bytes) {
        n = parse_byte_size(it->get_ref<const std::string&>());
      }
      uint64_t max = f.bytes ? kMaxBytes : kMaxCount;
      if (!n || *n == 0 || *n > max) {
        error_value(fp, "\"" + name + "\" must be " +
                            (f.bytes ? std::string("a positive number of bytes") +
                                           (f.group == "bandwidth" ? " per second" : "") +
                                           " (an integer, or a string such as \"10MiB\" or "
                                           "\"1GB\")"
                                     : std::string("a positive integer")) +
                            ", got " + describe(*it) + " (omit the key for no limit)");
        continue;
      }
      spec[i] = *n;
    }
    return spec;
  }

  std::optional<Rule> load_rule_object(const json& obj, const Ptr& p) {
    if (!obj.is_object()) {
      error_value(p, std::string("rules must be objects, got ") + obj.type_name());
      return std::nullopt;
    }
    Rule rule;
    load_common(obj, p, "rule", &rule);
    check_keys(obj, p, kRuleKeys, "rule");
    rule.users = string_set(obj, p, "users");
    rule.groups = string_set(obj, p, "groups");
    if (const json* arr = selector_array(obj, p, "methods")) {
      std::vector<std::string> methods;
      for_each_string(*arr, p, "methods", [&](const std::string& s, const Ptr& ep) {
        if (std::find(kMethods.begin(), kMethods.end(), s) == kMethods.end()) {
          error_value(ep, "unknown method " + quote(s) +
                              " (expected one of: none, userpass, gssapi, certificate, socks4)");
          return false;
        }
        methods.push_back(s);
        return true;
      });
      rule.methods = std::move(methods);
    }
    rule.listeners = listeners(obj, p);
    if (auto it = obj.find("client_certificate"); it != obj.end()) {
      if (!it->is_boolean()) {
        error_value(
            p / "client_certificate",
            std::string("\"client_certificate\" must be true or false, got ") + describe(*it));
      } else {
        rule.client_certificate = it->get<bool>();
      }
    }
    if (auto it = obj.find("min_protection"); it != obj.end()) {
      std::string v = it->is_string() ? it->get<std::string>() : std::string();
      if (v == "integrity") {
        rule.min_protection = 1;
      } else if (v == "confidentiality") {
        rule.min_protection = 2;
      } else {
        error_value(p / "min_protection",
                    "\"min_protection\" must be \"integrity\" or \"confidentiality\", got " +
                        describe(*it));
      }
    }
    if (auto it = obj.find("require_channel_binding"); it != obj.end()) {
      if (!it->is_boolean()) {
        error_value(
            p / "require_channel_binding",
            std::string("\"require_channel_binding\" must be true or false, got ") + describe(*it));
      } else {
        rule.require_channel_binding = it->get<bool>();
      }
    }
    // Both properties exist only for GSS-API sessions: a rule that requires one but names only
    // other methods can never match.
    if ((rule.min_protection != 0 || rule.require_channel_binding) && rule.methods &&
        !contains_string(*rule.methods, "gssapi")) {
      error_value(p / "methods",
                  std::string("\"") +
                      (rule.min_protection != 0 ? "min_protection" : "require_channel_binding") +
                      "\" applies to GSS-API sessions only, and \"methods\" does not name "
                      "\"gssapi\": the rule could never match");
    }
    rule.from = from(obj, p);
    rule.when = when(obj, p);
    if (const json* arr = selector_array(obj, p, "commands")) {
      rule.has_commands = true;
      rule.commands = 0;
      for_each_string(*arr, p, "commands", [&](const std::string& s, const Ptr& ep) {
        auto c = command_from_string(s);
        if (!c) {
          error_value(ep, "unknown command " + quote(s) + " (expected one of: connect, bind, udp)");
          return false;
        }
        rule.commands |= command_bit(*c);
        return true;
      });
    }
    to(obj, p, &rule);
    rule.ports = ports(obj, p);
    if (auto it = obj.find("allow_protected"); it != obj.end()) {
      if (!it->is_boolean()) {
        error_value(p / "allow_protected",
                    std::string("\"allow_protected\" must be true or false, got ") + describe(*it));
      } else if (it->get<bool>()) {
        rule.allow_protected = true;
        bool has_glob = std::any_of(rule.to_hosts.begin(), rule.to_hosts.end(),
                                    [](const HostPattern& h) { return !h.is_exact(); });
        // A flag that changes nothing misleads whoever reviews the policy.
        if (rule.action == Action::kBlock) {
          error_value(p / "allow_protected",
                      "\"allow_protected\" has no effect on a block rule (block rules apply to "
                      "protected addresses anyway)");
        } else if (!has_glob) {
          error_value(p / "allow_protected",
                      "\"allow_protected\" only lets host globs in \"to\" (\"*\", \"*.name\") "
                      "reach protected addresses, and this rule has none; name protected "
                      "addresses with a CIDR or an exact host name instead");
        }
      }
    }
    if (auto it = obj.find("egress"); it != obj.end()) {
      // An IP of this host or an interface name (resolved by the gateway at load time).
      std::string e = it->is_string() ? it->get<std::string>() : std::string();
      bool ok = !e.empty() && e.size() <= 64 && std::all_of(e.begin(), e.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == ':' || c == '-' ||
               c == '_';
      });
      if (!ok) {
        error_value(p / "egress",
                    "\"egress\" must be an IP address of this host or an interface name");
      } else if (rule.action == Action::kBlock) {
        error_value(p / "egress", "\"egress\" has no effect on a block rule");
      } else {
        rule.egress = e;
      }
    }
    return rule;
  }

  // Rule ids are unique across client_rules and rules; each repeat is reported where it occurs
  // after the first one in the file.
  void check_ids() {
    std::stable_sort(ids_.begin(), ids_.end(), [](const IdUse& a, const IdUse& b) {
      if (a.id != b.id) return a.id < b.id;
      return before(a.pos, b.pos);
    });
    size_t first = 0;
    for (size_t i = 1; i < ids_.size(); ++i) {
      if (ids_[i].id != ids_[first].id) {
        first = i;
        continue;
      }
      error_value(ids_[i].ptr, "duplicate rule id " + quote(ids_[i].id) + " (first used at " +
                                   at_text(ids_[first].pos) + ")");
    }
  }

  const JsonSource& src_;
  Ptr at_;
  const LoadOptions& opts_;
  Scope scope_;
  const json* defaults_ = nullptr;
  LimitSpec defaults_limits_{};
  std::vector<Diagnostic> diags_;
  bool truncated_ = false;
  std::vector<IdUse> ids_;

 public:
  const json* defaults() const { return defaults_; }
  const LimitSpec& defaults_limits() const { return defaults_limits_; }
  const std::vector<IdUse>& ids() const { return ids_; }
};

Policy load_policy(const JsonSource& src, const Ptr& at, const LoadOptions& opts) {
  return PolicyLoader(src, at, opts).load();
}

Policy load_policy_set(const JsonSource& src, const Ptr& at, const std::string& dir,
                       const LoadOptions& opts) {
  namespace fs = std::filesystem;
  std::vector<Diagnostic> diags;
  PolicyLoader main_loader(src, at, opts);
  Policy policy = main_loader.load_collect();
  for (auto& d : main_loader.take_diagnostics()) diags.push_back(std::move(d));
  struct IdAt {
    std::string id;
    std::string file;
    SourcePosition pos;
  };
  std::vector<IdAt> ids;
  for (const auto& u : main_loader.ids()) ids.push_back({u.id, src.file(), u.pos});

  // policy.d: "<user>.json" and "group-<group>.json", in name order.
  std::vector<fs::path> files;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->path().extension() == ".json") files.push_back(it->path());
  }
  if (ec) {
    diags.push_back({dir, {}, "cannot read the policy directory: " + ec.message()});
    throw LoadError(std::move(diags));
  }
  std::sort(files.begin(), files.end());
  std::vector<Rule> user_rules, group_rules;
  for (const auto& f : files) {
    std::string stem = f.stem().string();
    PolicyLoader::Scope scope;
    scope.inherited_defaults = main_loader.defaults();
    scope.inherited_limits = &main_loader.defaults_limits();
    if (stem.rfind("group-", 0) == 0) {
      scope.kind = PolicyLoader::Scope::kGroup;
      scope.name = stem.substr(6);
    } else {
      scope.kind = PolicyLoader::Scope::kUser;
      scope.name = stem;
    }
    if (scope.name.empty()) {
      diags.push_back({f.string(), {}, "file name names no user or group"});
      continue;
    }
    std::ifstream in(f, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    if (!in) {
      diags.push_back({f.string(), {}, "cannot read file"});
      continue;
    }
    std::vector<Diagnostic> parse_diags;
    auto part_src = JsonSource::parse(f.string(), ss.str(), &parse_diags);
    if (!part_src) {
      for (auto& d : parse_diags) diags.push_back(std::move(d));
      continue;
    }
    PolicyLoader part_loader(*part_src, Ptr(), opts, scope);
    Policy part = part_loader.load_collect();
    for (auto& d : part_loader.take_diagnostics()) diags.push_back(std::move(d));
    for (const auto& u : part_loader.ids()) ids.push_back({u.id, part_src->file(), u.pos});
    auto& into = scope.kind == PolicyLoader::Scope::kUser ? user_rules : group_rules;
    for (auto& r : part.impl_->rules) into.push_back(std::move(r));
  }
  // Rule ids are unique across every file (audit records and metrics name rules by id).
  std::stable_sort(ids.begin(), ids.end(),
                   [](const IdAt& a, const IdAt& b) { return a.id < b.id; });
  for (size_t i = 1; i < ids.size(); ++i) {
    if (ids[i].id == ids[i - 1].id) {
      diags.push_back({ids[i].file, ids[i].pos,
                       "duplicate rule id " + quote(ids[i].id) + " (first used in " +
                           ids[i - 1].file + " at " + at_text(ids[i - 1].pos) + ")"});
    }
  }
  if (!diags.empty()) throw LoadError(std::move(diags));
  // Precedence: the user's own rules, then their groups' rules, then the main policy's.
  auto& rules = policy.impl_->rules;
  std::vector<Rule> merged;
  merged.reserve(user_rules.size() + group_rules.size() + rules.size());
  for (auto* v : {&user_rules, &group_rules, &rules}) {
    for (auto& r : *v) merged.push_back(std::move(r));
  }
  rules = std::move(merged);
  return policy;
}

Policy load_policy_text(std::string file, std::string_view text, const LoadOptions& opts) {
  std::vector<Diagnostic> diags;
  auto src = JsonSource::parse(std::move(file), text, &diags);
  if (!src) throw LoadError(std::move(diags));
  return load_policy(*src, Ptr(), opts);
}

}  // namespace socksgate::policy
