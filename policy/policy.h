#pragma once
// The policy: who may talk to the gateway at all (client rules) and what an authenticated
// user may do (rules). Pure and synchronous: decide() does no I/O and takes no locks, so it
// is trivially testable and shared by the gateway and `socksgate explain`.
//
// A Policy is immutable once loaded; the gateway shares it as std::shared_ptr<const Policy>
// and swaps the pointer on reload.
//
// Semantics (documented for admins in docs/policy.md):
// - Rules are evaluated in file order; the first rule whose selectors all match decides
//   (pass or block). No match is a block by the implicit rule id "default-deny".
// - Selectors: users, groups (from the policy's "groups" or the identity), methods,
//   listeners, from (client CIDRs), commands, to (CIDRs and host names/globs), ports. A missing
//   selector matches anything. "when": the request time (DecisionRequest::time) falls in one
//   of the rule's windows (policy/time_window.h). Session properties: client_certificate (a
//   verified TLS client certificate), min_protection (GSS-API per-message protection at least this
//   level; sessions without GSS-API never match) and require_channel_binding (a GSS-API context
//   bound to the TLS channel).
// - Destinations: an address matches a CIDR in "to"; the requested host name (when the client
//   sent a name) matches a host pattern ("host.example" exact, "*.example" any subdomain, "*"
//   any name). Names are compared case-insensitively, without a trailing dot.
// - Protected addresses (IpAddress::is_protected(), plus the gateway's own addresses given at
//   load time) are reachable only through a rule that names them explicitly: by a CIDR with a
//   prefix length > 0 containing the address, or by an exact (wildcard-free) host name. A rule
//   with "allow_protected": true lets its host globs reach them too. A rule that would match but
//   for this is skipped, and evaluation continues with the next rule. Protection only limits
//   pass rules: a block rule that matches a protected address blocks it.
// - A domain-name request is decided once per resolved address (DecisionRequest::address);
//   the gateway connects only to addresses that pass.

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "policy/address.h"
#include "policy/json_source.h"

namespace socksgate::policy {

enum class Command : uint8_t { kConnect, kBind, kUdpAssociate };
std::string_view to_string(Command c);  // "connect", "bind", "udp"
std::optional<Command> command_from_string(std::string_view s);

enum class Action : uint8_t { kPass, kBlock };

// What a client rule is asked: before any byte of SOCKS is read.
struct ClientQuery {
  IpAddress client;
  std::string listener;
};

// What a rule is asked: after authentication, once per candidate address.
struct DecisionRequest {
  std::string user;                 // empty for anonymous (method "none")
  std::vector<std::string> groups;  // groups the authenticator supplied (policy groups added)
  std::string method;               // "none", "userpass", ...
  // The client presented a TLS client certificate that verified (whatever the method).
  bool client_certificate = false;
  // GSS-API sessions: the agreed per-message protection ("none", "integrity",
  // "confidentiality"); empty for every other method.
  std::string protection;
  // GSS-API sessions: the context is bound to the TLS channel it came over.
  bool channel_bound = false;
  std::string listener;
  IpAddress client;
  Command command = Command::kConnect;
  std::string host;                  // requested name; empty when the client sent an address
  std::optional<IpAddress> address;  // the (resolved) address; nullopt = name-only pre-check
  uint16_t port = 0;
  // When the request was made: rules with "when" windows compare it in their time zones.
  std::chrono::system_clock::time_point time = std::chrono::system_clock::now();
};

// A pass rule's per-user limits (docs/policy.md, "limits"). 0 = no limit. Enforced by the
// gateway: the limits of the rule that passed a session apply to that session.
struct Limits {
  uint64_t sessions = 0;                 // concurrent sessions of the user
  uint64_t sessions_per_rule = 0;        // concurrent sessions under the rule, all users
  uint64_t new_sessions_per_minute = 0;  // new sessions of the user (a token bucket)
  // Bandwidth, bytes/s: of each session, and shared by all of the user's sessions.
  uint64_t session_up = 0, session_down = 0;
  uint64_t user_up = 0, user_down = 0;
  // Bytes (up + down) per user per UTC calendar day / ISO week / month.
  uint64_t quota_day = 0, quota_week = 0, quota_month = 0;
  bool any() const {
    return sessions || sessions_per_rule || new_sessions_per_minute || session_up || session_down ||
           user_up || user_down || quota_day || quota_week || quota_month;
  }
  bool bandwidth() const { return session_up || session_down || user_up || user_down; }
  bool quota() const { return quota_day || quota_week || quota_month; }
  friend bool operator==(const Limits&, const Limits&) = default;
};

// Where a rule came from, for explain and audit.
struct RuleOrigin {
  std::string file;
  SourcePosition pos;
};

struct Decision {
  Action action = Action::kBlock;
  // "default-deny" when no rule matched; "no-client-rules" from decide_client() when the policy
  // has no client rules. Both ids are reserved: policy rules cannot use them.
  std::string rule_id;
  RuleOrigin origin;  // empty file for the implicit default
  // Human-readable reason, e.g. "rule alice-web matched" or
  // "127.0.0.1 is protected (loopback) and no rule names it".
  std::string reason;
  // The deciding rule's "egress" (an IP of this host or an interface name), if any.
  std::string egress;
  // The deciding pass rule's "limits" (none for block decisions).
  Limits limits;
  bool allowed() const { return action == Action::kPass; }
};

// One evaluated rule, for `socksgate explain`: why each earlier rule did not match.
struct TraceStep {
  std::string rule_id;
  RuleOrigin origin;
  bool matched = false;
  std::string detail;  // "users: bob not in [alice]", "matched", ...
};

struct Rule;  // defined in policy/rule.h (compiled form)
struct ClientRule;
struct LoadOptions;
struct LintContext;

class Policy {
 public:
  ~Policy();
  Policy(Policy&&) noexcept;
  Policy& operator=(Policy&&) noexcept;

