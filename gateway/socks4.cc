#include "gateway/socks4.h"

#include <algorithm>
#include <cstring>

#include "crypto/parse.h"

namespace socksgate::gateway::socks4 {
namespace {

using crypto::ParseErrc;

class Category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "socks4"; }
  std::string message(int ev) const override {
    switch (static_cast<Errc>(ev)) {
      case Errc::kBadVersion:
        return "not a SOCKS4 message";
      case Errc::kUnknownCommand:
        return "unknown SOCKS4 command";
      case Errc::kUserIdTooLong:
        return "SOCKS4 user id longer than 255 bytes";
      case Errc::kHostTooLong:
        return "SOCKS4a host name longer than 255 bytes";
      case Errc::kEmptyHost:
        return "empty SOCKS4a host name";
    }
    return "unknown SOCKS4 error";
  }
};

// Looks for the NUL ending a field of at most `max_len` bytes that starts at `pos`. Returns the
// field length, or kNeedMore while fewer than max_len + 1 bytes are there, or `too_long`.
std::error_code find_field(std::span<const uint8_t> in, size_t pos, size_t max_len, Errc too_long,
                           size_t* len) {
  size_t avail = std::min(in.size() - pos, max_len + 1);
  const void* nul = std::memchr(in.data() + pos, 0, avail);
  if (nul == nullptr) {
    if (avail == max_len + 1) return too_long;
    return ParseErrc::kNeedMore;
  }
  *len = static_cast<size_t>(static_cast<const uint8_t*>(nul) - (in.data() + pos));
  return {};
}

}  // namespace

const std::error_category& category() {
  static const Category c;
  return c;
}

std::error_code parse_request(std::span<const uint8_t> in, Request* out, size_t* consumed) {
  if (in.empty()) return ParseErrc::kNeedMore;
  if (in[0] != kVersion) return Errc::kBadVersion;
  if (in.size() < 2) return ParseErrc::kNeedMore;
  uint8_t cmd = in[1];
  if (cmd != static_cast<uint8_t>(Command::kConnect) &&
      cmd != static_cast<uint8_t>(Command::kBind)) {
    return Errc::kUnknownCommand;
  }
  if (in.size() < 8) return ParseErrc::kNeedMore;
  uint16_t port = static_cast<uint16_t>((in[2] << 8) | in[3]);
  asio::ip::address_v4::bytes_type b;
  std::memcpy(b.data(), in.data() + 4, 4);
  size_t pos = 8;
  size_t user_len = 0;
  if (auto ec = find_field(in, pos, kMaxUserIdSize, Errc::kUserIdTooLong, &user_len)) return ec;
  const char* user = reinterpret_cast<const char*>(in.data() + pos);
  pos += user_len + 1;
  // SOCKS4a: DSTIP 0.0.0.x with x != 0 announces a HOSTNAME after the USERID.
  bool is_4a = b[0] == 0 && b[1] == 0 && b[2] == 0 && b[3] != 0;
  const char* host = nullptr;
  size_t host_len = 0;
  if (is_4a) {
    if (auto ec = find_field(in, pos, kMaxHostSize, Errc::kHostTooLong, &host_len)) return ec;
    if (host_len == 0) return Errc::kEmptyHost;
    host = reinterpret_cast<const char*>(in.data() + pos);
    pos += host_len + 1;
  }
  out->command = cmd;
  out->port = port;
  out->ip = asio::ip::address_v4(b);
  out->user_id.assign(user, user_len);
  if (host != nullptr) {
    out->host.assign(host, host_len);
  } else {
    out->host.clear();
  }
  *consumed = pos;
  return {};
}

std::array<uint8_t, 8> encode_reply(bool granted, const asio::ip::tcp::endpoint& bound) {
  std::array<uint8_t, 8> out{};
  out[0] = kReplyVersion;
  out[1] = static_cast<uint8_t>(granted ? Reply::kGranted : Reply::kRejected);
  asio::ip::address a = bound.address();
  if (a.is_v6() && a.to_v6().is_v4_mapped()) {
    a = asio::ip::make_address_v4(asio::ip::v4_mapped, a.to_v6());
  }
  if (a.is_v4()) {  // otherwise 0.0.0.0 port 0: SOCKS4 cannot express an IPv6 address
    out[2] = static_cast<uint8_t>(bound.port() >> 8);
    out[3] = static_cast<uint8_t>(bound.port() & 0xff);
    auto ip = a.to_v4().to_bytes();
    std::copy(ip.begin(), ip.end(), out.begin() + 4);
  }
  return out;
}

}  // namespace socksgate::gateway::socks4
