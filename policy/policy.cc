#include "policy/policy.h"

#include <algorithm>

#include "policy/rule.h"

namespace socksgate::policy {
namespace {

constexpr std::string_view kDefaultDeny = "default-deny";
constexpr std::string_view kNoClientRules = "no-client-rules";
constexpr std::string_view kOwnAddress = "gateway's own address";
constexpr size_t kMaxListed = 8;  // entries shown per selector in trace details

// Why a rule did not decide a request. Details are only spelled out when a trace is wanted,
// so that the hot path does not build strings for rules that do not match.
enum class Miss : uint8_t {
  kNone,
  kUsers,
  kGroups,
  kMethods,
  kListeners,
  kClientCertificate,
  kProtection,
  kChannelBinding,
  kFrom,
  kWhen,
  kCommands,
  kPorts,
  kTo,
  kProtected,  // would match, but the address is protected and the rule does not name it
  kUndecided,  // block rule in a name-only pre-check whose "to" depends on the address
};

// The destination, prepared once per request.
struct Target {
  std::string_view name;  // valid host name without trailing dot; empty if none or invalid
  bool name_invalid = false;
  const IpAddress* address = nullptr;  // nullopt in the request = name-only pre-check
  std::string_view protected_range;    // empty when the address is not protected
};

struct ToResult {
  bool matched = false;   // some entry matches the address or the name
  bool named = false;     // ... in a way that may reach a protected address
  bool via_zero = false;  // a /0 contains the address
  bool via_glob = false;  // a host glob matched the name
};

ToResult match_to(const Rule& rule, const Target& t) {
  ToResult res;
  if (t.address != nullptr) {
    for (const Cidr& c : rule.to_cidrs) {
      if (!c.contains(*t.address)) continue;
      res.matched = true;
      if (c.prefix_len() > 0) {
        res.named = true;
      } else {
        res.via_zero = true;
      }
    }
  }
  if (!t.name.empty()) {
    for (const HostPattern& h : rule.to_hosts) {
      if (!h.matches(t.name)) continue;
      res.matched = true;
      if (h.is_exact()) {
        res.named = true;
      } else {
        res.via_glob = true;
        if (rule.allow_protected) res.named = true;
      }
    }
  }
  return res;
}

bool has_group(const CompiledPolicy& p, const DecisionRequest& r, std::string_view group) {
  for (const auto& g : r.groups) {
    if (g == group) return true;
  }
  if (r.user.empty()) return false;
  auto it = p.group_members.find(group);
  return it != p.group_members.end() &&
         std::binary_search(it->second.begin(), it->second.end(), r.user);
}

// RFC 1961 level values, 0 for no GSS-API protection.
uint8_t protection_level(std::string_view p) {
  if (p == "confidentiality") return 2;
  if (p == "integrity") return 1;
  return 0;
}

bool contains(const std::vector<std::string>& v, std::string_view s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

bool any_contains(const std::vector<Cidr>& v, const IpAddress& a) {
  return std::any_of(v.begin(), v.end(), [&](const Cidr& c) { return c.contains(a); });
}

// The selectors about who is asking, from where and how (not what they ask for).
Miss check_identity(const CompiledPolicy& p, const Rule& rule, const DecisionRequest& r) {
  if (rule.users &&
      (r.user.empty() || !std::binary_search(rule.users->begin(), rule.users->end(), r.user))) {
    return Miss::kUsers;
  }
  if (rule.groups && std::none_of(rule.groups->begin(), rule.groups->end(),
                                  [&](const std::string& g) { return has_group(p, r, g); })) {
    return Miss::kGroups;
  }
  if (rule.methods && !contains(*rule.methods, r.method)) return Miss::kMethods;
  // SOCKS4 carries no authentication: only rules that name the method apply to it, so no
  // rule written for authenticated users can be reached by an unauthenticated protocol.
  if (!rule.methods && r.method == "socks4") return Miss::kMethods;
  if (rule.listeners && !contains(*rule.listeners, r.listener)) return Miss::kListeners;
  if (rule.client_certificate && !r.client_certificate) return Miss::kClientCertificate;
  if (rule.from && !any_contains(*rule.from, r.client)) return Miss::kFrom;
  return Miss::kNone;
}

// A rule without "when" is always open.
bool window_open(const Rule& rule, std::chrono::system_clock::time_point t) {
  return !rule.when || std::any_of(rule.when->begin(), rule.when->end(),
                                   [&](const TimeWindow& w) { return w.contains(t); });
}

Miss check_rule(const CompiledPolicy& p, const Rule& rule, const DecisionRequest& r,
                const Target& t) {
  if (Miss m = check_identity(p, rule, r); m != Miss::kNone) return m;
  if (!window_open(rule, r.time)) return Miss::kWhen;
  if (rule.min_protection != 0 && protection_level(r.protection) < rule.min_protection) {
    return Miss::kProtection;
  }
  if (rule.require_channel_binding && !r.channel_bound) return Miss::kChannelBinding;
  if ((rule.commands & command_bit(r.command)) == 0) return Miss::kCommands;
  if (rule.ports && std::none_of(rule.ports->begin(), rule.ports->end(),
                                 [&](const PortRange& pr) { return pr.contains(r.port); })) {
    return Miss::kPorts;
  }
  if (t.address == nullptr) {
    // Name-only pre-check: a pass rule counts if some address of the name could match it; a
    // block rule only if it matches whatever the name resolves to, so that the pre-check never
    // refuses a request that some resolved address would let through.
    if (!rule.has_to) return Miss::kNone;
    ToResult to = match_to(rule, t);
    if (to.matched) return Miss::kNone;
    if (rule.to_cidrs.empty()) return Miss::kTo;
    return rule.action == Action::kPass ? Miss::kNone : Miss::kUndecided;
  }
  ToResult to;
  if (rule.has_to) {
    to = match_to(rule, t);
    if (!to.matched) return Miss::kTo;
  }
  // Protection limits what a rule can let through; it never stops a block rule.
  if (rule.action == Action::kPass && !t.protected_range.empty() && !to.named) {
    return Miss::kProtected;
  }
  return Miss::kNone;
}

Miss check_client_rule(const ClientRule& rule, const ClientQuery& q) {
  if (rule.from && !any_contains(*rule.from, q.client)) return Miss::kFrom;
  if (rule.listeners && !contains(*rule.listeners, q.listener)) return Miss::kListeners;
  return Miss::kNone;
}

template <class T, class F>
std::string list(const std::vector<T>& v, F&& show) {
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i) {
    if (i == kMaxListed) {
      out += ", ... (" + std::to_string(v.size() - i) + " more)";
      break;
    }
    if (i > 0) out += ", ";
    out += show(v[i]);
  }
  return out + "]";
}

std::string list(const std::vector<std::string>& v) {
  return list(v, [](const std::string& s) { return quote_for_message(s, 64); });
}

std::string list(const std::vector<Cidr>& v) {
  return list(v, [](const Cidr& c) { return c.to_string(); });
}

std::string ports_list(const std::vector<PortRange>& v) {
  return list(v, [](const PortRange& pr) {
    return pr.first == pr.last ? std::to_string(pr.first)
                               : std::to_string(pr.first) + "-" + std::to_string(pr.last);
  });
}

std::string to_list(const Rule& rule) {
  std::vector<std::string> entries;
  for (const Cidr& c : rule.to_cidrs) entries.push_back(c.to_string());
  for (const HostPattern& h : rule.to_hosts) entries.push_back(h.to_string());
  return list(entries, [](const std::string& s) { return s; });
}

std::string commands_list(uint8_t bits) {
  std::vector<std::string> names;
  for (Command c : {Command::kConnect, Command::kBind, Command::kUdpAssociate}) {
    if (bits & command_bit(c)) names.emplace_back(to_string(c));
  }
  return list(names, [](const std::string& s) { return s; });
}

// "www.example (192.0.2.1)", "192.0.2.1", or "www.example" in a pre-check.
std::string describe_target(const DecisionRequest& r) {
  std::string host = r.host.empty() ? std::string() : quote_for_message(r.host);
  if (!r.address) return host.empty() ? std::string("(no destination)") : host;
  std::string addr = r.address->to_string();
  return host.empty() ? addr : host + " (" + addr + ")";
}

std::string user_groups(const CompiledPolicy& p, const DecisionRequest& r) {
  std::vector<std::string> all = r.groups;
  auto it = p.user_groups.find(r.user);
  if (!r.user.empty() && it != p.user_groups.end()) {
    all.insert(all.end(), it->second.begin(), it->second.end());
  }
  std::sort(all.begin(), all.end());
  all.erase(std::unique(all.begin(), all.end()), all.end());
  return list(all);
}

std::string protected_detail(const Rule& rule, const DecisionRequest& r, const Target& t) {
  std::string out = "to: " + r.address->to_string() + " is protected (" +
                    std::string(t.protected_range) + ") and the rule does not name it";
  if (!rule.has_to) return out + " (it has no \"to\")";
  ToResult to = match_to(rule, t);
  if (to.via_glob && !rule.allow_protected) {
    out +=
        " (a host glob matched; globs reach protected addresses only with "
        "\"allow_protected\": true)";
  } else if (to.via_zero) {
    out += " (a /0 matches every address but names none)";
  }
  return out;
}

std::string miss_detail(const CompiledPolicy& p, const Rule& rule, Miss miss,
                        const DecisionRequest& r, const Target& t) {
  switch (miss) {
    case Miss::kNone:
      return "matched";
    case Miss::kUsers:
      if (r.user.empty()) return "users: anonymous request not in " + list(*rule.users);
      return "users: " + quote_for_message(r.user) + " not in " + list(*rule.users);
    case Miss::kGroups:
      return "groups: none of " + user_groups(p, r) + " in " + list(*rule.groups);
    case Miss::kMethods:
      if (!rule.methods) return "methods: socks4 requests match only rules that name \"socks4\"";
      return "methods: " + quote_for_message(r.method) + " not in " + list(*rule.methods);
    case Miss::kListeners:
      return "listeners: " + quote_for_message(r.listener) + " not in " + list(*rule.listeners);
    case Miss::kClientCertificate:
      return "client_certificate: the client presented no verified TLS client certificate";
    case Miss::kProtection:
      return std::string("min_protection: ") +
             (r.protection.empty() ? std::string("the session has no GSS-API protection")
                                   : "the session has " + quote_for_message(r.protection)) +
             ", the rule needs " +
             (rule.min_protection >= 2 ? "\"confidentiality\"" : "\"integrity\" or more");
    case Miss::kChannelBinding:
      return r.method == "gssapi"
                 ? "require_channel_binding: the GSS-API context is not bound to the TLS channel"
                 : "require_channel_binding: the session did not sign on with GSS-API";
    case Miss::kFrom:
      return "from: " + r.client.to_string() + " not in " + list(*rule.from);
    case Miss::kWhen: {
      // "when: Tue 19:05 Europe/Berlin is outside mon-fri 08:00-18:30", per window.
      std::string out = "when: ";
      for (size_t i = 0; i < rule.when->size(); ++i) {
        const TimeWindow& w = (*rule.when)[i];
        if (i == kMaxListed) {
          out += "; ... (" + std::to_string(rule.when->size() - i) + " more windows)";
          break;
        }
        if (i > 0) out += "; ";
        out += format_local(w.tz.local(r.time));
        out += ' ';
        out += w.tz.name();
        out += " is outside ";
        out += w.days_text.empty() ? std::string_view("every day") : w.days_text;
        out += ' ';
        out += w.hours_text.empty() ? std::string_view("all day") : w.hours_text;
      }
      return out;
    }
    case Miss::kCommands:
      return "commands: " + std::string(to_string(r.command)) + " not in " +
             commands_list(rule.commands);
    case Miss::kPorts:
      return "ports: " + std::to_string(r.port) + " not in " + ports_list(*rule.ports);
    case Miss::kTo: {
      std::string out = "to: " + describe_target(r) + " not in " + to_list(rule);
      if (t.name_invalid) out += " (the requested name is not a valid host name)";
      return out;
    }
    case Miss::kProtected:
      return protected_detail(rule, r, t);
    case Miss::kUndecided:
      return "to: " + describe_target(r) + " may or may not be in " + to_list(rule) +
             " depending on the resolved address; a block rule does not decide a name-only "
             "pre-check";
  }
  return {};
}

std::string client_miss_detail(const ClientRule& rule, Miss miss, const ClientQuery& q) {
  switch (miss) {
    case Miss::kFrom:
      return "from: " + q.client.to_string() + " not in " + list(*rule.from);
    case Miss::kListeners:
      return "listeners: " + quote_for_message(q.listener) + " not in " + list(*rule.listeners);
    default:
      return "matched";
  }
}

std::string action_word(Action a) { return a == Action::kPass ? "pass" : "block"; }

}  // namespace

std::string quote_for_message(std::string_view s, size_t max) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "\"";
  size_t n = 0;
  for (unsigned char c : s) {
    if (n++ == max) {
      out += "...";
      break;
    }
    if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\') {
      if (c == '"' || c == '\\') {
        out += '\\';
        out += static_cast<char>(c);
      } else {
        out += "\\x";
        out += kHex[c >> 4];
        out += kHex[c & 0xf];
      }
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

std::string_view to_string(Command c) {
  switch (c) {
    case Command::kConnect:
      return "connect";
    case Command::kBind:
      return "bind";
    case Command::kUdpAssociate:
      return "udp";
  }
  return "unknown";
}

std::optional<Command> command_from_string(std::string_view s) {
  if (s == "connect") return Command::kConnect;
  if (s == "bind") return Command::kBind;
  if (s == "udp") return Command::kUdpAssociate;
  return std::nullopt;
}

Policy::Policy() : impl_(std::make_unique<Impl>()) {}
Policy::~Policy() = default;
Policy::Policy(Policy&&) noexcept = default;
Policy& Policy::operator=(Policy&&) noexcept = default;

Decision Policy::decide_client(const ClientQuery& q, std::vector<TraceStep>* trace) const {
  Decision d;
  if (!impl_ || !impl_->has_client_rules) {
    d.action = Action::kPass;
    d.rule_id = kNoClientRules;
    d.reason = "no client rules: every client passes";
    return d;
  }
  for (const ClientRule& rule : impl_->client_rules) {
    Miss miss = check_client_rule(rule, q);
    if (trace != nullptr) {
      trace->push_back(
          {rule.id, rule.origin, miss == Miss::kNone, client_miss_detail(rule, miss, q)});
    }
    if (miss != Miss::kNone) continue;
    d.action = rule.action;
    d.rule_id = rule.id;
    d.origin = rule.origin;
    d.reason = "client rule " + rule.id + " matched: " + action_word(rule.action);
    return d;
  }
  d.rule_id = kDefaultDeny;
  d.reason = "no client rule matched " + q.client.to_string() + " on listener " +
             quote_for_message(q.listener);
  return d;
}

Decision Policy::decide(const DecisionRequest& r, std::vector<TraceStep>* trace) const {
  Decision d;
  d.rule_id = kDefaultDeny;
  if (!impl_) {
    d.reason = "no rule matched";
    return d;
  }
  const Impl& p = *impl_;
  Target t;
  if (!r.host.empty()) {
    t.name = host_name_for_match(r.host);
    t.name_invalid = t.name.empty();
  }
  if (r.address) {
    t.address = &*r.address;
    t.protected_range = r.address->protected_range();
    if (t.protected_range.empty() && std::find(p.own_addresses.begin(), p.own_addresses.end(),
                                               *r.address) != p.own_addresses.end()) {
      t.protected_range = kOwnAddress;
    }
  }
  const Rule* skipped_protected = nullptr;  // first rule that would have passed but for it
  for (const Rule& rule : p.rules) {
    Miss miss = check_rule(p, rule, r, t);
    if (trace != nullptr) {
      trace->push_back(
          {rule.id, rule.origin, miss == Miss::kNone, miss_detail(p, rule, miss, r, t)});
    }
    if (miss == Miss::kProtected && skipped_protected == nullptr) skipped_protected = &rule;
    if (miss != Miss::kNone) continue;
    d.action = rule.action;
    d.rule_id = rule.id;
    d.origin = rule.origin;
    d.egress = rule.egress;
    if (rule.action == Action::kPass) d.limits = rule.limits;
    if (!r.address && rule.action == Action::kPass) {
      d.reason = "rule " + rule.id +
                 " may pass (name-only pre-check; each resolved address is decided on its own)";
    } else {
      d.reason = "rule " + rule.id + " matched: " + action_word(rule.action);
    }
    if (skipped_protected != nullptr) {
      d.reason += " (rule " + skipped_protected->id + " skipped: " + r.address->to_string() +
                  " is protected (" + std::string(t.protected_range) + ") and it does not name it)";
    }
    return d;
  }
  if (skipped_protected != nullptr) {
    d.reason = describe_target(r) + " is protected (" + std::string(t.protected_range) +
               ") and no rule names it (rule " + skipped_protected->id + " would otherwise pass)";
  } else {
    d.reason = "no rule matched";
  }
  return d;
}

std::vector<std::string> Policy::groups_of(std::string_view user) const {
  if (!impl_) return {};
  auto it = impl_->user_groups.find(user);
  if (it == impl_->user_groups.end()) return {};
  return it->second;
}

bool Policy::uses_quotas() const {
  return std::any_of(impl_->rules.begin(), impl_->rules.end(),
                     [](const Rule& r) { return r.limits.quota(); });
}

bool Policy::uses_time_windows() const {
  return impl_ && std::any_of(impl_->rules.begin(), impl_->rules.end(),
                              [](const Rule& r) { return r.when.has_value(); });
}

std::vector<std::string> Policy::egress_names() const {
  std::vector<std::string> out;
  if (!impl_) return out;
  for (const auto& r : impl_->rules) {
    if (!r.egress.empty() && std::find(out.begin(), out.end(), r.egress) == out.end()) {
      out.push_back(r.egress);
    }
  }
  return out;
}

uint8_t Policy::required_protection(const DecisionRequest& r) const {
  if (!impl_) return 0;
  bool any = false;
  uint8_t least = 2;
  for (const auto& rule : impl_->rules) {
    if (rule.action != Action::kPass || check_identity(*impl_, rule, r) != Miss::kNone ||
        !window_open(rule, r.time))
      continue;
    any = true;
    least = std::min(least, rule.min_protection);
  }
  return any ? least : 0;
}

Decision Policy::decide_any_destination(const DecisionRequest& r) const {
  Decision d;
  d.rule_id = kDefaultDeny;
  d.reason = "no rule lets this identity use " + std::string(to_string(r.command));
  if (!impl_) return d;
  // In file order: the first pass rule that matches the identity passes; the first block rule
  // that matches the identity and has no destination selectors blocks (it would block every
  // destination); block rules limited to some destinations are left to the per-destination
  // decisions.
  for (const auto& rule : impl_->rules) {
    if (rule.action == Action::kBlock) {
      if (rule.has_to || rule.ports) continue;
      Target t;
      if (check_rule(*impl_, rule, r, t) == Miss::kNone) {
        d.rule_id = rule.id;
        d.origin = rule.origin;
        d.reason = "rule " + rule.id + " blocks every destination for this identity";
        return d;
      }
      continue;
    }
    DecisionRequest probe = r;
    // Destination selectors are left to the per-destination decisions: give the probe a
    // port the rule accepts and no address, so only identity and command are compared.
    if (rule.ports && !rule.ports->empty()) probe.port = rule.ports->front().first;
    Target t;
    Miss m = check_rule(*impl_, rule, probe, t);
    if (m == Miss::kNone || m == Miss::kTo || m == Miss::kUndecided) {
      d.action = Action::kPass;
      d.rule_id = rule.id;
      d.origin = rule.origin;
      d.egress = rule.egress;
      d.limits = rule.limits;
      d.reason = "rule " + rule.id + " passes some destinations";
      return d;
    }
  }
  return d;
}

size_t Policy::rule_count() const { return impl_ ? impl_->rules.size() : 0; }
size_t Policy::client_rule_count() const { return impl_ ? impl_->client_rules.size() : 0; }

std::vector<std::string> Policy::rule_ids() const {
  std::vector<std::string> out;
  if (!impl_) return out;
  for (const auto& r : impl_->client_rules) out.push_back(r.id);
  for (const auto& r : impl_->rules) out.push_back(r.id);
  return out;
}

}  // namespace socksgate::policy
