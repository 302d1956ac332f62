#include "policy/lint.h"

#include <algorithm>
#include <map>
#include <utility>

#include "policy/rule.h"

namespace socksgate::policy {
namespace {

constexpr uint32_t kWeek = 7 * kSecondsPerDay;

using Interval = std::pair<uint32_t, uint32_t>;  // [first, second) seconds into the week

std::string where(const RuleOrigin& o) {
  return o.file + ":" + std::to_string(o.pos.line) + ":" + std::to_string(o.pos.column);
}

std::string q(std::string_view s) { return quote_for_message(s, 64); }

Diagnostic warning(const Rule& r, std::string message) {
  return {r.origin.file, r.origin.pos, "warning: " + std::move(message)};
}

// Local week time covered by a window, Monday 00:00 = 0; a window that wraps past Sunday
// midnight continues on Monday.
std::vector<Interval> week_intervals(const TimeWindow& w) {
  std::vector<Interval> out;
  for (uint32_t d = 0; d < 7; ++d) {
    if (((w.days >> d) & 1) == 0) continue;
    uint32_t base = d * kSecondsPerDay;
    if (!w.wraps()) {
      out.emplace_back(base + w.start, base + w.end);
      continue;
    }
    uint32_t first = base + w.start, last = base + kSecondsPerDay + w.end;
    if (last <= kWeek) {
      out.emplace_back(first, last);
    } else {
      out.emplace_back(first, kWeek);
      out.emplace_back(0, last - kWeek);
    }
  }
  return out;
}

std::vector<Interval> merged(std::vector<Interval> v) {
  std::sort(v.begin(), v.end());
  std::vector<Interval> out;
  for (const auto& i : v) {
    if (i.first >= i.second) continue;
    if (!out.empty() && i.first <= out.back().second) {
      out.back().second = std::max(out.back().second, i.second);
    } else {
      out.push_back(i);
    }
  }
  return out;
}

bool overlaps(const std::vector<Interval>& a, const std::vector<Interval>& b) {
  for (const auto& x : a) {
    for (const auto& y : b) {
      if (x.first < y.second && y.first < x.second) return true;
    }
  }
  return false;
}

// Every interval of `inner` lies in the union `outer` (merged).
bool covered(const std::vector<Interval>& inner, const std::vector<Interval>& outer) {
  for (const auto& x : inner) {
    if (x.first >= x.second) continue;
    bool ok = std::any_of(outer.begin(), outer.end(), [&](const Interval& y) {
      return y.first <= x.first && x.second <= y.second;
    });
    if (!ok) return false;
  }
  return true;
}

template <class T>
bool subset(const std::optional<std::vector<T>>& later,
            const std::optional<std::vector<T>>& earlier) {
  if (!earlier) return true;
  if (!later) return false;
  return std::all_of(later->begin(), later->end(), [&](const T& x) {
    return std::find(earlier->begin(), earlier->end(), x) != earlier->end();
  });
}

bool cidr_covers(const Cidr& outer, const Cidr& inner) {
  return outer.base().is_v4() == inner.base().is_v4() && outer.prefix_len() <= inner.prefix_len() &&
         outer.contains(inner.base());
}

bool cidrs_cover(const std::optional<std::vector<Cidr>>& earlier,
                 const std::optional<std::vector<Cidr>>& later) {
  if (!earlier) return true;
  if (!later) return false;
  return std::all_of(later->begin(), later->end(), [&](const Cidr& c) {
    return std::any_of(earlier->begin(), earlier->end(),
                       [&](const Cidr& e) { return cidr_covers(e, c); });
  });
}

// Every name `inner` matches, `outer` matches too.
bool host_covers(const HostPattern& outer, const HostPattern& inner) {
  using K = HostPattern::Kind;
  if (outer.kind() == K::kAny) return true;
  std::string o = outer.to_string(), i = inner.to_string();
  if (outer.kind() == K::kExact) return inner.kind() == K::kExact && o == i;
  // outer is "*.x": an exact name it matches, or "*.y" where y is x or a subdomain of x.
  if (inner.kind() == K::kExact) return outer.matches(i);
  if (inner.kind() == K::kAny) return false;
  std::string y = i.substr(2);
  return y == o.substr(2) || outer.matches(y);
}

// An entry of "to" that may reach protected addresses (policy.h).
bool names_cidr(const Cidr& c) { return c.prefix_len() > 0; }
bool names_host(const Rule& r, const HostPattern& h) { return h.is_exact() || r.allow_protected; }

// The destination selectors: does `a` match every destination `b` matches, protected addresses
// included? A pass rule only reaches a protected address that it names; a block rule matches
// it anyway.
bool to_covers(const Rule& a, const Rule& b) {
  bool a_pass = a.action == Action::kPass;
  if (!a.has_to) {
    if (!a_pass) return true;
    // A names no protected address: b must not match any.
    if (!b.has_to) return b.action == Action::kPass;
    if (b.action == Action::kBlock) return false;
    return std::none_of(b.to_cidrs.begin(), b.to_cidrs.end(), names_cidr) &&
           std::none_of(b.to_hosts.begin(), b.to_hosts.end(),
                        [&](const HostPattern& h) { return names_host(b, h); });
  }
  if (!b.has_to) return false;
  for (const Cidr& c : b.to_cidrs) {
    // Protected addresses in c that b matches: all of them (block), the named ones (pass).
    bool need_naming = a_pass && (b.action == Action::kBlock || names_cidr(c));
    bool ok = std::any_of(a.to_cidrs.begin(), a.to_cidrs.end(), [&](const Cidr& e) {
      return cidr_covers(e, c) && (!need_naming || names_cidr(e));
    });
    if (!ok) return false;
  }
  for (const HostPattern& h : b.to_hosts) {
    bool need_naming = a_pass && (b.action == Action::kBlock || names_host(b, h));
    bool ok = std::any_of(a.to_hosts.begin(), a.to_hosts.end(), [&](const HostPattern& e) {
      return host_covers(e, h) && (!need_naming || names_host(a, e));
    });
    if (!ok) return false;
  }
  return true;
}

bool ports_cover(const Rule& a, const Rule& b) {
  if (!a.ports) return true;
  if (!b.ports) return false;
  return std::all_of(b.ports->begin(), b.ports->end(), [&](const PortRange& p) {
    return std::any_of(a.ports->begin(), a.ports->end(),
                       [&](const PortRange& e) { return e.first <= p.first && p.last <= e.last; });
  });
}

bool methods_cover(const Rule& a, const Rule& b) {
  // A missing "methods" matches every method but socks4.
  if (!a.methods) return !b.methods || !std::count(b.methods->begin(), b.methods->end(), "socks4");
  return subset(b.methods, a.methods);
}

bool when_covers(const Rule& a, const Rule& b) {
  if (!a.when) return true;
  if (!b.when) return false;
  for (const TimeWindow& w : *b.when) {
    std::vector<Interval> outer;
    for (const TimeWindow& e : *a.when) {
      if (e.tz.name() != w.tz.name()) continue;  // other zones: not provable
      auto iv = week_intervals(e);
      outer.insert(outer.end(), iv.begin(), iv.end());
    }
    if (!covered(week_intervals(w), merged(std::move(outer)))) return false;
  }
  return true;
}

// `a` (earlier) matches every request `b` matches.
bool shadows(const Rule& a, const Rule& b) {
  return subset(b.users, a.users) && subset(b.groups, a.groups) && methods_cover(a, b) &&
         subset(b.listeners, a.listeners) && (!a.client_certificate || b.client_certificate) &&
         a.min_protection <= b.min_protection &&
         (!a.require_channel_binding || b.require_channel_binding) && cidrs_cover(a.from, b.from) &&
         when_covers(a, b) && (b.commands & ~a.commands) == 0 && ports_cover(a, b) &&
         to_covers(a, b);
}

}  // namespace

std::vector<Diagnostic> lint(const Policy& policy, const LintContext& ctx) {
  std::vector<Diagnostic> out;
  if (!policy.impl_) return out;
  const CompiledPolicy& p = *policy.impl_;
  for (size_t j = 0; j < p.rules.size(); ++j) {
    const Rule& b = p.rules[j];
    if (b.users && ctx.known_user) {
      for (const auto& u : *b.users) {
        if (ctx.known_user(u)) continue;
        out.push_back(warning(b, "rule " + q(b.id) + ": user " + q(u) + " is not in " +
                                     ctx.users_source +
                                     " (users of PAM or Kerberos may still exist)"));
      }
    }
    if (b.groups) {
      for (const auto& g : *b.groups) {
        if (p.group_members.count(g) != 0) continue;
        if (ctx.external_group && ctx.external_group(g)) continue;
        std::string m =
            "rule " + q(b.id) + ": group " + q(g) + " is not defined in the policy's \"groups\"";
        if (ctx.external_group) m += " nor " + ctx.groups_source;
        out.push_back(warning(b, std::move(m)));
      }
    }
    if (b.when) {
      for (size_t x = 0; x < b.when->size(); ++x) {
        for (size_t y = x + 1; y < b.when->size(); ++y) {
          const TimeWindow& wx = (*b.when)[x];
          const TimeWindow& wy = (*b.when)[y];
          if (wx.tz.name() != wy.tz.name()) continue;
          if (!overlaps(week_intervals(wx), week_intervals(wy))) continue;
          out.push_back(warning(b, "rule " + q(b.id) + ": \"when\" windows " +
                                       std::to_string(x + 1) + " (" + wx.to_string() + ") and " +
                                       std::to_string(y + 1) + " (" + wy.to_string() +
                                       ") overlap"));
        }
      }
    }
    for (size_t i = 0; i < j; ++i) {
      const Rule& a = p.rules[i];
      if (!shadows(a, b)) continue;
      out.push_back(warning(b, "rule " + q(b.id) + " can never match: rule " + q(a.id) + " (" +
                                   where(a.origin) + ") comes first and matches every request " +
                                   "it would (" + (a.action == b.action ? "same" : "opposite") +
                                   " action)"));
      break;
    }
  }
  return out;
}

}  // namespace socksgate::policy
