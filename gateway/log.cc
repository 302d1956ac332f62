#include "gateway/log.h"

#include <unistd.h>

#include <atomic>

#include "gateway/audit.h"

namespace socksgate::gateway::log {
namespace {
std::atomic<Level> g_min{Level::kInfo};
constexpr std::string_view kNames[] = {"debug", "info", "warn", "error"};
}  // namespace

void set_min_level(Level l) { g_min.store(l, std::memory_order_relaxed); }

void write(Level l, std::string_view message) {
  if (l < g_min.load(std::memory_order_relaxed)) return;
  std::string line = now_rfc3339();
  line += ' ';
  line += kNames[static_cast<int>(l)];
  line += ' ';
  // Keep it one line whatever the message holds.
  for (char c : message) line.push_back(c == '\n' || c == '\r' ? ' ' : c);
  line += '\n';
  ssize_t ignored = ::write(STDERR_FILENO, line.data(), line.size());
  (void)ignored;
}

}  // namespace socksgate::gateway::log
