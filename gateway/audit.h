#pragma once
// The audit trail: one JSON object per line (JSON Lines) per event — `session_end`,
// `auth_failure`, `denied`. Schema: docs/audit.md.
//
// Text that came from the network (user names, host names) is passed through
// escape_untrusted() first: every record is valid UTF-8 JSON on exactly one line whatever a
// client sent, and the original bytes can be recovered. Credentials never reach this layer.
//
// AuditSink implementations are thread-safe: sessions on every I/O thread write to the same
// sink. A record is written with a single write(2) on an O_APPEND descriptor, so concurrent
// records never interleave.

#include <chrono>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace socksgate::gateway {

class Metrics;

// Valid UTF-8 passes unchanged except '\' which becomes "\\"; each byte that is not part of a
// valid UTF-8 sequence becomes "\xNN". (JSON encoding then escapes control characters.)
std::string escape_untrusted(std::string_view bytes);
// The inverse, for tools and tests.
std::string unescape_untrusted(std::string_view text);

// RFC 3339 UTC time with milliseconds, e.g. "2026-11-26T18:44:42.123Z".
std::string now_rfc3339();
std::string to_rfc3339(std::chrono::system_clock::time_point t);

class AuditSink {
 public:
  virtual ~AuditSink() = default;
  // Adds "time" if absent, serialises and writes one line. Never throws; a write failure is
  // reported on stderr (fail-closed handling comes with the tamper-evident log).
  virtual void write(nlohmann::json record) = 0;
};

class JsonLinesAuditLog final : public AuditSink {
 public:
  // Opens `file` (created 0600, appended) if non-empty; also writes to stdout if to_stdout.
  // Throws std::runtime_error if the file cannot be opened.
  // `metrics` (optional) is told each write's latency and each failure.
  JsonLinesAuditLog(const std::string& file, bool to_stdout, Metrics* metrics = nullptr);
  ~JsonLinesAuditLog() override;
  void write(nlohmann::json record) override;

 private:
  std::string path_;
  int fd_ = -1;
  bool to_stdout_;
  Metrics* metrics_ = nullptr;
  std::mutex mu_;  // serialises writes to stdout (which is not O_APPEND)
};

}  // namespace socksgate::gateway
