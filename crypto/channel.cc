#include "crypto/channel.h"

#include <algorithm>
#include <asio/experimental/as_tuple.hpp>
#include <asio/read.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>
#include <cstring>
#include <string>

namespace socksgate::crypto {
namespace {

constexpr auto kUse = asio::experimental::as_tuple(asio::use_awaitable);

class ChannelCategory final : public std::error_category {
 public:
  const char* name() const noexcept override { return "channel"; }
  std::string message(int ev) const override {
    switch (static_cast<ChannelErrc>(ev)) {
      case ChannelErrc::kMessageTooLarge:
        return "message exceeds its size limit";
    }
    return "unknown channel error";
  }
};

}  // namespace

const std::error_category& channel_category() {
  static const ChannelCategory c;
  return c;
}

asio::awaitable<std::pair<std::error_code, size_t>> Channel::read_some(std::span<uint8_t> buf) {
  if (!inbuf_.empty()) {
    size_t n = std::min(buf.size(), inbuf_.size());
    std::memcpy(buf.data(), inbuf_.data(), n);
    inbuf_.erase(inbuf_.begin(), inbuf_.begin() + static_cast<ptrdiff_t>(n));
    co_return std::pair{std::error_code{}, n};
  }
  co_return co_await read_some_raw(buf);
}

asio::awaitable<std::error_code> Channel::fill(size_t max_bytes) {
  // Never read past max_bytes: a peer cannot make us buffer more than the message bound.
  size_t old = inbuf_.size();
  size_t room = std::min<size_t>(max_bytes - old, 4096);
  inbuf_.resize(old + room);
  auto [ec, n] = co_await read_some_raw(std::span<uint8_t>(inbuf_.data() + old, room));
  inbuf_.resize(old + n);
  if (!ec && n == 0) ec = asio::error::eof;
  co_return ec;
}

asio::awaitable<std::pair<std::error_code, size_t>> TcpChannel::read_some_raw(
    std::span<uint8_t> buf) {
  auto [ec, n] = co_await socket_.async_read_some(asio::buffer(buf.data(), buf.size()), kUse);
  co_return std::pair{ec, n};
}

asio::awaitable<std::error_code> TcpChannel::write_all(std::span<const uint8_t> data) {
  auto [ec, n] = co_await asio::async_write(socket_, asio::buffer(data.data(), data.size()), kUse);
  (void)n;
  co_return ec;
}

std::error_code TcpChannel::shutdown_send() {
  std::error_code ec;
  socket_.shutdown(asio::ip::tcp::socket::shutdown_send, ec);
  return ec;
}

void TcpChannel::close() {
  std::error_code ec;
  socket_.close(ec);
}

void TcpChannel::reset() {
  std::error_code ec;
  socket_.set_option(asio::socket_base::linger(true, 0), ec);
  socket_.close(ec);
}

}  // namespace socksgate::crypto
