#pragma once
// IP addresses and CIDR blocks as policy sees them: canonical, comparable, no I/O.
//
// Canonicalisation: an IPv4-mapped IPv6 address (::ffff:a.b.c.d) is the IPv4 address
// a.b.c.d; so are the IPv4-compatible (::a.b.c.d, except :: and ::1) and NAT64
// (64:ff9b::a.b.c.d) spellings, which a client could otherwise use to dodge an IPv4 rule.
// Scope ids are dropped. The result is what every matcher compares against.

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace socksgate::policy {

class IpAddress {
 public:
  IpAddress() = default;  // 0.0.0.0
  static IpAddress v4(std::array<uint8_t, 4> bytes);
  static IpAddress v6(std::array<uint8_t, 16> bytes);  // canonicalised (see above)

  // Parses dotted-quad IPv4 (exactly four decimal parts, no leading zeros beyond "0") or any
  // RFC 4291 IPv6 text (with optional %scope, dropped). Returns nullopt on anything else.
  static std::optional<IpAddress> parse(std::string_view text);

  bool is_v4() const { return v4_; }
  // 4 meaningful bytes for IPv4, 16 for IPv6.
  const std::array<uint8_t, 16>& bytes() const { return bytes_; }
  std::string to_string() const;  // "192.0.2.1", "2001:db8::1"

  // Loopback, link-local (incl. 169.254.169.254), multicast, unspecified, broadcast,
  // 0.0.0.0/8, and private ranges (RFC 1918, RFC 6598 CGNAT, fc00::/7): reachable only when
  // a rule names them (see policy.h).
  bool is_protected() const;
  // Which protected range the address is in, for decision reasons and audit: "loopback",
  // "link-local", "multicast", "unspecified", "broadcast" or "private"; empty when
  // is_protected() is false.
  std::string_view protected_range() const;

  friend bool operator==(const IpAddress&, const IpAddress&) = default;
  friend auto operator<=>(const IpAddress&, const IpAddress&) = default;

 private:
  friend class Cidr;  // builds IPv6 block bases that must not be canonicalised
  bool v4_ = true;
  std::array<uint8_t, 16> bytes_{};
};

class Cidr {
 public:
  Cidr() = default;
  Cidr(IpAddress base, int prefix_len);  // host bits are cleared
  // "10.0.0.0/8", "::1/128", or a bare address (= /32 or /128). A mapped IPv6 block
  // (::ffff:10.0.0.0/104) becomes its IPv4 equivalent. nullopt on malformed text or a prefix
  // out of range.
  static std::optional<Cidr> parse(std::string_view text);
  // As parse(), and sets *host_bits_set when the text had bits set beyond the prefix
  // ("10.1.0.0/8"), which the policy loader reports as a likely typo.
  static std::optional<Cidr> parse(std::string_view text, bool* host_bits_set);

  bool contains(const IpAddress& a) const;
  int prefix_len() const { return prefix_len_; }
  const IpAddress& base() const { return base_; }
  std::string to_string() const;

  friend bool operator==(const Cidr&, const Cidr&) = default;

 private:
  IpAddress base_;
  int prefix_len_ = 0;
};

}  // namespace socksgate::policy
