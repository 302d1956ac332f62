#include "gateway/admin.h"

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/ip/v6_only.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "crypto/parse.h"
#include "crypto/secure.h"
#include "gateway/audit.h"
#include "gateway/log.h"
#include "gateway/server_state.h"
#include "gateway/session.h"
#include "gateway/timeout.h"

namespace socksgate::gateway {
namespace {

constexpr auto kUse = asio::experimental::as_tuple(asio::use_awaitable);
constexpr auto kReadDeadline = std::chrono::seconds(5);
constexpr auto kWriteDeadline = std::chrono::seconds(10);
constexpr int kMaxConnections = 16;

struct Reply {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
};

std::string_view reason_phrase(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 413:
      return "Content Too Large";
    case 431:
      return "Request Header Fields Too Large";
    case 501:
      return "Not Implemented";
    case 503:
      return "Service Unavailable";
    case 505:
      return "HTTP Version Not Supported";
  }
  return "Error";
}

Reply json_reply(int status, const nlohmann::json& j) {
  Reply r;
  r.status = status;
  r.content_type = "application/json";
  r.body = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  r.body.push_back('\n');
  return r;
}

Reply error_reply(int status, std::string_view why) {
  return json_reply(status, {{"error", std::string(why)}});
}

std::string serialise(const Reply& r, bool head_only) {
  std::string out = "HTTP/1.1 " + std::to_string(r.status) + " ";
  out.append(reason_phrase(r.status)).append("\r\n");
  out.append("Content-Type: ").append(r.content_type).append("\r\n");
  out.append("Content-Length: ").append(std::to_string(r.body.size())).append("\r\n");
  out.append("Cache-Control: no-store\r\nConnection: close\r\n");
  for (const auto& [n, v] : r.headers) out.append(n).append(": ").append(v).append("\r\n");
  out.append("\r\n");
  if (!head_only) out.append(r.body);
  return out;
}

}  // namespace

struct AdminServer::Impl {
  Impl(asio::io_context& i, ServerState& s) : io(i), state(s) { crypto::random_bytes(key); }

