#pragma once
// What all sessions of one server share. Everything here is either immutable, atomic, or
// guards itself; sessions never take a lock on the data path.

#include <atomic>
#include <memory>

#include "auth/userpass/login_throttle.h"
#include "crypto/blocking_pool.h"
#include "gateway/audit.h"
#include "gateway/close_reason.h"
#include "gateway/config.h"
#include "gateway/limits.h"
#include "gateway/metrics.h"
#include "gateway/session_registry.h"
#include "gateway/shared_slot.h"

namespace socksgate::gateway {

struct ServerState {
  ServerState(size_t blocking_threads, size_t blocking_queue, size_t resolver_threads)
      : blocking(blocking_threads, blocking_queue), resolver(resolver_threads, blocking_queue) {}

  // Swapped as a whole on reload; a session keeps the snapshot it started with.
  SharedSlot<const Snapshot> snapshot;
  SharedSlot<AuditSink> audit;

  crypto::BlockingPool blocking;  // password hashing (and later PAM, GSS)
  crypto::BlockingPool resolver;  // getaddrinfo
  std::shared_ptr<auth::userpass::LoginThrottle> throttle =
      std::make_shared<auth::userpass::LoginThrottle>();
  CloseCounters counters;
  Metrics metrics;
  SessionRegistry sessions;
  LimitRegistry limits;  // per-user limits; outlives reloads
  std::atomic<uint64_t> sessions_total{0};
  std::atomic<bool> draining{false};
};

}  // namespace socksgate::gateway
