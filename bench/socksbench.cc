// socksbench: a loopback SOCKS5 benchmark client with built-in target servers.
//
// Standalone on purpose: plain POSIX sockets, epoll and threads, no dependency on the project's
// libraries, so it can measure socksgate, Dante or a direct connection the same way.
//
// Subcommands (each client scenario prints exactly one JSON line on stdout):
//   socksbench throughput --streams N --direction upload|download [--duration S]
//                         [--buf SEND_BYTES(256 KiB)] [--rbuf RECV_BYTES(1 MiB)]
//                         [--rcvlowat BYTES(256 KiB, 0 = off)]
//                         [--tx send|sendfile] [--rx recv|splice]
//   socksbench setup      --concurrency C [--duration S]
//   socksbench latency    [--rounds N] [--size BYTES] [--pin-cpu N] [--keep-awake]
//   socksbench idle       --sessions K --pids PID[,PID...] [--wait S]
//   socksbench serve      [--bind 127.0.0.1] [--serve-threads N]
// Common options:
//   --proxy HOST:PORT     go through this SOCKS5 proxy (IPv4); without it the scenario runs direct
//   --user U --pass P     offer RFC 1929 username/password instead of "no authentication"
//   --source ADDR         client source address (e.g. 127.0.0.2), keeps our ephemeral ports apart
//                         from the ones the proxy binds for its outgoing connections
//   --pids PID[,PID...]   proxy processes: CPU time and RSS are summed over their process trees
//   --targets S,SRC,E,TE  use an already running `socksbench serve` (sink,source,echo,techo
//                         ports) instead of forking a private one
//   --label TEXT          copied into the output line
//
// Target servers (all on loopback, port 0, in a forked child process so that the client and the
// target side each have their own open-files limit):
//   sink    reads and discards until EOF, then closes          (upload throughput)
//   source  waits for one byte, then writes until the peer goes (download throughput)
//   echo    epoll echo server, cheap per connection             (session setup, idle sessions);
//           a chunk ending in 'Q' is echoed and then the server closes
//   techo   thread-per-connection blocking echo                 (round-trip latency)

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <exception>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "bench_util.h"

namespace {

using namespace bench_util;

using Clock = std::chrono::steady_clock;
constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
constexpr int kFdLimitSessionsNote = 10000;

class JsonLine {
 public:
  JsonLine& str(const char* k, std::string_view v) {
    key(k);
    os_ << '"' << json_escape(v) << '"';
    return *this;
  }
  JsonLine& num(const char* k, double v, int prec = 3) {
    key(k);
    if (!std::isfinite(v)) {
      os_ << "null";
    } else {
      char b[64];
      std::snprintf(b, sizeof b, "%.*f", prec, v);
      os_ << b;
    }
    return *this;
  }
  JsonLine& integer(const char* k, long long v) {
    key(k);
    os_ << v;
    return *this;
  }
  JsonLine& boolean(const char* k, bool v) {
    key(k);
    os_ << (v ? "true" : "false");
    return *this;
  }
  JsonLine& null(const char* k) {
    key(k);
    os_ << "null";
    return *this;
  }
  std::string text() const { return "{" + os_.str() + "}"; }

 private:
  void key(const char* k) {
    if (!first_) os_ << ',';
    first_ = false;
    os_ << '"' << k << "\":";
  }
  std::ostringstream os_;
  bool first_ = true;
};

std::mutex g_out_mu;
void emit(const JsonLine& j) {
  std::lock_guard<std::mutex> lock(g_out_mu);
  std::string t = j.text() + "\n";
  ssize_t ignored = write(STDOUT_FILENO, t.data(), t.size());
  (void)ignored;
}

// ---------------------------------------------------------------------------------------------
// Options.

struct Options {
  std::string scenario;
  std::optional<sockaddr_in> proxy;
  std::string proxy_text;
  bool auth = false;
  std::string user, pass;
  std::vector<pid_t> pids;
  std::string label;
  std::string target_host = "127.0.0.1";
  std::optional<sockaddr_in> source;          // client source address (port chosen by connect)
  std::optional<std::array<int, 4>> targets;  // sink, source, echo, techo
  int serve_threads = 2;
  int io_timeout_s = 20;
  double watchdog_s = 0;  // 0: derived from the scenario
  // throughput
  int streams = 1;
  bool upload = true;
  double duration_s = 3;
  size_t buf = 256 * 1024;    // bytes per send() call (client and source)
  size_t rbuf = 1024 * 1024;  // bytes per recv() call (client and sink)
  int rcvlowat = 256 * 1024;  // SO_RCVLOWAT on receiving sockets; 0 = off
  bool zc_tx = false;         // --tx sendfile: sendfile() from a memfd instead of send()
  bool zc_rx = false;         // --rx splice: splice() into /dev/null instead of recv()
  // setup
  int concurrency = 1;
  // latency
  int rounds = 20000;
  int warmup = 1000;
  bool keep_awake = false;  // SCHED_IDLE spinners so that no vCPU halts between messages
  int pin_cpu = -1;         // latency: pin client, targets and the proxy tree to this CPU
  size_t msg = 64;
  // idle
  int sessions = 1000;
  double idle_wait_s = 2;
  int open_threads = 32;
};

[[noreturn]] void usage_error(const std::string& msg) {
  std::fprintf(stderr, "socksbench: %s\n(see the comment at the top of bench/socksbench.cc)\n",
               msg.c_str());
  std::exit(64);
}

bool parse_ipv4(const std::string& host, int port, sockaddr_in* out) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  if (port < 0 || port > 65535) return false;
  a.sin_port = htons(static_cast<uint16_t>(port));
  if (inet_pton(AF_INET, host.c_str(), &a.sin_addr) != 1) return false;
  *out = a;
  return true;
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string cur;
  std::istringstream is(s);
  while (std::getline(is, cur, sep)) {
    if (!cur.empty()) out.push_back(cur);
  }
  return out;
}

long long to_int(const std::string& s, const char* what) {
  char* end = nullptr;
  errno = 0;
  long long v = std::strtoll(s.c_str(), &end, 10);
  if (errno != 0 || end == s.c_str() || *end != '\0') usage_error(std::string("bad ") + what);
  return v;
}

double to_double(const std::string& s, const char* what) {
  char* end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  if (end == s.c_str() || *end != '\0' || !std::isfinite(v))
    usage_error(std::string("bad ") + what);
  return v;
}

