#pragma once
// A small JSON writer for the hot audit records (session_start, session_end): one record is a
// handful of appends to one string, with no intermediate tree. nlohmann::json stays for the
// cold records and for nested values.
//
// Strings are escaped as RFC 8259 requires: `"` and `\` get a backslash, control characters
// (U+0000..U+001F) and DEL become \n \r \t \b \f or \u00XX; bytes that are not valid UTF-8
// become U+FFFD (so the output is always valid UTF-8 JSON on one line). Text from the network
// goes through untrusted(), which applies escape_untrusted() first so nothing is lost.

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "gateway/audit.h"

namespace socksgate::gateway {

// Appends s as a JSON string literal (with quotes).
void append_json_string(std::string* out, std::string_view s);

class RecordBuilder {
 public:
  // Starts a record with "time" (now) and "event".
  explicit RecordBuilder(std::string_view event);
  RecordBuilder& str(std::string_view key, std::string_view value);
  RecordBuilder& untrusted(std::string_view key, std::string_view bytes);
  RecordBuilder& num(std::string_view key, uint64_t value);
  RecordBuilder& json(std::string_view key, const nlohmann::json& value);
  // The body (fields without braces) for an AuditRecord.
  std::string take() { return std::move(body_); }

 private:
  void key(std::string_view k);
  std::string body_;
};

}  // namespace socksgate::gateway
