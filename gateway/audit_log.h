#pragma once
// AuditLog: the tamper-evident, durable audit trail (docs/audit.md).
//
// One writer thread owns the outputs and the hash chain (crypto/audit_chain.h). Sessions on
// any I/O thread queue records (AuditSink::write) or queue-and-wait (AuditSink::commit, via
// async_commit). The writer appends everything queued in one write(2) and one fdatasync(2)
// per batch (group commit): a commit starts a batch at once, plain records wait at most
// audit.commit_delay_ms. While fdatasync runs, new records gather for the next batch.
//
// If the file cannot be written (ENOSPC, EIO, ...), the batch is dropped (the file is cut
// back to the last good record, so the chain stays intact), commits report kRefused
// ("fail-closed", the default) or kNotDurable ("fail-open"), and the writer retries every
// 250 ms and on each new record. The first record that gets through is preceded by an
// `audit_gap` record saying how many records were lost, since when and why.
//
// At open the file's tail is read: a log continues its chain (an `audit_resume` record; a
// partial last line left by a crash is cut off and reported as an `audit_gap`); an empty file
// starts one (`audit_start`). reopen() (SIGUSR1) opens the path again; an empty new file
// continues the chain with an `audit_segment` record. Per-user files (audit.per_user_dir)
// hold a copy of each record of an authenticated user, with a chain of their own.

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "gateway/audit.h"

namespace socksgate::gateway {

struct AuditConfig {
  std::string file;  // resolved path; empty = none
  bool to_stdout = false;
  std::string
      syslog_facility;  // empty = no syslog; "auth", "authpriv", "daemon", "local0".."7", "user"
  std::string syslog_socket = "/dev/log";
  std::string key_file;  // resolved path; empty = SHA-256 chain
  uint64_t epoch_records = 100000;
  std::chrono::seconds epoch_seconds{3600};
  bool fail_open = false;
  std::chrono::milliseconds commit_delay{5};
  std::string per_user_dir;  // resolved path; empty = none
  bool operator==(const AuditConfig&) const = default;
};

// Counters (monotonic) and state, for metrics and tests.
struct AuditStats {
  uint64_t records = 0;  // records written
  uint64_t batches = 0;  // write + fdatasync rounds
  uint64_t write_failures = 0;
  uint64_t records_lost = 0;  // dropped while failing
  uint64_t not_durable = 0;   // fail-open commits that proceeded without a durable record
  bool failing = false;
};

// Reads a key file: its bytes without trailing newlines, at least 32 of them, and not readable
// by group or others. Throws std::runtime_error with a clear message.
std::vector<uint8_t> load_audit_key(const std::string& path);

// One of "auth", "authpriv", "daemon", "user", "local0".."local7" -> the syslog facility
// code (LOG_*); -1 if unknown.
int syslog_facility_code(std::string_view name);

class Metrics;

class AuditLog final : public AuditSink {
 public:
  // Opens the outputs and reads the file's tail. Throws std::runtime_error (clear message)
  // when the file cannot be opened, the key file is unusable, or the file's chain does not
  // fit the configuration (keyed vs not, unreadable last record).
  // `metrics` (optional, must outlive the log) is told each record's write latency and each
  // record that could not be written.
  // `start` false: records queue until start() (a gateway started without root but with
  // capabilities starts its threads only once it has dropped them).
  explicit AuditLog(AuditConfig cfg, Metrics* metrics = nullptr, bool start = true);
  // Starts the writer thread (once); returns when it runs.
  void start();
  ~AuditLog() override;

  void write(nlohmann::json record) override;
  void write_record(AuditRecord record) override;
  void commit(AuditRecord record, std::function<void(CommitResult)> done) override;

  // SIGUSR1: reopen the file (and per-user files) at the next batch.
  void reopen();
  // A reload with the same file and key: outputs, on_failure, delays and epochs change now.
  void reconfigure(const AuditConfig& cfg);
  const AuditConfig& config() const { return cfg_; }  // as constructed
  // Writes what is queued, stops the writer; later records are dropped and counted.
  void shutdown();
  AuditStats stats() const;

  struct Output;

 private:
  struct Item {
    AuditRecord rec;
    std::function<void(CommitResult)> done;
  };
  void enqueue(Item item, bool commit);
  void run();
  void process(std::deque<Item>& batch, const AuditConfig& cfg);

  const AuditConfig cfg_;
  std::unique_ptr<Output> out_;  // writer thread only (after construction)

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Item> queue_;                        // guarded by mu_
  bool commit_waiting_ = false;                   // guarded by mu_
  bool reopen_ = false;                           // guarded by mu_
  bool stop_ = false;                             // guarded by mu_
  bool writer_ready_ = false;                     // guarded by mu_: the writer thread has started
  bool stopped_ = false;                          // guarded by mu_
  std::chrono::steady_clock::time_point oldest_;  // guarded by mu_
  AuditConfig live_;                              // guarded by mu_
  Metrics* metrics_ = nullptr;                    // set once, before the writer starts
  AuditStats stats_;                              // guarded by mu_
  std::thread writer_;
};

}  // namespace socksgate::gateway