  void apply(const AdminConfig* cfg) {
    if (cfg == nullptr) {
      close();
      return;
    }
    if (acceptor && cfg->address == address && cfg->port == port) return;
    auto a = std::make_unique<asio::ip::tcp::acceptor>(io);
    asio::ip::tcp::endpoint ep(asio::ip::make_address(cfg->address), cfg->port);
    std::error_code ec;
    a->open(ep.protocol(), ec);
    if (!ec) a->set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec && ep.address().is_v6()) a->set_option(asio::ip::v6_only(true), ec);
    if (!ec) a->bind(ep, ec);
    if (!ec) a->listen(64, ec);
    if (ec) {
      throw std::runtime_error("admin: cannot listen on " + cfg->address + " port " +
                               std::to_string(cfg->port) + ": " + ec.message());
    }
    close();
    bound_ep = a->local_endpoint();
    address = cfg->address;
    port = cfg->port;
    acceptor = std::move(a);
    log::info("admin listening address=", bound_ep.address().to_string(), " port=", bound_ep.port(),
              cfg->token.empty() ? " (no token)" : " (token)");
    asio::co_spawn(io, accept_loop(acceptor.get()), asio::detached);
  }

  void close() {
    if (!acceptor) return;
    std::error_code ec;
    acceptor->close(ec);
    retired.push_back(std::move(acceptor));
  }

  asio::awaitable<void> accept_loop(asio::ip::tcp::acceptor* a) {
    asio::steady_timer backoff(io);
    for (;;) {
      asio::ip::tcp::endpoint peer;
      auto [ec, sock] = co_await a->async_accept(peer, kUse);
      if (ec == asio::error::operation_aborted || !a->is_open()) co_return;
      if (ec) {
        log::warn("admin accept: ", ec.message());
        backoff.expires_after(std::chrono::milliseconds(100));
        co_await backoff.async_wait(kUse);
        continue;
      }
      if (connections >= kMaxConnections) {
        std::error_code ignored;
        sock.close(ignored);
        continue;
      }
      ++connections;
      asio::co_spawn(io, serve(std::move(sock), peer), [this](std::exception_ptr e) {
        --connections;
        if (!e) return;
        try {
          std::rethrow_exception(e);
        } catch (const std::exception& ex) {
          log::error("admin request failed: ", ex.what());
        }
      });
    }
  }

  asio::awaitable<std::error_code> read_request(asio::ip::tcp::socket& sock, http::Request* req) {
    std::vector<uint8_t> buf;
    std::array<uint8_t, 2048> chunk;
    for (;;) {
      size_t consumed = 0;
      std::error_code perr = http::parse_request(buf, req, &consumed);
      if (perr != crypto::ParseErrc::kNeedMore) co_return perr;
      auto [ec, n] = co_await sock.async_read_some(asio::buffer(chunk), kUse);
      if (ec) co_return ec;
      buf.insert(buf.end(), chunk.begin(), chunk.begin() + static_cast<std::ptrdiff_t>(n));
    }
  }

  asio::awaitable<void> serve(asio::ip::tcp::socket sock, asio::ip::tcp::endpoint peer) {
    http::Request req;
    auto r = co_await with_timeout(read_request(sock, &req), kReadDeadline);
    Reply reply;
    bool answer = true;
    if (!r) {
      reply = error_reply(408, "no complete request in time");
    } else if (*r && r->category() == http::category()) {
      reply = error_reply(http::status_for(*r), r->message());
    } else if (*r) {
      answer = false;  // the client went away
    } else {
      reply = handle(req, peer);
    }
    if (answer) {
      std::string bytes = serialise(reply, req.method == "HEAD");
      auto write = [&]() -> asio::awaitable<void> {
        co_await asio::async_write(sock, asio::buffer(bytes), kUse);
      };
      co_await with_timeout(write(), kWriteDeadline);
    }
    // Lingering close: a client still sending (a head over the bound) must read our reply
    // before the close turns into a reset, so send FIN and drain what comes for a moment.
    std::error_code ec;
    sock.shutdown(asio::ip::tcp::socket::shutdown_send, ec);
    auto drain = [&]() -> asio::awaitable<void> {
      std::array<uint8_t, 4096> sink;
      for (size_t total = 0; total < (1u << 20);) {
        auto [rec, n] = co_await sock.async_read_some(asio::buffer(sink), kUse);
        if (rec) co_return;
        total += n;
      }
    };
    if (answer) co_await with_timeout(drain(), std::chrono::seconds(2));
    sock.close(ec);
  }

  bool authorised(const http::Request& req, const AdminConfig& cfg) const {
    if (cfg.token.empty()) return true;
    auto h = req.header("authorization");
    if (!h || h->size() < 7) return false;
    std::string scheme = h->substr(0, 7);
    for (char& c : scheme) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (scheme != "bearer ") return false;
    std::string_view presented = std::string_view(*h).substr(7);
    // Compare keyed digests: constant time whatever the lengths.
    auto digest = [&](std::string_view s) {
      auto d = crypto::hmac_sha256(
          key, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(s.data()), s.size()));
      return std::string(reinterpret_cast<const char*>(d.data()), d.size());
    };
    return crypto::constant_time_equal(digest(presented), digest(cfg.token));
  }

  Reply handle(const http::Request& req, const asio::ip::tcp::endpoint& peer) {
    auto snap = state.snapshot.load();
    static const AdminConfig kNone;
    const AdminConfig& cfg = snap->config->admin ? *snap->config->admin : kNone;
    const std::string& path = req.path;
    bool get = req.method == "GET" || req.method == "HEAD";
    auto only = [](std::string_view allow) {
      Reply r = error_reply(405, "method not allowed");
      r.headers.emplace_back("Allow", std::string(allow));
      return r;
    };
    if (path == "/healthz") {
      if (!get) return only("GET, HEAD");
      return Reply{200, "text/plain; charset=utf-8", "ok\n", {}};
    }
    if (path == "/readyz") {
      if (!get) return only("GET, HEAD");
      if (state.draining.load()) return Reply{503, "text/plain; charset=utf-8", "draining\n", {}};
      return Reply{200, "text/plain; charset=utf-8", "ready\n", {}};
    }
    if (path != "/metrics" && path != "/sessions" && path != "/sessions/close") {
      return error_reply(404, "no such endpoint");
    }
    if (!authorised(req, cfg)) {
      log::warn("admin: unauthorised ", req.method, " ", path, " from ",
                peer.address().to_string());
      Reply r = error_reply(401, "a valid bearer token is required");
      r.headers.emplace_back("WWW-Authenticate", "Bearer realm=\"socksgate\"");
      return r;
    }
    if (path == "/metrics") {
      if (!get) return only("GET, HEAD");
      Metrics::Scrape s;
      for (auto& v : state.sessions.list()) {
        s.live.push_back(
            {std::move(v.listener), std::move(v.method), std::move(v.command), std::move(v.user)});
      }
      for (size_t i = 0; i < static_cast<size_t>(CloseReason::kCount_); ++i) {
        auto reason = static_cast<CloseReason>(i);
        s.closed_by_reason.emplace_back(std::string(to_string(reason)), state.counters.get(reason));
      }
      s.draining = state.draining.load();
      return Reply{200, "text/plain; version=0.0.4; charset=utf-8", state.metrics.render(s), {}};
    }
    if (path == "/sessions") {
      if (!get) return only("GET, HEAD");
      nlohmann::json list = nlohmann::json::array();
      for (const auto& v : state.sessions.list()) {
        nlohmann::json j;
        j["id"] = format_session_id(v.id);
        j["listener"] = v.listener;
        j["client"] = v.client;
        j["user"] = escape_untrusted(v.user);
        j["method"] = v.method;
        j["command"] = v.command;
        j["target"] = v.target;
        j["bytes_up"] = v.bytes_up;
        j["bytes_down"] = v.bytes_down;
        j["age_s"] = static_cast<double>(
                         std::chrono::duration_cast<std::chrono::milliseconds>(v.age).count()) /
                     1000.0;
        list.push_back(std::move(j));
      }
      return json_reply(200, {{"sessions", std::move(list)}});
    }
    // POST /sessions/close?user=NAME
    if (req.method != "POST") return only("POST");
    auto q = http::parse_query(req.query);
    if (!q) return error_reply(400, "malformed query");
    auto it = q->find("user");
    if (it == q->end() || it->second.empty() || q->size() != 1) {
      return error_reply(400, "expected exactly ?user=NAME");
    }
    size_t n = state.sessions.close_user(it->second, CloseReason::kAdminClosed);
    log::info("admin: closing ", n, " sessions of user ", escape_untrusted(it->second), " (from ",
              peer.address().to_string(), ")");
    return json_reply(200, {{"user", escape_untrusted(it->second)}, {"closed", n}});
  }

  asio::io_context& io;
  ServerState& state;
  std::array<uint8_t, 32> key{};  // per process, for comparing tokens as digests
  std::unique_ptr<asio::ip::tcp::acceptor> acceptor;
  std::vector<std::unique_ptr<asio::ip::tcp::acceptor>> retired;
  std::string address;
  uint16_t port = 0;
  asio::ip::tcp::endpoint bound_ep;
  int connections = 0;
};

