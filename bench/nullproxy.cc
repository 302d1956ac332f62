// nullproxy: the least a SOCKS5 CONNECT proxy can do, as a floor for scripts/bench.sh.
//
// Method "none" or RFC 1929 (every name and password pass), IPv4 CONNECT only, no policy, no audit,
// no logging, no timers, no limits: accept, answer the greeting, connect, answer, then copy bytes
// with read/write until both sides are done. A client must wait for each answer before it sends
// more (socksbench does); bytes sent early are dropped. One epoll loop per thread (SO_REUSEPORT
// listeners, as socksgate's I/O threads). Its session-setup rate on a machine is what the kernel's
// TCP work and the scheduler leave for any SOCKS5 server there; it is not a product and must never
// face a network.
//
//   nullproxy [--threads N] [--bind 127.0.0.1]   prints {"port":P,"pid":PID} and serves
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace {

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "nullproxy: %s: %s\n", what, std::strerror(errno));
  std::exit(1);
}

struct Session;

// One end of a session; epoll's data pointer points here.
struct End {
  Session* s;
  int fd = -1;
  bool upstream;
};

struct Session {
  End client{this, -1, false};
  End target{this, -1, true};
  enum { kGreeting, kPassword, kRequest, kConnecting, kRelay } stage = kGreeting;
  uint8_t in[512];
  size_t have = 0;
  bool eof[2] = {false, false};  // [0] client sent FIN, [1] target sent FIN
};

class Loop {
 public:
  explicit Loop(const sockaddr_in& at)
      : ep_(epoll_create1(EPOLL_CLOEXEC)), lfd_(make_listener(at)) {
    if (ep_ < 0) die("epoll_create1");
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.ptr = nullptr;
    if (epoll_ctl(ep_, EPOLL_CTL_ADD, lfd_, &ev) != 0) die("epoll_ctl listen");
  }

  int listener() const { return lfd_; }

