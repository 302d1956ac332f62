#pragma once
// `socksgate validate`'s deeper checks over a loaded policy (main policy and policy.d as one
// list, in evaluation order). Everything here is a warning: the policy loads and works, but
// probably not as its author meant. Pure: whatever it needs to know about the host comes in
// through LintContext.
//
// Checks (documented in docs/policy.md, "Lint warnings"):
// - users named by rules (or by a policy.d/<user>.json file) that the user source does not
//   know; groups neither defined in "groups" nor known to an authentication back-end;
// - shadowed rules: a rule that can never decide because an earlier rule matches every request
//   it matches. Conservative: reported only when each selector of the earlier rule is absent or
//   provably a superset of the later one's (lists by inclusion, CIDRs by containment, host
//   patterns by coverage, windows in the same zone by inclusion), including the protected-
//   address rules; anything not provable is not reported;
// - overlapping windows within one rule's "when" (in the same time zone).

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "policy/json_source.h"
#include "policy/policy.h"

namespace socksgate::policy {

struct LintContext {
  // Whether a user exists (e.g. is in the userpass password file). Empty: users are not checked
  // (their source cannot be listed: PAM, Kerberos).
  std::function<bool(std::string_view)> known_user;
  // Where known_user looks, for messages: "the password file users.passwd".
  std::string users_source;
  // Whether a group not defined in the policy's "groups" may come from an authentication
  // back-end (e.g. a Unix group PAM would report). Empty: none does.
  std::function<bool(std::string_view)> external_group;
  // Where external_group looks, for messages: "a group on this host (PAM)".
  std::string groups_source;
};

// Warnings, each with its rule's file:line:col; messages start with "warning: " so that
// Diagnostic::to_string() prints "file:line:col: warning: ...". In evaluation order.
std::vector<Diagnostic> lint(const Policy& policy, const LintContext& ctx);

}  // namespace socksgate::policy
