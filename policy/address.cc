#include "policy/address.h"

#include <algorithm>
#include <cstdio>

namespace socksgate::policy {
namespace {

constexpr std::array<uint8_t, 12> kMappedPrefix = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
constexpr std::array<uint8_t, 12> kNat64Prefix = {0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0};
constexpr std::array<uint8_t, 12> kCompatPrefix = {};

bool has_prefix12(const std::array<uint8_t, 16>& b, const std::array<uint8_t, 12>& prefix) {
  return std::equal(prefix.begin(), prefix.end(), b.begin());
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Strict dotted quad: four decimal parts 0..255, no leading zeros (so "010" can never be read
// as octal by some other component), no hex, no shortened forms.
bool parse_v4(std::string_view s, uint8_t* out) {
  int part = 0;
  size_t i = 0;
  while (true) {
    if (i >= s.size() || !is_digit(s[i])) return false;
    size_t start = i;
    int value = 0;
    while (i < s.size() && is_digit(s[i])) {
      if (i - start == 3) return false;
      value = value * 10 + (s[i] - '0');
      ++i;
    }
    if (value > 255 || (s[start] == '0' && i - start > 1)) return false;
    out[part++] = static_cast<uint8_t>(value);
    if (part == 4) return i == s.size();
    if (i >= s.size() || s[i] != '.') return false;
    ++i;
  }
}

// RFC 4291 section 2.2 text forms, without scope; raw bytes, not canonicalised.
bool parse_v6(std::string_view s, std::array<uint8_t, 16>* out) {
  std::array<uint16_t, 8> groups{};
  int n = 0;
  int gap = -1;  // index in groups where "::" stands
  size_t i = 0;
  bool v4_tail = false;
  std::array<uint8_t, 4> tail{};
  if (s.starts_with("::")) {
    gap = 0;
    i = 2;
  } else if (s.starts_with(":")) {
    return false;
  }
  while (i < s.size()) {
    if (n == 8) return false;
    size_t j = s.find(':', i);
    if (j == std::string_view::npos) j = s.size();
    std::string_view part = s.substr(i, j - i);
    if (part.find('.') != std::string_view::npos) {
      // An embedded IPv4 address may only be the last 32 bits.
      if (j != s.size() || n > 6 || !parse_v4(part, tail.data())) return false;
      v4_tail = true;
      n += 2;
      break;
    }
    if (part.empty() || part.size() > 4) return false;
    unsigned value = 0;
    for (char c : part) {
      int h = hex_value(c);
      if (h < 0) return false;
      value = value * 16 + static_cast<unsigned>(h);
    }
    groups[n++] = static_cast<uint16_t>(value);
    if (j == s.size()) break;
    if (j + 1 < s.size() && s[j + 1] == ':') {
      if (gap >= 0) return false;
      gap = n;
      i = j + 2;
    } else {
      i = j + 1;
      if (i == s.size()) return false;  // trailing single ':'
    }
  }
  if (gap < 0 ? n != 8 : n > 7) return false;
  std::array<uint8_t, 16> b{};
  int written = v4_tail ? n - 2 : n;
  // Groups before the gap go to the front, groups after it to the back.
  int before = gap < 0 ? written : gap;
  int after = written - before;
  int tail_groups = v4_tail ? 2 : 0;
  for (int k = 0; k < before; ++k) {
    b[2 * k] = static_cast<uint8_t>(groups[k] >> 8);
    b[2 * k + 1] = static_cast<uint8_t>(groups[k] & 0xff);
  }
  for (int k = 0; k < after; ++k) {
    int dst = 8 - tail_groups - after + k;
    b[2 * dst] = static_cast<uint8_t>(groups[before + k] >> 8);
    b[2 * dst + 1] = static_cast<uint8_t>(groups[before + k] & 0xff);
  }
  if (v4_tail) std::copy(tail.begin(), tail.end(), b.begin() + 12);
  *out = b;
  return true;
}

bool valid_scope(std::string_view scope) {
  if (scope.empty() || scope.size() > 64) return false;
  return std::all_of(scope.begin(), scope.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c) || c == '.' ||
           c == '_' || c == '-';
  });
}

// Does the raw IPv6 address embed an IPv4 address that a connect() would reach?
bool embeds_v4(const std::array<uint8_t, 16>& b) {
  if (has_prefix12(b, kMappedPrefix) || has_prefix12(b, kNat64Prefix)) return true;
  if (has_prefix12(b, kCompatPrefix)) {
    // :: and ::1 are the IPv6 unspecified and loopback addresses, not IPv4-compatible ones.
    return !(b[12] == 0 && b[13] == 0 && b[14] == 0 && b[15] <= 1);
  }
  return false;
}

void clear_host_bits(std::array<uint8_t, 16>* b, int prefix_len, int total_bits) {
  for (int bit = prefix_len; bit < total_bits; ++bit) {
    (*b)[bit / 8] &= static_cast<uint8_t>(~(0x80u >> (bit % 8)));
  }
}

bool parse_prefix(std::string_view s, int max, int* out) {
  if (s.empty() || s.size() > 3) return false;
  if (s.size() > 1 && s[0] == '0') return false;
  int v = 0;
  for (char c : s) {
    if (!is_digit(c)) return false;
    v = v * 10 + (c - '0');
  }
  if (v > max) return false;
  *out = v;
  return true;
}

}  // namespace

IpAddress IpAddress::v4(std::array<uint8_t, 4> bytes) {
  IpAddress a;
  a.v4_ = true;
  std::copy(bytes.begin(), bytes.end(), a.bytes_.begin());
  return a;
}

IpAddress IpAddress::v6(std::array<uint8_t, 16> bytes) {
  if (embeds_v4(bytes)) return v4({bytes[12], bytes[13], bytes[14], bytes[15]});
  IpAddress a;
  a.v4_ = false;
  a.bytes_ = bytes;
  return a;
}

std::optional<IpAddress> IpAddress::parse(std::string_view text) {
  if (text.find(':') == std::string_view::npos) {
    std::array<uint8_t, 4> b{};
    if (!parse_v4(text, b.data())) return std::nullopt;
    return v4(b);
  }
  size_t pct = text.find('%');
  if (pct != std::string_view::npos) {
    if (!valid_scope(text.substr(pct + 1))) return std::nullopt;
    text = text.substr(0, pct);
  }
  std::array<uint8_t, 16> b{};
  if (!parse_v6(text, &b)) return std::nullopt;
  return v6(b);
}

std::string IpAddress::to_string() const {
  char buf[48];
  if (v4_) {
    std::snprintf(buf, sizeof buf, "%u.%u.%u.%u", bytes_[0], bytes_[1], bytes_[2], bytes_[3]);
    return buf;
  }
  // RFC 5952: lowercase, no leading zeros, the longest run (>= 2) of zero groups as "::",
  // the first one on a tie.
  std::array<unsigned, 8> g{};
  for (int k = 0; k < 8; ++k) g[k] = (bytes_[2 * k] << 8) | bytes_[2 * k + 1];
  int best = -1, best_len = 1;
  for (int k = 0; k < 8;) {
    if (g[k] != 0) {
      ++k;
      continue;
    }
    int start = k;
    while (k < 8 && g[k] == 0) ++k;
    if (k - start > best_len) {
      best = start;
      best_len = k - start;
    }
  }
  std::string out;
  for (int k = 0; k < 8; ++k) {
    if (k == best) {
      out += "::";
      k += best_len - 1;
      continue;
    }
    if (!out.empty() && out.back() != ':') out += ':';
    std::snprintf(buf, sizeof buf, "%x", g[k]);
    out += buf;
  }
  return out;
}

std::string_view IpAddress::protected_range() const {
  const auto& b = bytes_;
  if (v4_) {
    if (b[0] == 0) return "unspecified";
    if (b[0] == 127) return "loopback";
    if (b[0] == 169 && b[1] == 254) return "link-local";
    if ((b[0] & 0xf0) == 224) return "multicast";
    if (b[0] == 255 && b[1] == 255 && b[2] == 255 && b[3] == 255) return "broadcast";
    if (b[0] == 10) return "private";
    if (b[0] == 172 && (b[1] & 0xf0) == 16) return "private";
    if (b[0] == 192 && b[1] == 168) return "private";
    if (b[0] == 100 && (b[1] & 0xc0) == 64) return "private";
    return {};
  }
  bool zero15 = std::all_of(b.begin(), b.begin() + 15, [](uint8_t x) { return x == 0; });
  if (zero15 && b[15] == 0) return "unspecified";
  if (zero15 && b[15] == 1) return "loopback";
  if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80) return "link-local";
  if (b[0] == 0xff) return "multicast";
  if ((b[0] & 0xfe) == 0xfc) return "private";
  return {};
}

