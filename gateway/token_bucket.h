#pragma once
// A token bucket: `rate` tokens a second, holding at most `burst`. Used for UDP datagram and
// byte caps (udp_relay), bandwidth limits (limits.h) and new sessions per minute. Not
// thread-safe: callers that share one across threads hold a lock around it.

#include <algorithm>
#include <chrono>

namespace socksgate::gateway {

class TokenBucket {
 public:
  using Clock = std::chrono::steady_clock;

  TokenBucket() = default;
  // Starts full.
  TokenBucket(double rate, double burst, Clock::time_point now = Clock::now())
      : rate_(rate), burst_(burst), tokens_(burst), last_(now) {}

  double rate() const { return rate_; }
  double burst() const { return burst_; }

  // Changes rate and burst, keeping the tokens there are (at most the new burst).
  void reconfigure(double rate, double burst, Clock::time_point now = Clock::now()) {
    refill(now);
    rate_ = rate;
    burst_ = burst;
    tokens_ = std::min(tokens_, burst_);
  }

  double available(Clock::time_point now = Clock::now()) {
    refill(now);
    return tokens_;
  }
  // Takes `n` if there are that many.
  bool try_take(double n, Clock::time_point now = Clock::now()) {
    refill(now);
    if (tokens_ < n) return false;
    tokens_ -= n;
    return true;
  }
  // Takes `n` that the caller saw available (after available() with the same `now`).
  void take(double n) { tokens_ -= n; }
  // Returns tokens taken but not used.
  void give_back(double n) { tokens_ = std::min(burst_, tokens_ + n); }
  // How long until `n` tokens (at most the burst) are there; zero if they are.
  Clock::duration time_until(double n, Clock::time_point now = Clock::now()) {
    refill(now);
    n = std::min(n, burst_);
    if (tokens_ >= n || rate_ <= 0) return Clock::duration::zero();
    return std::chrono::duration_cast<Clock::duration>(
        std::chrono::duration<double>((n - tokens_) / rate_));
  }

 private:
  void refill(Clock::time_point now) {
    if (now <= last_) return;
    double secs = std::chrono::duration<double>(now - last_).count();
    tokens_ = std::min(burst_, tokens_ + secs * rate_);
    last_ = now;
  }

  double rate_ = 0;
  double burst_ = 0;
  double tokens_ = 0;
  Clock::time_point last_ = Clock::now();
};

}  // namespace socksgate::gateway
