// The tamper-evident audit log: the writer (AuditLog), the hand-rolled record writer and the
// verifier, on real files.
#include "gateway/audit_log.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/use_awaitable.hpp>
#include <filesystem>
#include <fstream>
#include <random>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "crypto/audit_chain.h"
#include "gateway/audit.h"
#include "gateway/audit_record.h"
#include "gateway/audit_verify.h"

namespace socksgate::gateway {
namespace {

namespace fs = std::filesystem;

class TempDir {
 public:
  TempDir() {
    path_ = fs::temp_directory_path() /
            ("audit_log_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter_++));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  static inline int counter_ = 0;
  fs::path path_;
};

std::string read_file(const std::string& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}
void write_file(const std::string& p, const std::string& data) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << data;
}
std::vector<std::string> split_lines(const std::string& data) {
  std::vector<std::string> out;
  std::istringstream in(data);
  std::string l;
  while (std::getline(in, l)) out.push_back(l);
  return out;
}
std::string join_lines(const std::vector<std::string>& lines) {
  std::string s;
  for (const auto& l : lines) s += l + "\n";
  return s;
}

struct Verdict {
  int rc;
  std::string report;
  std::string problems;
  std::optional<uint64_t> seq;  // from the first "record N (seq S)" problem line
};

Verdict verify(const std::vector<std::string>& files, const std::vector<uint8_t>& key = {}) {
  std::ostringstream rep, prob;
  Verdict v;
  v.rc = verify_audit_files(files, key, rep, prob);
  v.report = rep.str();
  v.problems = prob.str();
  std::smatch m;
  static const std::regex kLine(R"(: record \d+ \(seq (\d+)\): )");
  if (std::regex_search(v.problems, m, kLine)) v.seq = std::stoull(m[1]);
  return v;
}

std::vector<uint8_t> make_key_file(const std::string& path, char fill = 'k') {
  write_file(path, std::string(40, fill) + "\n");
  ::chmod(path.c_str(), 0600);
  return load_audit_key(path);
}

// Writes n session-like records (plus the log's audit_start) through a real AuditLog.
void write_records(const AuditConfig& cfg, int n, uint32_t seed = 1) {
  AuditLog log(cfg);
  std::mt19937 rng(seed);
  for (int i = 0; i < n; ++i) {
    RecordBuilder b(i % 2 ? "session_end" : "session_start");
    b.str("session", "00000000000000" + std::to_string(10 + i % 90))
        .untrusted("user", "user" + std::to_string(rng() % 1000))
        .num("bytes_up", rng());
    log.write_record(AuditRecord{b.take(), {}});
  }
}

TEST(RecordBuilder, EscapesEveryControlByteQuoteAndBackslash) {
  std::string all;
  for (int c = 0; c < 0x80; ++c) all.push_back(static_cast<char>(c));
  RecordBuilder b("x");
  b.str("k", all);
  std::string body = "{" + b.take() + "}";
  EXPECT_EQ(body.find('\n'), std::string::npos);
  for (char c : body) EXPECT_GE(static_cast<uint8_t>(c), 0x20) << body;
  auto j = nlohmann::json::parse(body);
  EXPECT_EQ(j["k"].get<std::string>(), all);
  EXPECT_EQ(j["event"], "x");
}

TEST(RecordBuilder, UntrustedRoundTripsRandomBytes) {
  std::mt19937 rng(7);
  for (int i = 0; i < 2000; ++i) {
    std::string s(rng() % 40, '\0');
    for (auto& c : s) {
      // Bias towards the interesting bytes: controls, quotes, backslashes, UTF-8 lead bytes.
      static const char kSpecial[] = {'"',    '\\',   '\n',   '\r',   '\x01', '\x7f',
                                      '\xc3', '\xa9', '\xff', '\xed', '\xf0', 'x'};
      c = rng() % 3 ? kSpecial[rng() % sizeof kSpecial] : static_cast<char>(rng());
    }
    RecordBuilder b("t");
    b.untrusted("user", s).num("n", i);
    std::string line = "{" + b.take() + "}";
    ASSERT_EQ(line.find('\n'), std::string::npos);
    auto j = nlohmann::json::parse(line);  // throws on invalid UTF-8 or JSON
    EXPECT_EQ(unescape_untrusted(j["user"].get<std::string>()), s);
    // Same text as nlohmann's serialisation of the same string (escape_untrusted output).
    EXPECT_EQ(j["user"], escape_untrusted(s));
  }
}

TEST(RecordBuilder, InvalidUtf8InTrustedTextBecomesReplacementCharacter) {
  RecordBuilder b("t");
  b.str("reason", std::string("a\xff"
                              "b"));
  auto j = nlohmann::json::parse("{" + b.take() + "}");
  EXPECT_EQ(j["reason"],
            "a\xEF\xBF\xBD"
            "b");
}

TEST(RecordBuilder, NumbersAndNestedJson) {
  RecordBuilder b("t");
  b.num("zero", 0).num("max", UINT64_MAX).json("udp", nlohmann::json{{"a", {1, 2}}});
  auto j = nlohmann::json::parse("{" + b.take() + "}");
  EXPECT_EQ(j["zero"], 0);
  EXPECT_EQ(j["max"].get<uint64_t>(), UINT64_MAX);
  EXPECT_EQ(j["udp"]["a"][1], 2);
}

TEST(AuditLog, TenThousandRecordsVerify) {
  TempDir d;
  AuditConfig cfg;
  cfg.file = d.file("audit.jsonl");
  write_records(cfg, 10000);
  auto lines = split_lines(read_file(cfg.file));
  ASSERT_EQ(lines.size(), 10001u);
  for (size_t i = 0; i < lines.size(); ++i) {
    auto j = nlohmann::json::parse(lines[i]);
    ASSERT_EQ(j["seq"], i + 1);
    if (i > 0) {
      ASSERT_EQ(j["prev"], nlohmann::json::parse(lines[i - 1])["hash"]);
    }
  }
  Verdict v = verify({cfg.file});
  EXPECT_EQ(v.rc, kVerifyOk) << v.problems;
  EXPECT_NE(v.report.find("ok: 10001 records, seq 1..10001"), std::string::npos) << v.report;
}

// 200 random tamperings (100 per chain kind) of a 3,000-record log, each reported at the right
// sequence number with the right kind of message. (3,000 rather than 10,000 records keeps the
// sanitizer builds quick; TenThousandRecordsVerify covers the size.)
void tamper_many(bool keyed) {
  TempDir d;
  AuditConfig cfg;
  cfg.file = d.file("audit.jsonl");
  std::vector<uint8_t> key;
  if (keyed) {
    cfg.key_file = d.file("audit.key");
    key = make_key_file(cfg.key_file);
    cfg.epoch_records = 1000;
  }
  write_records(cfg, 3000, 1);
  AuditConfig other = cfg;
  other.file = d.file("other.jsonl");
  if (keyed) {
    other.key_file = d.file("other.key");
    make_key_file(other.key_file, 'o');
  }
  write_records(other, 3000, 2);
  const std::string original = read_file(cfg.file);
  const auto lines = split_lines(original);
  const auto foreign = split_lines(read_file(other.file));
  const size_t n = lines.size();
  ASSERT_EQ(verify({cfg.file}, key).rc, kVerifyOk);

  std::mt19937 rng(keyed ? 99 : 42);
  auto pick = [&](size_t lo, size_t hi) { return lo + rng() % (hi - lo); };  // [lo, hi)
  const std::string tampered = d.file("tampered.jsonl");
  for (int t = 0; t < 100; ++t) {
    int kind = t % 6;
    std::string data;
    uint64_t want = 0;
    std::string what;
    std::vector<std::string> l = lines;
    switch (kind) {
      case 0: {  // flip one bit anywhere (the newline included)
        size_t k = pick(0, n);
        size_t line_start = 0;
        for (size_t i = 0; i < k; ++i) line_start += lines[i].size() + 1;
        size_t off = line_start + pick(0, lines[k].size() + 1);
        data = original;
        data[off] = static_cast<char>(data[off] ^ (1 << (rng() % 8)));
        want = k + 1;
        break;
      }
      case 1: {  // delete one record (not the last: see docs/audit.md)
        size_t k = pick(0, n - 1);
        l.erase(l.begin() + static_cast<long>(k));
        data = join_lines(l);
        want = k + 1;
        what = "deleted";
        if (k == 0) what = "does not begin with audit_start";
        break;
      }
      case 2: {  // swap two records
        size_t a = pick(0, n - 1);
        size_t b = std::min(n - 1, a + 1 + pick(0, 5));
        std::swap(l[a], l[b]);
        data = join_lines(l);
        want = a + 1;
        what = a == 0 ? "does not begin with audit_start" : "reordered";
        break;
      }
      case 3: {  // truncate inside a record (after the first)
        size_t cut;
        do {
          cut = pick(lines[0].size() + 2, original.size());
        } while (original[cut - 1] == '\n');
        data = original.substr(0, cut);
        want = std::count(data.begin(), data.end(), '\n') + 1;
        what = "truncated tail";
        break;
      }
      case 4: {  // replace a record with the same-seq record of another log
        size_t k = pick(1, n);
        l[k] = foreign[k];
        data = join_lines(l);
        want = k + 1;
        what = keyed ? "HMAC does not match" : "prev does not match";
        break;
      }
      case 5: {  // insert a record of another log
        size_t k = pick(1, n);
        l.insert(l.begin() + static_cast<long>(k), foreign[k]);
        data = join_lines(l);
        want = k + 1;
        what = keyed ? "HMAC does not match" : "prev does not match";
        break;
      }
    }
    write_file(tampered, data);
    Verdict v = verify({tampered}, key);
    ASSERT_EQ(v.rc, kVerifyBad) << "tampering " << t << " (kind " << kind << ") not detected";
    ASSERT_TRUE(v.seq) << v.problems;
    EXPECT_EQ(*v.seq, want) << "tampering " << t << " kind " << kind << ": " << v.problems;
    if (!what.empty()) {
      EXPECT_NE(v.problems.find(what), std::string::npos) << v.problems;
    }
    EXPECT_EQ(std::count(v.problems.begin(), v.problems.end(), '\n'), 1) << v.problems;
  }
}

TEST(AuditVerify, HundredTamperingsOfAnUnkeyedLogAreFoundAtTheRightSeq) { tamper_many(false); }
TEST(AuditVerify, HundredTamperingsOfAKeyedLogAreFoundAtTheRightSeq) { tamper_many(true); }

TEST(AuditVerify, KeyedLogNeedsTheRightKey) {
  TempDir d;
  AuditConfig cfg;
  cfg.file = d.file("audit.jsonl");
  cfg.key_file = d.file("audit.key");
  auto key = make_key_file(cfg.key_file);
  cfg.epoch_records = 3;
  write_records(cfg, 10);
  auto lines = split_lines(read_file(cfg.file));
  // Epochs advance every 3 records.
  EXPECT_EQ(nlohmann::json::parse(lines[0])["epoch"], 0);
  EXPECT_EQ(nlohmann::json::parse(lines.back())["epoch"], 3);
  EXPECT_EQ(verify({cfg.file}, key).rc, kVerifyOk);
  EXPECT_EQ(verify({cfg.file}).rc, kVerifyUsage);
  auto wrong = make_key_file(d.file("wrong.key"), 'w');
  Verdict v = verify({cfg.file}, wrong);
  EXPECT_EQ(v.rc, kVerifyBad);
  EXPECT_EQ(v.seq, 1u);
  // An unkeyed record in a keyed log (a downgrade) is an error even with a valid SHA-256.
  AuditConfig plain;
  plain.file = d.file("plain.jsonl");
  write_records(plain, 2);
  Verdict p = verify({plain.file}, key);
  EXPECT_EQ(p.rc, kVerifyBad);
  EXPECT_NE(p.problems.find("not HMAC'ed"), std::string::npos);
}

TEST(AuditLog, RestartContinuesTheChainAndCutsAPartialTailAsAGap) {
  TempDir d;
  AuditConfig cfg;
  cfg.file = d.file("audit.jsonl");
  write_records(cfg, 5);
  write_records(cfg, 5);
  auto lines = split_lines(read_file(cfg.file));
  ASSERT_EQ(lines.size(), 12u);
  EXPECT_EQ(nlohmann::json::parse(lines[6])["event"], "audit_resume");
  EXPECT_EQ(verify({cfg.file}).rc, kVerifyOk);
  // A crash in the middle of a write leaves a partial line: verify calls it a truncated tail;
  // the next start cuts it off and says so in an audit_gap record.
  const std::string partial = R"({"seq":13,"prev":"abc)";
  {
    std::ofstream out(cfg.file, std::ios::app | std::ios::binary);
    out << partial;
  }
  Verdict t = verify({cfg.file});
  EXPECT_EQ(t.rc, kVerifyBad);
  EXPECT_EQ(t.seq, 13u);
  EXPECT_NE(t.problems.find("truncated tail"), std::string::npos);
  write_records(cfg, 1);
  lines = split_lines(read_file(cfg.file));
  auto gap = nlohmann::json::parse(lines[12]);
  EXPECT_EQ(gap["event"], "audit_gap");
  EXPECT_EQ(gap["seq"], 13);
  EXPECT_EQ(gap["lost_bytes"], partial.size());
  Verdict g = verify({cfg.file});
  EXPECT_EQ(g.rc, kVerifyGaps) << g.problems;
  EXPECT_NE(g.problems.find("record 13 (seq 13): gap"), std::string::npos) << g.problems;
}

TEST(AuditLog, RefusesToContinueALogOfTheOtherKind) {
  TempDir d;
  AuditConfig cfg;
  cfg.file = d.file("audit.jsonl");
  write_records(cfg, 1);
  AuditConfig keyed = cfg;
  keyed.key_file = d.file("audit.key");
  make_key_file(keyed.key_file);
  EXPECT_THROW(AuditLog{keyed}, std::runtime_error);
  write_file(d.file("old.jsonl"), "{\"event\":\"session_end\"}\n");
  AuditConfig old;
  old.file = d.file("old.jsonl");
  try {
    AuditLog log(old);
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("not a chained audit record"), std::string::npos);
  }
}

TEST(AuditLog, KeyFileMustBePrivateAndLongEnough) {
  TempDir d;
  std::string p = d.file("k");
  write_file(p, std::string(40, 'k'));
  ::chmod(p.c_str(), 0644);
  EXPECT_THROW(load_audit_key(p), std::runtime_error);
  write_file(p, "short\n");
  ::chmod(p.c_str(), 0600);
  EXPECT_THROW(load_audit_key(p), std::runtime_error);
  EXPECT_THROW(load_audit_key(d.file("missing")), std::runtime_error);
}

TEST(AuditLog, ReopenAfterRotationContinuesWithASegment) {
  TempDir d;
  AuditConfig cfg;
  cfg.file = d.file("audit.jsonl");
  {
    AuditLog log(cfg);
    log.write({{"event", "denied"}});
    log.shutdown();
  }
  AuditLog log(cfg);  // audit_resume
  auto wait_lines = [&](size_t n) {
    for (int i = 0; i < 1000 && split_lines(read_file(cfg.file)).size() < n; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
  };
  log.write({{"event", "denied"}});
  wait_lines(4);
  fs::rename(cfg.file, d.file("audit.jsonl.1"));  // logrotate, then SIGUSR1
  log.reopen();
  log.write({{"event", "denied"}});
  wait_lines(2);
  fs::rename(cfg.file, d.file("audit.jsonl.2"));
  log.reopen();
  log.write({{"event", "denied"}});
  log.shutdown();
  auto lines = split_lines(read_file(d.file("audit.jsonl.2")));
  ASSERT_EQ(lines.size(), 2u);
  auto seg = nlohmann::json::parse(lines[0]);
  EXPECT_EQ(seg["event"], "audit_segment");
  EXPECT_EQ(seg["seq"], 5);
  EXPECT_EQ(seg["prev"],
            nlohmann::json::parse(split_lines(read_file(d.file("audit.jsonl.1"))).back())["hash"]);
  Verdict all = verify({d.file("audit.jsonl.1"), d.file("audit.jsonl.2"), cfg.file});
  EXPECT_EQ(all.rc, kVerifyOk) << all.problems;
  EXPECT_NE(all.report.find("audit.jsonl: ok: 2 records, seq 7..8"), std::string::npos)
      << all.report;
  EXPECT_EQ(verify({d.file("audit.jsonl.2")}).rc, kVerifyOk);  // a segment stands on its own
  // A file missing between two others: the next segment does not link.
  Verdict missing = verify({d.file("audit.jsonl.1"), cfg.file});
  EXPECT_EQ(missing.rc, kVerifyBad);
  EXPECT_EQ(missing.seq, 5u);
  // In the wrong order: the older file's audit_start cannot be linked to.
  Verdict wrong = verify({d.file("audit.jsonl.2"), d.file("audit.jsonl.1")});
  EXPECT_NE(wrong.rc, kVerifyOk);
  EXPECT_NE(wrong.problems.find("a new chain starts here"), std::string::npos) << wrong.problems;
}

TEST(AuditLog, WriteFailureRefusesCommitsFailClosedAndNotFailOpen) {
  // /dev/full: every write fails with ENOSPC.
  for (bool fail_open : {false, true}) {
    AuditConfig cfg;
    cfg.file = "/dev/full";
    cfg.fail_open = fail_open;
    AuditLog log(cfg);
    asio::io_context io;
    std::optional<CommitResult> got;
    std::thread::id resumed_on;
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
          AuditRecord rec{RecordBuilder("session_start").str("session", "x").take(), "alice"};
          got = co_await async_commit(log, std::move(rec), asio::use_awaitable);
          resumed_on = std::this_thread::get_id();
        },
        asio::detached);
    io.run();  // returns once the commit came back (outstanding work until then)
    ASSERT_TRUE(got);
    EXPECT_EQ(*got, fail_open ? CommitResult::kNotDurable : CommitResult::kRefused);
    EXPECT_EQ(resumed_on, std::this_thread::get_id()) << "must resume on the session's executor";
    AuditStats s = log.stats();
    EXPECT_TRUE(s.failing);
    EXPECT_GE(s.write_failures, 1u);
    EXPECT_GE(s.records_lost, 1u);
    EXPECT_EQ(s.not_durable, fail_open ? 1u : 0u);
  }
}

