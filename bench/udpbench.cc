// udpbench: a loopback benchmark of SOCKS5 UDP ASSOCIATE relays (RFC 1928 section 7), with a
// built-in UDP echo target.
//
// Standalone on purpose, like socksbench: plain POSIX sockets and threads, no dependency on the
// project's libraries, so it measures socksgate, Dante or a direct path the same way.
//
// Subcommands (each client scenario prints exactly one JSON line on stdout):
//   udpbench throughput [--window W(16)] [--size BYTES(64)] [--duration S(3)] [--warmup-s S(0.3)]
//                       [--loss-timeout-ms MS(20)] [--drain-ms MS(100)]
//   udpbench latency    [--rounds N(20000)] [--warmup N(1000)] [--size BYTES(64)] [--pin-cpu N]
//   udpbench echo       only the echo target: prints {"port": P} and echoes until killed
// Common options:
//   --proxy HOST:PORT     go through this SOCKS5 proxy (IPv4): TCP control connection, greeting,
//                         UDP ASSOCIATE with DST 0.0.0.0:0, datagrams to the relay address from
//                         the reply; without it the scenario runs direct (no header)
//   --user U --pass P     offer RFC 1929 username/password instead of "no authentication"
//   --source ADDR         client source address for the control connection and the UDP socket
//   --pids PID[,PID...]   proxy processes: CPU time is summed over their process trees (Dante
//                         forks; its UDP relaying runs in an io-child)
//   --target PORT         use an already running `udpbench echo` on 127.0.0.1:PORT instead of
//                         forking a private one
//   --label TEXT          copied into the output line
//
// throughput: one association, W datagrams in flight. W are sent, then one more for every reply;
//   a datagram without a reply after --loss-timeout-ms is counted as lost and replaced, so the
//   window never stalls (a reply that turns up later is counted as "late" and not replaced).
//   After --warmup-s seconds the replies are counted for --duration seconds. The headline figure
//   is round_trips_per_s (replies per second). Every round trip is TWO datagrams relayed by the
//   proxy (client -> target and target -> client): relayed_datagrams_per_s = 2 x round trips.
//   After the run nothing more is sent, and the replies still in flight are collected (not
//   counted) for up to --drain-ms before the control connection closes.
//   proxy_cpu_s_per_million_datagrams is per million RELAYED datagrams (both directions).
// latency: one datagram in flight; p50/p99 of the send -> reply time after the warm-up rounds.
//   A datagram without a reply after 1 s is counted as lost and the next one is sent.
//
// The echo target is a forked child process (its CPU time is reported as target_cpu_s): one
// thread, recvmmsg()/sendmmsg() in batches of up to 64, each datagram back to its sender.

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <map>
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

void emit(const JsonLine& j) {
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
  std::optional<sockaddr_in> source;
  std::vector<pid_t> pids;
  std::string label;
  int target_port = 0;  // 0: fork a private echo target
  int io_timeout_s = 10;
  double watchdog_s = 0;
  size_t size = 64;
  // throughput
  int window = 16;
  double duration_s = 3;
  double warmup_s = 0.3;
  double loss_timeout_ms = 20;
  double drain_ms = 100;  // after the run: wait this long for the replies still in flight
  // latency
  int rounds = 20000;
  int warmup = 1000;
  int pin_cpu = -1;
};

