#include "gateway/audit_log.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <syslog.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <fstream>
#include <iterator>
#include <optional>
#include <stdexcept>

#include "crypto/audit_chain.h"
#include "crypto/secure.h"
#include "gateway/audit_record.h"
#include "gateway/log.h"
#include "gateway/metrics.h"
#include "gateway/privsep.h"
#include "gateway/version.h"

namespace socksgate::gateway {
namespace {

using Clock = std::chrono::steady_clock;
constexpr auto kRetryInterval = std::chrono::milliseconds(250);
constexpr auto kReportInterval = std::chrono::seconds(10);
constexpr size_t kMaxOpenUserFiles = 256;

bool write_all(int fd, std::string_view s) {
  size_t off = 0;
  while (off < s.size()) {
    ssize_t n = ::write(fd, s.data() + off, s.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    off += static_cast<size_t>(n);
  }
  return true;
}

std::string errno_text(int e) { return std::strerror(e); }

// The last complete line of fd (without '\n') and how many bytes follow it without a newline.
// Reads backwards in chunks, so a long file costs only its tail.
void read_tail(int fd, off_t size, std::string* last, off_t* complete) {
  last->clear();
  *complete = size;
  if (size == 0) return;
  std::string buf;  // the tail, growing towards the front
  off_t pos = size;
  constexpr off_t kChunk = 65536;
  auto need_more = [&] {
    // We need: the final byte, the newline that ends the last complete line, and the one
    // (or the file start) before that line.
    size_t end = buf.size();
    if (buf.back() != '\n') {
      size_t nl = buf.rfind('\n');
      if (nl == std::string::npos) return pos > 0;
      end = nl + 1;
    }
    if (end == 0) return false;
    size_t start = end - 1 == 0 ? std::string::npos : buf.rfind('\n', end - 2);
    return start == std::string::npos && pos > 0;
  };
  do {
    off_t n = std::min(kChunk, pos);
    pos -= n;
    std::string chunk(static_cast<size_t>(n), '\0');
    ssize_t got = ::pread(fd, chunk.data(), chunk.size(), pos);
    if (got != n) throw std::runtime_error(std::string("cannot read: ") + errno_text(errno));
    buf.insert(0, chunk);
  } while (need_more());
  size_t end = buf.size();
  if (buf.back() != '\n') {
    size_t nl = buf.rfind('\n');
    end = nl == std::string::npos ? 0 : nl + 1;
    *complete = pos + static_cast<off_t>(end);
  }
  if (end == 0) return;
  size_t start = end - 1 == 0 ? std::string::npos : buf.rfind('\n', end - 2);
  start = start == std::string::npos ? 0 : start + 1;
  *last = buf.substr(start, end - 1 - start);
}

// A file with a chain of its own: the main log, or one per-user file.
struct ChainFile {
  ChainFile(std::string p, const std::vector<uint8_t>& key, const AuditConfig& cfg)
      : path(std::move(p)), chain(key, cfg.epoch_records, cfg.epoch_seconds) {}
  ~ChainFile() { close(); }
  void close() {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }

  // Opens the path (or, without one, starts the stdout/syslog chain) and returns the body of
  // the record that must come first, or "" when the file continues exactly where this chain
  // stopped. Throws std::runtime_error.
  std::string open() {
    bool continuing = chain.state().seq > 0;
    if (path.empty()) {
      opened = true;
      return continuing ? "" : opening("audit_start").take();
    }
    fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0) throw std::runtime_error(path + ": cannot open audit log: " + errno_text(errno));
    try {
      return read_and_link(continuing);
    } catch (...) {
      close();
      throw;
    }
  }

  RecordBuilder opening(std::string_view event) {
    RecordBuilder b(event);
    b.str("chain", chain.keyed() ? "hmac-sha256" : "sha256")
        .num("pid", static_cast<uint64_t>(::getpid()))
        .str("version", kVersion);
    return b;
  }

  std::string read_and_link(bool continuing) {
    struct stat st {};
    if (::fstat(fd, &st) != 0) throw std::runtime_error(path + ": " + errno_text(errno));
    std::string last;
    off_t complete = 0;
    try {
      read_tail(fd, st.st_size, &last, &complete);
    } catch (const std::exception& e) {
      throw std::runtime_error(path + ": " + e.what());
    }
    uint64_t partial = static_cast<uint64_t>(st.st_size - complete);
    if (partial > 0 && ::ftruncate(fd, complete) != 0) {
      throw std::runtime_error(path +
                               ": cannot cut off a partial last record: " + errno_text(errno));
    }
    size = complete;
    opened = true;
    std::string event;
    if (!last.empty()) {
      auto parts = crypto::split_audit_line(last);
      auto j = nlohmann::json::parse(last, nullptr, false);
      if (!parts || j.is_discarded() || !j.is_object() || !j.contains("seq") ||
          !j["seq"].is_number_unsigned()) {
        throw std::runtime_error(path +
                                 ": the last line is not a chained audit record (an old or "
                                 "foreign log?): move the file away to start a new log");
      }
      bool keyed_tail = j.contains("epoch");
      if (keyed_tail != chain.keyed()) {
        throw std::runtime_error(
            path + (keyed_tail ? ": the log is HMAC'ed: audit.key_file is needed to continue it"
                               : ": the log is not HMAC'ed: rotate it (move it away) before "
                                 "setting audit.key_file"));
      }
      uint64_t seq = j["seq"].get<uint64_t>();
      uint64_t epoch =
          keyed_tail && j["epoch"].is_number_unsigned() ? j["epoch"].get<uint64_t>() : 0;
      std::string hash(parts->hash);
      if (continuing && partial == 0 && seq == chain.state().seq &&
          hash == chain.state().last_hash) {
        return "";  // the same file (not rotated): carry on
      }
      chain.resume(seq, hash, epoch);
      event = partial > 0 ? "audit_gap" : "audit_resume";
    } else if (continuing) {
      auto s = chain.state();
      chain.resume(s.seq, s.last_hash, s.epoch);  // keyed: a new epoch for the new file
      event = "audit_segment";
    } else {
      event = "audit_start";
    }
    RecordBuilder b = opening(event);
    if (partial > 0) b.str("reason", "partial_record_removed").num("lost_bytes", partial);
    return b.take();
  }

  std::string path;
  crypto::AuditChain chain;
  int fd = -1;
  bool opened = false;  // open() succeeded since the last close()/reopen
  off_t size = 0;       // bytes known to be good
};

// "alice" -> "alice.jsonl"; anything but [A-Za-z0-9._@-] (and a leading '.') becomes %XX;
// long names are shortened with a hash.
std::string user_file_name(std::string_view user) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string n;
  for (size_t i = 0; i < user.size(); ++i) {
    auto c = static_cast<uint8_t>(user[i]);
    bool plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '_' || c == '-' || c == '@' || (c == '.' && i > 0);
    if (plain) {
      n.push_back(static_cast<char>(c));
    } else {
      n.push_back('%');
      n.push_back(kHex[c >> 4]);
      n.push_back(kHex[c & 15]);
    }
  }
  if (n.size() > 200)
    n = n.substr(0, 100) + "~" + crypto::to_hex(crypto::sha256(user)).substr(0, 16);
  return n + ".jsonl";
}

std::string syslog_header(int pri) {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  localtime_r(&t, &tm);
  char ts[32];
  std::strftime(ts, sizeof ts, "%b %e %H:%M:%S", &tm);
  return "<" + std::to_string(pri) + ">" + ts + " socksgate[" + std::to_string(::getpid()) + "]: ";
}

}  // namespace