TEST(AuditLog, CommitIsDurableBeforeItCompletes) {
  TempDir d;
  AuditConfig cfg;
  cfg.file = d.file("audit.jsonl");
  cfg.commit_delay = std::chrono::milliseconds(1000);  // plain records may wait; commits not
  AuditLog log(cfg);
  asio::io_context io;
  std::string seen;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        for (int i = 0; i < 20; ++i) {
          AuditRecord rec{RecordBuilder("session_start").num("i", i).take(), {}};
          CommitResult r = co_await async_commit(log, std::move(rec), asio::use_awaitable);
          EXPECT_EQ(r, CommitResult::kDurable);
          seen = read_file(cfg.file);
          EXPECT_NE(seen.find("\"i\":" + std::to_string(i) + ","), std::string::npos);
        }
      },
      asio::detached);
  io.run();
  EXPECT_EQ(split_lines(seen).size(), 21u);
}

TEST(AuditLog, PerUserFilesHaveTheirOwnChain) {
  TempDir d;
  AuditConfig cfg;
  cfg.file = d.file("audit.jsonl");
  cfg.per_user_dir = d.file("users");
  fs::create_directories(cfg.per_user_dir);
  {
    AuditLog log(cfg);
    for (int i = 0; i < 6; ++i) {
      std::string user = i % 2 ? "alice" : std::string("b/../\x01ob");
      log.write_record(
          AuditRecord{RecordBuilder("session_end").untrusted("user", user).take(), user});
    }
    log.write_record(AuditRecord{RecordBuilder("auth_failure").take(), {}});
  }
  EXPECT_EQ(verify({cfg.file}).rc, kVerifyOk);
  EXPECT_EQ(split_lines(read_file(cfg.file)).size(), 8u);
  std::string alice = d.file("users/alice.jsonl");
  std::string bob = d.file("users/b%2F..%2F%01ob.jsonl");
  ASSERT_TRUE(fs::exists(alice));
  ASSERT_TRUE(fs::exists(bob)) << "names are escaped, never paths";
  EXPECT_EQ(split_lines(read_file(alice)).size(), 4u);  // audit_start + 3
  EXPECT_EQ(verify({alice}).rc, kVerifyOk);
  EXPECT_EQ(verify({bob}).rc, kVerifyOk);
}