Options parse_args(int argc, char** argv) {
  if (argc < 2) usage_error("missing subcommand");
  Options o;
  o.scenario = argv[1];
  for (int i = 2; i < argc; ++i) {
    std::string k = argv[i];
    auto val = [&]() -> std::string {
      if (i + 1 >= argc) usage_error("missing value for " + k);
      return argv[++i];
    };
    if (k == "--proxy") {
      o.proxy_text = val();
      auto colon = o.proxy_text.rfind(':');
      sockaddr_in a{};
      if (colon == std::string::npos ||
          !parse_ipv4(o.proxy_text.substr(0, colon),
                      static_cast<int>(to_int(o.proxy_text.substr(colon + 1), "proxy port")), &a))
        usage_error("--proxy wants IPV4:PORT");
      o.proxy = a;
    } else if (k == "--user") {
      o.user = val();
      o.auth = true;
    } else if (k == "--pass") {
      o.pass = val();
      o.auth = true;
    } else if (k == "--pids") {
      for (auto& p : split(val(), ',')) o.pids.push_back(static_cast<pid_t>(to_int(p, "pid")));
    } else if (k == "--label") {
      o.label = val();
    } else if (k == "--source") {
      sockaddr_in a{};
      if (!parse_ipv4(val(), 0, &a)) usage_error("--source wants an IPv4 address");
      o.source = a;
    } else if (k == "--bind" || k == "--target-host") {
      o.target_host = val();
    } else if (k == "--targets") {
      auto parts = split(val(), ',');
      if (parts.size() != 4) usage_error("--targets wants SINK,SOURCE,ECHO,TECHO ports");
      std::array<int, 4> t{};
      for (int j = 0; j < 4; ++j) t[j] = static_cast<int>(to_int(parts[j], "target port"));
      o.targets = t;
    } else if (k == "--serve-threads") {
      o.serve_threads = static_cast<int>(to_int(val(), "serve threads"));
    } else if (k == "--io-timeout") {
      o.io_timeout_s = static_cast<int>(to_int(val(), "io timeout"));
    } else if (k == "--watchdog") {
      o.watchdog_s = to_double(val(), "watchdog");
    } else if (k == "--streams") {
      o.streams = static_cast<int>(to_int(val(), "streams"));
    } else if (k == "--direction") {
      std::string d = val();
      if (d == "upload" || d == "up") {
        o.upload = true;
      } else if (d == "download" || d == "down") {
        o.upload = false;
      } else {
        usage_error("--direction upload|download");
      }
    } else if (k == "--duration") {
      o.duration_s = to_double(val(), "duration");
    } else if (k == "--rcvlowat") {
      o.rcvlowat = static_cast<int>(to_int(val(), "rcvlowat"));
    } else if (k == "--tx") {
      std::string v = val();
      if (v != "send" && v != "sendfile") usage_error("--tx send|sendfile");
      o.zc_tx = v == "sendfile";
    } else if (k == "--rx") {
      std::string v = val();
      if (v != "recv" && v != "splice") usage_error("--rx recv|splice");
      o.zc_rx = v == "splice";
    } else if (k == "--rbuf") {
      o.rbuf = static_cast<size_t>(to_int(val(), "rbuf"));
    } else if (k == "--buf") {
      o.buf = static_cast<size_t>(to_int(val(), "buf"));
    } else if (k == "--concurrency") {
      o.concurrency = static_cast<int>(to_int(val(), "concurrency"));
    } else if (k == "--rounds") {
      o.rounds = static_cast<int>(to_int(val(), "rounds"));
    } else if (k == "--pin-cpu") {
      o.pin_cpu = static_cast<int>(to_int(val(), "pin cpu"));
    } else if (k == "--keep-awake") {
      o.keep_awake = true;
    } else if (k == "--warmup") {
      o.warmup = static_cast<int>(to_int(val(), "warmup"));
    } else if (k == "--size") {
      o.msg = static_cast<size_t>(to_int(val(), "size"));
    } else if (k == "--sessions") {
      o.sessions = static_cast<int>(to_int(val(), "sessions"));
    } else if (k == "--wait") {
      o.idle_wait_s = to_double(val(), "wait");
    } else if (k == "--open-threads") {
      o.open_threads = static_cast<int>(to_int(val(), "open threads"));
    } else {
      usage_error("unknown option " + k);
    }
  }
  if (o.user.size() > 255 || o.pass.size() > 255) usage_error("user/pass longer than 255 bytes");
  if (o.streams < 1 || o.streams > 256) usage_error("--streams 1..256");
  if (o.concurrency < 1 || o.concurrency > 1024) usage_error("--concurrency 1..1024");
  if (o.buf < 1024 || o.buf > (64u << 20)) usage_error("--buf 1 KiB..64 MiB");
  if (o.rbuf < 1024 || o.rbuf > (64u << 20)) usage_error("--rbuf 1 KiB..64 MiB");
  if (o.rcvlowat < 0 || static_cast<size_t>(o.rcvlowat) > o.rbuf) usage_error("--rcvlowat 0..rbuf");
  if (o.msg < 1 || o.msg > 65536) usage_error("--size 1..65536");
  if (o.rounds < 1) usage_error("--rounds >= 1");
  if (o.sessions < 1) usage_error("--sessions >= 1");
  if (o.open_threads < 1 || o.open_threads > 1024) usage_error("--open-threads 1..1024");
  if (o.duration_s <= 0) usage_error("--duration > 0");
  return o;
}

// ---------------------------------------------------------------------------------------------
// Socket helpers.

void set_nodelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

void set_timeouts(int fd, int seconds) {
  timeval tv{};
  tv.tv_sec = seconds;
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

int tcp_connect(const sockaddr_in& addr, const sockaddr_in* source, int timeout_s,
                std::string* err) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *err = errno_text("socket");
    return -1;
  }
  if (source) {
    // Source address only: the port is still picked by connect(), per destination.
    int one = 1;
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    if (bind(fd, reinterpret_cast<const sockaddr*>(source), sizeof *source) != 0) {
      *err = errno_text("bind source");
      close(fd);
      return -1;
    }
  }
  set_timeouts(fd, timeout_s);  // SO_SNDTIMEO also bounds connect()
  set_nodelay(fd);
  while (connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    if (errno == EINTR) continue;
    *err = errno_text("connect");
    close(fd);
    return -1;
  }
  return fd;
}

