#include "gateway/relay.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>
#include <memory>
#include <optional>
#include <vector>

#include "gateway/limits.h"

namespace socksgate::gateway {
namespace {

using namespace asio::experimental::awaitable_operators;
using Clock = std::chrono::steady_clock;
constexpr auto kUse = asio::experimental::as_tuple(asio::use_awaitable);
constexpr int kPipeSize = 1 << 20;  // bigger pipes = fewer syscalls per GiB
// Copy pumps (TLS, GSS) move up to 256 KiB per read: a quarter of the syscalls and wakeups
// of 64 KiB reads, ~10-15% less proxy CPU per GiB through TLS and GSS (docs/performance.md).
// A pump holds its buffer only while bytes are in flight, and only the pages a read touched
// are resident, so idle and small sessions do not pay for the size.
constexpr size_t kCopyBufferSize = 256 * 1024;

// Bulk mode of the splice pump. Woken for every segment of a fast stream, a pump costs the
// sender a wakeup call per segment (on a VM, an inter-processor interrupt is an exit) and
// itself a context switch; at ~3 GiB/s on loopback that is a third of the throughput. Once a
// stream has moved kBulkEnter bytes within kBulkWindow, the pump sets SO_RCVLOWAT =
// kBulkLowat on its source: the kernel wakes it when that much has arrived, the peer closed,
// or the receive window is nearly shut (so a sender can never wait on us). Each such sleep is
// bounded by kBulkMaxWait; when it runs out, what did arrive moves on at once and the pump
// leaves bulk mode (low-water mark 1) until the stream is fast again. Interactive sessions
// never enter it; the tail of a bulk transfer waits at most kBulkMaxWait.
constexpr int kBulkLowat = 256 * 1024;
constexpr uint64_t kBulkEnter = 1 << 20;
constexpr auto kBulkWindow = std::chrono::milliseconds(10);
constexpr auto kBulkMaxWait = std::chrono::microseconds(500);

// A pipe pair, recycled per thread. Only empty pipes go back to the pool.
struct Pipe {
  int rd = -1;
  int wr = -1;
  size_t capacity = 65536;
};

class PipePool {
 public:
  ~PipePool() {
    for (auto& p : free_) {
      ::close(p.rd);
      ::close(p.wr);
    }
  }
  bool acquire(Pipe* out) {
    if (!free_.empty()) {
      *out = free_.back();
      free_.pop_back();
      return true;
    }
    int fds[2];
    if (::pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) return false;
    out->rd = fds[0];
    out->wr = fds[1];
    int sz = ::fcntl(fds[1], F_SETPIPE_SZ, kPipeSize);
    out->capacity = sz > 0 ? static_cast<size_t>(sz) : 65536;
    return true;
  }
  void release(Pipe p) {
    if (free_.size() < kMaxFree) {
      free_.push_back(p);
    } else {
      ::close(p.rd);
      ::close(p.wr);
    }
  }

