#include "gateway/socks5.h"

#include <cstring>

#include "crypto/parse.h"

namespace socksgate::gateway::socks5 {
namespace {

using crypto::ParseErrc;

class Category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "socks5"; }
  std::string message(int ev) const override {
    switch (static_cast<Errc>(ev)) {
      case Errc::kBadVersion:
        return "not a SOCKS5 message";
      case Errc::kNoMethods:
        return "greeting offers no methods";
      case Errc::kUnknownCommand:
        return "unknown SOCKS5 command";
      case Errc::kUnknownAddressType:
        return "unknown SOCKS5 address type";
      case Errc::kEmptyDomain:
        return "empty domain name";
      case Errc::kBadDomain:
        return "domain name contains a NUL byte";
    }
    return "unknown SOCKS5 error";
  }
};

}  // namespace

const std::error_category& category() {
  static const Category c;
  return c;
}

std::string Address::to_string() const {
  switch (type) {
    case AddressType::kIpv4:
      return ip.to_string();
    case AddressType::kIpv6: {
      // Built with append: GCC 12 at -O3 reports a false -Wrestrict on "[" + s + "]".
      std::string s = "[";
      s.append(ip.to_string()).push_back(']');
      return s;
    }
    case AddressType::kDomain:
      return domain;
  }
  return {};
}

std::error_code parse_greeting(std::span<const uint8_t> in, Greeting* out, size_t* consumed) {
  if (in.empty()) return ParseErrc::kNeedMore;
  if (in[0] != kVersion) return Errc::kBadVersion;
  if (in.size() < 2) return ParseErrc::kNeedMore;
  size_t n = in[1];
  if (n == 0) return Errc::kNoMethods;
  if (in.size() < 2 + n) return ParseErrc::kNeedMore;
  out->methods.assign(in.begin() + 2, in.begin() + 2 + static_cast<ptrdiff_t>(n));
  *consumed = 2 + n;
  return {};
}

std::error_code parse_address_port(std::span<const uint8_t> in, size_t at, Address* addr,
                                   uint16_t* port, size_t* end) {
  if (in.size() < at + 1) return ParseErrc::kNeedMore;
  size_t pos = at + 1;
  Address a;
  switch (in[at]) {
    case static_cast<uint8_t>(AddressType::kIpv4): {
      if (in.size() < pos + 4 + 2) return ParseErrc::kNeedMore;
      asio::ip::address_v4::bytes_type b;
      std::memcpy(b.data(), in.data() + pos, 4);
      a.type = AddressType::kIpv4;
      a.ip = asio::ip::address_v4(b);
      pos += 4;
      break;
    }
    case static_cast<uint8_t>(AddressType::kIpv6): {
      if (in.size() < pos + 16 + 2) return ParseErrc::kNeedMore;
      asio::ip::address_v6::bytes_type b;
      std::memcpy(b.data(), in.data() + pos, 16);
      a.type = AddressType::kIpv6;
      a.ip = asio::ip::address_v6(b);
      pos += 16;
      break;
    }
    case static_cast<uint8_t>(AddressType::kDomain): {
      if (in.size() < pos + 1) return ParseErrc::kNeedMore;
      size_t len = in[pos];
      if (len == 0) return Errc::kEmptyDomain;
      if (in.size() < pos + 1 + len + 2) return ParseErrc::kNeedMore;
      const char* p = reinterpret_cast<const char*>(in.data() + pos + 1);
      if (std::memchr(p, 0, len) != nullptr) return Errc::kBadDomain;
      a.type = AddressType::kDomain;
      a.domain.assign(p, len);
      pos += 1 + len;
      break;
    }
    default:
      return Errc::kUnknownAddressType;
  }
  *port = static_cast<uint16_t>((in[pos] << 8) | in[pos + 1]);
  *addr = std::move(a);
  *end = pos + 2;
  return {};
}

