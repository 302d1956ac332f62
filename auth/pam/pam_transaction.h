#pragma once
// One PAM transaction, start to end, in the calling (worker) process: pam_start, PAM_RHOST,
// pam_authenticate(PAM_DISALLOW_NULL_AUTHTOK), pam_acct_mgmt, PAM_USER re-read, the user's
// Unix groups (NSS getgrouplist), pam_end. Blocking, may sleep; one handle, never shared.
//
// The conversation answers every echo-off prompt (at most kMaxPasswordPrompts) with the
// password from memory, records info and error messages (bounded), and fails an echo-on
// prompt or any other style with PAM_CONV_ERR: nobody is there to type.

#include "auth/pam/monitor_protocol.h"

namespace socksgate::auth::pam {

inline constexpr int kMaxPasswordPrompts = 4;

// `req.password` is read, not kept; the caller zeroes it. Never throws. `after_start` (may be
// null) runs once pam_start has returned, before any module is called.
AuthResult run_pam_transaction(const AuthRequest& req, void (*after_start)(void*) = nullptr,
                               void* arg = nullptr);

// The Unix group names of `user` (primary group included), from NSS; empty if NSS does not
// know the user. Bounded by kMaxGroups.
std::vector<std::string> unix_groups(const std::string& user);

}  // namespace socksgate::auth::pam
