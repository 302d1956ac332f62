#pragma once
// with_timeout: runs an awaitable against a deadline (Asio 1.22 has no cancel_after). When the
// timer wins, the operation is cancelled through its cancellation slot and nullopt comes back.

#include <asio/awaitable.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>
#include <chrono>
#include <optional>
#include <type_traits>
#include <variant>

namespace socksgate::gateway {

template <typename T>
asio::awaitable<std::optional<T>> with_timeout(asio::awaitable<T> op,
                                               std::chrono::steady_clock::duration d) {
  using namespace asio::experimental::awaitable_operators;
  asio::steady_timer timer(co_await asio::this_coro::executor, d);
  auto r = co_await (std::move(op) ||
                     timer.async_wait(asio::experimental::as_tuple(asio::use_awaitable)));
  if (r.index() == 0) co_return std::optional<T>(std::move(std::get<0>(r)));
  co_return std::nullopt;
}

// The void flavour: true if the operation finished in time.
inline asio::awaitable<bool> with_timeout(asio::awaitable<void> op,
                                          std::chrono::steady_clock::duration d) {
  using namespace asio::experimental::awaitable_operators;
  asio::steady_timer timer(co_await asio::this_coro::executor, d);
  auto r = co_await (std::move(op) ||
                     timer.async_wait(asio::experimental::as_tuple(asio::use_awaitable)));
  co_return r.index() == 0;
}

}  // namespace socksgate::gateway
