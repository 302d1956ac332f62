#include "gateway/http_connect.h"

#include <charconv>
#include <cstring>

#include "crypto/parse.h"

namespace socksgate::gateway::http_connect {
namespace {

class Category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "http"; }
  std::string message(int ev) const override {
    switch (static_cast<Errc>(ev)) {
      case Errc::kBadRequest:
        return "not an HTTP/1.x request";
      case Errc::kNotConnect:
        return "only the CONNECT method is supported";
      case Errc::kBadTarget:
        return "CONNECT target must be host:port";
    }
    return "HTTP error";
  }
};

// A host name as it may appear in an authority: printable, no spaces, no '@' or '/'.
bool valid_host_char(char c) {
  return c > 0x20 && c < 0x7f && c != '@' && c != '/' && c != '[' && c != ']';
}

std::error_code parse_target(std::string_view t, ConnectRequest* out) {
  std::string_view host, port;
  if (!t.empty() && t.front() == '[') {
    size_t close = t.find(']');
    if (close == std::string_view::npos || close + 1 >= t.size() || t[close + 1] != ':')
      return Errc::kBadTarget;
    host = t.substr(1, close - 1);
    port = t.substr(close + 2);
    asio::error_code ec;
    auto v6 = asio::ip::make_address_v6(std::string(host), ec);
    if (ec) return Errc::kBadTarget;
    out->target.type = socks5::AddressType::kIpv6;
    out->target.ip = v6;
  } else {
    size_t colon = t.rfind(':');
    if (colon == std::string_view::npos) return Errc::kBadTarget;
    host = t.substr(0, colon);
    port = t.substr(colon + 1);
    if (host.empty() || host.size() > 255) return Errc::kBadTarget;
    for (char c : host) {
      if (!valid_host_char(c) || c == ':') return Errc::kBadTarget;
    }
    asio::error_code ec;
    auto v4 = asio::ip::make_address_v4(std::string(host), ec);
    if (!ec) {
      out->target.type = socks5::AddressType::kIpv4;
      out->target.ip = v4;
    } else {
      out->target.type = socks5::AddressType::kDomain;
      out->target.domain = std::string(host);
    }
  }
  unsigned p = 0;
  if (port.empty() || port.size() > 5) return Errc::kBadTarget;
  auto [end, err] = std::from_chars(port.data(), port.data() + port.size(), p);
  if (err != std::errc() || end != port.data() + port.size() || p < 1 || p > 65535)
    return Errc::kBadTarget;
  out->port = static_cast<uint16_t>(p);
  return {};
}

}  // namespace

const std::error_category& category() {
  static const Category c;
  return c;
}

std::error_code parse_connect(std::span<const uint8_t> in, ConnectRequest* out, size_t* consumed) {
  std::string_view text(reinterpret_cast<const char*>(in.data()), in.size());
  // The head ends at the first empty line.
  size_t pos = 0;
  size_t line_no = 0;
  std::string_view request_line;
  for (;;) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string_view::npos) return crypto::ParseErrc::kNeedMore;
    std::string_view line = text.substr(pos, nl - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    pos = nl + 1;
    if (line_no++ == 0) {
      request_line = line;
      continue;
    }
    if (line.empty()) break;
  }
  // METHOD SP TARGET SP HTTP/1.x
  size_t sp1 = request_line.find(' ');
  if (sp1 == std::string_view::npos) return Errc::kBadRequest;
  size_t sp2 = request_line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos) return Errc::kBadRequest;
  std::string_view method = request_line.substr(0, sp1);
  std::string_view target = request_line.substr(sp1 + 1, sp2 - sp1 - 1);
  std::string_view version = request_line.substr(sp2 + 1);
  if (version != "HTTP/1.1" && version != "HTTP/1.0") return Errc::kBadRequest;
  for (char c : method) {
    if (c < 'A' || c > 'Z') return Errc::kBadRequest;
  }
  if (method != "CONNECT") return Errc::kNotConnect;
  ConnectRequest r;
  if (std::error_code ec = parse_target(target, &r)) return ec;
  *out = std::move(r);
  *consumed = pos;
  return {};
}

std::string encode_response(int status, std::string_view why) {
  const char* reason = "Error";
  switch (status) {
    case 200:
      reason = "Connection established";
      break;
    case 400:
      reason = "Bad Request";
      break;
    case 403:
      reason = "Forbidden";
      break;
    case 405:
      reason = "Method Not Allowed";
      break;
    case 407:
      reason = "Proxy Authentication Required";
      break;
    case 501:
      reason = "Not Implemented";
      break;
    case 502:
      reason = "Bad Gateway";
      break;
    case 504:
      reason = "Gateway Timeout";
      break;
  }
  std::string out = "HTTP/1.1 " + std::to_string(status) + " " + reason + "\r\n";
  if (status == 200) return out + "\r\n";
  std::string body(why);
  body.push_back('\n');
  if (status == 405) out += "Allow: CONNECT\r\n";
  // The gateway, not this proxy, wants credentials: they come from the agent's config.
  if (status == 407) out += "Proxy-Authenticate: Basic realm=\"socksgate agent\"\r\n";
  out += "Content-Type: text/plain\r\nConnection: close\r\nContent-Length: " +
         std::to_string(body.size()) + "\r\n\r\n";
  return out + body;
}

}  // namespace socksgate::gateway::http_connect