[[noreturn]] void usage_error(const std::string& msg) {
  std::fprintf(stderr, "udpbench: %s\n(see the comment at the top of bench/udpbench.cc)\n",
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
    } else if (k == "--source") {
      sockaddr_in a{};
      if (!parse_ipv4(val(), 0, &a)) usage_error("--source wants an IPv4 address");
      o.source = a;
    } else if (k == "--pids") {
      std::istringstream is(val());
      std::string p;
      while (std::getline(is, p, ','))
        if (!p.empty()) o.pids.push_back(static_cast<pid_t>(to_int(p, "pid")));
    } else if (k == "--label") {
      o.label = val();
    } else if (k == "--target") {
      o.target_port = static_cast<int>(to_int(val(), "target port"));
    } else if (k == "--io-timeout") {
      o.io_timeout_s = static_cast<int>(to_int(val(), "io timeout"));
    } else if (k == "--watchdog") {
      o.watchdog_s = to_double(val(), "watchdog");
    } else if (k == "--size") {
      o.size = static_cast<size_t>(to_int(val(), "size"));
    } else if (k == "--window") {
      o.window = static_cast<int>(to_int(val(), "window"));
    } else if (k == "--duration") {
      o.duration_s = to_double(val(), "duration");
    } else if (k == "--warmup-s") {
      o.warmup_s = to_double(val(), "warmup-s");
    } else if (k == "--loss-timeout-ms") {
      o.loss_timeout_ms = to_double(val(), "loss timeout");
    } else if (k == "--drain-ms") {
      o.drain_ms = to_double(val(), "drain ms");
    } else if (k == "--rounds") {
      o.rounds = static_cast<int>(to_int(val(), "rounds"));
    } else if (k == "--warmup") {
      o.warmup = static_cast<int>(to_int(val(), "warmup"));
    } else if (k == "--pin-cpu") {
      o.pin_cpu = static_cast<int>(to_int(val(), "pin cpu"));
    } else {
      usage_error("unknown option " + k);
    }
  }
  if (o.user.size() > 255 || o.pass.size() > 255) usage_error("user/pass longer than 255 bytes");
  // 16 bytes of sequence number and slot index; 65507 is the IPv4 UDP payload limit, less the
  // 10-byte SOCKS header.
  if (o.size < 16 || o.size > 65497) usage_error("--size 16..65497");
  if (o.window < 1 || o.window > 4096) usage_error("--window 1..4096");
  if (o.duration_s <= 0 || o.warmup_s < 0) usage_error("--duration > 0, --warmup-s >= 0");
  if (o.loss_timeout_ms < 0.1) usage_error("--loss-timeout-ms >= 0.1");
  if (o.rounds < 1 || o.warmup < 0) usage_error("--rounds >= 1, --warmup >= 0");
  return o;
}

// ---------------------------------------------------------------------------------------------
// Socket helpers.

void set_timeouts(int fd, double seconds) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(seconds);
  tv.tv_usec = static_cast<suseconds_t>((seconds - std::floor(seconds)) * 1e6);
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

void set_buffers(int fd, int bytes) {
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof bytes);
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof bytes);
}

std::string format_addr(const sockaddr_in& a) {
  char ip[INET_ADDRSTRLEN] = "?";
  inet_ntop(AF_INET, &a.sin_addr, ip, sizeof ip);
  return std::string(ip) + ":" + std::to_string(ntohs(a.sin_port));
}

// ---------------------------------------------------------------------------------------------
// The echo target.

constexpr int kBatch = 64;
constexpr size_t kMaxDatagram = 65536;

[[noreturn]] void echo_forever(int fd) {
  std::vector<std::vector<uint8_t>> bufs(kBatch, std::vector<uint8_t>(kMaxDatagram));
  std::array<iovec, kBatch> iov{};
  std::array<sockaddr_in, kBatch> from{};
  std::array<mmsghdr, kBatch> msgs{};
  for (;;) {
    for (int i = 0; i < kBatch; ++i) {
      iov[i] = {bufs[static_cast<size_t>(i)].data(), kMaxDatagram};
      msgs[i] = {};
      msgs[i].msg_hdr.msg_iov = &iov[i];
      msgs[i].msg_hdr.msg_iovlen = 1;
      msgs[i].msg_hdr.msg_name = &from[i];
      msgs[i].msg_hdr.msg_namelen = sizeof from[i];
    }
    int n = recvmmsg(fd, msgs.data(), kBatch, MSG_WAITFORONE, nullptr);
    if (n <= 0) {
      if (n < 0 && errno != EINTR && errno != ECONNREFUSED) {
        std::perror("udpbench echo: recvmmsg");
        std::exit(2);
      }
      continue;
    }
    for (int i = 0; i < n; ++i) iov[i].iov_len = msgs[i].msg_len;  // echo exactly what came
    int done = 0;
    while (done < n) {
      int s = sendmmsg(fd, msgs.data() + done, static_cast<unsigned>(n - done), 0);
      if (s < 0) {
        if (errno == EINTR) continue;
        ++done;  // e.g. ECONNREFUSED from an earlier ICMP error: skip that datagram
        continue;
      }
      done += s;
    }
  }
}