TEST(AuditLog, PerUserFilesBeyondTheOpenFileLimitKeepTheirChains) {
  TempDir d;
  AuditConfig cfg;
  cfg.file = d.file("audit.jsonl");
  cfg.per_user_dir = d.file("users");
  fs::create_directories(cfg.per_user_dir);
  {
    AuditLog log(cfg);
    for (int round = 0; round < 2; ++round) {
      for (int u = 0; u < 300; ++u) {
        std::string user = "u" + std::to_string(u);
        log.write_record(AuditRecord{RecordBuilder("session_end").str("user", user).take(), user});
      }
    }
  }
  for (int u : {0, 1, 150, 255, 256, 299}) {
    std::string f = d.file("users/u" + std::to_string(u) + ".jsonl");
    auto lines = split_lines(read_file(f));
    EXPECT_EQ(lines.size(), 3u) << f;
    Verdict v = verify({f});
    EXPECT_EQ(v.rc, kVerifyOk) << f << ": " << v.problems;
  }
}

TEST(AuditChain, DocumentedHashIsOverTheLineUpToTheHashField) {
  crypto::AuditChain chain({}, 1, std::chrono::seconds(1));
  std::string out;
  chain.append(R"("time":"t","event":"e")", &out);
  std::string line = out.substr(0, out.size() - 1);
  auto parts = crypto::split_audit_line(line);
  ASSERT_TRUE(parts);
  EXPECT_EQ(std::string(parts->hashed), std::string(R"({"seq":1,"prev":")") +
                                            std::string(crypto::kAuditZeroHash) +
                                            R"(","time":"t","event":"e")");
  EXPECT_EQ(std::string(parts->hash), crypto::to_hex(crypto::sha256(parts->hashed)));
}

}  // namespace
}  // namespace socksgate::gateway
