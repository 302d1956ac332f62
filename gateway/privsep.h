#pragma once
// Privilege separation, the gateway's half (the auth monitor's half is auth/pam/monitor.h).
//
// Started as root, `socksgate run` loads its configuration, forks the auth monitor's
// supervisor, sets PR_SET_NO_NEW_PRIVS, starts its threads, binds its listeners, opens its
// audit log, and then drop_privileges() switches every thread to the run_as user and group
// for good (optional chroot, setgroups(0), setresgid, setresuid), proves it (regaining root
// must fail, the ids and groups must read back as set, no capability may remain) and aborts
// if any proof fails. From then on every file the gateway opens — on SIGHUP it re-reads the
// config, the policy and the password file, and may open a new audit file — is opened as
// that user: files must be readable (and the audit/ready-file directories writable) by it.
//
// Started unprivileged (e.g. systemd `User=`), there is nothing to drop: run_as is ignored,
// capabilities the process was given (AmbientCapabilities=) are dropped after binding, and
// the auth monitor runs unprivileged too (PAM modules that need root will deny).

#include <sys/types.h>

#include <string>

namespace socksgate::gateway {

// "run_as" in the configuration (docs/configuration.md). Read at start only.
struct RunAsConfig {
  std::string user = "nobody";
  std::string group;   // empty: "nogroup" for the default user, else the user's primary group
  std::string chroot;  // empty: no chroot
};

struct DropPlan {
  uid_t uid = 0;
  gid_t gid = 0;
  std::string user;
  std::string group;
  std::string chroot;
};

// Resolves the names through NSS and checks the chroot directory (absolute, a directory, owned
// by root and writable by nobody else). Throws std::runtime_error with a clear message.
DropPlan plan_drop(const RunAsConfig& cfg);

// Applies `plan` to the whole process (all threads) and proves it; aborts the process if the
// proof fails. Throws std::runtime_error (before anything changed) if the process is not root.
void drop_privileges(const DropPlan& plan);

// PR_SET_NO_NEW_PRIVS for this thread and every thread created after it. Throws on failure.
void set_no_new_privs();

// Drops every capability this process holds (for unprivileged starts). Throws on failure.
void drop_capabilities();

// "uid=65534(nobody) gid=65534(nogroup)" for logs.
std::string describe_credentials();

}  // namespace socksgate::gateway