  static int make_listener(const sockaddr_in& at) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (bind(fd, reinterpret_cast<const sockaddr*>(&at), sizeof at) != 0) die("bind");
    if (listen(fd, 4096) != 0) die("listen");
    return fd;
  }

  void run() {
    epoll_event evs[128];
    for (;;) {
      int n = epoll_wait(ep_, evs, 128, -1);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) die("epoll_wait");
      for (int i = 0; i < n; ++i) {
        if (evs[i].data.ptr == nullptr) {
          accept_all();
        } else {
          on_event(*static_cast<End*>(evs[i].data.ptr), evs[i].events);
        }
      }
    }
  }

 private:
  void accept_all() {
    for (;;) {
      int fd = accept4(lfd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) return;
      int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      auto* s = new Session;
      s->client.fd = fd;
      watch(s->client, EPOLL_CTL_ADD, EPOLLIN);
    }
  }

  void watch(End& e, int op, uint32_t events) {
    epoll_event ev{};
    ev.events = events;
    ev.data.ptr = &e;
    epoll_ctl(ep_, op, e.fd, &ev);
  }

  static void consume(Session& s, size_t n) {
    std::memmove(s.in, s.in + n, s.have - n);
    s.have -= n;
  }

  static void finish(Session* s) {
    if (s->client.fd >= 0) close(s->client.fd);
    if (s->target.fd >= 0) close(s->target.fd);
    delete s;
  }

  void on_event(End& e, uint32_t events) {
    Session* s = e.s;
    if (s->stage == Session::kConnecting && e.upstream) {
      int err = 0;
      socklen_t len = sizeof err;
      getsockopt(e.fd, SOL_SOCKET, SO_ERROR, &err, &len);
      static const uint8_t ok[10] = {5, 0, 0, 1, 0, 0, 0, 0, 0, 0};
      static const uint8_t refused[10] = {5, 5, 0, 1, 0, 0, 0, 0, 0, 0};
      if (err != 0) {
        (void)!write(s->client.fd, refused, sizeof refused);
        return finish(s);
      }
      watch(s->target, EPOLL_CTL_MOD, EPOLLIN);
      s->stage = Session::kRelay;
      if (write(s->client.fd, ok, sizeof ok) != sizeof ok) return finish(s);
      return;
    }
    if (s->stage == Session::kRelay) return relay(e, events);
    // Greeting or request: accumulate, then act on a whole message.
    ssize_t n = read(e.fd, s->in + s->have, sizeof s->in - s->have);
    if (n <= 0) {
      if (n < 0 && errno == EAGAIN) return;
      return finish(s);
    }
    s->have += static_cast<size_t>(n);
    if (s->stage == Session::kGreeting) {
      if (s->have < 2 || s->have < 2u + s->in[1]) return;
      size_t used = 2u + s->in[1];
      // "none" if offered, else RFC 1929 username/password (any name and password pass).
      uint8_t method = 0xFF;
      for (size_t i = 2; i < used; ++i) {
        if (s->in[i] == 0) method = 0;
        if (s->in[i] == 2 && method != 0) method = 2;
      }
      const uint8_t answer[2] = {5, method};
      if (s->in[0] != 5 || method == 0xFF || write(e.fd, answer, 2) != 2) return finish(s);
      consume(*s, used);
      s->stage = method == 2 ? Session::kPassword : Session::kRequest;
    }
    if (s->stage == Session::kPassword) {
      if (s->have < 2 || s->have < 3u + s->in[1]) return;
      size_t plen_at = 2u + s->in[1];
      if (s->have < plen_at + 1u + s->in[plen_at]) return;
      static const uint8_t ok[2] = {1, 0};
      if (write(e.fd, ok, 2) != 2) return finish(s);
      consume(*s, plen_at + 1u + s->in[plen_at]);
      s->stage = Session::kRequest;
    }
    if (s->stage == Session::kRequest) {
      if (s->have < 10) return;
      if (s->in[1] != 1 || s->in[3] != 1) return finish(s);
      sockaddr_in to{};
      to.sin_family = AF_INET;
      std::memcpy(&to.sin_addr, s->in + 4, 4);
      std::memcpy(&to.sin_port, s->in + 8, 2);
      s->have = 0;
      int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      s->target.fd = fd;
      s->stage = Session::kConnecting;
      if (connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof to) != 0 && errno != EINPROGRESS) {
        static const uint8_t refused[10] = {5, 5, 0, 1, 0, 0, 0, 0, 0, 0};
        (void)!write(s->client.fd, refused, sizeof refused);
        return finish(s);
      }
      watch(s->target, EPOLL_CTL_ADD, EPOLLOUT);
    }
  }

  // Level-triggered copy; a full peer socket is not waited for (the benchmark's sessions move
  // a byte each way), the session just ends.
  void relay(End& from, uint32_t) {
    Session* s = from.s;
    End& to = from.upstream ? s->client : s->target;
    char buf[16384];
    ssize_t n = read(from.fd, buf, sizeof buf);
    if (n < 0 && errno == EAGAIN) return;
    if (n <= 0) {
      s->eof[from.upstream ? 1 : 0] = true;
      shutdown(to.fd, SHUT_WR);
      watch(from, EPOLL_CTL_MOD, 0);
      if (s->eof[0] && s->eof[1]) finish(s);
      return;
    }
    if (write(to.fd, buf, static_cast<size_t>(n)) != n) finish(s);
  }

  int ep_;
  int lfd_;
};

}  // namespace

int main(int argc, char** argv) {
  unsigned threads = 2;
  std::string bind_to = "127.0.0.1";
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--threads" && i + 1 < argc) {
      threads = static_cast<unsigned>(std::atoi(argv[++i]));
    } else if (a == "--bind" && i + 1 < argc) {
      bind_to = argv[++i];
    } else {
      std::fprintf(stderr, "usage: nullproxy [--threads N] [--bind IPv4]\n");
      return 2;
    }
  }
  if (threads == 0) threads = 1;
  sockaddr_in at{};
  at.sin_family = AF_INET;
  if (inet_pton(AF_INET, bind_to.c_str(), &at.sin_addr) != 1) {
    std::fprintf(stderr, "nullproxy: --bind wants an IPv4 address\n");
    return 2;
  }
  // The first listener picks the port; the others join it with SO_REUSEPORT.
  std::vector<std::unique_ptr<Loop>> loops;
  loops.push_back(std::make_unique<Loop>(at));
  sockaddr_in bound{};
  socklen_t len = sizeof bound;
  getsockname(loops[0]->listener(), reinterpret_cast<sockaddr*>(&bound), &len);
  at.sin_port = bound.sin_port;
  for (unsigned i = 1; i < threads; ++i) loops.push_back(std::make_unique<Loop>(at));
  std::printf("{\"port\":%u,\"pid\":%d}\n", ntohs(bound.sin_port), static_cast<int>(getpid()));
  std::fflush(stdout);
  std::vector<std::thread> ts;
  for (auto& l : loops) ts.emplace_back([l = l.get()] { l->run(); });
  for (auto& t : ts) t.join();
}
