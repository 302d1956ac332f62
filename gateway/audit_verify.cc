#include "gateway/audit_verify.h"

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string_view>

#include "crypto/audit_chain.h"

namespace socksgate::gateway {
namespace {

struct Link {
  uint64_t seq;
  std::string hash;
  uint64_t epoch;
};

struct Verifier {
  const std::vector<uint8_t>& key;
  std::ostream& report;
  std::ostream& problems;
  std::map<uint64_t, crypto::Sha256Digest> epoch_keys;
  std::optional<Link> prev;  // the last good record (across files)
  bool gaps = false;

  const crypto::Sha256Digest* epoch_key(uint64_t e) {
    auto it = epoch_keys.find(e);
    if (it == epoch_keys.end()) it = epoch_keys.emplace(e, crypto::audit_epoch_key(key, e)).first;
    return &it->second;
  }

  static std::string seq_text(std::optional<uint64_t> s) {
    return s ? std::to_string(*s) : std::string("?");
  }

  int bad(const std::string& file, uint64_t n, std::optional<uint64_t> seq,
          const std::string& what) {
    problems << file << ": record " << n << " (seq " << seq_text(seq) << "): " << what << "\n";
    return kVerifyBad;
  }

  // The seq a line claims, without trusting the rest of it.
  static std::optional<uint64_t> peek_seq(const std::vector<std::string_view>& lines, size_t i) {
    if (i >= lines.size()) return std::nullopt;
    std::string_view l = lines[i];
    constexpr std::string_view kHead = "{\"seq\":";
    if (l.substr(0, kHead.size()) != kHead) return std::nullopt;
    uint64_t v = 0;
    size_t k = kHead.size();
    if (k >= l.size() || l[k] < '0' || l[k] > '9') return std::nullopt;
    for (; k < l.size() && l[k] >= '0' && l[k] <= '9' && v < (uint64_t{1} << 60); ++k)
      v = v * 10 + static_cast<uint64_t>(l[k] - '0');
    return v;
  }

  // Is there a record with this seq after line index i? (Tells reordering from deletion.)
  static bool seq_later(const std::vector<std::string_view>& lines, size_t i, uint64_t seq) {
    std::string prefix = "{\"seq\":" + std::to_string(seq) + ",";
    for (size_t k = i + 1; k < lines.size(); ++k) {
      if (lines[k].substr(0, prefix.size()) == prefix) return true;
    }
    return false;
  }

  int file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
      problems << path << ": cannot read\n";
      return kVerifyUsage;
    }
    std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    return text(path, data);
  }