AdminServer::AdminServer(asio::io_context& io, ServerState& state)
    : impl_(std::make_unique<Impl>(io, state)) {}
AdminServer::~AdminServer() = default;
void AdminServer::apply(const AdminConfig* cfg) { impl_->apply(cfg); }
std::optional<std::pair<std::string, uint16_t>> AdminServer::bound() const {
  if (!impl_->acceptor) return std::nullopt;
  return std::make_pair(impl_->bound_ep.address().to_string(), impl_->bound_ep.port());
}

// --- client -----------------------------------------------------------------------------------

namespace {

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

void wait_for(int fd, short events, int timeout_ms, const char* what) {
  pollfd p{fd, events, 0};
  int rc;
  do {
    rc = ::poll(&p, 1, timeout_ms);
  } while (rc < 0 && errno == EINTR);
  if (rc == 0) throw std::runtime_error(std::string("timed out ") + what);
  if (rc < 0) throw std::runtime_error(std::string(what) + ": " + std::strerror(errno));
}

}  // namespace

http::Response admin_request(const std::string& host_port, const std::string& method,
                             const std::string& target, const std::string& token, int timeout_ms) {
  size_t colon = host_port.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == host_port.size()) {
    throw std::invalid_argument("--admin must be HOST:PORT");
  }
  std::string host = host_port.substr(0, colon);
  std::string port = host_port.substr(colon + 1);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  if (int rc = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &res); rc != 0) {
    throw std::invalid_argument("--admin " + host_port + ": " + gai_strerror(rc) +
                                " (an IP address and a port are expected)");
  }
  Fd s;
  s.fd = ::socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (s.fd < 0) {
    ::freeaddrinfo(res);
    throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
  }
  int rc = ::connect(s.fd, res->ai_addr, res->ai_addrlen);
  ::freeaddrinfo(res);
  if (rc != 0 && errno != EINPROGRESS) {
    throw std::runtime_error("cannot connect to " + host_port + ": " + std::strerror(errno));
  }
  wait_for(s.fd, POLLOUT, timeout_ms, "connecting");
  int err = 0;
  socklen_t len = sizeof err;
  ::getsockopt(s.fd, SOL_SOCKET, SO_ERROR, &err, &len);
  if (err != 0) {
    throw std::runtime_error("cannot connect to " + host_port + ": " + std::strerror(err));
  }
  std::string req = method + " " + target + " HTTP/1.1\r\nHost: " + host_port +
                    "\r\nUser-Agent: socksgate\r\nConnection: close\r\n";
  if (method == "POST") req += "Content-Length: 0\r\n";
  if (!token.empty()) req += "Authorization: Bearer " + token + "\r\n";
  req += "\r\n";
  size_t off = 0;
  while (off < req.size()) {
    ssize_t n = ::send(s.fd, req.data() + off, req.size() - off, MSG_NOSIGNAL);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      wait_for(s.fd, POLLOUT, timeout_ms, "sending");
      continue;
    }
    if (n < 0) throw std::runtime_error(std::string("send: ") + std::strerror(errno));
    off += static_cast<size_t>(n);
  }
  crypto::secure_zero(req.data(), req.size());
  std::string in;
  char buf[16384];
  for (;;) {
    ssize_t n = ::recv(s.fd, buf, sizeof buf, 0);
    if (n > 0) {
      in.append(buf, static_cast<size_t>(n));
      if (in.size() > (64u << 20)) throw std::runtime_error("reply too large");
      continue;
    }
    if (n == 0) break;
    if (errno == EAGAIN || errno == EINTR) {
      wait_for(s.fd, POLLIN, timeout_ms, "waiting for the reply");
      continue;
    }
    throw std::runtime_error(std::string("recv: ") + std::strerror(errno));
  }
  auto r = http::parse_response(in);
  if (!r) throw std::runtime_error("malformed reply from " + host_port);
  return *r;
}

}  // namespace socksgate::gateway
