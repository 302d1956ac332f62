#pragma once
// Host name patterns in a rule's "to": "host.example" (exactly that name), "*.example" (any
// name below example, not example itself) and "*" (any name). Compared case-insensitively and
// without a trailing dot. Pure; matching does not allocate.

#include <optional>
#include <string>
#include <string_view>

namespace socksgate::policy {

// A host name as policy understands it: labels of letters, digits, '-' and '_', 1..63 bytes
// each, at most 253 bytes in all (after dropping one trailing dot), and a last label that is
// not all digits (such "names" are addresses in disguise, e.g. "127.1" or "010.0.0.1", which
// resolvers read in surprising ways). Returns the name without its trailing dot, or an empty
// view when `host` is not a valid name.
std::string_view host_name_for_match(std::string_view host);

// Why `host` is not a valid host name ("" when it is). Used for admin-facing messages.
std::string host_name_problem(std::string_view host);

class HostPattern {
 public:
  enum class Kind : uint8_t { kExact, kSubdomains, kAny };

  // Parses an admin-written pattern. nullopt with *error set on anything that is not a valid
  // name, "*" or "*." followed by a valid name.
  static std::optional<HostPattern> parse(std::string_view text, std::string* error);

  // `name` must come from host_name_for_match() (validated, trailing dot dropped).
  bool matches(std::string_view name) const;

  Kind kind() const { return kind_; }
  // An exact name names its addresses explicitly (see policy.h: protected addresses).
  bool is_exact() const { return kind_ == Kind::kExact; }
  std::string to_string() const;  // canonical: lowercase, no trailing dot

 private:
  Kind kind_ = Kind::kAny;
  std::string name_;  // lowercase; for kSubdomains the part after "*."
};

}  // namespace socksgate::policy