int make_echo_socket(int* port) {
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  parse_ipv4("127.0.0.1", 0, &a);
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    std::perror("udpbench echo: bind");
    std::exit(2);
  }
  set_buffers(fd, 4 << 20);
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  *port = ntohs(a.sin_port);
  return fd;
}

struct EchoChild {
  pid_t pid = -1;
  int port = 0;
};

// Forks the private echo target (before any thread of ours exists) and reads its port.
EchoChild spawn_echo() {
  int port = 0;
  int fd = make_echo_socket(&port);
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) {
    std::perror("fork");
    std::exit(2);
  }
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(0);
    echo_forever(fd);
  }
  close(fd);
  return {pid, port};
}

// ---------------------------------------------------------------------------------------------
// /proc accounting for the proxy's process tree: process_tree(), tree_cpu_seconds() from
// bench_util.h.

// CPU used during a measurement window by the proxy tree, by this process, by the echo target and
// by everything else on the machine ("foreign": other people's work on a shared box).
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
  double foreign_share() const {
    const double cap =
        seconds_between(a.t, b.t) * static_cast<double>(sysconf(_SC_NPROCESSORS_ONLN));
    return cap > 0 ? foreign() / cap : 0;
  }
  void add_to(JsonLine& j) const {
    if (!proxy_pids.empty()) {
      j.num("proxy_cpu_s", proxy(), 3);
    } else {
      j.null("proxy_cpu_s");
    }
    j.num("client_cpu_s", self(), 2).num("target_cpu_s", target(), 2);
    j.num("foreign_cpu_s", foreign(), 2).num("foreign_share", foreign_share(), 3);
  }
};

// Pins every thread of the given process trees (and the calling thread) to one CPU and puts the
// old affinities back when destroyed (as socksbench latency --pin-cpu).
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

// ---------------------------------------------------------------------------------------------
// The client side: a UDP socket that reaches the echo target directly or through a SOCKS5 UDP
// relay.

struct Path {
  int udp = -1;      // connected to the relay (proxy) or to the target (direct)
  int control = -1;  // the association's TCP control connection (proxy only)
  sockaddr_in target{};
  sockaddr_in relay{};
  size_t header = 0;  // 10 through a proxy (IPv4 RFC 1928 UDP header), 0 direct
  std::array<uint8_t, 10> hdr{};

  ~Path() {
    if (udp >= 0) close(udp);
    if (control >= 0) close(control);
  }
};

int tcp_connect(const sockaddr_in& addr, const sockaddr_in* source, int timeout_s,
                std::string* err) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *err = errno_text("socket");
    return -1;
  }
  if (source && bind(fd, reinterpret_cast<const sockaddr*>(source), sizeof *source) != 0) {
    *err = errno_text("bind source");
    close(fd);
    return -1;
  }
  set_timeouts(fd, timeout_s);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  while (connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    if (errno == EINTR) continue;
    *err = errno_text("connect");
    close(fd);
    return -1;
  }
  return fd;
}

// Greeting, optional RFC 1929, UDP ASSOCIATE with DST 0.0.0.0:0; returns the relay address.
bool udp_associate(const Options& o, int fd, sockaddr_in* relay, std::string* err) {
  uint8_t b[520];
  const uint8_t method = o.auth ? 0x02 : 0x00;
  b[0] = 0x05;
  b[1] = 0x01;
  b[2] = method;
  if (!send_all(fd, b, 3)) return *err = io_error("send greeting"), false;
  if (!recv_all(fd, b, 2)) return *err = io_error("read method reply"), false;
  if (b[0] != 0x05) return *err = "method reply: bad version " + std::to_string(b[0]), false;
  if (b[1] == 0xFF) return *err = "proxy accepted none of the offered methods", false;
  if (b[1] != method) return *err = "proxy chose unexpected method " + std::to_string(b[1]), false;
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
  // 05 03 00 01 0.0.0.0 0: "I will send from an address I do not know yet".
  const uint8_t req[10] = {0x05, 0x03, 0x00, 0x01, 0, 0, 0, 0, 0, 0};
  if (!send_all(fd, req, sizeof req)) return *err = io_error("send UDP ASSOCIATE"), false;
  if (!recv_all(fd, b, 4)) return *err = io_error("read UDP ASSOCIATE reply"), false;
  if (b[0] != 0x05) return *err = "UDP ASSOCIATE reply: bad version " + std::to_string(b[0]), false;
  if (b[1] != 0x00) return *err = "UDP ASSOCIATE refused, REP=" + std::to_string(b[1]), false;
  if (b[3] != 0x01) {
    return *err = "UDP ASSOCIATE reply: ATYP " + std::to_string(b[3]) + " (want IPv4)", false;
  }
  if (!recv_all(fd, b + 4, 6)) return *err = io_error("read UDP ASSOCIATE reply address"), false;
  sockaddr_in r{};
  r.sin_family = AF_INET;
  std::memcpy(&r.sin_addr, b + 4, 4);
  std::memcpy(&r.sin_port, b + 8, 2);
  if (r.sin_addr.s_addr == htonl(INADDR_ANY)) r.sin_addr = o.proxy->sin_addr;  // "same host"
  *relay = r;
  return true;
}

