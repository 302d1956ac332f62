#pragma once
// The audit log's hash chain (docs/audit.md, "Integrity"). Every record is one line
//
//   {"seq":S[,"epoch":E],"prev":"<P>",<fields...>,"hash":"<H>"}\n
//
// where H is the lower-case hex of SHA-256 (unkeyed) or HMAC-SHA256 with the key of epoch E
// (keyed) over the line's bytes up to, not including, `,"hash":"` — so H covers seq, epoch,
// prev and every field — and P is the previous record's H (64 zeros for the first record of
// a log). seq counts from 1 and never skips. Epoch keys are HMAC-SHA256(master key,
// "socksgate audit epoch <E in decimal>"), so a verifier needs only the master key (or the
// keys of the epochs it is given).
//
// AuditChain is not thread-safe: one writer owns it.

#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "crypto/secure.h"

namespace socksgate::crypto {

inline constexpr std::string_view kAuditZeroHash =
    "0000000000000000000000000000000000000000000000000000000000000000";
inline constexpr std::string_view kAuditHashMarker = ",\"hash\":\"";

std::string to_hex(std::span<const uint8_t> bytes);
Sha256Digest sha256(std::string_view data);
Sha256Digest audit_epoch_key(std::span<const uint8_t> master, uint64_t epoch);

// The hash of a record: hex SHA-256 of `hashed`, or hex HMAC-SHA256 with `epoch_key`.
std::string audit_record_hash(std::string_view hashed, const Sha256Digest* epoch_key);

// Where a record line (without '\n') splits into the hashed part and the hash; nullopt when
// the line does not end in `,"hash":"<64 hex>"}`.
struct AuditLineParts {
  std::string_view hashed;
  std::string_view hash;
};
std::optional<AuditLineParts> split_audit_line(std::string_view line);

class AuditChain {
 public:
  struct State {
    uint64_t seq = 0;                       // of the last record written
    std::string last_hash{kAuditZeroHash};  // its hash
    uint64_t epoch = 0;                     // keyed: the current epoch
    uint64_t in_epoch = 0;                  // records written in it
    std::chrono::steady_clock::time_point epoch_start = std::chrono::steady_clock::now();
  };

  // key empty: SHA-256 chain. Otherwise HMAC with epochs of at most epoch_records records
  // and epoch_seconds seconds.
  AuditChain(std::vector<uint8_t> key, uint64_t epoch_records, std::chrono::seconds epoch_seconds);
  ~AuditChain();
  AuditChain(const AuditChain&) = delete;
  AuditChain& operator=(const AuditChain&) = delete;

  bool keyed() const { return !key_.empty(); }
  const State& state() const { return state_; }
  // Continue after an existing record (restart, reopen); keyed chains start a new epoch.
  void resume(uint64_t seq, std::string last_hash, uint64_t last_epoch);
  void set_state(State s) { state_ = std::move(s); }

  // Appends the complete line (with '\n') of the next record to *out and advances.
  // `body` is the record's fields, comma-separated, without braces (non-empty).
  void append(std::string_view body, std::string* out);

 private:
  const Sha256Digest& epoch_key();
  std::vector<uint8_t> key_;
  uint64_t epoch_records_;
  std::chrono::seconds epoch_seconds_;
  State state_;
  std::optional<uint64_t> cached_epoch_;
  Sha256Digest cached_key_{};
};

}  // namespace socksgate::crypto
