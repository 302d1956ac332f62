#pragma once
// Channel: the byte stream a SOCKS session talks over, whatever wraps it (plain TCP, TLS, and
// GSS-API encapsulation). crypto/ owns it because the wrapping layers are crypto.
//
// One Channel per session; every call runs on the session's executor (no locks). Read errors
// are values (std::error_code), never exceptions: EOF and resets are normal endings.
//
// The channel keeps an input buffer so that bytes a client sends ahead (a greeting and its
// RFC 1929 request in one segment) are never lost between parsers: read_message() hands each
// parser exactly the bytes it has not yet consumed.

#include <asio/awaitable.hpp>
#include <asio/ip/tcp.hpp>
#include <cstddef>
#include <cstdint>
#include <span>
#include <system_error>
#include <utility>
#include <vector>

#include "crypto/parse.h"

namespace socksgate::crypto {

// Errors of the channel itself (not of the peer's protocol).
enum class ChannelErrc {
  kMessageTooLarge = 1,  // a message did not complete within its size bound
};
const std::error_category& channel_category();
inline std::error_code make_error_code(ChannelErrc e) {
  return {static_cast<int>(e), channel_category()};
}

}  // namespace socksgate::crypto

template <>
struct std::is_error_code_enum<socksgate::crypto::ChannelErrc> : std::true_type {};

namespace socksgate::crypto {

class Channel {
 public:
  virtual ~Channel() = default;

  // Reads into `buf`; returns {error, bytes}. Bytes already buffered are returned first.
  asio::awaitable<std::pair<std::error_code, size_t>> read_some(std::span<uint8_t> buf);
  virtual asio::awaitable<std::error_code> write_all(std::span<const uint8_t> data) = 0;
  // Half-close: no more bytes from us (TCP FIN / TLS close_notify).
  virtual std::error_code shutdown_send() = 0;
  // Closes the channel now; pending operations complete with operation_aborted.
  virtual void close() = 0;
  // Closes with a TCP RST, to pass an upstream reset on.
  virtual void reset() = 0;
  // The raw TCP socket when bytes go on the wire unchanged (eligible for splice), else null.
  virtual asio::ip::tcp::socket* plain_socket() = 0;
  // The TCP socket underneath whatever wraps it (readiness, socket options, addresses).
  virtual asio::ip::tcp::socket& lowest_layer() = 0;

  // Reads until `parse(span<const uint8_t> in, size_t* consumed)` returns anything but
  // ParseErrc::kNeedMore, then drops the consumed bytes and returns the parser's result.
  // A message that is not complete within `max_bytes` yields kMessageTooLarge; EOF before a
  // whole message yields asio::error::eof.
  template <typename Parse>
  asio::awaitable<std::error_code> read_message(Parse&& parse, size_t max_bytes);

  // Bytes received but not yet consumed by a parser (relays forward them first).
  std::span<const uint8_t> pending() const { return {inbuf_.data(), inbuf_.size()}; }
  // True when read_some can return without the socket becoming readable again: bytes in our
  // input buffer, or (wrapping layers) bytes already read from the socket and kept inside the
  // layer. A relay uses it to wait for data without holding a buffer.
  virtual bool has_buffered() const { return !inbuf_.empty(); }
  void drop_pending() { inbuf_.clear(); }
  // RFC 5056 channel-binding data of the secure channel this one is (or runs on), for GSS-API
  // contexts established over it: "tls-exporter:" + 32 exported bytes under TLS 1.3 (RFC 9266),
  // "tls-server-end-point:" + the server certificate's hash under TLS 1.2 (RFC 5929). Empty when
  // there is no secure channel underneath (plain TCP).
  virtual std::vector<uint8_t> channel_binding() const { return {}; }

 protected:
  virtual asio::awaitable<std::pair<std::error_code, size_t>> read_some_raw(
      std::span<uint8_t> buf) = 0;

 private:
  asio::awaitable<std::error_code> fill(size_t max_bytes);
  std::vector<uint8_t> inbuf_;
};

template <typename Parse>
asio::awaitable<std::error_code> Channel::read_message(Parse&& parse, size_t max_bytes) {
  for (;;) {
    size_t consumed = 0;
    std::error_code ec = parse(std::span<const uint8_t>(inbuf_.data(), inbuf_.size()), &consumed);
    if (ec != ParseErrc::kNeedMore) {
      if (!ec) inbuf_.erase(inbuf_.begin(), inbuf_.begin() + static_cast<ptrdiff_t>(consumed));
      co_return ec;
    }
    if (inbuf_.size() >= max_bytes) co_return ChannelErrc::kMessageTooLarge;
    if (std::error_code rec = co_await fill(max_bytes)) co_return rec;
  }
}

// A plain TCP channel.
class TcpChannel final : public Channel {
 public:
  explicit TcpChannel(asio::ip::tcp::socket socket) : socket_(std::move(socket)) {}
  asio::awaitable<std::error_code> write_all(std::span<const uint8_t> data) override;
  std::error_code shutdown_send() override;
  void close() override;
  void reset() override;
  asio::ip::tcp::socket* plain_socket() override { return &socket_; }
  asio::ip::tcp::socket& lowest_layer() override { return socket_; }
  asio::ip::tcp::socket& socket() { return socket_; }

 protected:
  asio::awaitable<std::pair<std::error_code, size_t>> read_some_raw(
      std::span<uint8_t> buf) override;

 private:
  asio::ip::tcp::socket socket_;
};

}  // namespace socksgate::crypto