int make_listener(const std::string& host, int* port_out) {
  sockaddr_in a{};
  if (!parse_ipv4(host, 0, &a)) {
    std::fprintf(stderr, "socksbench serve: bad bind address %s\n", host.c_str());
    std::exit(2);
  }
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || listen(fd, 4096) != 0) {
    std::perror("socksbench serve: listen");
    std::exit(2);
  }
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  *port_out = ntohs(a.sin_port);
  return fd;
}

long long nofile_limit() {
  rlimit rl{};
  getrlimit(RLIMIT_NOFILE, &rl);
  return static_cast<long long>(rl.rlim_cur);
}

// ---------------------------------------------------------------------------------------------
// Target servers.

// Bulk I/O sizes of the target servers; set from the options before any server thread starts.
// Receivers read up to 1 MiB per call and set SO_RCVLOWAT (256 KiB): on this kind of VM every
// wakeup of a sleeping reader costs an inter-processor interrupt and a VM exit, and a reader
// that wakes for every 64 KiB segment burns CPU that the proxy under test needs.
size_t g_send_size = 256 * 1024;
size_t g_recv_size = 1024 * 1024;
int g_rcvlowat = 256 * 1024;

bool g_zc_tx = false;
bool g_zc_rx = false;

void set_rcvlowat(int fd, int bytes) {
  if (bytes > 1) setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &bytes, sizeof bytes);
}

// Bulk data movers for the throughput scenario, on both the client and the target side.
// copy:     send()/recv() through a user-space buffer, like most applications.
// zerocopy: sendfile() from a memfd and splice() into /dev/null: the endpoints then cost a
//           fraction of the CPU and leave the two cores to the proxy under test.
constexpr size_t kSendFileSize = 8 * 1024 * 1024;

int shared_memfd() {
  static const int fd = [] {
    int f = memfd_create("socksbench", MFD_CLOEXEC);
    if (f < 0 || ftruncate(f, static_cast<off_t>(kSendFileSize)) != 0) {
      std::perror("memfd");
      std::exit(2);
    }
    std::vector<char> block(1 << 20, 'z');
    for (size_t off = 0; off < kSendFileSize; off += block.size()) {
      if (pwrite(f, block.data(), block.size(), static_cast<off_t>(off)) < 0) {
        std::perror("memfd write");
        std::exit(2);
      }
    }
    return f;
  }();
  return fd;
}

class BulkSender {
 public:
  BulkSender(size_t chunk, bool zerocopy) : chunk_(chunk), zerocopy_(zerocopy) {
    if (zerocopy_) {
      memfd_ = shared_memfd();
      chunk_ = std::min(chunk_, kSendFileSize);
    } else {
      buf_.assign(chunk_, 'd');
    }
  }
  ssize_t send_chunk(int fd) {
    if (!zerocopy_) return send(fd, buf_.data(), buf_.size(), MSG_NOSIGNAL);
    if (off_ + static_cast<off_t>(chunk_) > static_cast<off_t>(kSendFileSize)) off_ = 0;
    return sendfile(fd, memfd_, &off_, chunk_);  // SIGPIPE is ignored
  }

 private:
  size_t chunk_;
  bool zerocopy_;
  int memfd_ = -1;
  off_t off_ = 0;
  std::vector<char> buf_;
};

class BulkReceiver {
 public:
  BulkReceiver(size_t chunk, bool zerocopy) : chunk_(chunk), zerocopy_(zerocopy) {
    if (zerocopy_) {
      if (pipe2(pipe_, O_CLOEXEC) != 0) {
        std::perror("pipe2");
        std::exit(2);
      }
      int sz = fcntl(pipe_[1], F_SETPIPE_SZ, static_cast<int>(chunk_));
      if (sz > 0) chunk_ = static_cast<size_t>(sz);
      devnull_ = open("/dev/null", O_WRONLY | O_CLOEXEC);
      if (devnull_ < 0) {
        std::perror("/dev/null");
        std::exit(2);
      }
    } else {
      buf_.resize(chunk_);
    }
  }
  ~BulkReceiver() {
    if (zerocopy_) {
      close(pipe_[0]);
      close(pipe_[1]);
      close(devnull_);
    }
  }
  BulkReceiver(const BulkReceiver&) = delete;
  BulkReceiver& operator=(const BulkReceiver&) = delete;

  // Like recv(): bytes consumed, 0 at EOF, -1 with errno.
  ssize_t recv_chunk(int fd) {
    if (!zerocopy_) return recv(fd, buf_.data(), buf_.size(), 0);
    ssize_t n = splice(fd, nullptr, pipe_[1], nullptr, chunk_, SPLICE_F_MOVE);
    if (n <= 0) return n;
    size_t left = static_cast<size_t>(n);
    while (left > 0) {
      ssize_t m = splice(pipe_[0], nullptr, devnull_, nullptr, left, SPLICE_F_MOVE);
      if (m < 0 && errno == EINTR) continue;
      if (m <= 0) return -1;
      left -= static_cast<size_t>(m);
    }
    return n;
  }

 private:
  size_t chunk_;
  bool zerocopy_;
  int pipe_[2] = {-1, -1};
  int devnull_ = -1;
  std::vector<char> buf_;
};

void sink_conn(int fd) {
  set_rcvlowat(fd, g_rcvlowat);
  BulkReceiver rx(g_recv_size, g_zc_rx);
  for (;;) {
    ssize_t r = rx.recv_chunk(fd);
    if (r > 0) continue;
    if (r < 0 && errno == EINTR) continue;
    break;
  }
  close(fd);
}

void source_conn(int fd) {
  char go = 0;
  if (recv(fd, &go, 1, MSG_WAITALL) == 1) {
    BulkSender tx(g_send_size, g_zc_tx);
    for (;;) {
      ssize_t w = tx.send_chunk(fd);
      if (w > 0) continue;
      if (w < 0 && errno == EINTR) continue;
      break;
    }
  }
  close(fd);
}

void techo_conn(int fd) {
  set_nodelay(fd);
  std::vector<char> buf(65536);
  for (;;) {
    ssize_t r = recv(fd, buf.data(), buf.size(), 0);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0 || !send_all(fd, buf.data(), static_cast<size_t>(r))) break;
  }
  close(fd);
}

void accept_loop(int lfd, void (*handler)(int)) {
  for (;;) {
    int c = accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) {
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      continue;
    }
    try {
      std::thread(handler, c).detach();
    } catch (const std::exception&) {
      close(c);
    }
  }
}

// The echo service echoes every byte. A received chunk that ends in kCloseByte is echoed and then
// the server closes the connection itself: the session-setup and idle scenarios end sessions that
// way so that TIME_WAIT lands on listening ports (server side, proxy's accepted side) and never on
// ephemeral ports, which a proxy that binds its outgoing sockets before connecting (Dante) would
// otherwise run out of after a few ten thousand sessions.
constexpr char kCloseByte = 'Q';

