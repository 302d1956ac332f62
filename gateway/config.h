#pragma once
// The gateway's configuration: one JSON file (comments allowed), validated strictly — unknown
// keys are errors, every problem is reported as `file:line:col: message`. Relative paths are
// relative to the directory of the config file. Immutable once loaded.
//
// Reference: docs/configuration.md. Examples: docs/examples/ (all validated by the tests).

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "auth/registry.h"
#include "auth/userpass/userpass_authenticator.h"
#include "crypto/tls.h"
#include "gateway/audit_log.h"
#include "gateway/interfaces.h"
#include "gateway/privsep.h"
#include "policy/policy.h"

namespace socksgate::gateway {

// A TLS listener: TLS from the first byte, then SOCKS5 inside.
struct TlsListenerConfig {
  crypto::TlsServerSettings server;  // files resolved relative to the config file
  std::chrono::milliseconds handshake_timeout{10000};
  // When a client both presents a certificate and authenticates by password or Kerberos, the
  // two user names must be the same.
  bool same_user = true;
};

// GSS-API (RFC 1961) settings: under "auth": {"gssapi": {...}} for every listener, and per
// listener ("gssapi": {...} in the listener) for the keys that differ there.
struct GssapiConfig {
  std::string keytab;               // "FILE:/resolved/path"
  std::string principal;            // empty = rcmd/<host name>; "any" = any principal in the keytab
  std::vector<std::string> realms;  // empty = the default realm of the krb5 configuration
  std::string name_mapping = "strip_realm";    // | "auth_to_local"
  std::string protection = "confidentiality";  // | "integrity" | "none" (TLS listeners only)
  bool nec = false;
  // Only contexts bound to the listener's TLS channel (tls-exporter / tls-server-end-point).
  bool require_channel_binding = false;
  uint32_t max_round_trips = 8;
};

struct ListenerConfig {
  std::string name;
  std::string address;               // IP literal ("127.0.0.1", "::1", "0.0.0.0", "::"), resolved
  std::string address_spec;          // as written: the IP, or an interface name
  uint16_t port = 1080;              // 0 = any free port (tests)
  std::vector<std::string> methods;  // ordered by preference
  // The gateway's address on the far side: BIND listeners are opened on it and it is what
  // BND.ADDR advertises. Empty = the local address of the client's connection.
  std::string external;
  HostAddresses external_addrs;  // `external` resolved (IP or interface name)
  // UDP ASSOCIATE: the address BND advertises for the relay (NAT, load balancers). Empty = the
  // address the relay socket is bound to (the one the client reached).
  std::string udp_advertise;
  // Accept SOCKS4/4a (no authentication: identity "anonymous", method "socks4"). Off by default.
  bool socks4 = false;
  // TCP congestion control of the connections accepted here (gateway/tcp_tuning.h); empty =
  // the kernel's default.
  std::string congestion_control;
  std::optional<TlsListenerConfig> tls;
  // The effective GSS-API settings (auth.gssapi with this listener's "gssapi" keys over it);
  // set when "gssapi" is among the methods.
  std::optional<GssapiConfig> gssapi;
};

struct UdpConfig {
  std::chrono::seconds idle_timeout{300};
  uint32_t max_datagrams_per_s = 20000;    // per association, each direction
  uint64_t max_bytes_per_s = 64ull << 20;  // per association, each direction
  uint32_t max_destinations = 1024;        // per association
};

// BIND (RFC 1928): where the gateway listens for the peer, and for how long.
struct BindConfig {
  uint16_t port_min = 49152;          // the range listeners are taken from (>= 1024, never a
  uint16_t port_max = 65535;          // gateway listener's port)
  std::chrono::seconds timeout{120};  // for the expected peer to connect
  uint32_t max_per_user = 8;          // open BINDs per user (0 = unlimited)
};

// Connections to destinations (CONNECT, and the peer connection of a BIND).
struct UpstreamConfig {
  std::string congestion_control;  // gateway/tcp_tuning.h; empty = the kernel's default
};

struct LimitsConfig {
  uint32_t max_sessions = 10000;       // whole gateway
  uint32_t max_sessions_per_user = 0;  // 0 = unlimited
  uint32_t max_sessions_per_source = 0;
  std::chrono::milliseconds negotiation_timeout{10000};
  std::chrono::milliseconds connect_timeout{10000};
  std::chrono::seconds idle_timeout{3600};
  std::chrono::seconds drain_timeout{30};  // SIGTERM: how long running sessions may finish
  // Quota usage (gateway/limits.h), kept across restarts; required when a rule sets a quota.
  std::string state_file;  // resolved path; empty = none
};

struct UserPassConfig {
  // settings.backend says file or PAM; file and inline_users are for the file back-end only.
  std::string file;  // resolved path; empty when users are inline
  std::vector<std::pair<std::string, std::string>> inline_users;  // user, hash
  auth::userpass::UserPassSettings settings;
  auth::userpass::ThrottleSettings throttle;
};

// The admin listener (gateway/admin.h): metrics, health, live sessions. Off unless configured.
struct AdminConfig {
  std::string address = "127.0.0.1";       // IP literal; not loopback => a token is required
  uint16_t port = 9180;                    // 0 = any free port (tests)
  std::string token_file;                  // resolved path; empty = no token
  std::string token;                       // the file's content (one line), read at load time
  std::vector<std::string> metrics_users;  // users that get per-user series
};

struct ThreadsConfig {
  uint32_t io = 0;        // 0 = number of cores
  uint32_t blocking = 0;  // 0 = number of cores
  uint32_t blocking_queue = 1024;
  uint32_t resolver = 8;
};

struct Config {
  std::string path;  // the file it came from ("<embedded>" for the default)
  std::vector<ListenerConfig> listeners;
  std::optional<UserPassConfig> userpass;
  std::optional<GssapiConfig> gssapi;  // auth.gssapi, the listeners' defaults
  AuditConfig audit;
  LimitsConfig limits;
  BindConfig bind;
  UdpConfig udp;
  UpstreamConfig upstream;
  ThreadsConfig threads;
  std::optional<AdminConfig> admin;
  std::string policy_file;  // resolved path, or empty when inline
  std::string policy_dir;   // policy.d: per-user and per-group rule files; empty = none
  // After a reload, how long a running session the new policy no longer allows may go on
  // before it is closed with reason "revoked" (a reload within the grace that allows it again
  // keeps it).
  std::chrono::seconds revoke_grace{0};
  RunAsConfig run_as;  // who the gateway becomes after binding, when started as root

