#include "gateway/admin_http.h"

#include <algorithm>

#include "crypto/parse.h"

namespace socksgate::gateway::http {
namespace {

class Category : public std::error_category {
 public:
  const char* name() const noexcept override { return "http"; }
  std::string message(int v) const override {
    switch (static_cast<Errc>(v)) {
      case Errc::kBadRequestLine:
        return "malformed request line";
      case Errc::kBadTarget:
        return "malformed request target";
      case Errc::kBadVersion:
        return "HTTP version not supported";
      case Errc::kBadHeader:
        return "malformed header line";
      case Errc::kTooManyHeaders:
        return "too many header lines";
      case Errc::kHeadTooLarge:
        return "request head too large";
      case Errc::kMissingHost:
        return "missing or repeated Host header";
      case Errc::kBadContentLength:
        return "bad Content-Length";
      case Errc::kBodyNotAllowed:
        return "request body not allowed";
      case Errc::kTransferEncoding:
        return "Transfer-Encoding not supported";
    }
    return "unknown HTTP error";
  }
};

bool is_tchar(char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

bool is_token(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), is_tchar);
}

int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

std::string_view trim_ows(std::string_view v) {
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
  while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
  return v;
}

std::error_code parse_request_line(std::string_view line, Request* r) {
  size_t sp1 = line.find(' ');
  if (sp1 == std::string_view::npos) return Errc::kBadRequestLine;
  size_t sp2 = line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos) {
    return Errc::kBadRequestLine;
  }
  std::string_view method = line.substr(0, sp1);
  std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  std::string_view version = line.substr(sp2 + 1);
  if (!is_token(method) || method.size() > 16) return Errc::kBadRequestLine;
  if (version.size() != 8 || version.substr(0, 5) != "HTTP/" || version[6] != '.' ||
      version[5] < '0' || version[5] > '9' || version[7] < '0' || version[7] > '9') {
    return Errc::kBadRequestLine;
  }
  if (version[5] != '1' || (version[7] != '0' && version[7] != '1')) return Errc::kBadVersion;
  if (target.empty() || target.size() > kMaxTargetSize || target[0] != '/') {
    return Errc::kBadTarget;
  }
  for (char c : target) {
    auto u = static_cast<unsigned char>(c);
    if (u < 0x21 || u > 0x7E || c == '#') return Errc::kBadTarget;
  }
  size_t q = target.find('?');
  auto path = percent_decode(target.substr(0, q), false);
  if (!path || path->find('\0') != std::string::npos) return Errc::kBadTarget;
  r->method = std::string(method);
  r->target = std::string(target);
  r->path = std::move(*path);
  r->query = q == std::string_view::npos ? "" : std::string(target.substr(q + 1));
  r->minor_version = version[7] - '0';
  return {};
}

std::error_code parse_header_line(std::string_view line, Request* r) {
  if (line.front() == ' ' || line.front() == '\t') return Errc::kBadHeader;  // obs-fold
  size_t colon = line.find(':');
  if (colon == std::string_view::npos) return Errc::kBadHeader;
  std::string_view name = line.substr(0, colon);
  if (!is_token(name)) return Errc::kBadHeader;  // also: whitespace before the colon
  std::string_view value = trim_ows(line.substr(colon + 1));
  for (char c : value) {
    auto u = static_cast<unsigned char>(c);
    if ((u < 0x20 && c != '\t') || u == 0x7F) return Errc::kBadHeader;
  }
  r->headers.emplace_back(lower(name), std::string(value));
  return {};
}

}  // namespace

const std::error_category& category() {
  static const Category c;
  return c;
}

int status_for(const std::error_code& ec) {
  if (ec.category() != category()) return 400;
  switch (static_cast<Errc>(ec.value())) {
    case Errc::kBadVersion:
      return 505;
    case Errc::kTooManyHeaders:
    case Errc::kHeadTooLarge:
      return 431;
    case Errc::kBodyNotAllowed:
      return 413;
    case Errc::kTransferEncoding:
      return 501;
    default:
      return 400;
  }
}

std::optional<std::string> Request::header(std::string_view name) const {
  std::optional<std::string> found;
  for (const auto& [n, v] : headers) {
    if (n != name) continue;
    if (found) return std::nullopt;
    found = v;
  }
  return found;
}