bool IpAddress::is_protected() const { return !protected_range().empty(); }

Cidr::Cidr(IpAddress base, int prefix_len) {
  int total = base.is_v4() ? 32 : 128;
  prefix_len_ = std::clamp(prefix_len, 0, total);
  std::array<uint8_t, 16> b = base.bytes();
  clear_host_bits(&b, prefix_len_, total);
  base_ = base.is_v4() ? IpAddress::v4({b[0], b[1], b[2], b[3]}) : IpAddress::v6(b);
}

std::optional<Cidr> Cidr::parse(std::string_view text) {
  bool ignored = false;
  return parse(text, &ignored);
}

std::optional<Cidr> Cidr::parse(std::string_view text, bool* host_bits_set) {
  *host_bits_set = false;
  size_t slash = text.find('/');
  if (slash == std::string_view::npos) {
    auto a = IpAddress::parse(text);
    if (!a) return std::nullopt;
    return Cidr(*a, a->is_v4() ? 32 : 128);
  }
  std::string_view addr = text.substr(0, slash);
  std::string_view len = text.substr(slash + 1);
  if (addr.find(':') == std::string_view::npos) {
    auto a = IpAddress::parse(addr);
    int prefix = 0;
    if (!a || !parse_prefix(len, 32, &prefix)) return std::nullopt;
    Cidr c(*a, prefix);
    *host_bits_set = c.base_ != *a;
    return c;
  }
  size_t pct = addr.find('%');
  if (pct != std::string_view::npos) {
    if (!valid_scope(addr.substr(pct + 1))) return std::nullopt;
    addr = addr.substr(0, pct);
  }
  std::array<uint8_t, 16> b{};
  int prefix = 0;
  if (!parse_v6(addr, &b) || !parse_prefix(len, 128, &prefix)) return std::nullopt;
  std::array<uint8_t, 16> as_written = b;
  clear_host_bits(&b, prefix, 128);
  *host_bits_set = b != as_written;
  // A block inside one of the IPv4-embedding /96s is that IPv4 block, so that
  // "::ffff:10.0.0.0/104" and "10.0.0.0/8" mean the same thing. A single :: or ::1 stays IPv6.
  bool compat_special = prefix == 128 && !embeds_v4(b);
  if (prefix >= 96 && !compat_special &&
      (has_prefix12(b, kMappedPrefix) || has_prefix12(b, kNat64Prefix) ||
       has_prefix12(b, kCompatPrefix))) {
    return Cidr(IpAddress::v4({b[12], b[13], b[14], b[15]}), prefix - 96);
  }
  Cidr c;
  c.prefix_len_ = prefix;
  c.base_.v4_ = false;
  c.base_.bytes_ = b;
  return c;
}

bool Cidr::contains(const IpAddress& a) const {
  if (a.is_v4() != base_.is_v4()) return false;
  const auto& x = a.bytes();
  const auto& y = base_.bytes();
  int full = prefix_len_ / 8;
  if (!std::equal(x.begin(), x.begin() + full, y.begin())) return false;
  int rest = prefix_len_ % 8;
  if (rest == 0) return true;
  auto mask = static_cast<uint8_t>(0xff00u >> rest);
  return (x[full] & mask) == (y[full] & mask);
}

std::string Cidr::to_string() const {
  return base_.to_string() + "/" + std::to_string(prefix_len_);
}

}  // namespace socksgate::policy
