#include "policy/host_pattern.h"

#include <algorithm>
#include <cstdio>

namespace socksgate::policy {
namespace {

constexpr size_t kMaxName = 253;
constexpr size_t kMaxLabel = 63;

bool is_name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '_';
}

char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(),
                                            [](char x, char y) { return lower(x) == lower(y); });
}

std::string shorten(std::string_view s) {
  return s.size() > 40 ? std::string(s.substr(0, 37)) + "..." : std::string(s);
}

// Validates without allocating unless a problem has to be described.
bool check_name(std::string_view host, std::string* problem) {
  if (!host.empty() && host.back() == '.') host.remove_suffix(1);
  auto fail = [&](std::string message) {
    if (problem != nullptr) *problem = std::move(message);
    return false;
  };
  if (host.empty()) return fail("empty host name");
  if (host.size() > kMaxName) {
    return fail("host name is longer than " + std::to_string(kMaxName) + " characters");
  }
  size_t start = 0;
  while (true) {
    size_t dot = host.find('.', start);
    size_t end = dot == std::string_view::npos ? host.size() : dot;
    std::string_view label = host.substr(start, end - start);
    if (label.empty()) return fail("empty label in host name");
    if (label.size() > kMaxLabel) {
      return fail("label \"" + shorten(label) + "\" is longer than " + std::to_string(kMaxLabel) +
                  " characters");
    }
    for (char c : label) {
      if (is_name_char(c)) continue;
      if (problem == nullptr) return false;
      auto u = static_cast<unsigned char>(c);
      if (u >= 0x80) {
        return fail("non-ASCII byte in host name (write international names in their xn-- form)");
      }
      if (c == '*') return fail("'*' is only allowed as \"*\" or at the start of \"*.name\"");
      char buf[8];
      std::snprintf(buf, sizeof buf, u < 0x20 || u == 0x7f ? "\\x%02x" : "'%c'", u);
      return fail(std::string("invalid character ") + buf +
                  " in host name (letters, digits, '-', '_' and '.' only)");
    }
    if (dot == std::string_view::npos) {
      if (std::all_of(label.begin(), label.end(), [](char c) { return c >= '0' && c <= '9'; })) {
        return fail(
            "looks like an IP address but is not one in canonical form (write a.b.c.d without "
            "leading zeros, a full IPv6 address, or a CIDR)");
      }
      return true;
    }
    start = dot + 1;
  }
}

}  // namespace

std::string_view host_name_for_match(std::string_view host) {
  if (!check_name(host, nullptr)) return {};
  if (host.back() == '.') host.remove_suffix(1);
  return host;
}

std::string host_name_problem(std::string_view host) {
  std::string problem;
  check_name(host, &problem);
  return problem;
}

std::optional<HostPattern> HostPattern::parse(std::string_view text, std::string* error) {
  HostPattern p;
  if (text == "*") {
    p.kind_ = Kind::kAny;
    return p;
  }
  std::string_view name = text;
  p.kind_ = Kind::kExact;
  if (name.starts_with("*.")) {
    p.kind_ = Kind::kSubdomains;
    name.remove_prefix(2);
  }
  std::string problem;
  if (!check_name(name, &problem)) {
    if (error != nullptr) *error = std::move(problem);
    return std::nullopt;
  }
  if (name.back() == '.') name.remove_suffix(1);
  p.name_.reserve(name.size());
  for (char c : name) p.name_ += lower(c);
  return p;
}

bool HostPattern::matches(std::string_view name) const {
  if (name.empty()) return false;
  switch (kind_) {
    case Kind::kAny:
      return true;
    case Kind::kExact:
      return iequals(name, name_);
    case Kind::kSubdomains:
      return name.size() > name_.size() + 1 && name[name.size() - name_.size() - 1] == '.' &&
             iequals(name.substr(name.size() - name_.size()), name_);
  }
  return false;
}

std::string HostPattern::to_string() const {
  switch (kind_) {
    case Kind::kAny:
      return "*";
    case Kind::kSubdomains:
      return "*." + name_;
    case Kind::kExact:
      break;
  }
  return name_;
}

}  // namespace socksgate::policy
