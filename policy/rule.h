#pragma once
// Compiled policy: what the loader produces and decide() walks. Internal to policy/ (the
// gateway uses policy.h); exposed as a header so that tests and `socksgate explain` can look at
// what a document compiled to.
//
// Every selector is optional: std::nullopt (or has_to == false) means the key was absent and
// the selector matches anything. A present selector is never empty (the loader rejects []).

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "policy/address.h"
#include "policy/host_pattern.h"
#include "policy/policy.h"
#include "policy/time_window.h"

namespace socksgate::policy {

struct PortRange {
  uint16_t first = 1;
  uint16_t last = 65535;
  bool contains(uint16_t p) const { return p >= first && p <= last; }
  friend bool operator==(const PortRange&, const PortRange&) = default;
};

constexpr uint8_t command_bit(Command c) { return static_cast<uint8_t>(1u << static_cast<int>(c)); }
constexpr uint8_t kAllCommands = command_bit(Command::kConnect) | command_bit(Command::kBind) |
                                 command_bit(Command::kUdpAssociate);

struct ClientRule {
  std::string id;
  Action action = Action::kBlock;
  RuleOrigin origin;
  std::string comment;
  std::optional<std::vector<Cidr>> from;
  std::optional<std::vector<std::string>> listeners;
};

struct Rule {
  std::string id;
  Action action = Action::kBlock;
  RuleOrigin origin;
  std::string comment;

  std::optional<std::vector<std::string>> users;    // exact, case-sensitive
  std::optional<std::vector<std::string>> groups;   // exact, case-sensitive
  std::optional<std::vector<std::string>> methods;  // "none", "userpass", ...
  std::optional<std::vector<std::string>> listeners;
  // true: only requests over TLS with a verified client certificate match (combine with
  // "methods" to require a certificate and a password or Kerberos ticket).
  bool client_certificate = false;
  // GSS-API per-message protection the session must have at least: 1 integrity,
  // 2 confidentiality (RFC 1961 level values); 0 = no requirement. Sessions without GSS-API
  // never meet a requirement.
  uint8_t min_protection = 0;
  // true: only GSS-API sessions whose context is bound to their TLS channel match.
  bool require_channel_binding = false;
  std::optional<std::vector<Cidr>> from;
  // "when": the request time falls in any of these windows.
  std::optional<std::vector<TimeWindow>> when;
  uint8_t commands = kAllCommands;  // bit per Command; kAllCommands when absent
  bool has_commands = false;

  // "to": an address matches a CIDR, a requested name matches a host pattern.
  bool has_to = false;
  std::vector<Cidr> to_cidrs;
  std::vector<HostPattern> to_hosts;

  std::optional<std::vector<PortRange>> ports;
  // Lets the host globs of this rule reach protected addresses (exact names and CIDRs with a
  // prefix length > 0 always can).
  bool allow_protected = false;
  // Source address (IP or interface name) for what this rule passes; empty = the listener's.
  std::string egress;
  // Per-user limits of the sessions this rule passes (pass rules only).
  Limits limits;
};

struct CompiledPolicy {
  std::vector<ClientRule> client_rules;
  bool has_client_rules = false;  // absent "client_rules" = every client passes
  std::vector<Rule> rules;
  // "groups" from the document, both ways round; vectors sorted and unique.
  std::map<std::string, std::vector<std::string>, std::less<>> group_members;
  std::map<std::string, std::vector<std::string>, std::less<>> user_groups;
  std::vector<IpAddress> own_addresses;  // protected like loopback (LoadOptions)
};

struct Policy::Impl : CompiledPolicy {};

// `s` quoted for a human-readable message or audit reason: control characters and non-ASCII
// bytes escaped as \xNN, cut after `max` bytes. Names in requests come from the client.
std::string quote_for_message(std::string_view s, size_t max = 128);

// "10MiB", "1 GB", "512", "100B": bytes (KiB/MiB/GiB/TiB powers of 1024, kB/KB/MB/GB/TB of
// 1000). nullopt for anything else or beyond 2^60.
std::optional<uint64_t> parse_byte_size(std::string_view s);

}  // namespace socksgate::policy