  // Client rules: first match wins; no match = block ("default-deny"). A policy with no
  // client_rules at all passes every client (the user rules still apply).
  Decision decide_client(const ClientQuery& q, std::vector<TraceStep>* trace = nullptr) const;

  // User rules. With address == nullopt (a name-only pre-check) a rule whose destination
  // selectors could match some address of that name counts as matching; the gateway uses the
  // pre-check only to fail fast before resolving.
  // Precisely: in a pre-check a pass rule counts if it could match some address, a block rule
  // only if it matches whatever the name resolves to (no "to", or a host pattern matches), so a
  // pre-check block means every address would be blocked. Protection is not checked (there is
  // no address yet); each resolved address must still be decided on its own.
  Decision decide(const DecisionRequest& r, std::vector<TraceStep>* trace = nullptr) const;

  // For commands whose destinations come later (UDP ASSOCIATE): passes when some pass rule
  // matches the identity, listener, source and command, whatever its destination selectors
  // ("to", "ports"); each destination is then decided with decide().
  Decision decide_any_destination(const DecisionRequest& r) const;

  // The GSS-API protection this identity needs for any pass rule that could apply to it: the
  // least "min_protection" (1 integrity, 2 confidentiality; 0 none) among the pass rules whose
  // identity selectors (users, groups, methods, listeners, from, client_certificate) match `r`
  // and whose "when" windows are open at r.time. 0 when no such rule matches. The gateway grants
  // at least this level in the RFC 1961 subnegotiation, so a user whose every rule demands
  // confidentiality gets it even when the client asks for integrity. Only user, groups,
  // method, listener, client, client_certificate and time of `r` are read.
  uint8_t required_protection(const DecisionRequest& r) const;

  // Groups the policy defines for `user` (from "groups").
  std::vector<std::string> groups_of(std::string_view user) const;

  size_t rule_count() const;
  // True if some rule sets a byte quota ("limits": {"quota": ...}).
  bool uses_quotas() const;
  // True if some rule has "when" windows: what it allows changes as the clock moves, so the
  // gateway re-checks running sessions at every minute boundary.
  bool uses_time_windows() const;
  // Every distinct "egress" the rules name (the gateway resolves them at load time).
  std::vector<std::string> egress_names() const;
  size_t client_rule_count() const;
  // The ids of the client rules and the rules, in file order (metrics label values).
  std::vector<std::string> rule_ids() const;

 private:
  friend class PolicyLoader;
  friend Policy load_policy_set(const JsonSource& src, const nlohmann::json::json_pointer& at,
                                const std::string& dir, const LoadOptions& opts);
  friend std::vector<Diagnostic> lint(const Policy& policy, const LintContext& ctx);
  Policy();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

struct LoadOptions {
  // The gateway's own listener addresses: protected like loopback.
  std::vector<IpAddress> own_addresses;
  // The gateway's listener names. When non-empty, a "listeners" entry naming none of them is
  // an error (a typo there would silently make a rule match nothing).
  std::vector<std::string> known_listeners;
};

// Loads a policy document (the top-level object: "groups", "client_rules", "rules").
// Every problem is reported, in file order, as a Diagnostic with file:line:col; unknown keys
// are errors. Throws LoadError if there is any problem.
Policy load_policy(const JsonSource& src, const nlohmann::json::json_pointer& at,
                   const LoadOptions& opts = {});
Policy load_policy_text(std::string file, std::string_view text, const LoadOptions& opts = {});

// The main policy plus a policy.d directory of per-user ("<user>.json") and per-group
// ("group-<group>.json") files, each {"rules": [...], "defaults": {...}}. A user file's rules
// apply to that user only, a group file's to that group's members. Precedence: user rules,
// then group rules (files in name order), then the main policy's rules, then default deny.
// "defaults" (methods, listeners, from, client_certificate, min_protection,
// require_channel_binding, limits) are inherited by rules that do not
// set them: a file's own over the main policy's. Rule ids are unique across all files; every
// problem in every file is reported.
Policy load_policy_set(const JsonSource& src, const nlohmann::json::json_pointer& at,
                       const std::string& dir, const LoadOptions& opts = {});

}  // namespace socksgate::policy
