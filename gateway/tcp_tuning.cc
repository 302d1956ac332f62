#include "gateway/tcp_tuning.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <utility>

#include "gateway/log.h"

namespace socksgate::gateway {
namespace {

// TCP_CA_NAME_MAX in the kernel (include/net/tcp.h), not exported to user space: 16 with NUL.
constexpr size_t kMaxNameLength = 15;

std::vector<std::string> read_names(const char* path) {
  std::ifstream in(path);
  std::vector<std::string> names;
  std::string name;
  while (in >> name) names.push_back(name);
  return names;
}

// The file's names, or the last ones read from it when it cannot be read now: after a chroot
// (run_as.chroot) /proc is usually not there, and a reload must see what the start saw.
std::vector<std::string> read_names_or_last(const char* path) {
  static std::mutex mu;
  static std::map<std::string, std::vector<std::string>, std::less<>> last;
  auto names = read_names(path);
  std::lock_guard lk(mu);
  if (!names.empty()) {
    last[path] = names;
  } else if (auto it = last.find(path); it != last.end()) {
    names = it->second;
  }
  return names;
}

std::string join(const std::vector<std::string>& names) {
  std::string s;
  for (const auto& n : names) s += (s.empty() ? "" : ", ") + n;
  return s;
}

bool contains(const std::vector<std::string>& v, std::string_view name) {
  return std::find(v.begin(), v.end(), name) != v.end();
}

}  // namespace

KernelCongestionControls kernel_congestion_controls() {
  KernelCongestionControls k;
  k.available = read_names_or_last("/proc/sys/net/ipv4/tcp_available_congestion_control");
  k.allowed = read_names_or_last("/proc/sys/net/ipv4/tcp_allowed_congestion_control");
  auto d = read_names_or_last("/proc/sys/net/ipv4/tcp_congestion_control");
  if (!d.empty()) k.default_name = d.front();
  return k;
}

std::optional<std::string> congestion_control_problem(std::string_view name,
                                                      const std::vector<std::string>& available,
                                                      const std::vector<std::string>& allowed) {
  // Built by appending: GCC 12 at -O3 warns (-Wrestrict) on `"\"" + std::string(...)`.
  std::string quoted(1, '"');
  quoted.append(name).push_back('"');
  if (name.empty()) return std::string("must not be empty (leave the key out for the default)");
  if (name.size() > kMaxNameLength) {
    return quoted + " is longer than a kernel congestion control name can be";
  }
  if (available.empty()) {
    return "cannot check " + quoted +
           ": /proc/sys/net/ipv4/tcp_available_congestion_control is not readable";
  }
  if (!contains(available, name)) {
    return quoted +
           " is not a congestion control available on this host (available: " + join(available) +
           "; modules such as tcp_" + std::string(name) + " must be loaded first)";
  }
  if (!contains(allowed, name)) {
    return quoted +
           " is available but not in net.ipv4.tcp_allowed_congestion_control, so the "
           "gateway (which gives up CAP_NET_ADMIN) may not set it (allowed: " +
           join(allowed) + ")";
  }
  return std::nullopt;
}

int set_congestion_control(int fd, const std::string& name) {
  if (name.empty()) return 0;
  if (::setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, name.data(),
                   static_cast<socklen_t>(name.size())) != 0) {
    return errno;
  }
  return 0;
}

void apply_congestion_control(int fd, const std::string& name, std::string_view what) {
  int err = set_congestion_control(fd, name);
  if (err == 0) return;
  // Once per (name, errno): a host where the setting stopped working would otherwise log on
  // every connection.
  static std::mutex mu;
  static std::set<std::pair<std::string, int>> reported;
  {
    std::lock_guard lk(mu);
    if (!reported.emplace(name, err).second) return;
  }
  log::warn("cannot set TCP congestion control \"", name, "\" on ", what, ": ", std::strerror(err),
            "; the kernel's default stays (reported once)");
}

}  // namespace socksgate::gateway
