#pragma once
// `socksgate audit verify FILE... [--key KEYFILE]`: checks the chain of an audit log
// (crypto/audit_chain.h, docs/audit.md "Verifying"). Several files are one rotated log,
// oldest first: each later file must continue the one before it.
//
// Stops at the first bad record and says, in one line on `problems`,
//   FILE: record N (seq S): <what is wrong>
// where N counts lines from 1 in FILE and S is the sequence number that belongs there.
// A partial last line is a "truncated tail"; an `audit_gap` record (records lost while the
// log could not be written) is a warning line, not an error.

#include <cstdint>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

namespace socksgate::gateway {

inline constexpr int kVerifyOk = 0;
inline constexpr int kVerifyBad = 1;
inline constexpr int kVerifyUsage = 2;  // unreadable file, keyed log without --key
inline constexpr int kVerifyGaps = 4;   // intact, but records were lost (audit_gap)

// key: the master key (load_audit_key) or empty for SHA-256 logs. Writes one summary line per
// intact file to `report` and problems to `problems`. Returns one of the codes above.
int verify_audit_files(const std::vector<std::string>& files, const std::vector<uint8_t>& key,
                       std::ostream& report, std::ostream& problems);

// The same for one file's contents already in memory (`name` is used in messages).
int verify_audit_text(const std::string& name, std::string_view data,
                      const std::vector<uint8_t>& key, std::ostream& report,
                      std::ostream& problems);

}  // namespace socksgate::gateway