bool open_path(const Options& o, int target_port, Path* p, std::string* err) {
  parse_ipv4("127.0.0.1", target_port, &p->target);
  if (o.proxy) {
    p->control = tcp_connect(*o.proxy, o.source ? &*o.source : nullptr, o.io_timeout_s, err);
    if (p->control < 0) return false;
    if (!udp_associate(o, p->control, &p->relay, err)) return false;
    p->header = 10;
    p->hdr = {0x00, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0};
    std::memcpy(p->hdr.data() + 4, &p->target.sin_addr, 4);
    std::memcpy(p->hdr.data() + 8, &p->target.sin_port, 2);
  }
  p->udp = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (p->udp < 0) return *err = errno_text("udp socket"), false;
  set_buffers(p->udp, 4 << 20);
  if (o.source) {
    sockaddr_in s = *o.source;
    s.sin_port = 0;
    if (bind(p->udp, reinterpret_cast<sockaddr*>(&s), sizeof s) != 0)
      return *err = errno_text("bind udp source"), false;
  }
  const sockaddr_in& peer = o.proxy ? p->relay : p->target;
  // Connected: send()/recv() without addresses, and the kernel drops anything not from the peer.
  if (connect(p->udp, reinterpret_cast<const sockaddr*>(&peer), sizeof peer) != 0)
    return *err = errno_text("udp connect"), false;
  return true;
}

// Datagram layout after the SOCKS header (if any): seq (8 bytes), slot (4), magic (4), filler.
constexpr uint32_t kMagic = 0x75647062;  // "udpb"

void fill(const Path& p, std::vector<uint8_t>& buf, uint64_t seq, uint32_t slot) {
  uint8_t* d = buf.data() + p.header;
  std::memcpy(d, &seq, 8);
  std::memcpy(d + 8, &slot, 4);
  std::memcpy(d + 12, &kMagic, 4);
}

// Checks a reply (header and payload size); on success *seq and *slot are set.
bool parse_reply(const Path& p, const uint8_t* d, size_t n, size_t size, uint64_t* seq,
                 uint32_t* slot) {
  if (n != p.header + size) return false;
  if (p.header != 0 && std::memcmp(d, p.hdr.data(), p.header) != 0) return false;
  uint32_t magic;
  std::memcpy(&magic, d + p.header + 12, 4);
  if (magic != kMagic) return false;
  std::memcpy(seq, d + p.header, 8);
  std::memcpy(slot, d + p.header + 8, 4);
  return true;
}

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
  j.integer("size", static_cast<long long>(o.size));
  return j;
}

// ---------------------------------------------------------------------------------------------
// Scenarios.

