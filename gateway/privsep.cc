#include "gateway/privsep.h"

#include <grp.h>
#include <linux/capability.h>
#include <pwd.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <vector>

namespace socksgate::gateway {
namespace {

std::string errno_text(const char* what) { return std::string(what) + ": " + std::strerror(errno); }

[[noreturn]] void fail_proof(const char* what) {
  std::fprintf(stderr, "socksgate: privilege drop not proven: %s; aborting\n", what);
  std::fflush(stderr);
  std::abort();
}

bool read_caps(__user_cap_data_struct (&data)[2]) {
  __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
  return ::syscall(SYS_capget, &hdr, data) == 0;
}

bool no_caps() {
  __user_cap_data_struct data[2]{};
  if (!read_caps(data)) return false;
  for (const auto& d : data) {
    if (d.effective != 0 || d.permitted != 0 || d.inheritable != 0) return false;
  }
  return true;
}

std::string name_of_uid(uid_t u) {
  passwd* pw = ::getpwuid(u);
  return pw ? pw->pw_name : "?";
}

std::string name_of_gid(gid_t g) {
  group* gr = ::getgrgid(g);
  return gr ? gr->gr_name : "?";
}

}  // namespace

DropPlan plan_drop(const RunAsConfig& cfg) {
  DropPlan p;
  errno = 0;
  passwd* pw = ::getpwnam(cfg.user.c_str());
  if (pw == nullptr) {
    throw std::runtime_error("run_as: no user \"" + cfg.user + "\" on this host");
  }
  if (pw->pw_uid == 0) {
    throw std::runtime_error("run_as: user \"" + cfg.user +
                             "\" is root (uid 0); the gateway never serves traffic as root");
  }
  p.uid = pw->pw_uid;
  p.user = cfg.user;
  std::string group_name = cfg.group;
  if (group_name.empty() && cfg.user == "nobody") group_name = "nogroup";
  if (group_name.empty()) {
    p.gid = pw->pw_gid;
    p.group = name_of_gid(p.gid);
  } else {
    struct group* gr = ::getgrnam(group_name.c_str());
    if (gr == nullptr) {
      throw std::runtime_error("run_as: no group \"" + group_name + "\" on this host");
    }
    p.gid = gr->gr_gid;
    p.group = group_name;
  }
  if (p.gid == 0) {
    throw std::runtime_error("run_as: group \"" + p.group + "\" is gid 0 (root's group)");
  }
  if (!cfg.chroot.empty()) {
    if (cfg.chroot.front() != '/') {
      throw std::runtime_error("run_as.chroot: \"" + cfg.chroot + "\" is not an absolute path");
    }
    struct stat st {};
    if (::stat(cfg.chroot.c_str(), &st) != 0) {
      throw std::runtime_error("run_as.chroot: " + errno_text(cfg.chroot.c_str()));
    }
    if (!S_ISDIR(st.st_mode)) {
      throw std::runtime_error("run_as.chroot: \"" + cfg.chroot + "\" is not a directory");
    }
    if (st.st_uid != 0 || (st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
      throw std::runtime_error("run_as.chroot: \"" + cfg.chroot +
                               "\" must be owned by root and writable by nobody else");
    }
    p.chroot = cfg.chroot;
  }
  return p;
}

void drop_privileges(const DropPlan& p) {
  if (::geteuid() != 0) throw std::runtime_error("privilege drop: not running as root");
  // Names were resolved by plan_drop (NSS may be unreachable inside the chroot).
  if (!p.chroot.empty()) {
    if (::chroot(p.chroot.c_str()) != 0 || ::chdir("/") != 0) {
      fail_proof(("chroot to " + p.chroot + " failed: " + std::strerror(errno)).c_str());
    }
  }
  // glibc applies these to every thread of the process (the setxid broadcast).
  if (::setgroups(0, nullptr) != 0) fail_proof("setgroups(0) failed");
  if (::setresgid(p.gid, p.gid, p.gid) != 0) fail_proof("setresgid failed");
  if (::setresuid(p.uid, p.uid, p.uid) != 0) fail_proof("setresuid failed");
  set_no_new_privs();

  // The proof (OpenSSH's permanently_set_uid): root must be out of reach for good.
  if (::setresuid(0, 0, 0) == 0 || ::setuid(0) == 0 || ::seteuid(0) == 0) {
    fail_proof("regaining uid 0 succeeded");
  }
  if (p.gid != 0 && (::setegid(0) == 0 || ::setgid(0) == 0))
    fail_proof("regaining gid 0 succeeded");
  uid_t ru, eu, su;
  gid_t rg, eg, sg;
  if (::getresuid(&ru, &eu, &su) != 0 || ru != p.uid || eu != p.uid || su != p.uid) {
    fail_proof("user ids do not read back as set");
  }
  if (::getresgid(&rg, &eg, &sg) != 0 || rg != p.gid || eg != p.gid || sg != p.gid) {
    fail_proof("group ids do not read back as set");
  }
  if (::getgroups(0, nullptr) != 0) fail_proof("supplementary groups remain");
  if (!no_caps()) fail_proof("capabilities remain");
  if (::prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1) fail_proof("no_new_privs is not set");
}

void set_no_new_privs() {
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
    throw std::runtime_error(errno_text("prctl(PR_SET_NO_NEW_PRIVS)"));
  }
}

void drop_capabilities() {
  if (no_caps()) return;
  ::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
  __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2]{};
  if (::syscall(SYS_capset, &hdr, data) != 0) throw std::runtime_error(errno_text("capset"));
  if (!no_caps()) throw std::runtime_error("capabilities remain after capset");
}

std::string describe_credentials() {
  uid_t u = ::geteuid();
  gid_t g = ::getegid();
  return "uid=" + std::to_string(u) + "(" + name_of_uid(u) + ") gid=" + std::to_string(g) + "(" +
         name_of_gid(g) + ")";
}

}  // namespace socksgate::gateway