  const ListenerConfig* find_listener(std::string_view name) const;
};

// A configuration together with everything it refers to, loaded and compiled: what a reload
// swaps in one step.
struct Snapshot {
  std::shared_ptr<const Config> config;
  std::shared_ptr<const policy::Policy> policy;
  auth::AuthBackends backends;
  // Every rule "egress" (IP or interface name) resolved to addresses at load time.
  std::map<std::string, HostAddresses, std::less<>> egress;
  // TLS contexts of the TLS listeners, by listener name (certificates, keys, CRLs loaded).
  std::map<std::string, std::shared_ptr<const crypto::TlsServerContext>, std::less<>> tls;
};

// Loads and validates `path` and the files it names (policy, password file). Throws
// policy::LoadError (all diagnostics) or std::runtime_error (unreadable file) on failure.
// `throttle` is shared across reloads.
Snapshot load_snapshot(const std::string& path,
                       std::shared_ptr<auth::userpass::LoginThrottle> throttle);
Snapshot load_snapshot_text(const std::string& path, std::string_view text,
                            std::shared_ptr<auth::userpass::LoginThrottle> throttle);

// The embedded default: userpass on 127.0.0.1:1080 and [::1]:1080, one user "demo" with the
// given password, allowed to reach loopback ports >= 1024 and public addresses. Audit to stdout.
// With `demo_pki` (a directory made by certs/make-certs.sh), also a TLS listener on
// 127.0.0.1:1443 with its server.pem / server.key.
Snapshot default_snapshot(const std::string& demo_password,
                          std::shared_ptr<auth::userpass::LoginThrottle> throttle,
                          const std::string& demo_pki = "");

}  // namespace socksgate::gateway