struct EchoConn {
  int fd;
  std::vector<char> pending;
  size_t off = 0;
  bool close_after_flush = false;
};

// One epoll loop per thread; all share the listening socket (EPOLLEXCLUSIVE wakes one of them).
void echo_worker(int lfd) {
  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) {
    std::perror("epoll_create1");
    std::exit(2);
  }
  epoll_event lev{};
  lev.events = EPOLLIN | EPOLLEXCLUSIVE;
  lev.data.ptr = nullptr;
  epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev);
  std::vector<epoll_event> evs(512);
  std::vector<char> buf(65536);
  auto watch = [ep](EchoConn* c, uint32_t events) {
    epoll_event ev{};
    ev.events = events;
    ev.data.ptr = c;
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
  };
  for (;;) {
    int n = epoll_wait(ep, evs.data(), static_cast<int>(evs.size()), -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      std::perror("epoll_wait");
      std::exit(2);
    }
    for (int i = 0; i < n; ++i) {
      if (evs[i].data.ptr == nullptr) {
        for (int k = 0; k < 64; ++k) {
          int c = accept4(lfd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
          if (c < 0) break;
          set_nodelay(c);
          auto* conn = new EchoConn{c, {}, 0, false};
          epoll_event ev{};
          ev.events = EPOLLIN;
          ev.data.ptr = conn;
          if (epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev) != 0) {
            close(c);
            delete conn;
          }
        }
        continue;
      }
      auto* c = static_cast<EchoConn*>(evs[i].data.ptr);
      bool drop = false;
      if (c->pending.empty()) {
        ssize_t r = recv(c->fd, buf.data(), buf.size(), 0);
        if (r > 0) {
          c->close_after_flush = buf[static_cast<size_t>(r) - 1] == kCloseByte;
          ssize_t w = send(c->fd, buf.data(), static_cast<size_t>(r), MSG_NOSIGNAL);
          if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
              w = 0;
            } else {
              drop = true;
            }
          }
          if (!drop && w < r) {
            c->pending.assign(buf.data() + w, buf.data() + r);
            c->off = 0;
            watch(c, EPOLLOUT);
          } else if (!drop && c->close_after_flush) {
            drop = true;
          }
        } else if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
          drop = true;
        }
      } else {
        ssize_t w =
            send(c->fd, c->pending.data() + c->off, c->pending.size() - c->off, MSG_NOSIGNAL);
        if (w > 0) {
          c->off += static_cast<size_t>(w);
          if (c->off == c->pending.size()) {
            c->pending.clear();
            c->pending.shrink_to_fit();
            if (c->close_after_flush) {
              drop = true;
            } else {
              watch(c, EPOLLIN);
            }
          }
        } else if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
          drop = true;
        }
      }
      if (drop) {
        close(c->fd);  // also removes it from the epoll set
        delete c;
      }
    }
  }
}

struct Ports {
  int sink = 0, source = 0, echo = 0, techo = 0;
};

// Starts the four servers on background threads and returns their ports.
Ports start_servers(const Options& o) {
  g_send_size = o.buf;
  g_recv_size = o.rbuf;
  g_rcvlowat = o.rcvlowat;
  g_zc_tx = o.zc_tx;
  g_zc_rx = o.zc_rx;
  const std::string& host = o.target_host;
  const int echo_threads = o.serve_threads;
  Ports p;
  int sink_fd = make_listener(host, &p.sink);
  int source_fd = make_listener(host, &p.source);
  int echo_fd = make_listener(host, &p.echo);
  int techo_fd = make_listener(host, &p.techo);
  fcntl(echo_fd, F_SETFL, fcntl(echo_fd, F_GETFL) | O_NONBLOCK);
  std::thread(accept_loop, sink_fd, &sink_conn).detach();
  std::thread(accept_loop, source_fd, &source_conn).detach();
  std::thread(accept_loop, techo_fd, &techo_conn).detach();
  for (int i = 0; i < std::max(1, echo_threads); ++i) std::thread(echo_worker, echo_fd).detach();
  return p;
}

[[noreturn]] void serve_forever() {
  for (;;) pause();
}

int run_serve(const Options& o) {
  raise_nofile_limit();
  signal(SIGPIPE, SIG_IGN);
  Ports p = start_servers(o);
  JsonLine j;
  j.str("scenario", "serve")
      .str("address", o.target_host)
      .integer("pid", getpid())
      .integer("sink", p.sink)
      .integer("source", p.source)
      .integer("echo", p.echo)
      .integer("techo", p.techo);
  emit(j);
  serve_forever();
}

struct ServeChild {
  pid_t pid = -1;
  Ports ports;
};

// Forks a private target process (before any client thread exists) and reads its ports.
ServeChild spawn_serve(const Options& o) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) {
    std::perror("pipe2");
    std::exit(2);
  }
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) {
    std::perror("fork");
    std::exit(2);
  }
  if (pid == 0) {
    close(fds[0]);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(0);
    signal(SIGPIPE, SIG_IGN);
    Ports p = start_servers(o);
    char line[128];
    int n = std::snprintf(line, sizeof line, "%d %d %d %d\n", p.sink, p.source, p.echo, p.techo);
    if (write(fds[1], line, static_cast<size_t>(n)) != n) _exit(2);
    close(fds[1]);
    serve_forever();
  }
  close(fds[1]);
  std::string text;
  char c;
  while (read(fds[0], &c, 1) == 1 && c != '\n') text += c;
  close(fds[0]);
  ServeChild child;
  child.pid = pid;
  if (std::sscanf(text.c_str(), "%d %d %d %d", &child.ports.sink, &child.ports.source,
                  &child.ports.echo, &child.ports.techo) != 4) {
    std::fprintf(stderr, "socksbench: target process did not start\n");
    kill(pid, SIGKILL);
    std::exit(2);
  }
  return child;
}

// ---------------------------------------------------------------------------------------------
// /proc accounting for the proxy's process tree.

long long read_kib_field(const std::string& path, const char* field) {
  std::ifstream f(path);
  std::string line;
  size_t flen = std::strlen(field);
  while (std::getline(f, line)) {
    if (line.compare(0, flen, field) == 0) return std::strtoll(line.c_str() + flen, nullptr, 10);
  }
  return 0;
}

