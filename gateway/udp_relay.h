#pragma once
// UDP ASSOCIATE (RFC 1928 section 7): one association per control connection.
//
// - The client-facing socket is bound to the address the client reached (so a client behind
//   NAT sends to a reachable address; BND may advertise another one, see the listener's
//   `udp_advertise`). Only datagrams from the association's client are accepted: from the
//   address:port the request named, or — when it named zeros — from the first datagram sent
//   from the control connection's IP. Everything else is dropped and counted.
// - FRAG != 0 is dropped and counted (fragmentation is optional in the RFC; nobody uses it).
// - Every destination goes through policy (command `udp`), names resolved by the gateway and
//   each address decided, exactly as for CONNECT; decisions are cached per association (the
//   policy snapshot cannot change under it). Denied destinations are dropped and audited once.
// - Replies are accepted only from destinations the client has sent to, and reach the client
//   with the sender's address in the UDP header.
// - Per-association caps: datagrams/s and bytes/s both ways (token buckets): no amplification.
// - The association ends when the control connection closes, or after the idle timeout.
//
// Runs on the session's executor; no locks.

#include <asio/awaitable.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/ip/udp.hpp>
#include <asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "crypto/blocking_pool.h"
#include "crypto/channel.h"
#include "gateway/close_reason.h"
#include "gateway/interfaces.h"
#include "gateway/metrics.h"
#include "gateway/socks5.h"
#include "gateway/token_bucket.h"
#include "policy/policy.h"

namespace socksgate::gateway {

class FlowLimiter;

// GSS-API (RFC 1961 section 5): every datagram both ways is one gss_wrap token of the whole
// UDP request/reply (header and data), framed `01 03 LEN TOKEN`. A datagram that does not
// verify, or has the wrong protection, is dropped and counted (`unverified`): a forged
// datagram from the client's address must not end the association.
class DatagramProtection {
 public:
  virtual ~DatagramProtection() = default;
  // The plain UDP request carried by `datagram`, or false.
  virtual bool open(std::span<const uint8_t> datagram, std::vector<uint8_t>* plain) = 0;
  // The datagram that carries `plain`, or false.
  virtual bool seal(std::span<const uint8_t> plain, std::vector<uint8_t>* datagram) = 0;
};

struct UdpSettings {
  std::chrono::seconds idle_timeout{300};
  uint32_t max_datagrams_per_s = 20000;    // each direction
  uint64_t max_bytes_per_s = 64ull << 20;  // each direction
  size_t max_destinations = 1024;          // distinct destinations tracked per association
  HostAddresses source;  // outbound source (the listener's "external"); empty = any
  // Rule "egress" names resolved (from the snapshot); a passing rule's egress wins.
  const std::map<std::string, HostAddresses, std::less<>>* egress = nullptr;
  DatagramProtection* protection = nullptr;  // GSS-API encapsulation; null = plain datagrams
  ByteTap tap_up, tap_down;                  // live byte counts (admin /sessions, metrics)
  // The policy's per-user limits (bandwidth per session and per user, byte quotas) for each
  // direction; null = none. UDP is never queued: a datagram the buckets cannot cover now is
  // dropped (counted as "rate"); a used-up quota ends the association (limit:quota).
  FlowLimiter* limit_up = nullptr;
  FlowLimiter* limit_down = nullptr;
};

struct UdpCounters {
  uint64_t datagrams_up = 0, bytes_up = 0, datagrams_down = 0, bytes_down = 0;
  uint64_t dropped_foreign = 0;      // not from the association's client
  uint64_t dropped_frag = 0;         // FRAG != 0
  uint64_t dropped_malformed = 0;    // bad header
  uint64_t dropped_denied = 0;       // policy said no
  uint64_t dropped_rate = 0;         // over the caps
  uint64_t dropped_unsolicited = 0;  // a "reply" from a host the client never sent to
  uint64_t dropped_unresolved = 0;
  uint64_t dropped_destinations = 0;  // over max_destinations
  uint64_t dropped_oversize = 0;      // a reply too big to carry with its header
  uint64_t dropped_unroutable = 0;    // the egress has no address of the destination's family
  uint64_t dropped_unverified = 0;    // GSS-API: did not verify / wrong protection
};

struct UdpFlow {
  uint64_t datagrams_up = 0, bytes_up = 0, datagrams_down = 0, bytes_down = 0;
  // Kept as clock values, formatted once for the audit record (not on every datagram).
  std::chrono::system_clock::time_point first_seen{}, last_seen{};
  std::string rule;
  std::string host;    // the name the client used, if any
  std::string egress;  // the deciding rule's egress, if any
};

class UdpAssociation {
 public:
  using AuditFn = std::function<void(nlohmann::json)>;