std::vector<uint8_t> load_audit_key(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw std::runtime_error(path + ": cannot open audit key file: " + errno_text(errno));
  struct stat st {};
  ::fstat(fd, &st);
  if ((st.st_mode & 077) != 0) {
    ::close(fd);
    throw std::runtime_error(path +
                             ": audit key file must not be readable by group or others "
                             "(chmod 600)");
  }
  std::vector<uint8_t> key;
  uint8_t buf[4096];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    key.insert(key.end(), buf, buf + n);
    if (key.size() > 65536) break;
  }
  ::close(fd);
  crypto::secure_zero(buf, sizeof buf);
  while (!key.empty() && (key.back() == '\n' || key.back() == '\r')) key.pop_back();
  if (key.size() < 32 || key.size() > 65536) {
    crypto::secure_zero(key.data(), key.size());
    throw std::runtime_error(path +
                             ": audit key must be 32 to 65536 bytes (e.g. `openssl rand "
                             "-hex 32`)");
  }
  return key;
}

int syslog_facility_code(std::string_view name) {
  static const std::pair<std::string_view, int> kNames[] = {
      {"auth", LOG_AUTH},     {"authpriv", LOG_AUTHPRIV}, {"daemon", LOG_DAEMON},
      {"user", LOG_USER},     {"local0", LOG_LOCAL0},     {"local1", LOG_LOCAL1},
      {"local2", LOG_LOCAL2}, {"local3", LOG_LOCAL3},     {"local4", LOG_LOCAL4},
      {"local5", LOG_LOCAL5}, {"local6", LOG_LOCAL6},     {"local7", LOG_LOCAL7},
  };
  for (const auto& [n, c] : kNames) {
    if (n == name) return c;
  }
  return -1;
}