std::error_code parse_request(std::span<const uint8_t> in, Request* out, size_t* consumed) {
  if (in.empty()) return ParseErrc::kNeedMore;
  if (in[0] != kVersion) return Errc::kBadVersion;
  if (in.size() < 2) return ParseErrc::kNeedMore;
  uint8_t cmd = in[1];
  if ((cmd < 0x01 || cmd > 0x03) && cmd != static_cast<uint8_t>(Command::kUdpInStream)) {
    return Errc::kUnknownCommand;
  }
  if (in.size() < 4) return ParseErrc::kNeedMore;
  // in[2] is RSV. RFC 1928 says 00; we accept anything there, as every deployed server does.
  Address addr;
  uint16_t port = 0;
  size_t pos = 0;
  if (std::error_code ec = parse_address_port(in, 3, &addr, &port, &pos)) return ec;
  out->command = cmd;
  out->dst = std::move(addr);
  out->port = port;
  *consumed = pos;
  return {};
}

std::error_code parse_reply(std::span<const uint8_t> in, ReplyMessage* out, size_t* consumed) {
  if (in.empty()) return ParseErrc::kNeedMore;
  if (in[0] != kVersion) return Errc::kBadVersion;
  if (in.size() < 3) return ParseErrc::kNeedMore;
  Address addr;
  uint16_t port = 0;
  size_t pos = 0;
  if (std::error_code ec = parse_address_port(in, 3, &addr, &port, &pos)) return ec;
  out->rep = in[1];
  out->bound = std::move(addr);
  out->port = port;
  *consumed = pos;
  return {};
}

std::error_code parse_method_selection(std::span<const uint8_t> in, uint8_t* method,
                                       size_t* consumed) {
  if (in.empty()) return ParseErrc::kNeedMore;
  if (in[0] != kVersion) return Errc::kBadVersion;
  if (in.size() < 2) return ParseErrc::kNeedMore;
  *method = in[1];
  *consumed = 2;
  return {};
}

std::vector<uint8_t> encode_greeting(std::span<const uint8_t> methods) {
  // Built by push_back: GCC 12 reports a false -Warray-bounds on insert after an init-list.
  std::vector<uint8_t> out;
  out.reserve(2 + methods.size());
  out.push_back(kVersion);
  out.push_back(static_cast<uint8_t>(methods.size()));
  for (uint8_t m : methods) out.push_back(m);
  return out;
}

std::vector<uint8_t> encode_request(uint8_t command, const Address& dst, uint16_t port) {
  std::vector<uint8_t> out;
  out.reserve(4 + 1 + dst.domain.size() + 18);
  out.push_back(kVersion);
  out.push_back(command);
  out.push_back(0x00);
  append_address(&out, dst, port);
  return out;
}

std::array<uint8_t, 2> encode_method_selection(uint8_t method) { return {kVersion, method}; }

void append_address(std::vector<uint8_t>* out, const asio::ip::address& addr, uint16_t port) {
  asio::ip::address a = addr;
  if (a.is_v6() && a.to_v6().is_v4_mapped()) {
    a = asio::ip::make_address_v4(asio::ip::v4_mapped, a.to_v6());
  }
  if (a.is_v4()) {
    out->push_back(static_cast<uint8_t>(AddressType::kIpv4));
    auto b = a.to_v4().to_bytes();
    out->insert(out->end(), b.begin(), b.end());
  } else {
    out->push_back(static_cast<uint8_t>(AddressType::kIpv6));
    auto b = a.to_v6().to_bytes();
    out->insert(out->end(), b.begin(), b.end());
  }
  out->push_back(static_cast<uint8_t>(port >> 8));
  out->push_back(static_cast<uint8_t>(port & 0xff));
}

void append_address(std::vector<uint8_t>* out, const Address& dst, uint16_t port) {
  if (dst.type != AddressType::kDomain) {
    append_address(out, dst.ip, port);
    return;
  }
  out->push_back(static_cast<uint8_t>(AddressType::kDomain));
  out->push_back(static_cast<uint8_t>(dst.domain.size()));
  for (char ch : dst.domain) out->push_back(static_cast<uint8_t>(ch));
  out->push_back(static_cast<uint8_t>(port >> 8));
  out->push_back(static_cast<uint8_t>(port & 0xff));
}

std::vector<uint8_t> encode_reply(Reply rep, const asio::ip::tcp::endpoint& bound) {
  std::vector<uint8_t> out{kVersion, static_cast<uint8_t>(rep), 0x00};
  out.reserve(22);
  append_address(&out, bound.address(), bound.port());
  return out;
}

}  // namespace socksgate::gateway::socks5