std::error_code parse_request(std::span<const uint8_t> in, Request* out, size_t* consumed) {
  // Complete lines are judged in order as they arrive, so an error never changes with more
  // bytes; a head that has not ended within kMaxHeadSize bytes is too large.
  std::string_view all(reinterpret_cast<const char*>(in.data()), in.size());
  std::string_view window = all.substr(0, std::min(all.size(), kMaxHeadSize));
  Request r;
  size_t pos = 0;
  size_t lines = 0;
  for (;;) {
    size_t nl = window.find('\n', pos);
    if (nl == std::string_view::npos) break;
    std::string_view line = window.substr(pos, nl - pos);
    bool first = lines == 0;
    if (line.empty() || line.back() != '\r') {
      return first ? Errc::kBadRequestLine : Errc::kBadHeader;  // a bare LF
    }
    line.remove_suffix(1);
    pos = nl + 1;
    if (line.find('\r') != std::string_view::npos) {
      return first ? Errc::kBadRequestLine : Errc::kBadHeader;
    }
    if (first) {
      if (auto ec = parse_request_line(line, &r)) return ec;
      ++lines;
      continue;
    }
    if (line.empty()) {
      // End of the head: the checks that need all of it.
      size_t hosts = 0, lengths = 0;
      for (const auto& [n, v] : r.headers) {
        if (n == "host") ++hosts;
        if (n == "transfer-encoding") return Errc::kTransferEncoding;
        if (n == "content-length") {
          if (++lengths > 1 || v.empty() || v.size() > 18 ||
              !std::all_of(v.begin(), v.end(), [](char c) { return c >= '0' && c <= '9'; })) {
            return Errc::kBadContentLength;
          }
          if (std::stoull(v) > kMaxBodySize) return Errc::kBodyNotAllowed;
        }
      }
      if (hosts > 1 || (r.minor_version == 1 && hosts == 0)) return Errc::kMissingHost;
      *out = std::move(r);
      *consumed = pos;
      return {};
    }
    if (lines > kMaxHeaders) return Errc::kTooManyHeaders;
    if (auto ec = parse_header_line(line, &r)) return ec;
    ++lines;
  }
  if (window.size() >= kMaxHeadSize) return Errc::kHeadTooLarge;
  return crypto::ParseErrc::kNeedMore;
}

std::optional<std::string> percent_decode(std::string_view s, bool plus_is_space) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c == '%') {
      if (i + 2 >= s.size()) return std::nullopt;
      int hi = hexval(s[i + 1]), lo = hexval(s[i + 2]);
      if (hi < 0 || lo < 0) return std::nullopt;
      out.push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    } else if (c == '+' && plus_is_space) {
      out.push_back(' ');
    } else {
      out.push_back(c);
    }
  }
  return out;
}

std::string percent_encode(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (char c : s) {
    bool plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '-' || c == '.' || c == '_' || c == '~';
    if (plain) {
      out.push_back(c);
    } else {
      auto u = static_cast<unsigned char>(c);
      out.push_back('%');
      out.push_back(kHex[u >> 4]);
      out.push_back(kHex[u & 15]);
    }
  }
  return out;
}

std::optional<std::map<std::string, std::string>> parse_query(std::string_view query) {
  std::map<std::string, std::string> out;
  while (!query.empty()) {
    size_t amp = query.find('&');
    std::string_view part = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    if (part.empty()) continue;
    size_t eq = part.find('=');
    auto name = percent_decode(part.substr(0, eq), true);
    auto value = percent_decode(eq == std::string_view::npos ? "" : part.substr(eq + 1), true);
    if (!name || !value) return std::nullopt;
    if (!out.emplace(std::move(*name), std::move(*value)).second) return std::nullopt;
  }
  return out;
}

std::optional<Response> parse_response(std::string_view in) {
  size_t end = in.find("\r\n\r\n");
  if (end == std::string_view::npos) return std::nullopt;
  std::string_view head = in.substr(0, end);
  Response r;
  size_t eol = head.find("\r\n");
  std::string_view status = head.substr(0, eol);
  if (status.size() < 12 || status.substr(0, 7) != "HTTP/1." || status[8] != ' ') {
    return std::nullopt;
  }
  for (size_t i = 9; i < 12; ++i) {
    if (status[i] < '0' || status[i] > '9') return std::nullopt;
  }
  r.status = (status[9] - '0') * 100 + (status[10] - '0') * 10 + (status[11] - '0');
  if (status.size() > 13) r.reason = std::string(status.substr(13));
  std::optional<size_t> length;
  while (eol != std::string_view::npos) {
    size_t start = eol + 2;
    eol = head.find("\r\n", start);
    std::string_view line = head.substr(start, eol == std::string_view::npos ? eol : eol - start);
    size_t colon = line.find(':');
    if (colon == std::string_view::npos) return std::nullopt;
    std::string name = lower(line.substr(0, colon));
    std::string value(trim_ows(line.substr(colon + 1)));
    if (name == "content-length") {
      if (value.empty() || value.size() > 18 ||
          !std::all_of(value.begin(), value.end(), [](char c) { return c >= '0' && c <= '9'; })) {
        return std::nullopt;
      }
      length = std::stoull(value);
    }
    r.headers.emplace_back(std::move(name), std::move(value));
  }
  std::string_view body = in.substr(end + 4);
  if (length) {
    if (body.size() < *length) return std::nullopt;  // truncated
    body = body.substr(0, *length);
  }
  r.body = std::string(body);
  return r;
}

}  // namespace socksgate::gateway::http