 private:
  static constexpr size_t kMaxFree = 32;
  std::vector<Pipe> free_;
};

PipePool& thread_pipe_pool() {
  thread_local PipePool pool;
  return pool;
}

enum class PumpEnd { kEof, kReadReset, kWriteReset, kError, kAborted, kQuota };

struct RelayState {
  const ByteTap* tap_up = nullptr;
  const ByteTap* tap_down = nullptr;
  FlowLimiter* limit_up = nullptr;
  FlowLimiter* limit_down = nullptr;
  Clock::time_point last_activity = Clock::now();
  uint32_t bulk_entries = 0;
  bool failed = false;
  CloseReason reason = CloseReason::kClientClosed;
};

// Sleeps while a limiter has no tokens. False: cancelled (the relay is ending).
asio::awaitable<bool> sleep_for(std::optional<asio::steady_timer>& timer,
                                FlowLimiter::Clock::duration d) {
  if (!timer) timer.emplace(co_await asio::this_coro::executor);
  timer->expires_after(d);
  auto [ec] = co_await timer->async_wait(kUse);
  co_return !ec;
}

bool is_reset(int err) { return err == ECONNRESET || err == EPIPE || err == ECONNABORTED; }

// Moves bytes from `from` to `to` with splice(2) until EOF or error.
//
// Every step is tried first and waited for only on EAGAIN: the reactor is edge-triggered, so
// waiting for readiness that already happened (bytes that arrived before the pump started)
// would sleep until the next segment. Each splice in is followed by a splice out, so bytes
// move on while more arrive instead of piling up in the pipe. A pipe is held only while it
// has bytes in it.
asio::awaitable<PumpEnd> splice_pump(asio::ip::tcp::socket& from, asio::ip::tcp::socket& to,
                                     uint64_t* counter, const ByteTap* tap, FlowLimiter* limit,
                                     RelayState* st) {
  std::optional<asio::steady_timer> timer;
  bool bulk = false;
  uint64_t window_bytes = 0;  // read since window_start, while not in bulk mode
  Clock::time_point window_start = Clock::now();
  FlowLimiter::Clock::duration wait{};
  const int in_fd = from.native_handle();
  const int out_fd = to.native_handle();
  auto set_lowat = [in_fd](int bytes) {
    return ::setsockopt(in_fd, SOL_SOCKET, SO_RCVLOWAT, &bytes, sizeof bytes) == 0;
  };
  Pipe pipe;
  bool have_pipe = false;
  size_t in_pipe = 0;
  bool eof = false;
  auto give_back = [&] {
    if (!have_pipe) return;
    if (in_pipe == 0) {
      thread_pipe_pool().release(pipe);
    } else {  // stale bytes: not reusable
      ::close(pipe.rd);
      ::close(pipe.wr);
    }
    have_pipe = false;
  };
  for (;;) {
    if (!have_pipe) {
      if (!thread_pipe_pool().acquire(&pipe)) co_return PumpEnd::kError;
      have_pipe = true;
    }
    bool in_again = false, out_again = false, throttled = false;
    size_t room = eof ? 0 : pipe.capacity - in_pipe;
    if (limit != nullptr && room > 0) {
      room = limit->acquire(room, &wait);
      if (room == 0 && wait == FlowLimiter::Clock::duration::zero() && in_pipe == 0) {
        give_back();
        co_return PumpEnd::kQuota;
      }
      throttled = room == 0;
    }
    if (room > 0) {
      ssize_t n =
          ::splice(in_fd, nullptr, pipe.wr, nullptr, room, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (limit != nullptr) limit->give_back(n > 0 ? room - static_cast<size_t>(n) : room);
      if (n > 0) {
        in_pipe += static_cast<size_t>(n);
        if (!bulk) window_bytes += static_cast<uint64_t>(n);
      } else if (n == 0) {
        eof = true;
      } else if (errno == EAGAIN) {
        in_again = true;
      } else if (errno != EINTR) {
        PumpEnd end = is_reset(errno) ? PumpEnd::kReadReset : PumpEnd::kError;
        give_back();
        co_return end;
      }
    }
    if (in_pipe > 0) {
      ssize_t m =
          ::splice(pipe.rd, nullptr, out_fd, nullptr, in_pipe, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (m > 0) {
        in_pipe -= static_cast<size_t>(m);
        *counter += static_cast<uint64_t>(m);
        tap->add(static_cast<uint64_t>(m));
        if (limit != nullptr) limit->moved(static_cast<size_t>(m));
        st->last_activity = Clock::now();
      } else if (m < 0 && errno == EAGAIN) {
        out_again = true;
      } else if (!(m < 0 && errno == EINTR)) {
        PumpEnd end = (m < 0 && is_reset(errno)) ? PumpEnd::kWriteReset : PumpEnd::kError;
        give_back();
        co_return end;
      }
    }
    if (eof && in_pipe == 0) {
      give_back();
      co_return PumpEnd::kEof;
    }
    if (throttled && in_pipe == 0) {
      // Out of tokens: hold no pipe while waiting for more.
      give_back();
      if (wait == FlowLimiter::Clock::duration::zero()) co_return PumpEnd::kQuota;
      if (!co_await sleep_for(timer, wait)) co_return PumpEnd::kAborted;
      continue;
    }
    if (in_pipe == 0 && in_again) {
      // Nothing in flight: hold no pipe while idle, sleep until the socket is readable.
      give_back();
      if (!bulk) {
        auto now = Clock::now();
        // Fast: kBulkEnter bytes within kBulkWindow, or at that rate over a longer stretch
        // without a wait.
        std::chrono::duration<double> took = now - window_start;
        std::chrono::duration<double> window = kBulkWindow;
        bool fast =
            window_bytes >= kBulkEnter && static_cast<double>(window_bytes) * window.count() >=
                                              static_cast<double>(kBulkEnter) * took.count();
        if (fast && set_lowat(kBulkLowat)) {
          bulk = true;
          ++st->bulk_entries;
        } else if (now - window_start > kBulkWindow) {
          window_start = now;
          window_bytes = 0;
        }
      }
      if (bulk) {
        if (!timer) timer.emplace(co_await asio::this_coro::executor);
        timer->expires_after(kBulkMaxWait);
        auto r = co_await (from.async_wait(asio::socket_base::wait_read, kUse) ||
                           timer->async_wait(kUse));
        auto [wec] = r.index() == 0 ? std::get<0>(r) : std::get<1>(r);
        if (wec) co_return PumpEnd::kAborted;
        if (r.index() == 1) {  // slowed down: move what is there, back to per-segment wakeups
          set_lowat(1);
          bulk = false;
          window_start = Clock::now();
          window_bytes = 0;
        }
        continue;
      }
      auto [wec] = co_await from.async_wait(asio::socket_base::wait_read, kUse);
      if (wec) co_return PumpEnd::kAborted;
      continue;
    }
    if (out_again && (in_again || eof || throttled || in_pipe >= pipe.capacity)) {
      auto [wec] = co_await to.async_wait(asio::socket_base::wait_write, kUse);
      if (wec) {
        give_back();
        co_return PumpEnd::kAborted;
      }
    }
  }
}

// Copy buffers for channels that transform bytes (TLS, GSS), recycled per thread. A pump holds
// one only while bytes are in flight: an idle TLS session holds no relay buffer at all.
class CopyBufferPool {
 public:
  std::unique_ptr<uint8_t[]> take() {
    if (free_.empty()) return std::unique_ptr<uint8_t[]>(new uint8_t[kCopyBufferSize]);
    auto b = std::move(free_.back());
    free_.pop_back();
    return b;
  }
  void give(std::unique_ptr<uint8_t[]> b) {
    if (b && free_.size() < kMaxFree) free_.push_back(std::move(b));
  }

 private:
  static constexpr size_t kMaxFree = 16;  // at most 4 MiB kept per thread
  std::vector<std::unique_ptr<uint8_t[]>> free_;
};

CopyBufferPool& thread_copy_pool() {
  thread_local CopyBufferPool pool;
  return pool;
}

// Holds a pooled buffer while bytes are in flight; gives it back when idle or done.
class CopyBuffer {
 public:
  ~CopyBuffer() { release(); }
  uint8_t* get() {
    if (!buf_) buf_ = thread_copy_pool().take();
    return buf_.get();
  }
  void release() { thread_copy_pool().give(std::move(buf_)); }

 private:
  std::unique_ptr<uint8_t[]> buf_;
};

// Waits until a read on `s` would not block (data, EOF or an error), holding nothing. Tries
// first: the reactor is edge-triggered, so readiness that already happened is not reported
// again.
asio::awaitable<std::error_code> wait_readable(asio::ip::tcp::socket& s) {
  for (;;) {
    uint8_t probe;
    ssize_t n = ::recv(s.native_handle(), &probe, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
      co_return std::error_code{};
    }
    auto [ec] = co_await s.async_wait(asio::socket_base::wait_read, kUse);
    if (ec) co_return ec;
  }
}

// Moves bytes through a buffer (for channels that transform bytes).
asio::awaitable<PumpEnd> copy_pump_from_channel(crypto::Channel& from, asio::ip::tcp::socket& to,
                                                uint64_t* counter, const ByteTap* tap,
                                                FlowLimiter* limit, RelayState* st) {
  CopyBuffer buf;
  std::optional<asio::steady_timer> timer;
  for (;;) {
    if (!from.has_buffered()) {
      buf.release();
      if (std::error_code wec = co_await wait_readable(from.lowest_layer())) {
        co_return wec == asio::error::operation_aborted ? PumpEnd::kAborted : PumpEnd::kError;
      }
    }
    size_t granted = kCopyBufferSize;
    if (limit != nullptr) {
      FlowLimiter::Clock::duration wait{};
      granted = limit->acquire(kCopyBufferSize, &wait);
      if (granted == 0) {
        buf.release();
        if (wait == FlowLimiter::Clock::duration::zero()) co_return PumpEnd::kQuota;
        if (!co_await sleep_for(timer, wait)) co_return PumpEnd::kAborted;
        continue;
      }
    }
    auto [ec, n] = co_await from.read_some(std::span<uint8_t>(buf.get(), granted));
    if (limit != nullptr) limit->give_back(ec ? granted : granted - n);
    if (ec == asio::error::eof) co_return PumpEnd::kEof;
    if (ec == asio::error::operation_aborted) co_return PumpEnd::kAborted;
    if (ec) co_return ec == asio::error::connection_reset ? PumpEnd::kReadReset : PumpEnd::kError;
    auto [wec, wn] = co_await asio::async_write(to, asio::buffer(buf.get(), n), kUse);
    *counter += wn;
    tap->add(wn);
    if (limit != nullptr) limit->moved(wn);
    st->last_activity = Clock::now();
    if (wec) {
      if (wec == asio::error::operation_aborted) co_return PumpEnd::kAborted;
      co_return (wec == asio::error::connection_reset || wec == asio::error::broken_pipe)
          ? PumpEnd::kWriteReset
          : PumpEnd::kError;
    }
  }
}

asio::awaitable<PumpEnd> copy_pump_to_channel(asio::ip::tcp::socket& from, crypto::Channel& to,
                                              uint64_t* counter, const ByteTap* tap,
                                              FlowLimiter* limit, RelayState* st) {
  CopyBuffer buf;
  std::optional<asio::steady_timer> timer;
  std::error_code nb;
  from.non_blocking(true, nb);  // read_some below must say would_block, never wait
  for (;;) {
    size_t granted = kCopyBufferSize;
    if (limit != nullptr) {
      FlowLimiter::Clock::duration wait{};
      granted = limit->acquire(kCopyBufferSize, &wait);
      if (granted == 0) {
        buf.release();
        if (wait == FlowLimiter::Clock::duration::zero()) co_return PumpEnd::kQuota;
        if (!co_await sleep_for(timer, wait)) co_return PumpEnd::kAborted;
        continue;
      }
    }
    std::error_code rec;
    size_t n = from.read_some(asio::buffer(buf.get(), granted), rec);
    if (limit != nullptr) limit->give_back(rec ? granted : granted - n);
    if (rec == asio::error::would_block || rec == asio::error::try_again) {
      buf.release();
      if (std::error_code wec = co_await wait_readable(from)) {
        co_return wec == asio::error::operation_aborted ? PumpEnd::kAborted : PumpEnd::kError;
      }
      continue;
    }
    if (rec == asio::error::eof) co_return PumpEnd::kEof;
    if (rec == asio::error::interrupted) continue;
    if (rec) co_return rec == asio::error::connection_reset ? PumpEnd::kReadReset : PumpEnd::kError;
    std::error_code wec = co_await to.write_all(std::span<const uint8_t>(buf.get(), n));
    if (wec) {
      if (wec == asio::error::operation_aborted) co_return PumpEnd::kAborted;
      co_return PumpEnd::kWriteReset;
    }
    *counter += n;
    tap->add(n);
    if (limit != nullptr) limit->moved(n);
    st->last_activity = Clock::now();
  }
}

void shutdown_send(asio::ip::tcp::socket& s) {
  std::error_code ec;
  s.shutdown(asio::ip::tcp::socket::shutdown_send, ec);
}

void reset_socket(asio::ip::tcp::socket& s) {
  std::error_code ec;
  s.set_option(asio::socket_base::linger(true, 0), ec);
  s.close(ec);
}

// Passes a pump's ending on. EOF becomes a FIN on the receiving side only (half-close). A
// reset or error ends the whole session: both sockets are reset, so whichever peer is still
// there sees the RST the other side sent (or our failure). The first ending decides the reason.
void pass_on(PumpEnd end, bool from_client, crypto::Channel& client,
             asio::ip::tcp::socket& upstream, RelayState* st) {
  CloseReason reason;
  switch (end) {
    case PumpEnd::kEof:
      if (from_client) {
        shutdown_send(upstream);
      } else {
        client.shutdown_send();
      }
      return;
    case PumpEnd::kAborted:
      return;
    case PumpEnd::kReadReset:  // the side we read from reset
      reason = from_client ? CloseReason::kClientReset : CloseReason::kUpstreamReset;
      break;
    case PumpEnd::kWriteReset:  // the side we wrote to reset
      reason = from_client ? CloseReason::kUpstreamReset : CloseReason::kClientReset;
      break;
    case PumpEnd::kQuota:
      reason = CloseReason::kLimitQuota;
      break;
    case PumpEnd::kError:
    default:
      reason = CloseReason::kRelayError;
      break;
  }
  if (!st->failed) st->reason = reason;
  st->failed = true;
  client.reset();
  reset_socket(upstream);
}

asio::awaitable<void> upstream_direction(crypto::Channel& client, asio::ip::tcp::socket& upstream,
                                         bool splice, uint64_t* counter, RelayState* st) {
  PumpEnd end = splice ? co_await splice_pump(*client.plain_socket(), upstream, counter, st->tap_up,
                                              st->limit_up, st)
                       : co_await copy_pump_from_channel(client, upstream, counter, st->tap_up,
                                                         st->limit_up, st);
  pass_on(end, /*from_client=*/true, client, upstream, st);
}

asio::awaitable<void> downstream_direction(crypto::Channel& client, asio::ip::tcp::socket& upstream,
                                           bool splice, uint64_t* counter, RelayState* st) {
  PumpEnd end = splice ? co_await splice_pump(upstream, *client.plain_socket(), counter,
                                              st->tap_down, st->limit_down, st)
                       : co_await copy_pump_to_channel(upstream, client, counter, st->tap_down,
                                                       st->limit_down, st);
  pass_on(end, /*from_client=*/false, client, upstream, st);
}

asio::awaitable<void> idle_watchdog(std::chrono::seconds idle, RelayState* st) {
  asio::steady_timer timer(co_await asio::this_coro::executor);
  for (;;) {
    auto deadline = st->last_activity + idle;
    if (deadline <= Clock::now()) {
      st->reason = CloseReason::kIdleTimeout;
      co_return;
    }
    timer.expires_at(deadline);
    auto [ec] = co_await timer.async_wait(kUse);
    if (ec) co_return;  // cancelled: the relay ended first
  }
}

}  // namespace

asio::awaitable<RelayResult> run_relay(crypto::Channel& client, asio::ip::tcp::socket& upstream,
                                       RelayOptions opts) {
  RelayResult result;
  RelayState st;
  st.tap_up = &opts.tap_up;
  st.tap_down = &opts.tap_down;
  st.limit_up = opts.limit_up;
  st.limit_down = opts.limit_down;
  // Bytes the client sent ahead of our reply go first, exactly once.
  if (auto pending = client.pending(); !pending.empty()) {
    auto [ec, n] =
        co_await asio::async_write(upstream, asio::buffer(pending.data(), pending.size()), kUse);
    result.bytes_up += n;
    opts.tap_up.add(n);
    if (opts.limit_up != nullptr) opts.limit_up->moved(n);
    client.drop_pending();
    if (ec) {
      result.reason = CloseReason::kUpstreamReset;
      co_return result;
    }
  }
  bool splice = opts.allow_splice && client.plain_socket() != nullptr;
  if (splice) {
    std::error_code ec;
    client.plain_socket()->native_non_blocking(true, ec);
    upstream.native_non_blocking(true, ec);
    if (ec) splice = false;
  }
  co_await ((upstream_direction(client, upstream, splice, &result.bytes_up, &st) &&
             downstream_direction(client, upstream, splice, &result.bytes_down, &st)) ||
            idle_watchdog(opts.idle_timeout, &st));
  if (st.reason == CloseReason::kIdleTimeout) {
    client.close();
    std::error_code ec;
    upstream.close(ec);
  }
  result.reason = st.reason;
  result.bulk_entries = st.bulk_entries;
  co_return result;
}

}  // namespace socksgate::gateway
