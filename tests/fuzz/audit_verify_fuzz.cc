// Fuzzes `socksgate audit verify` on arbitrary file contents (a log is attacker-controlled
// input for the verifier): it never crashes, returns one of its documented codes, and a bad
// log is reported in exactly one "FILE: record N (seq S): ..." line. The first input byte
// chooses a keyed (odd) or plain (even) verification.
#include <cstdint>
#include <cstdlib>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "gateway/audit_verify.h"

namespace sg = socksgate::gateway;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::vector<uint8_t> key;
  if (data[0] & 1) key.assign(32, 'k');
  std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
  std::ostringstream report, problems;
  int rc = sg::verify_audit_text("f", text, key, report, problems);
  std::string p = problems.str();
  switch (rc) {
    case sg::kVerifyOk:
      if (!p.empty() || report.str().rfind("f: ok: ", 0) != 0) std::abort();
      break;
    case sg::kVerifyBad: {
      size_t lines = 0;
      for (char c : p) lines += c == '\n';
      // Gap warnings may come before the one error line.
      if (lines == 0 || p.back() != '\n') std::abort();
      if (p.rfind("f: record ") == std::string::npos) std::abort();
      break;
    }
    case sg::kVerifyUsage:
    case sg::kVerifyGaps:
      if (p.empty()) std::abort();
      break;
    default:
      std::abort();
  }
  return 0;
}