struct Mem {
  long long rss_kib = 0;
  long long pss_kib = 0;
  int processes = 0;
};

Mem tree_memory(const std::vector<pid_t>& roots) {
  Mem m;
  for (pid_t p : process_tree(roots)) {
    std::string base = "/proc/" + std::to_string(p);
    m.rss_kib += read_kib_field(base + "/status", "VmRSS:");
    m.pss_kib += read_kib_field(base + "/smaps_rollup", "Pss:");
    ++m.processes;
  }
  return m;
}

// CPU used during a measurement window by the proxy tree, by this process, by the target process
// and by everything else on the machine ("foreign": other people's builds on a shared box).
struct CpuMeter {
  struct Snap {
    double proxy = 0, self = 0, target = 0, machine = 0;
    Clock::time_point t;
  };
  std::vector<pid_t> proxy_pids;
  pid_t target_pid = 0;
  Snap a, b;

  Snap snap() const {
    Snap s;
    s.proxy = proxy_pids.empty() ? 0 : tree_cpu_seconds(proxy_pids);
    s.self = self_cpu_seconds();
    s.target = target_pid > 0 ? tree_cpu_seconds({target_pid}) : 0;
    s.machine = machine_busy_seconds();
    s.t = Clock::now();
    return s;
  }
  void start() { a = snap(); }
  void stop() { b = snap(); }
  double proxy() const { return b.proxy - a.proxy; }
  double self() const { return b.self - a.self; }
  double target() const { return b.target - a.target; }
  double foreign() const {
    return std::max(0.0, (b.machine - a.machine) - proxy() - self() - target());
  }
  // Share of the machine's CPU capacity during the window that went to other processes.
  double foreign_share() const {
    const double cap =
        seconds_between(a.t, b.t) * static_cast<double>(sysconf(_SC_NPROCESSORS_ONLN));
    return cap > 0 ? foreign() / cap : 0;
  }
  void add_to(JsonLine& j) const {
    j.num("client_cpu_s", self(), 2).num("target_cpu_s", target(), 2);
    j.num("foreign_cpu_s", foreign(), 2).num("foreign_share", foreign_share(), 3);
  }
};

// ---------------------------------------------------------------------------------------------
// SOCKS5 client.

struct Client {
  const Options& o;
  sockaddr_in target_base{};

  const sockaddr_in* src() const { return o.source ? &*o.source : nullptr; }

  // CONNECT request for an IPv4 target, RFC 1928; optional RFC 1929 sub-negotiation.
  bool socks5(int fd, uint16_t port, std::string* err) const {
    uint8_t b[520];
    const uint8_t method = o.auth ? 0x02 : 0x00;
    b[0] = 0x05;
    b[1] = 0x01;
    b[2] = method;
    if (!send_all(fd, b, 3)) return *err = io_error("send greeting"), false;
    if (!recv_all(fd, b, 2)) return *err = io_error("read method reply"), false;
    if (b[0] != 0x05) return *err = "method reply: bad version " + std::to_string(b[0]), false;
    if (b[1] == 0xFF) return *err = "proxy accepted none of the offered methods", false;
    if (b[1] != method)
      return *err = "proxy chose unexpected method " + std::to_string(b[1]), false;
    if (o.auth) {
      size_t n = 0;
      b[n++] = 0x01;
      b[n++] = static_cast<uint8_t>(o.user.size());
      std::memcpy(b + n, o.user.data(), o.user.size());
      n += o.user.size();
      b[n++] = static_cast<uint8_t>(o.pass.size());
      std::memcpy(b + n, o.pass.data(), o.pass.size());
      n += o.pass.size();
      if (!send_all(fd, b, n)) return *err = io_error("send username/password"), false;
      if (!recv_all(fd, b, 2)) return *err = io_error("read auth status"), false;
      if (b[1] != 0x00) return *err = "username/password rejected", false;
    }
    b[0] = 0x05;
    b[1] = 0x01;  // CONNECT
    b[2] = 0x00;
    b[3] = 0x01;  // IPv4
    std::memcpy(b + 4, &target_base.sin_addr, 4);
    uint16_t nport = htons(port);
    std::memcpy(b + 8, &nport, 2);
    if (!send_all(fd, b, 10)) return *err = io_error("send CONNECT"), false;
    if (!recv_all(fd, b, 4)) return *err = io_error("read CONNECT reply"), false;
    if (b[0] != 0x05) return *err = "CONNECT reply: bad version " + std::to_string(b[0]), false;
    if (b[1] != 0x00) return *err = "CONNECT refused, REP=" + std::to_string(b[1]), false;
    size_t rest;
    if (b[3] == 0x01) {
      rest = 4 + 2;
    } else if (b[3] == 0x04) {
      rest = 16 + 2;
    } else if (b[3] == 0x03) {
      if (!recv_all(fd, b + 4, 1)) return *err = io_error("read CONNECT reply"), false;
      rest = static_cast<size_t>(b[4]) + 2;
    } else {
      return *err = "CONNECT reply: bad ATYP " + std::to_string(b[3]), false;
    }
    if (!recv_all(fd, b + 8, rest)) return *err = io_error("read CONNECT reply address"), false;
    return true;
  }

  // A connected socket to the target `port`, through the proxy if one is configured.
  int open(uint16_t port, std::string* err) const {
    if (o.proxy) {
      int fd = tcp_connect(*o.proxy, src(), o.io_timeout_s, err);
      if (fd < 0) return -1;
      if (!socks5(fd, port, err)) {
        close(fd);
        return -1;
      }
      return fd;
    }
    sockaddr_in a = target_base;
    a.sin_port = htons(port);
    return tcp_connect(a, src(), o.io_timeout_s, err);
  }
};

struct FirstError {
  std::mutex mu;
  std::string text;
  std::atomic<long long> count{0};
  void add(const std::string& e) {
    count.fetch_add(1, std::memory_order_relaxed);
    std::lock_guard<std::mutex> lock(mu);
    if (text.empty()) text = e;
  }
};

JsonLine base_line(const Options& o) {
  JsonLine j;
  j.str("scenario", o.scenario);
  if (!o.label.empty()) j.str("label", o.label);
  j.str("mode", o.proxy ? "socks5" : "direct");
  if (o.proxy) {
    j.str("proxy", o.proxy_text);
  } else {
    j.null("proxy");
  }
  j.str("auth", o.auth ? "userpass" : "none");
  return j;
}

// ---------------------------------------------------------------------------------------------
// Scenarios.

