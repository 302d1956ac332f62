#include "crypto/blocking_pool.h"

#include <gtest/gtest.h>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <atomic>
#include <chrono>
#include <thread>

namespace socksgate::crypto {
namespace {

TEST(BlockingPool, ResultComesBackOnTheCallersThread) {
  asio::io_context io;
  BlockingPool pool(2, 16);
  std::thread::id io_thread, job_thread, resumed_thread;
  int value = 0;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        io_thread = std::this_thread::get_id();
        std::error_code ec;
        auto job = [&] {
          job_thread = std::this_thread::get_id();
          return 42;
        };
        auto r = co_await pool.run(job, &ec);
        resumed_thread = std::this_thread::get_id();
        EXPECT_FALSE(ec);
        value = r.value_or(0);
      },
      asio::detached);
  io.run();
  EXPECT_EQ(value, 42);
  EXPECT_NE(job_thread, io_thread);
  EXPECT_EQ(resumed_thread, io_thread);
}

TEST(BlockingPool, FullPoolSaysBusyInsteadOfQueueing) {
  asio::io_context io;
  BlockingPool pool(1, 2);
  std::atomic<bool> release{false};
  int busy = 0, done = 0;
  for (int i = 0; i < 5; ++i) {
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
          std::error_code ec;
          auto job = [&] {
            while (!release.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
            return 1;
          };
          auto r = co_await pool.run(job, &ec);
          if (ec == PoolErrc::kBusy) {
            ++busy;
            if (busy == 3) release = true;
          } else if (r) {
            ++done;
          }
        },
        asio::detached);
  }
  io.run();
  EXPECT_EQ(busy, 3);
  EXPECT_EQ(done, 2);
  EXPECT_EQ(pool.in_flight(), 0u);
}

}  // namespace
}  // namespace socksgate::crypto