int scenario_throughput(const Options& o, int target_port, pid_t target_pid) {
  Path p;
  std::string err;
  if (!open_path(o, target_port, &p, &err)) {
    emit(base_line(o).str("error", err));
    return 1;
  }
  const size_t W = static_cast<size_t>(o.window);
  const size_t dlen = p.header + o.size;
  struct Slot {
    uint64_t seq = 0;
    Clock::time_point sent;
  };
  std::vector<Slot> slots(W);
  // Send side: one buffer per slot (sendmmsg sends the refills of one pass together).
  std::vector<std::vector<uint8_t>> sbuf(W, std::vector<uint8_t>(dlen, 'u'));
  for (auto& b : sbuf) std::memcpy(b.data(), p.hdr.data(), p.header);
  std::vector<iovec> siov(W);
  std::vector<mmsghdr> smsg(W);
  // Receive side.
  std::vector<std::vector<uint8_t>> rbuf(kBatch, std::vector<uint8_t>(kMaxDatagram));
  std::array<iovec, kBatch> riov{};
  std::array<mmsghdr, kBatch> rmsg{};

  const auto loss_timeout = std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double, std::milli>(o.loss_timeout_ms));
  uint64_t next_seq = 1;
  long long sent = 0, replies = 0, late = 0, bad = 0, lost = 0, send_errors = 0;
  long long send_calls = 0, recv_calls = 0;
  double rtt_sum_us = 0;
  bool counting = false;
  long long c_replies = 0, c_lost = 0, c_late = 0, c_bad = 0;
  double c_rtt_sum_us = 0;
  std::vector<uint32_t> refill;
  refill.reserve(W);

  auto send_slots = [&](const std::vector<uint32_t>& which) {
    const auto now = Clock::now();
    for (size_t i = 0; i < which.size(); ++i) {
      uint32_t s = which[i];
      slots[s].seq = next_seq++;
      slots[s].sent = now;
      fill(p, sbuf[s], slots[s].seq, s);
      siov[i] = {sbuf[s].data(), dlen};
      smsg[i] = {};
      smsg[i].msg_hdr.msg_iov = &siov[i];
      smsg[i].msg_hdr.msg_iovlen = 1;
    }
    size_t done = 0;
    while (done < which.size()) {
      ++send_calls;
      int r = sendmmsg(p.udp, smsg.data() + done, static_cast<unsigned>(which.size() - done), 0);
      if (r < 0) {
        if (errno == EINTR) continue;
        ++send_errors;  // e.g. ECONNREFUSED (an ICMP error for an earlier datagram), ENOBUFS:
        ++done;         // that datagram is lost; the loss timeout replaces it
        continue;
      }
      done += static_cast<size_t>(r);
    }
    sent += static_cast<long long>(which.size());
  };

  CpuMeter meter{o.pids, target_pid, {}, {}};
  const auto t_start = Clock::now();
  const auto t_count = t_start + std::chrono::duration_cast<Clock::duration>(
                                     std::chrono::duration<double>(o.warmup_s));
  const auto t_end = t_count + std::chrono::duration_cast<Clock::duration>(
                                   std::chrono::duration<double>(o.duration_s));
  Clock::time_point t_counted_from{}, t_counted_to{};
  for (uint32_t s = 0; s < W; ++s) refill.push_back(s);
  send_slots(refill);
  refill.clear();
  for (;;) {
    auto now = Clock::now();
    if (!counting && now >= t_count) {
      counting = true;
      meter.start();
      t_counted_from = Clock::now();
      c_replies = replies, c_lost = lost, c_late = late, c_bad = bad, c_rtt_sum_us = rtt_sum_us;
    }
    if (now >= t_end) break;
    // Wait for replies until the oldest datagram in flight times out (or the run ends).
    auto oldest = slots[0].sent;
    for (const auto& s : slots) oldest = std::min(oldest, s.sent);
    auto wake = std::min(oldest + loss_timeout, counting ? t_end : t_count);
    auto wait = std::max(Clock::duration::zero(), wake - now);
    timespec ts{};
    auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(wait).count();
    ts.tv_sec = static_cast<time_t>(ns / 1000000000);
    ts.tv_nsec = static_cast<long>(ns % 1000000000);
    pollfd pfd{p.udp, POLLIN, 0};
    int pr = ppoll(&pfd, 1, &ts, nullptr);
    if (pr < 0 && errno != EINTR) {
      err = errno_text("ppoll");
      break;
    }
    if (pr > 0) {
      for (int i = 0; i < kBatch; ++i) {
        riov[i] = {rbuf[static_cast<size_t>(i)].data(), kMaxDatagram};
        rmsg[i] = {};
        rmsg[i].msg_hdr.msg_iov = &riov[i];
        rmsg[i].msg_hdr.msg_iovlen = 1;
      }
      ++recv_calls;
      int n = recvmmsg(p.udp, rmsg.data(), kBatch, MSG_DONTWAIT, nullptr);
      if (n < 0 && errno != EAGAIN && errno != EINTR && errno != ECONNREFUSED) {
        err = errno_text("recvmmsg");
        break;
      }
      const auto got = Clock::now();
      for (int i = 0; i < n; ++i) {
        uint64_t seq;
        uint32_t slot;
        if (!parse_reply(p, rbuf[static_cast<size_t>(i)].data(), rmsg[i].msg_len, o.size, &seq,
                         &slot)) {
          ++bad;
          continue;
        }
        if (slot >= W || slots[slot].seq != seq) {
          ++late;  // declared lost before, or a duplicate: its slot has moved on
          continue;
        }
        ++replies;
        rtt_sum_us += std::chrono::duration<double, std::micro>(got - slots[slot].sent).count();
        slots[slot].seq = 0;
        refill.push_back(slot);
      }
    }
    now = Clock::now();
    for (uint32_t s = 0; s < W; ++s) {
      if (slots[s].seq != 0 && now - slots[s].sent >= loss_timeout) {
        ++lost;
        slots[s].seq = 0;
        refill.push_back(s);
      }
    }
    if (!refill.empty()) {
      send_slots(refill);
      refill.clear();
    }
  }
  if (counting) {
    t_counted_to = Clock::now();
    meter.stop();
  }
  // Drain: no more sends; collect the replies still in flight (not counted) so that the control
  // connection closes on a quiet association, as a well-behaved client would.
  long long drained = 0;
  const auto t_drain_end =
      Clock::now() + std::chrono::duration_cast<Clock::duration>(
                         std::chrono::duration<double, std::milli>(o.drain_ms));
  long long inflight = 0;
  for (const auto& s : slots) inflight += s.seq != 0 ? 1 : 0;
  while (drained < inflight && err.empty()) {
    auto now = Clock::now();
    if (now >= t_drain_end) break;
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(t_drain_end - now).count();
    pollfd pfd{p.udp, POLLIN, 0};
    if (poll(&pfd, 1, static_cast<int>(std::max<long long>(1, ms))) <= 0) continue;
    for (int i = 0; i < kBatch; ++i) {
      riov[i] = {rbuf[static_cast<size_t>(i)].data(), kMaxDatagram};
      rmsg[i] = {};
      rmsg[i].msg_hdr.msg_iov = &riov[i];
      rmsg[i].msg_hdr.msg_iovlen = 1;
    }
    int n = recvmmsg(p.udp, rmsg.data(), kBatch, MSG_DONTWAIT, nullptr);
    if (n > 0) drained += n;
  }
  const double secs = counting ? seconds_between(t_counted_from, t_counted_to) : 0;
  const long long n_rt = replies - c_replies;
  const double rt_per_s = secs > 0 ? static_cast<double>(n_rt) / secs : NAN;
  const double relayed = 2.0 * static_cast<double>(n_rt);
  JsonLine j = base_line(o);
  j.integer("window", o.window).num("duration_s", secs, 3);
  if (o.proxy) j.str("relay", format_addr(p.relay));
  j.num("round_trips_per_s", rt_per_s, 0)
      .num("relayed_datagrams_per_s", secs > 0 ? relayed / secs : NAN, 0)
      .integer("round_trips", n_rt)
      .integer("lost", lost - c_lost)
      .integer("late", late - c_late)
      .integer("bad_replies", bad - c_bad)
      .num("loss_share",
           n_rt + (lost - c_lost) > 0
               ? static_cast<double>(lost - c_lost) / static_cast<double>(n_rt + lost - c_lost)
               : NAN,
           5)
      .num("mean_rtt_us", n_rt > 0 ? (rtt_sum_us - c_rtt_sum_us) / static_cast<double>(n_rt) : NAN,
           1)
      .integer("sent_total", sent)
      .integer("drained_after_run", drained)
      .integer("send_errors", send_errors)
      .num("datagrams_per_send_call",
           send_calls ? static_cast<double>(sent) / static_cast<double>(send_calls) : NAN, 2)
      .num("datagrams_per_recv_call",
           recv_calls ? static_cast<double>(replies + late + bad) / static_cast<double>(recv_calls)
                      : NAN,
           2);
  if (!o.pids.empty() && n_rt > 0) {
    j.num("proxy_cpu_s_per_million_datagrams", meter.proxy() / (relayed / 1e6), 3);
    j.num("proxy_cpu_s_per_million_round_trips", meter.proxy() / (static_cast<double>(n_rt) / 1e6),
          3);
    j.num("proxy_cpu_share", secs > 0 ? meter.proxy() / secs : NAN, 3);  // 1.0 = one full core
  }
  meter.add_to(j);
  if (n_rt == 0 && err.empty()) err = "no replies at all";
  if (!err.empty()) j.str("error", err);
  emit(j);
  return err.empty() ? 0 : 1;
}