  int text(const std::string& path, std::string_view data) {
    if (data.empty()) {
      problems << path << ": record 1 (seq "
               << seq_text(prev ? std::optional(prev->seq + 1) : std::nullopt)
               << "): empty log: every log starts with an audit_start or audit_segment record\n";
      return kVerifyBad;
    }
    std::vector<std::string_view> lines;
    std::string_view rest(data);
    std::string_view partial;
    while (!rest.empty()) {
      size_t nl = rest.find('\n');
      if (nl == std::string_view::npos) {
        partial = rest;
        break;
      }
      lines.push_back(rest.substr(0, nl));
      rest.remove_prefix(nl + 1);
    }
    std::optional<uint64_t> first_seq;
    for (size_t i = 0; i < lines.size(); ++i) {
      uint64_t n = i + 1;
      std::string_view line = lines[i];
      std::optional<uint64_t> expected;
      if (prev) expected = prev->seq + 1;
      auto parts = crypto::split_audit_line(line);
      auto j = nlohmann::json::parse(line, nullptr, false);
      if (!prev && i == 0) {
        // Nothing before it to go by: the record after it says where this one stands.
        if (auto next = peek_seq(lines, i + 1); next && *next > 0) expected = *next - 1;
      }
      if (!parts || j.is_discarded() || !j.is_object() || !j.contains("seq") ||
          !j["seq"].is_number_unsigned() || !j.contains("prev") || !j["prev"].is_string() ||
          !j.contains("event") || !j["event"].is_string()) {
        return bad(path, n, expected,
                   line.empty() ? "empty line (records edited or removed)"
                                : "not a chained audit record (edited or corrupted)");
      }
      uint64_t seq = j["seq"].get<uint64_t>();
      std::optional<uint64_t> at = expected ? expected : std::optional(seq);
      bool keyed = j.contains("epoch");
      uint64_t epoch = 0;
      if (keyed) {
        if (!j["epoch"].is_number_unsigned()) return bad(path, n, at, "epoch is not a number");
        epoch = j["epoch"].get<uint64_t>();
      }
      if (keyed && key.empty()) {
        problems << path << ": record " << n << " (seq " << seq << "): the log is HMAC'ed: "
                 << "verify with --key KEYFILE\n";
        return kVerifyUsage;
      }
      if (!keyed && !key.empty()) {
        return bad(path, n, at, "not HMAC'ed, but the log is keyed (replaced or forged record)");
      }
      std::string h = crypto::audit_record_hash(parts->hashed, keyed ? epoch_key(epoch) : nullptr);
      if (h != parts->hash) {
        return bad(path, n, at,
                   keyed ? "HMAC does not match: the record was edited (or forged without the key)"
                         : "hash does not match: the record was edited");
      }
      std::string event = j["event"].get<std::string>();
      std::string prev_hash = j["prev"].get<std::string>();
      bool chain_start = event == "audit_start" || event == "audit_segment";
      if (i > 0 && chain_start) {
        return bad(path, n, at, event + " in the middle of a file (records spliced in)");
      }
      if (i == 0 && (!prev || event == "audit_start")) {
        // The head of a lineage (or of a file verified on its own).
        if (prev) {
          // A gateway that starts on an empty file cannot know the file before it.
          gaps = true;
          problems << path << ": record 1 (seq " << seq
                   << "): a new chain starts here: its link to the previous file (last seq "
                   << prev->seq << ") cannot be checked\n";
        }
        if (event == "audit_start") {
          if (seq != 1 || prev_hash != crypto::kAuditZeroHash) {
            return bad(path, n, seq, "audit_start must have seq 1 and a zero prev");
          }
        } else if (event != "audit_segment") {
          return bad(path, n, seq > 1 ? seq - 1 : seq,
                     "the file does not begin with audit_start or audit_segment (records "
                     "deleted from its head?)");
        }
      } else {
        if (seq != *expected) {
          if (seq < *expected) {
            return bad(path, n, expected,
                       "found seq " + std::to_string(seq) +
                           ": records reordered or duplicated (seq goes backwards)");
          }
          if (seq_later(lines, i, *expected)) {
            return bad(path, n, expected,
                       "found seq " + std::to_string(seq) + ": records reordered");
          }
          std::string missing = std::to_string(*expected);
          if (seq - 1 > *expected) missing += ".." + std::to_string(seq - 1);
          return bad(path, n, expected,
                     "found seq " + std::to_string(seq) + ": record(s) " + missing + " deleted");
        }
        if (prev_hash != prev->hash) {
          return bad(path, n, expected,
                     "prev does not match the record before it (spliced from another log?)");
        }
        if (keyed && epoch < prev->epoch) return bad(path, n, expected, "epoch goes backwards");
      }
      if (event == "audit_gap") {
        gaps = true;
        std::ostringstream w;
        w << path << ": record " << n << " (seq " << seq << "): gap: ";
        if (j.contains("lost_bytes")) {
          w << "a partial record of " << j["lost_bytes"].dump()
            << " bytes was cut off when the log was reopened (crash during a write)";
        } else {
          w << j.value("lost", nlohmann::json(0)).dump() << " records lost while the log "
            << "could not be written (since " << j.value("since", std::string("?")) << ": "
            << j.value("error", std::string("?")) << ")";
        }
        problems << w.str() << "\n";
      }
      if (!first_seq) first_seq = seq;
      prev = Link{seq, std::string(parts->hash), epoch};
    }
    if (!partial.empty()) {
      return bad(path, lines.size() + 1, prev ? std::optional(prev->seq + 1) : std::nullopt,
                 "truncated tail: the last line is incomplete (" + std::to_string(partial.size()) +
                     " bytes without a newline)");
    }
    report << path << ": ok: " << lines.size() << " records, seq " << seq_text(first_seq) << ".."
           << seq_text(prev ? std::optional(prev->seq) : std::nullopt) << ", last hash "
           << (prev ? prev->hash : std::string("-")) << "\n";
    return kVerifyOk;
  }
};

}  // namespace

int verify_audit_files(const std::vector<std::string>& files, const std::vector<uint8_t>& key,
                       std::ostream& report, std::ostream& problems) {
  Verifier v{key, report, problems, {}, std::nullopt, false};
  for (const auto& f : files) {
    int rc = v.file(f);
    if (rc != kVerifyOk) return rc;
  }
  return v.gaps ? kVerifyGaps : kVerifyOk;
}

int verify_audit_text(const std::string& name, std::string_view data,
                      const std::vector<uint8_t>& key, std::ostream& report,
                      std::ostream& problems) {
  Verifier v{key, report, problems, {}, std::nullopt, false};
  int rc = v.text(name, data);
  if (rc != kVerifyOk) return rc;
  return v.gaps ? kVerifyGaps : kVerifyOk;
}

}  // namespace socksgate::gateway