int scenario_throughput(const Options& o, const Client& cl, const Ports& ports, pid_t target_pid) {
  const uint16_t port = static_cast<uint16_t>(o.upload ? ports.sink : ports.source);
  std::vector<int> fds;
  std::string err;
  for (int i = 0; i < o.streams; ++i) {
    int fd = cl.open(port, &err);
    if (fd < 0) {
      for (int f : fds) close(f);
      emit(base_line(o).integer("streams", o.streams).str("error", err));
      return 1;
    }
    fds.push_back(fd);
  }
  struct Result {
    unsigned long long bytes = 0;
    Clock::time_point end;
    std::string err;
    bool eof_timeout = false;
  };
  std::vector<Result> res(static_cast<size_t>(o.streams));
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  Clock::time_point t0;
  const auto dur =
      std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.duration_s));

  auto worker = [&](int i) {
    int fd = fds[static_cast<size_t>(i)];
    Result& r = res[static_cast<size_t>(i)];
    BulkSender tx(o.buf, o.zc_tx);
    BulkReceiver rx(o.rbuf, o.zc_rx);
    ready.fetch_add(1);
    while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
    const auto deadline = t0 + dur;
    if (o.upload) {
      while (Clock::now() < deadline) {
        ssize_t w = tx.send_chunk(fd);
        if (w < 0) {
          if (errno == EINTR) continue;
          r.err = io_error("send");
          break;
        }
        r.bytes += static_cast<unsigned long long>(w);
      }
      auto sent_end = Clock::now();
      // Half-close and wait until the sink's close comes back through the proxy: then every
      // byte has reached the target.
      shutdown(fd, SHUT_WR);
      for (;;) {
        pollfd p{fd, POLLIN, 0};
        int pr = poll(&p, 1, 5000);
        if (pr == 0) {
          r.eof_timeout = true;
          r.end = sent_end;
          break;
        }
        if (pr < 0 && errno == EINTR) continue;
        char tmp[4096];
        ssize_t n = recv(fd, tmp, sizeof tmp, 0);
        if (n > 0) continue;
        if (n < 0 && errno == EINTR) continue;
        r.end = Clock::now();
        break;
      }
    } else {
      char g = 'g';
      if (!send_all(fd, &g, 1)) {
        r.err = io_error("send go byte");
        r.end = Clock::now();
        return;
      }
      set_rcvlowat(fd, o.rcvlowat);
      while (Clock::now() < deadline) {
        ssize_t n = rx.recv_chunk(fd);
        if (n > 0) {
          r.bytes += static_cast<unsigned long long>(n);
          continue;
        }
        if (n < 0 && errno == EINTR) continue;
        r.err = io_error("recv");
        break;
      }
      r.end = Clock::now();
    }
  };

  std::vector<std::thread> threads;
  for (int i = 0; i < o.streams; ++i) threads.emplace_back(worker, i);
  while (ready.load() < o.streams) std::this_thread::yield();
  CpuMeter meter{o.pids, target_pid, {}, {}};
  meter.start();
  t0 = Clock::now();
  go.store(true, std::memory_order_release);
  for (auto& t : threads) t.join();
  meter.stop();
  const double cpu0 = 0, cpu1 = meter.proxy();
  for (int f : fds) close(f);

  unsigned long long bytes = 0;
  Clock::time_point end = t0;
  bool eof_timeout = false;
  std::string first_err;
  for (auto& r : res) {
    bytes += r.bytes;
    end = std::max(end, r.end);
    eof_timeout = eof_timeout || r.eof_timeout;
    if (first_err.empty()) first_err = r.err;
  }
  const double secs = seconds_between(t0, end);
  const double gib = static_cast<double>(bytes) / kGiB;
  JsonLine j = base_line(o);
  j.integer("streams", o.streams)
      .str("direction", o.upload ? "upload" : "download")
      .integer("send_size", static_cast<long long>(o.buf))
      .integer("recv_size", static_cast<long long>(o.rbuf))
      .integer("rcvlowat", o.rcvlowat)
      .str("tx", o.zc_tx ? "sendfile" : "send")
      .str("rx", o.zc_rx ? "splice" : "recv")
      .num("seconds", secs, 4)
      .integer("bytes", static_cast<long long>(bytes))
      .num("gib_per_s", secs > 0 ? gib / secs : NAN, 4);
  if (!o.pids.empty()) {
    // A relay cannot move bytes for free: no CPU time at all means the accounting missed the
    // process that did the work (say, one that exited unreaped); don't report a number then.
    const bool suspect = bytes > 0 && cpu1 - cpu0 <= 0;
    j.num("proxy_cpu_s", cpu1 - cpu0, 2)
        .num("cpu_s_per_gib", gib > 0 && !suspect ? (cpu1 - cpu0) / gib : NAN);
    if (suspect) j.boolean("cpu_suspect", true);
  } else {
    j.null("cpu_s_per_gib");
  }
  meter.add_to(j);
  if (o.upload) j.boolean("eof_timeout", eof_timeout);
  if (!first_err.empty()) j.str("error", first_err);
  emit(j);
  return first_err.empty() ? 0 : 1;
}

