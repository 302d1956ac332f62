#include "gateway/audit_record.h"

namespace socksgate::gateway {
namespace {

// Length of the valid UTF-8 sequence at s[i] (RFC 3629), or 0.
size_t utf8_len(std::string_view s, size_t i) {
  auto b = [&](size_t k) { return static_cast<uint8_t>(s[i + k]); };
  uint8_t c = b(0);
  size_t n;
  uint32_t cp;
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
    cp = c & 0x1F;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    cp = c & 0x0F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    cp = c & 0x07;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k) {
    if ((b(k) & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (b(k) & 0x3F);
  }
  if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF))) return 0;
  if (cp >= 0xD800 && cp <= 0xDFFF) return 0;
  return n;
}

}  // namespace

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
      size_t n = utf8_len(s, i);
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