  // `client_ip`: the control connection's peer; `client_port`: 0 when the request had zeros.
  // `bind_address`: the local address of the control connection. `base`: the decision request
  // (user, method, listener, client, command udp).
  UdpAssociation(asio::any_io_executor ex, asio::ip::address client_ip, uint16_t client_port,
                 policy::DecisionRequest base, const policy::Policy& pol,
                 crypto::BlockingPool& resolver, UdpSettings settings, AuditFn denied_audit);

  // Opens the client-facing socket; returns its local endpoint (or an error).
  std::error_code open(const asio::ip::address& bind_address, asio::ip::udp::endpoint* local);

  // Relays until `control` reaches EOF/error or the idle timeout. Returns why it ended.
  asio::awaitable<CloseReason> run(asio::ip::tcp::socket& control);

  // UDP in stream (command 0x80, docs/udp-over-tls.md): the datagrams travel as frames on the
  // client's channel (TLS from behind NAT) instead of through a client-facing UDP socket; no
  // open() needed. Relays until the stream ends, a malformed frame, or the idle timeout.
  asio::awaitable<CloseReason> run_stream(crypto::Channel& client);

  const UdpCounters& counters() const { return counters_; }
  // {"destinations": [...], "dropped": {...}} for the session_end record.
  nlohmann::json summary() const;

 private:
  struct Decided {
    bool allowed = false;
    std::string rule;
  };
  asio::awaitable<void> client_loop();
  // One datagram from the client (header + data): policy, rate caps, send. False when the
  // association is ending.
  asio::awaitable<bool> forward_up(std::span<const uint8_t> dgram,
                                   std::chrono::steady_clock::time_point now,
                                   std::chrono::system_clock::time_point wall);
  // A reply (header + data) to the client: a datagram, or a frame queued on the stream.
  asio::awaitable<std::error_code> deliver_down(const std::vector<uint8_t>& dgram);
  asio::awaitable<void> stream_reader(crypto::Channel& ch);
  asio::awaitable<void> stream_writer(crypto::Channel& ch);
  asio::awaitable<void> upstream_loop(asio::ip::udp::socket& sock);
  asio::awaitable<void> upstream_task(asio::ip::udp::socket* sock);
  asio::awaitable<void> control_watch(asio::ip::tcp::socket& control);
  asio::awaitable<void> idle_watch();
  // The allowed endpoint for a client's destination (resolving and deciding as needed), or
  // nullopt (dropped; counted and, the first time, audited).
  asio::awaitable<std::optional<asio::ip::udp::endpoint>> destination_for(
      const socks5::Address& dst, uint16_t port);
  bool take(bool up, size_t bytes);
  // Counts bytes that moved against the user's quotas; false (and the association ending with
  // limit:quota) when one is used up.
  bool count_moved(bool up, size_t bytes);
  void audit_denied_once(const socks5::Address& dst, uint16_t port, const policy::Decision& d);
  // The outbound socket for a destination of `dest`'s family from the source `egress` (or the
  // listener's external address) selects; opened on first use with its own reply loop. Null
  // when the configured source has no address of that family.
  asio::ip::udp::socket* outbound(const asio::ip::address& dest, const std::string& egress);

  asio::any_io_executor ex_;
  asio::ip::address client_ip_;
  std::optional<asio::ip::udp::endpoint> client_ep_;
  policy::DecisionRequest base_;
  const policy::Policy& policy_;
  crypto::BlockingPool& resolver_;
  UdpSettings settings_;
  AuditFn denied_audit_;
  asio::ip::udp::socket client_sock_;
  // Stream mode: frames waiting for the writer (bounded; over the bound = dropped, as a full
  // socket buffer would), and the writer's wake-up.
  crypto::Channel* stream_ = nullptr;
  std::deque<std::vector<uint8_t>> frames_;
  size_t queued_bytes_ = 0;
  asio::steady_timer wake_;
  CloseReason stream_end_ = CloseReason::kClientClosed;
  std::map<std::string, std::unique_ptr<asio::ip::udp::socket>> outs_;  // by source address
  int loops_ = 0;                                                       // reply loops still running
  bool closing_ = false;  // the association is ending (control connection closed or idle)
  bool quota_used_up_ = false;
  UdpCounters counters_;
  std::map<asio::ip::udp::endpoint, UdpFlow> flows_;
  std::map<asio::ip::udp::endpoint, Decided> decisions_;
  struct NameEntry {
    std::vector<asio::ip::address> addrs;
    std::chrono::steady_clock::time_point expires;
  };
  std::map<std::string, NameEntry> names_;
  std::set<std::string> known_denied_;  // destinations already audited as denied
  std::chrono::steady_clock::time_point last_activity_ = std::chrono::steady_clock::now();
  // Token buckets, per direction.
  struct Bucket {
    TokenBucket datagrams, bytes;
  };
  Bucket up_bucket_, down_bucket_;
};

}  // namespace socksgate::gateway