int scenario_setup(const Options& o, const Client& cl, const Ports& ports, pid_t target_pid) {
  const uint16_t port = static_cast<uint16_t>(ports.echo);
  std::atomic<long long> ok{0};
  FirstError errs;
  std::vector<std::vector<double>> lat(static_cast<size_t>(o.concurrency));
  std::vector<Clock::time_point> ends(static_cast<size_t>(o.concurrency));
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  Clock::time_point t0;
  const auto dur =
      std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.duration_s));

  auto worker = [&](int i) {
    auto& my_lat = lat[static_cast<size_t>(i)];
    my_lat.reserve(1 << 16);
    ready.fetch_add(1);
    while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
    const auto deadline = t0 + dur;
    std::string err;
    while (Clock::now() < deadline) {
      auto s = Clock::now();
      int fd = cl.open(port, &err);
      if (fd < 0) {
        errs.add(err);
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
        continue;
      }
      char c = kCloseByte;  // echoed, then the target closes
      if (!send_all(fd, &c, 1)) {
        errs.add(io_error("send echo byte"));
      } else if (!recv_all(fd, &c, 1)) {
        errs.add(io_error("read echo byte"));
      } else if (recv(fd, &c, 1, 0) != 0) {
        errs.add(io_error("wait for close after echo"));
      } else {
        ok.fetch_add(1, std::memory_order_relaxed);
        my_lat.push_back(std::chrono::duration<double, std::micro>(Clock::now() - s).count());
      }
      close(fd);
    }
    ends[static_cast<size_t>(i)] = Clock::now();
  };

  std::vector<std::thread> threads;
  for (int i = 0; i < o.concurrency; ++i) threads.emplace_back(worker, i);
  while (ready.load() < o.concurrency) std::this_thread::yield();
  CpuMeter meter{o.pids, target_pid, {}, {}};
  meter.start();
  t0 = Clock::now();
  go.store(true, std::memory_order_release);
  for (auto& t : threads) t.join();
  meter.stop();
  const double cpu0 = 0, cpu1 = meter.proxy();
  Clock::time_point end = t0;
  for (auto& e : ends) end = std::max(end, e);
  std::vector<double> all;
  for (auto& v : lat) all.insert(all.end(), v.begin(), v.end());
  const double secs = seconds_between(t0, end);
  const long long n = ok.load();
  JsonLine j = base_line(o);
  j.integer("concurrency", o.concurrency)
      .num("seconds", secs, 4)
      .integer("sessions", n)
      .integer("errors", errs.count.load())
      .num("sessions_per_s", secs > 0 ? static_cast<double>(n) / secs : NAN, 1)
      .num("session_p50_us", percentile(all, 0.50), 1)
      .num("session_p99_us", percentile(all, 0.99), 1);
  if (!o.pids.empty()) {
    j.num("proxy_cpu_s", cpu1 - cpu0, 2)
        .num("proxy_cpu_us_per_session", n > 0 ? (cpu1 - cpu0) / static_cast<double>(n) * 1e6 : NAN,
             1);
  }
  meter.add_to(j);
  if (!errs.text.empty()) j.str("first_error", errs.text);
  if (n == 0) j.str("error", errs.text.empty() ? "no session completed" : errs.text);
  emit(j);
  return n > 0 ? 0 : 1;
}

// One busy thread per CPU at SCHED_IDLE: it runs only when nothing else wants that CPU, so it
// takes no time from the proxy or the endpoints, but the vCPU never executes HLT. In a VM with
// guest halt-polling off, waking a halted vCPU costs a VM exit and tens of microseconds; this
// takes that (hypervisor) cost out of the round-trip figure.
class IdleSpinners {
 public:
  explicit IdleSpinners(bool on) {
    if (!on) return;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    for (long i = 0; i < std::max(1L, n); ++i) {
      threads_.emplace_back([this, i] {
        sched_param sp{};
        pthread_setschedparam(pthread_self(), SCHED_IDLE, &sp);
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(static_cast<int>(i), &set);
        pthread_setaffinity_np(pthread_self(), sizeof set, &set);
        while (!stop_.load(std::memory_order_relaxed)) {
        }
      });
    }
  }
  ~IdleSpinners() {
    stop_.store(true);
    for (auto& t : threads_) t.join();
  }

 private:
  std::atomic<bool> stop_{false};
  std::vector<std::thread> threads_;
};

// Pins every thread of the given process trees (and the calling thread) to one CPU and puts the
// old affinities back when destroyed. With everything on one vCPU a round trip costs only the
// software path (syscalls, context switches, the proxy's own work): no cross-vCPU wakeups, whose
// price in a VM is set by the hypervisor and is the same for every proxy.
class CpuPin {
 public:
  CpuPin(int cpu, const std::vector<pid_t>& roots) {
    if (cpu < 0) return;
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
    for (pid_t p : process_tree(roots)) {
      if (DIR* d = opendir(("/proc/" + std::to_string(p) + "/task").c_str())) {
        while (dirent* e = readdir(d)) {
          pid_t tid = static_cast<pid_t>(std::strtol(e->d_name, nullptr, 10));
          if (tid <= 0) continue;
          cpu_set_t old;
          if (sched_getaffinity(tid, sizeof old, &old) != 0) continue;
          if (sched_setaffinity(tid, sizeof one, &one) == 0) saved_.emplace_back(tid, old);
        }
        closedir(d);
      }
    }
    cpu_set_t old;
    if (sched_getaffinity(0, sizeof old, &old) == 0 && sched_setaffinity(0, sizeof one, &one) == 0)
      saved_.emplace_back(0, old);
  }
  ~CpuPin() {
    for (auto& [tid, set] : saved_) sched_setaffinity(tid, sizeof set, &set);
  }
  CpuPin(const CpuPin&) = delete;
  CpuPin& operator=(const CpuPin&) = delete;
  size_t threads() const { return saved_.size(); }

 private:
  std::vector<std::pair<pid_t, cpu_set_t>> saved_;
};

int scenario_latency(const Options& o, const Client& cl, const Ports& ports, pid_t target_pid) {
  std::string err;
  int fd = cl.open(static_cast<uint16_t>(ports.techo), &err);
  if (fd < 0) {
    emit(base_line(o).str("error", err));
    return 1;
  }
  IdleSpinners spinners(o.keep_awake);
  std::vector<pid_t> pin_roots = o.pids;
  if (target_pid > 0) pin_roots.push_back(target_pid);
  CpuPin pin(o.pin_cpu, pin_roots);
  std::vector<char> out(o.msg, 'p'), in(o.msg);
  std::vector<double> us;
  us.reserve(static_cast<size_t>(o.rounds));
  CpuMeter meter{o.pids, target_pid, {}, {}};
  meter.start();
  for (int i = 0; i < o.warmup + o.rounds; ++i) {
    auto s = Clock::now();
    if (!send_all(fd, out.data(), out.size()) || !recv_all(fd, in.data(), in.size())) {
      err = io_error("ping-pong");
      break;
    }
    if (i >= o.warmup) {
      us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - s).count());
    }
  }
  meter.stop();
  close(fd);
  double sum = 0;
  for (double v : us) sum += v;
  const size_t n = us.size();
  JsonLine j = base_line(o);
  j.integer("size", static_cast<long long>(o.msg))
      .integer("rounds", static_cast<long long>(n))
      .boolean("keep_awake", o.keep_awake)
      .integer("pin_cpu", o.pin_cpu)
      .integer("pinned_threads", static_cast<long long>(pin.threads()));
  j.num("mean_us", n ? sum / static_cast<double>(n) : NAN, 2);
  j.num("min_us", n ? *std::min_element(us.begin(), us.end()) : NAN, 2);
  j.num("p50_us", percentile(us, 0.50), 2);
  j.num("p90_us", percentile(us, 0.90), 2);
  j.num("p99_us", percentile(us, 0.99), 2);
  j.num("p999_us", percentile(us, 0.999), 2);
  j.num("max_us", n ? *std::max_element(us.begin(), us.end()) : NAN, 2);
  meter.add_to(j);
  if (!err.empty()) j.str("error", err);
  emit(j);
  return err.empty() ? 0 : 1;
}

