#pragma once
// Helpers shared by the benchmark tools (socksbench, udpbench): /proc CPU accounting, exact
// send/recv, percentiles, the fd limit. POSIX only, no project libraries.

#include <dirent.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace bench_util {

using Clock = std::chrono::steady_clock;

inline double seconds_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

inline std::string errno_text(const char* what) {
  return std::string(what) + ": " + std::strerror(errno);
}

// ---------------------------------------------------------------------------------------------
// Minimal JSON line writer.

inline std::string json_escape(std::string_view s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char b[8];
          std::snprintf(b, sizeof b, "\\u%04x", static_cast<unsigned>(c));
          out += b;
        } else {
          out += c;
        }
    }
  }
  return out;
}

inline bool send_all(int fd, const void* data, size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

// Returns false on error or EOF (errno is 0 on EOF).
inline bool recv_all(int fd, void* data, size_t n) {
  char* p = static_cast<char*>(data);
  while (n > 0) {
    ssize_t r = recv(fd, p, n, 0);
    if (r == 0) {
      errno = 0;
      return false;
    }
    if (r < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    p += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}

inline std::string io_error(const char* what) {
  if (errno == 0) return std::string(what) + ": unexpected EOF";
  if (errno == EAGAIN || errno == EWOULDBLOCK) return std::string(what) + ": timeout";
  return errno_text(what);
}

inline void raise_nofile_limit() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

struct ProcStat {
  pid_t ppid = 0;
  unsigned long long ticks = 0;  // utime + stime + cutime + cstime
};

inline std::optional<ProcStat> read_proc_stat(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string s;
  if (!std::getline(f, s)) return std::nullopt;
  auto rp = s.rfind(')');
  if (rp == std::string::npos) return std::nullopt;
  std::istringstream is(s.substr(rp + 2));
  std::vector<std::string> tok;
  std::string t;
  while (is >> t && tok.size() < 16) tok.push_back(t);
  if (tok.size() < 15) return std::nullopt;
  // tok[0] is field 3 (state): ppid is field 4, utime..cstime are fields 14..17.
  ProcStat ps;
  ps.ppid = static_cast<pid_t>(std::strtol(tok[1].c_str(), nullptr, 10));
  for (int i = 11; i <= 14; ++i) ps.ticks += std::strtoull(tok[i].c_str(), nullptr, 10);
  return ps;
}

inline double self_cpu_seconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

// Busy CPU seconds of the whole machine (all CPUs) from /proc/stat.
inline double machine_busy_seconds() {
  static const double hz = static_cast<double>(sysconf(_SC_CLK_TCK));
  std::ifstream f("/proc/stat");
  std::string cpu;
  unsigned long long user = 0, nice = 0, sys = 0, idle = 0, iowait = 0, irq = 0, softirq = 0,
                     steal = 0;
  f >> cpu >> user >> nice >> sys >> idle >> iowait >> irq >> softirq >> steal;
  return static_cast<double>(user + nice + sys + irq + softirq + steal) / hz;
}

// Every live process under `roots` (the roots included), from /proc.
inline std::vector<pid_t> process_tree(const std::vector<pid_t>& roots) {
  std::multimap<pid_t, pid_t> children;
  if (DIR* d = opendir("/proc")) {
    while (dirent* e = readdir(d)) {
      char* end = nullptr;
      long v = std::strtol(e->d_name, &end, 10);
      if (end == e->d_name || *end != '\0') continue;
      if (auto ps = read_proc_stat(static_cast<pid_t>(v))) {
        children.emplace(ps->ppid, static_cast<pid_t>(v));
      }
    }
    closedir(d);
  }
  std::vector<pid_t> out;
  std::deque<pid_t> todo(roots.begin(), roots.end());
  while (!todo.empty()) {
    pid_t p = todo.front();
    todo.pop_front();
    if (std::find(out.begin(), out.end(), p) != out.end()) continue;
    if (access(("/proc/" + std::to_string(p)).c_str(), F_OK) != 0) continue;
    out.push_back(p);
    auto range = children.equal_range(p);
    for (auto it = range.first; it != range.second; ++it) todo.push_back(it->second);
  }
  return out;
}

// CPU seconds (user + system, reaped children included) of those processes.
inline double tree_cpu_seconds(const std::vector<pid_t>& roots) {
  static const double hz = static_cast<double>(sysconf(_SC_CLK_TCK));
  unsigned long long ticks = 0;
  for (pid_t p : process_tree(roots)) {
    if (auto ps = read_proc_stat(p)) ticks += ps->ticks;
  }
  return static_cast<double>(ticks) / hz;
}

inline double percentile(std::vector<double>& v, double q) {
  if (v.empty()) return NAN;
  size_t idx = static_cast<size_t>(std::min<double>(static_cast<double>(v.size() - 1),
                                                    std::floor(q * static_cast<double>(v.size()))));
  std::nth_element(v.begin(), v.begin() + static_cast<long>(idx), v.end());
  return v[idx];
}

}  // namespace bench_util