int scenario_latency(const Options& o, int target_port, pid_t target_pid) {
  Path p;
  std::string err;
  if (!open_path(o, target_port, &p, &err)) {
    emit(base_line(o).str("error", err));
    return 1;
  }
  set_timeouts(p.udp, 1.0);
  std::vector<double> us;
  us.reserve(static_cast<size_t>(o.rounds));
  std::vector<pid_t> pin_roots = o.pids;
  if (target_pid > 0) pin_roots.push_back(target_pid);
  CpuPin pin(o.pin_cpu, pin_roots);
  const size_t dlen = p.header + o.size;
  std::vector<uint8_t> out(dlen, 'l'), in(kMaxDatagram);
  std::memcpy(out.data(), p.hdr.data(), p.header);
  long long lost = 0, late = 0, bad = 0;
  uint64_t seq = 0;
  CpuMeter meter{o.pids, target_pid, {}, {}};
  meter.start();
  const int total = o.warmup + o.rounds;
  for (int i = 0; i < total && err.empty(); ++i) {
    fill(p, out, ++seq, 0);
    const auto s = Clock::now();
    if (send(p.udp, out.data(), out.size(), 0) < 0) {
      if (errno == ECONNREFUSED || errno == ENOBUFS) {
        ++lost;
        continue;
      }
      err = errno_text("send");
      break;
    }
    for (;;) {
      ssize_t n = recv(p.udp, in.data(), in.size(), 0);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
          ++lost;  // 1 s without a reply
          if (lost > 10) err = "more than 10 datagrams lost (1 s timeout each)";
          break;
        }
        if (errno == ECONNREFUSED) continue;
        err = errno_text("recv");
        break;
      }
      uint64_t rseq;
      uint32_t slot;
      if (!parse_reply(p, in.data(), static_cast<size_t>(n), o.size, &rseq, &slot)) {
        ++bad;
        continue;
      }
      if (rseq != seq) {
        ++late;
        continue;
      }
      if (i >= o.warmup)
        us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - s).count());
      break;
    }
  }
  meter.stop();
  double sum = 0;
  for (double v : us) sum += v;
  const size_t n = us.size();
  JsonLine j = base_line(o);
  if (o.proxy) j.str("relay", format_addr(p.relay));
  j.integer("rounds", static_cast<long long>(n))
      .integer("pin_cpu", o.pin_cpu)
      .integer("pinned_threads", static_cast<long long>(pin.threads()))
      .integer("lost", lost)
      .integer("late", late)
      .integer("bad_replies", bad);
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

void start_watchdog(const Options& o) {
  double limit = o.watchdog_s;
  if (limit <= 0) {
    limit = o.scenario == "latency" ? 60 + static_cast<double>(o.warmup + o.rounds) / 500.0
                                    : o.warmup_s + o.duration_s + 30;
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
  signal(SIGPIPE, SIG_IGN);
  raise_nofile_limit();
  if (o.scenario == "echo") {
    int port = 0;
    int fd = make_echo_socket(&port);
    emit(JsonLine().integer("port", port).integer("pid", getpid()));
    echo_forever(fd);
  }
  if (o.scenario != "throughput" && o.scenario != "latency")
    usage_error("unknown subcommand " + o.scenario);

  EchoChild child;
  int port = o.target_port;
  if (port == 0) {
    child = spawn_echo();  // before any thread of ours exists
    port = child.port;
  }
  start_watchdog(o);
  int rc = o.scenario == "throughput" ? scenario_throughput(o, port, child.pid > 0 ? child.pid : 0)
                                      : scenario_latency(o, port, child.pid > 0 ? child.pid : 0);
  if (child.pid > 0) {
    kill(child.pid, SIGKILL);
    waitpid(child.pid, nullptr, 0);
  }
  return rc;
}