int scenario_idle(const Options& o, const Client& cl, const Ports& ports) {
  const std::string note =
      "K=" + std::to_string(kFdLimitSessionsNote) +
      " is not possible here: a proxy needs 2 fds per session and the open-files hard limit is " +
      std::to_string(nofile_limit()) + " per process";
  if (o.pids.empty()) {
    emit(base_line(o).integer("sessions", o.sessions).str("error", "idle needs --pids"));
    return 1;
  }
  if (static_cast<long long>(o.sessions) + 64 > nofile_limit()) {
    emit(base_line(o)
             .integer("sessions", o.sessions)
             .str("error", "more sessions than this process's open-files limit allows")
             .str("note", note));
    return 1;
  }
  const Mem before = tree_memory(o.pids);
  const int nthreads = std::min(o.open_threads, o.sessions);
  std::vector<std::vector<int>> held(static_cast<size_t>(nthreads));
  FirstError errs;
  const uint16_t port = static_cast<uint16_t>(ports.echo);
  auto t0 = Clock::now();
  {
    std::vector<std::thread> threads;
    for (int t = 0; t < nthreads; ++t) {
      threads.emplace_back([&, t] {
        const int share = o.sessions / nthreads + (t < o.sessions % nthreads ? 1 : 0);
        std::string err;
        for (int i = 0; i < share; ++i) {
          int fd = cl.open(port, &err);
          if (fd < 0) {
            errs.add(err);
            continue;
          }
          char c = 'i';
          if (!send_all(fd, &c, 1) || !recv_all(fd, &c, 1)) {
            errs.add(io_error("first echo"));
            close(fd);
            continue;
          }
          held[static_cast<size_t>(t)].push_back(fd);
        }
      });
    }
    for (auto& th : threads) th.join();
  }
  const double open_secs = seconds_between(t0, Clock::now());
  long long opened = 0;
  for (auto& v : held) opened += static_cast<long long>(v.size());
  std::this_thread::sleep_for(std::chrono::duration<double>(o.idle_wait_s));
  const Mem after = tree_memory(o.pids);
  // Are they all still established end to end?
  std::atomic<long long> alive{0};
  {
    std::vector<std::thread> threads;
    for (int t = 0; t < nthreads; ++t) {
      threads.emplace_back([&, t] {
        for (int fd : held[static_cast<size_t>(t)]) {
          char c = kCloseByte;  // echoed, then the target closes: TIME_WAIT stays off the
                                // proxy's outgoing (ephemeral) ports
          if (send_all(fd, &c, 1) && recv_all(fd, &c, 1) && c == kCloseByte &&
              recv(fd, &c, 1, 0) == 0)
            alive.fetch_add(1);
        }
      });
    }
    for (auto& th : threads) th.join();
  }
  for (auto& v : held) {
    for (int fd : v) close(fd);
  }
  JsonLine j = base_line(o);
  j.integer("sessions", o.sessions)
      .integer("opened", opened)
      .integer("alive", alive.load())
      .integer("errors", errs.count.load())
      .num("open_seconds", open_secs, 2)
      .num("wait_seconds", o.idle_wait_s, 1)
      .integer("rss_before_kib", before.rss_kib)
      .integer("rss_after_kib", after.rss_kib)
      .integer("pss_before_kib", before.pss_kib)
      .integer("pss_after_kib", after.pss_kib)
      .integer("processes_before", before.processes)
      .integer("processes_after", after.processes)
      .num("kib_per_session",
           opened > 0
               ? static_cast<double>(after.rss_kib - before.rss_kib) / static_cast<double>(opened)
               : NAN,
           2)
      .num("pss_kib_per_session",
           opened > 0
               ? static_cast<double>(after.pss_kib - before.pss_kib) / static_cast<double>(opened)
               : NAN,
           2)
      .integer("fd_hard_limit", nofile_limit())
      .str("note", note);
  if (!errs.text.empty()) j.str("first_error", errs.text);
  emit(j);
  return opened == o.sessions ? 0 : 1;
}

void start_watchdog(const Options& o) {
  double limit = o.watchdog_s;
  if (limit <= 0) {
    if (o.scenario == "idle") {
      limit = 300;
    } else if (o.scenario == "latency") {
      limit = 120 + static_cast<double>(o.rounds) / 1000.0;
    } else {
      limit = o.duration_s + 60;
    }
  }
  std::thread([limit, o] {
    std::this_thread::sleep_for(std::chrono::duration<double>(limit));
    emit(base_line(o).str("error", "watchdog: scenario did not finish in " +
                                       std::to_string(static_cast<int>(limit)) + " s"));
    _exit(3);
  }).detach();
}

}  // namespace

int main(int argc, char** argv) {
  Options o = parse_args(argc, argv);
  if (o.scenario == "serve") return run_serve(o);
  if (o.scenario != "throughput" && o.scenario != "setup" && o.scenario != "latency" &&
      o.scenario != "idle")
    usage_error("unknown subcommand " + o.scenario);
  raise_nofile_limit();
  signal(SIGPIPE, SIG_IGN);

  ServeChild child;
  Ports ports;
  if (o.targets) {
    ports = Ports{(*o.targets)[0], (*o.targets)[1], (*o.targets)[2], (*o.targets)[3]};
  } else {
    child = spawn_serve(o);  // before any thread of ours exists
    ports = child.ports;
  }
  start_watchdog(o);

  Client cl{o, {}};
  if (!parse_ipv4(o.target_host, 0, &cl.target_base)) usage_error("bad --target-host");

  int rc = 0;
  try {
    if (o.scenario == "throughput") {
      rc = scenario_throughput(o, cl, ports, child.pid > 0 ? child.pid : 0);
    } else if (o.scenario == "setup") {
      rc = scenario_setup(o, cl, ports, child.pid);
    } else if (o.scenario == "latency") {
      rc = scenario_latency(o, cl, ports, child.pid);
    } else {
      rc = scenario_idle(o, cl, ports);
    }
  } catch (const std::exception& e) {
    emit(base_line(o).str("error", std::string("exception: ") + e.what()));
    rc = 2;
  }
  if (child.pid > 0) {
    kill(child.pid, SIGKILL);
    waitpid(child.pid, nullptr, 0);
  }
  return rc;
}
