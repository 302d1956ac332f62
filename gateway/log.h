#pragma once
// Operational log: one line per event on stderr ("2026-11-26T18:44:42.123Z info message").
// Not the audit trail (gateway/audit.h). Thread-safe: each line is a single write(2).

#include <sstream>
#include <string>
#include <string_view>

namespace socksgate::gateway::log {

enum class Level { kDebug, kInfo, kWarn, kError };
void set_min_level(Level l);
void write(Level l, std::string_view message);

template <typename... Args>
std::string cat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
template <typename... Args>
void info(const Args&... args) {
  write(Level::kInfo, cat(args...));
}
template <typename... Args>
void warn(const Args&... args) {
  write(Level::kWarn, cat(args...));
}
template <typename... Args>
void error(const Args&... args) {
  write(Level::kError, cat(args...));
}
template <typename... Args>
void debug(const Args&... args) {
  write(Level::kDebug, cat(args...));
}

}  // namespace socksgate::gateway::log