// Everything the writer thread owns.
struct AuditLog::Output {
  Output(const AuditConfig& cfg) : config(cfg) {
    if (!cfg.key_file.empty()) key = load_audit_key(cfg.key_file);
    main = std::make_unique<ChainFile>(cfg.file, key, cfg);
    first = main->open();  // throws: a log that cannot be opened stops the start
  }
  ~Output() {
    if (syslog_fd >= 0) ::close(syslog_fd);
    if (!key.empty()) crypto::secure_zero(key.data(), key.size());
  }

  void reopen_all() {
    main->close();
    main->opened = false;
    for (auto& [u, f] : users) {
      f->close();
      f->opened = false;
    }
    if (syslog_fd >= 0) ::close(syslog_fd);
    syslog_fd = -1;
  }

  void to_syslog(const AuditConfig& cfg, std::string_view lines) {
    int fac = syslog_facility_code(cfg.syslog_facility);
    if (fac < 0) return;
    if (syslog_fd >= 0 && syslog_path != cfg.syslog_socket) {
      ::close(syslog_fd);
      syslog_fd = -1;
    }
    std::string header = syslog_header(fac | LOG_INFO);
    while (!lines.empty()) {
      size_t nl = lines.find('\n');
      std::string_view line = lines.substr(0, nl);
      lines.remove_prefix(nl == std::string_view::npos ? lines.size() : nl + 1);
      std::string msg = header;
      msg.append(line);
      for (int attempt = 0; attempt < 2; ++attempt) {
        if (syslog_fd < 0) {
          syslog_fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
          sockaddr_un a{};
          a.sun_family = AF_UNIX;
          if (cfg.syslog_socket.size() >= sizeof a.sun_path) return;
          std::memcpy(a.sun_path, cfg.syslog_socket.data(), cfg.syslog_socket.size());
          if (syslog_fd < 0 ||
              ::connect(syslog_fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
            if (syslog_fd >= 0) ::close(syslog_fd);
            syslog_fd = -1;
            report_side_error("syslog " + cfg.syslog_socket, errno);
            return;
          }
          syslog_path = cfg.syslog_socket;
        }
        if (::send(syslog_fd, msg.data(), msg.size(), MSG_NOSIGNAL) >= 0) break;
        int e = errno;
        ::close(syslog_fd);
        syslog_fd = -1;
        if (attempt == 1) report_side_error("syslog " + cfg.syslog_socket, e);
      }
    }
  }

  void report_side_error(const std::string& what, int e) {
    auto now = Clock::now();
    if (now - last_side_report < kReportInterval) return;
    last_side_report = now;
    if (e != 0) {
      log::warn("audit: ", what, ": ", errno_text(e));
    } else {
      log::warn("audit: ", what);
    }
  }

  // Appends a copy of each authenticated user's records to their own file (best effort: the
  // main file is the one sessions wait for).
  void to_user_files(const AuditConfig& cfg, std::deque<Item>& batch) {
    if (cfg.per_user_dir != users_dir) {  // changed by a reload: start over there
      users.clear();
      users_dir = cfg.per_user_dir;
    }
    if (cfg.per_user_dir.empty()) return;
    std::map<std::string, std::string> bufs;
    for (auto& it : batch) {
      if (it.rec.user.empty()) continue;
      auto& f = users[it.rec.user];
      if (!f) {
        if (users.size() > kMaxOpenUserFiles) {  // bound the descriptors: close idle ones
          for (auto& [u, g] : users) {
            if (g && bufs.count(u) == 0) {
              g->close();
              g->opened = false;
            }
          }
        }
        f = std::make_unique<ChainFile>(cfg.per_user_dir + "/" + user_file_name(it.rec.user), key,
                                        config);
      }
      std::string& buf = bufs[it.rec.user];
      if (buf.empty()) {
        // Remember where the chain was, in case the write fails.
        saved_user_states[it.rec.user] = f->chain.state();
        if (!f->opened) {
          try {
            std::string first_body = f->open();
            if (!first_body.empty()) f->chain.append(first_body, &buf);
          } catch (const std::exception& e) {
            report_side_error(e.what(), 0);
            continue;
          }
        }
      }
      f->chain.append(it.rec.body, &buf);
    }
    for (auto& [u, buf] : bufs) {
      auto& f = users[u];
      if (buf.empty() || f->fd < 0) continue;
      if (write_all(f->fd, buf) && ::fdatasync(f->fd) == 0) {
        f->size += static_cast<off_t>(buf.size());
      } else {
        int e = errno;
        struct stat st {};
        if (::fstat(f->fd, &st) == 0 && st.st_size > f->size && ::ftruncate(f->fd, f->size) != 0) {
        }
        f->close();
        f->opened = false;
        f->chain.set_state(saved_user_states[u]);
        report_side_error(f->path, e);
      }
    }
    saved_user_states.clear();
  }

  AuditConfig config;  // as constructed (file, key, epochs)
  std::vector<uint8_t> key;
  std::unique_ptr<ChainFile> main;
  std::string first;      // the opening record still to write
  std::string users_dir;  // where `users` are
  std::map<std::string, std::unique_ptr<ChainFile>> users;
  std::map<std::string, crypto::AuditChain::State> saved_user_states;
  int syslog_fd = -1;
  std::string syslog_path;
  Clock::time_point last_side_report{};
  // While failing:
  bool failing = false;
  std::string error;
  std::string since;
  uint64_t lost = 0;
  Clock::time_point next_retry{};
  Clock::time_point last_report{};
};

AuditLog::AuditLog(AuditConfig cfg, Metrics* metrics, bool start)
    : cfg_(cfg), out_(std::make_unique<Output>(cfg)), live_(cfg), metrics_(metrics) {
  commit_waiting_ = true;  // write the opening record at once
  if (start) this->start();
}

void AuditLog::start() {
  if (writer_.joinable()) return;
  writer_ = std::thread([this] { run(); });
  // The writer has dropped what it must not keep (see run()) before anyone goes on.
  std::unique_lock lk(mu_);
  cv_.wait(lk, [this] { return writer_ready_; });
}

AuditLog::~AuditLog() { shutdown(); }

void AuditLog::shutdown() {
  {
    std::lock_guard lk(mu_);
    if (stop_) {
      if (!writer_.joinable()) return;
    }
    stop_ = true;
  }
  cv_.notify_all();
  if (writer_.joinable() && writer_.get_id() != std::this_thread::get_id()) writer_.join();
}

void AuditLog::write(nlohmann::json record) {
  enqueue(Item{AuditRecord{body_from_json(std::move(record)), {}}, nullptr}, false);
}

void AuditLog::write_record(AuditRecord record) {
  enqueue(Item{std::move(record), nullptr}, false);
}

void AuditLog::commit(AuditRecord record, std::function<void(CommitResult)> done) {
  enqueue(Item{std::move(record), std::move(done)}, true);
}

void AuditLog::enqueue(Item item, bool commit) {
  std::unique_lock lk(mu_);
  if (stop_) {
    ++stats_.records_lost;
    bool open = live_.fail_open;
    if (open && item.done) ++stats_.not_durable;
    lk.unlock();
    if (item.done) item.done(open ? CommitResult::kNotDurable : CommitResult::kRefused);
    return;
  }
  // The writer sleeps without a deadline while the queue is empty: the first record sets one.
  bool first = queue_.empty();
  if (first) oldest_ = Clock::now();
  queue_.push_back(std::move(item));
  bool wake = commit || first;
  if (commit) commit_waiting_ = true;
  lk.unlock();
  if (wake) cv_.notify_one();
}

void AuditLog::reopen() {
  {
    std::lock_guard lk(mu_);
    reopen_ = true;
  }
  cv_.notify_one();
}

void AuditLog::reconfigure(const AuditConfig& cfg) {
  {
    std::lock_guard lk(mu_);
    AuditConfig next = cfg;
    // What the chain is made of stays as constructed.
    next.file = cfg_.file;
    next.key_file = cfg_.key_file;
    next.epoch_records = cfg_.epoch_records;
    next.epoch_seconds = cfg_.epoch_seconds;
    live_ = next;
  }
  cv_.notify_one();
}

AuditStats AuditLog::stats() const {
  std::lock_guard lk(mu_);
  return stats_;
}

void AuditLog::run() {
  // Started without root but with capabilities (systemd AmbientCapabilities=): the writer
  // needs none and must not keep what the gateway drops on its own threads after binding
  // (gateway/privsep.h). Started as root, the setresuid of the drop reaches every thread.
  if (::geteuid() != 0) {
    try {
      drop_capabilities();
    } catch (const std::exception&) {
    }
  }
  std::unique_lock lk(mu_);
  writer_ready_ = true;
  cv_.notify_all();
  for (;;) {
    for (;;) {
      if (stop_ || reopen_ || commit_waiting_) break;
      std::optional<Clock::time_point> deadline;
      if (!queue_.empty()) deadline = oldest_ + live_.commit_delay;
      if (out_->failing && (!deadline || out_->next_retry < *deadline)) deadline = out_->next_retry;
      if (deadline && Clock::now() >= *deadline) break;
      if (deadline) {
        cv_.wait_until(lk, *deadline);
      } else {
        cv_.wait(lk);
      }
    }
    std::deque<Item> batch;
    batch.swap(queue_);
    commit_waiting_ = false;
    bool do_reopen = std::exchange(reopen_, false);
    bool stopping = stop_;
    AuditConfig cfg = live_;
    lk.unlock();
    if (do_reopen) out_->reopen_all();
    process(batch, cfg);
    lk.lock();
    if (stopping && queue_.empty()) {
      stopped_ = true;
      return;
    }
  }
}

void AuditLog::process(std::deque<Item>& batch, const AuditConfig& cfg) {
  Output& o = *out_;
  ChainFile& f = *o.main;
  auto saved = f.chain.state();
  std::string buf;
  bool ok = true;
  std::string err;
  if (!f.opened) {
    try {
      std::string b = f.open();
      if (!b.empty()) o.first = std::move(b);
    } catch (const std::exception& e) {
      ok = false;
      err = e.what();
    }
  }
  uint64_t appended = 0;  // records in this write, for the metrics
  const auto write_started = Clock::now();
  if (ok) {
    if (!o.first.empty()) {
      f.chain.append(o.first, &buf);
      ++appended;
    }
    if (o.failing) {
      RecordBuilder gap("audit_gap");
      gap.str("reason", "write_failed")
          .num("lost", o.lost)
          .str("since", o.since)
          .str("error", o.error);
      f.chain.append(gap.take(), &buf);
      ++appended;
    }
    for (auto& it : batch) f.chain.append(it.rec.body, &buf);
    appended += batch.size();
    if (f.fd >= 0 && !buf.empty()) {
      if (!write_all(f.fd, buf)) {
        ok = false;
        err = f.path + ": write: " + errno_text(errno);
      } else if (::fdatasync(f.fd) != 0) {
        ok = false;
        err = f.path + ": fdatasync: " + errno_text(errno);
      }
      if (!ok) {
        // Cut back to the last good record (never beyond the file's end) and read the tail
        // again next time.
        struct stat st {};
        if (::fstat(f.fd, &st) == 0 && st.st_size > f.size && ::ftruncate(f.fd, f.size) != 0) {
        }
        f.close();
        f.opened = false;
        f.chain.set_state(saved);
      } else {
        f.size += static_cast<off_t>(buf.size());
      }
    }
  }

  uint64_t n = batch.size();
  CommitResult result = CommitResult::kDurable;
  auto now = Clock::now();
  if (metrics_ != nullptr && f.fd >= 0) {
    if (ok) {
      double seconds = std::chrono::duration<double>(now - write_started).count();
      for (uint64_t i = 0; i < appended; ++i) metrics_->observe_audit_write(seconds);
    } else {
      for (uint64_t i = 0; i < n; ++i) metrics_->audit_write_failed();
    }
  }
  if (ok) {
    o.first.clear();
    if (o.failing) {
      log::warn("audit: ", cfg.file.empty() ? "log" : cfg.file, " writable again; ", o.lost,
                " records were lost (an audit_gap record says so)");
      o.failing = false;
      o.lost = 0;
    }
    if (cfg.to_stdout && !buf.empty()) write_all(STDOUT_FILENO, buf);
    if (!cfg.syslog_facility.empty() && !buf.empty()) o.to_syslog(cfg, buf);
    o.to_user_files(cfg, batch);
  } else {
    if (!o.failing) {
      o.failing = true;
      o.since = now_rfc3339();
      o.error = err;
      o.last_report = {};
    }
    o.lost += n;
    o.next_retry = now + kRetryInterval;
    result = cfg.fail_open ? CommitResult::kNotDurable : CommitResult::kRefused;
    if (now - o.last_report >= kReportInterval) {
      o.last_report = now;
      log::error("audit: cannot write: ", err, "; ", o.lost, " records lost so far; ",
                 cfg.fail_open ? "on_failure=fail-open: sessions proceed WITHOUT a durable audit "
                                 "record"
                               : "on_failure=fail-closed: new sessions are refused",
                 " until it can");
    }
  }
  uint64_t commits = 0;
  for (auto& it : batch) {
    if (it.done) ++commits;
  }
  {
    std::lock_guard lk(mu_);
    if (ok) {
      stats_.records += n;
      ++stats_.batches;
    } else {
      ++stats_.write_failures;
      stats_.records_lost += n;
      if (result == CommitResult::kNotDurable) stats_.not_durable += commits;
    }
    stats_.failing = o.failing;
  }
  for (auto& it : batch) {
    if (it.done) it.done(result);
  }
}

}  // namespace socksgate::gateway
