#include "gateway/audit_record.h"

#include "gateway/audit.h"

namespace socksgate::gateway {
namespace {}  // namespace

void append_json_string(std::string* out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  out->push_back('"');
  size_t run = 0;  // start of the pending run of bytes that need no escaping
  auto flush = [&](size_t i) { out->append(s.data() + run, i - run); };
  for (size_t i = 0; i < s.size();) {
    auto c = static_cast<uint8_t>(s[i]);
    if (c >= 0x20 && c < 0x7F && c != '"' && c != '\\') {
      ++i;
      continue;
    }
    if (c >= 0x80) {
      size_t n = utf8_sequence_length(s, i);
      if (n > 0) {
        i += n;
        continue;
      }
      flush(i);
      out->append("\xEF\xBF\xBD");  // U+FFFD
      run = ++i;
      continue;
    }
    flush(i);
    switch (c) {
      case '"':
        out->append("\\\"");
        break;
      case '\\':
        out->append("\\\\");
        break;
      case '\n':
        out->append("\\n");
        break;
      case '\r':
        out->append("\\r");
        break;
      case '\t':
        out->append("\\t");
        break;
      case '\b':
        out->append("\\b");
        break;
      case '\f':
        out->append("\\f");
        break;
      default:
        out->append("\\u00");
        out->push_back(kHex[c >> 4]);
        out->push_back(kHex[c & 15]);
    }
    run = ++i;
  }
  flush(s.size());
  out->push_back('"');
}

RecordBuilder::RecordBuilder(std::string_view event) {
  body_.reserve(512);
  body_.append("\"time\":\"");
  body_.append(now_rfc3339());
  body_.append("\",\"event\":");
  append_json_string(&body_, event);
}

void RecordBuilder::key(std::string_view k) {
  body_.push_back(',');
  append_json_string(&body_, k);
  body_.push_back(':');
}

RecordBuilder& RecordBuilder::str(std::string_view k, std::string_view value) {
  key(k);
  append_json_string(&body_, value);
  return *this;
}

RecordBuilder& RecordBuilder::untrusted(std::string_view k, std::string_view bytes) {
  return str(k, escape_untrusted(bytes));
}

RecordBuilder& RecordBuilder::num(std::string_view k, uint64_t value) {
  key(k);
  char buf[24];
  char* p = buf + sizeof buf;
  do {
    *--p = static_cast<char>('0' + value % 10);
    value /= 10;
  } while (value != 0);
  body_.append(p, static_cast<size_t>(buf + sizeof buf - p));
  return *this;
}

RecordBuilder& RecordBuilder::json(std::string_view k, const nlohmann::json& value) {
  key(k);
  body_.append(value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  return *this;
}

}  // namespace socksgate::gateway
