#pragma once
// The audit trail: one JSON object per line (JSON Lines) per event — `session_start`,
// `session_end`, `auth_failure`, `denied`, and the log's own `audit_*` records. Schema:
// docs/audit.md.
//
// Text that came from the network (user names, host names) is passed through
// escape_untrusted() first: every record is valid UTF-8 JSON on exactly one line whatever a
// client sent, and the original bytes can be recovered. Credentials never reach this layer.
//
// Every record is chained (seq, prev, hash: crypto/audit_chain.h) by the one writer thread of
// an AuditLog (audit_log.h); `socksgate audit verify` checks the chain (audit_verify.h).

#include <asio/associated_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/execution/outstanding_work.hpp>
#include <asio/post.hpp>
#include <asio/prefer.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace socksgate::gateway {

class Metrics;

// Valid UTF-8 passes unchanged except '\' which becomes "\\"; each byte that is not part of a
// valid UTF-8 sequence becomes "\xNN". (JSON encoding then escapes control characters.)
// Length of the valid UTF-8 sequence at s[i], or 0 if there is none (RFC 3629: no
// overlongs, no surrogates, nothing above U+10FFFF).
size_t utf8_sequence_length(std::string_view s, size_t i);

std::string escape_untrusted(std::string_view bytes);
// The inverse, for tools and tests.
std::string unescape_untrusted(std::string_view text);

// RFC 3339 UTC time with milliseconds, e.g. "2026-11-26T18:44:42.123Z".
std::string now_rfc3339();
std::string to_rfc3339(std::chrono::system_clock::time_point t);

// A record built without nlohmann::json (RecordBuilder, audit_record.h): `body` is its fields,
// comma-separated, without braces; the sink adds seq/epoch/prev in front and the hash at the
// end. `user` (authenticated users only, never a claimed name) routes a copy to the per-user
// file when audit.per_user_dir is set.
struct AuditRecord {
  std::string body;
  std::string user;
};

// What a durable commit achieved. kNotDurable: the log is failing and audit.on_failure is
// "fail-open" (the session may proceed, and a metric says so); kRefused: it is failing and
// fail-closed (the session must be refused).
enum class CommitResult : uint8_t { kDurable, kNotDurable, kRefused };

// Thread-safe; called from every I/O thread. Writes never block the caller on disk: records
// are queued for the log's writer thread, which appends them in batches (group commit).
class AuditSink {
 public:
  virtual ~AuditSink() = default;
  // Adds "time" if absent and queues the record. Never throws.
  virtual void write(nlohmann::json record) = 0;
  virtual void write_record(AuditRecord record) = 0;
  // Queues the record and calls done (on the writer thread, or inline if the sink is shut
  // down) once it is on disk (written and fdatasync'ed) or the write failed. Never throws.
  virtual void commit(AuditRecord record, std::function<void(CommitResult)> done) = 0;
};

// `co_await async_commit(sink, rec, asio::use_awaitable)`: the session resumes on its own
// executor once the record is durable (or the log failed); I/O threads never block on disk.
template <typename CompletionToken>
auto async_commit(AuditSink& sink, AuditRecord record, CompletionToken&& token) {
  return asio::async_initiate<CompletionToken, void(CommitResult)>(
      [&sink](auto handler, AuditRecord rec) {
        using Handler = std::decay_t<decltype(handler)>;
        auto h = std::make_shared<Handler>(std::move(handler));
        // Keeps the session's io_context alive (outstanding work) until the result is back.
        auto ex = asio::prefer(asio::get_associated_executor(*h),
                               asio::execution::outstanding_work.tracked);
        sink.commit(std::move(rec),
                    [h, ex](CommitResult r) { asio::post(ex, [h, r]() { std::move (*h)(r); }); });
      },
      token, std::move(record));
}

// Serialises a nlohmann record (adding "time" if absent) as an AuditRecord body.
std::string body_from_json(nlohmann::json record);

}  // namespace socksgate::gateway
