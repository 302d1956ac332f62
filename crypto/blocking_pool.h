#pragma once
// BlockingPool runs calls that block (password hashing, getaddrinfo, later PAM and some GSS
// calls) off the I/O threads, so one slow call never stalls other sessions.
//
// Bounded: at most `max_queued` calls wait or run at once; run() on a full pool completes
// immediately with PoolErrc::kBusy instead of queueing without limit (a login storm must not
// grow memory without bound). The result is delivered on the awaiting coroutine's executor,
// so a session stays on its own thread. Thread-safe.

#include <asio/any_io_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/awaitable.hpp>
#include <asio/dispatch.hpp>
#include <asio/post.hpp>
#include <asio/thread_pool.hpp>
#include <asio/use_awaitable.hpp>
#include <atomic>
#include <cstddef>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <system_error>
#include <type_traits>
#include <utility>

namespace socksgate::crypto {

enum class PoolErrc { kBusy = 1 };
const std::error_category& pool_category();
inline std::error_code make_error_code(PoolErrc e) {
  return {static_cast<int>(e), pool_category()};
}

}  // namespace socksgate::crypto

template <>
struct std::is_error_code_enum<socksgate::crypto::PoolErrc> : std::true_type {};

namespace socksgate::crypto {

class BlockingPool {
 public:
  // The threads start with the first call to run(), on the caller's credentials: a gateway
  // that drops privileges after constructing its pools (gateway/privsep.h) never has a pool
  // thread that ran with the privileges it started with.
  BlockingPool(size_t threads, size_t max_queued) : threads_(threads), max_queued_(max_queued) {}
  ~BlockingPool() {
    if (auto* p = pool_.load()) p->join();
  }
  BlockingPool(const BlockingPool&) = delete;
  BlockingPool& operator=(const BlockingPool&) = delete;

  // Runs fn() on the pool (fn is moved from). Returns nullopt with *ec = kBusy when the pool
  // is full. fn must not throw (exceptions terminate: a blocking call is a C library call).
  //
  // fn is taken by lvalue reference and the initiation is a named object on purpose: GCC 12
  // destroys non-trivial temporaries of a co_await expression twice (a by-value lambda
  // argument written inside `co_await pool.run(...)` is such a temporary).
  template <typename Fn>
  asio::awaitable<std::optional<std::invoke_result_t<Fn&>>> run(Fn& fn, std::error_code* ec) {
    using R = std::invoke_result_t<Fn&>;
    if (in_flight_.fetch_add(1, std::memory_order_relaxed) >= max_queued_) {
      in_flight_.fetch_sub(1, std::memory_order_relaxed);
      *ec = PoolErrc::kBusy;
      co_return std::nullopt;
    }
    *ec = {};
    auto initiation = [this, job = std::move(fn)](auto handler) mutable {
      auto ex = asio::get_associated_executor(handler);
      asio::post(pool(), [this, job = std::move(job), handler = std::move(handler), ex]() mutable {
        R r = job();
        in_flight_.fetch_sub(1, std::memory_order_relaxed);
        asio::dispatch(ex, [handler = std::move(handler), r = std::move(r)]() mutable {
          std::move(handler)(std::move(r));
        });
      });
    };
    R result = co_await asio::async_initiate<decltype(asio::use_awaitable), void(R)>(
        std::move(initiation), asio::use_awaitable);
    co_return std::optional<R>(std::move(result));
  }

  size_t in_flight() const { return in_flight_.load(std::memory_order_relaxed); }

  void stop() {
    if (auto* p = pool_.load()) p->stop();
  }

 private:
  asio::thread_pool& pool() {
    std::call_once(started_, [this] {
      owned_ = std::make_unique<asio::thread_pool>(threads_);
      pool_.store(owned_.get());
    });
    return *owned_;
  }

  const size_t threads_;
  std::once_flag started_;
  std::unique_ptr<asio::thread_pool> owned_;  // set once, under started_
  std::atomic<asio::thread_pool*> pool_{nullptr};
  const size_t max_queued_;
  std::atomic<size_t> in_flight_{0};
};

}  // namespace socksgate::crypto
