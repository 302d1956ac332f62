#include "auth/pam/monitor.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <deque>
#include <stdexcept>
#include <string>
#include <vector>

#include "auth/pam/monitor_protocol.h"
#include "auth/pam/pam_transaction.h"
#include "crypto/parse.h"
#include "crypto/secure.h"

namespace socksgate::auth::pam {
namespace {

using Clock = std::chrono::steady_clock;
constexpr uint8_t kStarted = 'S';  // a worker's first byte: pam_start has returned
constexpr std::chrono::milliseconds kStartWait{2000};

bool write_all(int fd, const uint8_t* p, size_t n) {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

bool write_all(int fd, const std::vector<uint8_t>& v) { return write_all(fd, v.data(), v.size()); }

// This process dies with its parent; returns false if the parent is already gone.
bool die_with_parent(pid_t parent, const char* name) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  ::prctl(PR_SET_NAME, name);
  return ::getppid() == parent;
}

void zero(AuthRequest* r) { crypto::secure_zero(r->password.data(), r->password.size()); }

AuthResult status_only(uint32_t id, PamStatus s) {
  AuthResult r;
  r.id = id;
  r.status = s;
  return r;
}

struct Queued {
  AuthRequest req;
  Clock::time_point deadline;
};

struct Worker {
  pid_t pid = -1;
  int fd = -1;
  uint32_t id = 0;
  Clock::time_point deadline;
  std::vector<uint8_t> out;
};

class Monitor {
 public:
  explicit Monitor(int link) : link_(link) {}

  void run() {
    for (;;) {
      dispatch();
      std::vector<pollfd> fds;
      fds.push_back({link_, POLLIN, 0});
      for (const auto& w : workers_) fds.push_back({w.fd, POLLIN, 0});
      int timeout = -1;
      auto now = Clock::now();
      auto nearest = Clock::time_point::max();
      for (const auto& w : workers_) nearest = std::min(nearest, w.deadline);
      for (const auto& q : queue_) nearest = std::min(nearest, q.deadline);
      if (nearest != Clock::time_point::max()) {
        auto ms = std::chrono::ceil<std::chrono::milliseconds>(nearest - now).count();
        timeout = static_cast<int>(std::clamp<int64_t>(ms, 0, 60000));
      }
      int n = ::poll(fds.data(), fds.size(), timeout);
      if (n < 0 && errno != EINTR) break;
      if (!expire()) break;
      if (n <= 0) continue;
      // Worker results first (their fds are after the link's).
      std::vector<int> ready;
      for (size_t i = 1; i < fds.size(); ++i) {
        if (fds[i].revents != 0) ready.push_back(fds[i].fd);
      }
      for (int fd : ready) {
        if (!collect(fd)) return shutdown();
      }
      if (fds[0].revents != 0 && !read_link()) break;
    }
    shutdown();
  }

 private:
  bool send(const AuthResult& r) { return write_all(link_, encode_result(r)); }

  // Reads what the gateway sent; false ends the monitor (EOF, error, protocol violation).
  bool read_link() {
    uint8_t buf[16384];
    ssize_t n = ::read(link_, buf, sizeof buf);
    if (n < 0 && errno == EINTR) return true;
    if (n <= 0) return false;
    in_.insert(in_.end(), buf, buf + n);
    size_t off = 0;
    bool ok = true;
    while (ok) {
      Request req;
      size_t used = 0;
      auto ec = parse_request(std::span<const uint8_t>(in_).subspan(off), &req, &used);
      if (ec == crypto::ParseErrc::kNeedMore) break;
      if (ec || seq_.accept(req)) {
        zero(&req.auth);
        ok = false;
        break;
      }
      off += used;
      if (req.type == FrameType::kHello) {
        ok = write_all(link_, encode_hello_ok());
      } else if (queue_.size() >= kMaxQueued) {
        ok = send(status_only(req.auth.id, PamStatus::kBusy));
        zero(&req.auth);
      } else {
        auto t =
            std::clamp(std::chrono::milliseconds(req.auth.timeout_ms), kMinTimeout, kMaxTimeout);
        queue_.push_back({req.auth, Clock::now() + t});  // a copy: the original is zeroed
        zero(&req.auth);
      }
    }
    crypto::secure_zero(in_.data(), off);
    in_.erase(in_.begin(), in_.begin() + static_cast<std::ptrdiff_t>(off));
    crypto::secure_zero(buf, sizeof buf);
    return ok;
  }

  void dispatch() {
    while (workers_.size() < kMaxWorkers && !queue_.empty()) {
      Queued q = std::move(queue_.front());
      queue_.pop_front();
      start_worker(q);
      zero(&q.req);
    }
  }

  void start_worker(const Queued& q) {
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) {
      send(status_only(q.req.id, PamStatus::kError));
      return;
    }
    pid_t self = ::getpid();
    pid_t pid = ::fork();
    if (pid < 0) {
      ::close(p[0]);
      ::close(p[1]);
      send(status_only(q.req.id, PamStatus::kError));
      return;
    }
    if (pid == 0) {
      if (!die_with_parent(self, "sg-authwork")) ::_exit(1);
      ::close(p[0]);
      ::close(link_);
      for (const auto& w : workers_) ::close(w.fd);
      int out = p[1];
      AuthResult r = run_pam_transaction(
          q.req, [](void* fd) { write_all(*static_cast<int*>(fd), &kStarted, 1); }, &out);
      auto bytes = encode_result(r);
      bool ok = !bytes.empty() && write_all(p[1], bytes);
      ::_exit(ok ? 0 : 1);
    }
    ::close(p[1]);
    // Workers start PAM one after the other: pam_start only reads the service's configuration
    // and loads its modules (quick, nothing sleeps there), and some libpam wrappers (the tests'
    // pam_wrapper) are not safe for several processes entering it at once. Bounded wait.
    pollfd pf{p[0], POLLIN, 0};
    bool started = false;
    if (::poll(&pf, 1, static_cast<int>(kStartWait.count())) > 0) {
      uint8_t b = 0;
      started = ::read(p[0], &b, 1) == 1 && b == kStarted;
    }
    workers_.push_back({pid, p[0], q.req.id, q.deadline, {}});
    if (!started) ::kill(pid, SIGKILL);  // collect() sees EOF and answers kError
  }

  // A worker's pipe is readable: gather its result; at EOF forward it. False: link broken.
  bool collect(int fd) {
    auto it = std::find_if(workers_.begin(), workers_.end(), [fd](auto& w) { return w.fd == fd; });
    if (it == workers_.end()) return true;
    uint8_t buf[4096];
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) return true;
    if (n > 0 && it->out.size() + static_cast<size_t>(n) <= kMaxFrame) {
      it->out.insert(it->out.end(), buf, buf + n);
      return true;
    }
    // EOF, an error, or more than a frame: the worker is done either way.
    Worker w = std::move(*it);
    workers_.erase(it);
    ::close(w.fd);
    if (n > 0) ::kill(w.pid, SIGKILL);
    ::waitpid(w.pid, nullptr, 0);
    Reply rep;
    size_t used = 0;
    if (n == 0 && !parse_reply(w.out, &rep, &used) && used == w.out.size() &&
        rep.type == FrameType::kResult && rep.result.id == w.id) {
      return write_all(link_, w.out);
    }
    return send(status_only(w.id, PamStatus::kError));
  }

  // Kills workers and drops queued requests past their deadline. False: link broken.
  bool expire() {
    auto now = Clock::now();
    for (auto it = workers_.begin(); it != workers_.end();) {
      if (it->deadline > now) {
        ++it;
        continue;
      }
      ::kill(it->pid, SIGKILL);
      ::waitpid(it->pid, nullptr, 0);
      ::close(it->fd);
      uint32_t id = it->id;
      it = workers_.erase(it);
      if (!send(status_only(id, PamStatus::kTimeout))) return false;
    }
    for (auto it = queue_.begin(); it != queue_.end();) {
      if (it->deadline > now) {
        ++it;
        continue;
      }
      uint32_t id = it->req.id;
      zero(&it->req);
      it = queue_.erase(it);
      if (!send(status_only(id, PamStatus::kTimeout))) return false;
    }
    return true;
  }

  void shutdown() {
    for (auto& w : workers_) {
      ::kill(w.pid, SIGKILL);
      ::waitpid(w.pid, nullptr, 0);
      ::close(w.fd);
    }
    workers_.clear();
    for (auto& q : queue_) zero(&q.req);
    queue_.clear();
    crypto::secure_zero(in_.data(), in_.size());
  }

  int link_;
  RequestSequencer seq_;
  std::vector<uint8_t> in_;
  std::deque<Queued> queue_;
  std::vector<Worker> workers_;
};

bool send_fd(int sock, int fd, int32_t pid) {
  msghdr mh{};
  iovec iov{&pid, sizeof pid};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int))];
  if (fd >= 0) {
    std::memset(ctl, 0, sizeof ctl);
    mh.msg_control = ctl;
    mh.msg_controllen = sizeof ctl;
    cmsghdr* c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &fd, sizeof fd);
  }
  ssize_t n;
  do {
    n = ::sendmsg(sock, &mh, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  return n == static_cast<ssize_t>(sizeof pid);
}

[[noreturn]] void supervisor_main(int ctl, pid_t parent) {
  if (!die_with_parent(parent, "sg-authsv")) ::_exit(0);
  if (ctl != 3) {
    ::dup2(ctl, 3);
    ::close(ctl);
    ctl = 3;
  }
  ::close_range(4, ~0u, 0);
  sigset_t all;
  sigemptyset(&all);
  ::sigprocmask(SIG_SETMASK, &all, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  ::signal(SIGCHLD, SIG_DFL);
  ::signal(SIGINT, SIG_IGN);  // a terminal's ^C is for the gateway; we end when it does
  ::signal(SIGHUP, SIG_IGN);
  pid_t monitor = -1;
  auto last = Clock::now() - std::chrono::seconds(1);
  for (;;) {
    char c = 0;
    ssize_t n = ::read(ctl, &c, 1);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    if (c != 'M') continue;
    // At most one fresh monitor per 50 ms, whatever the gateway asks.
    auto wait = last + std::chrono::milliseconds(50) - Clock::now();
    if (wait > Clock::duration::zero()) {
      auto us = std::chrono::duration_cast<std::chrono::microseconds>(wait).count();
      ::usleep(static_cast<useconds_t>(us));
    }
    last = Clock::now();
    if (monitor > 0) {
      ::kill(monitor, SIGKILL);
      ::waitpid(monitor, nullptr, 0);
      monitor = -1;
    }
    while (::waitpid(-1, nullptr, WNOHANG) > 0) {
    }
    int lk[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, lk) != 0) {
      if (!send_fd(ctl, -1, -1)) break;
      continue;
    }
    pid_t self = ::getpid();
    pid_t m = ::fork();
    if (m == 0) {
      ::close(ctl);
      ::close(lk[0]);
      if (!die_with_parent(self, "sg-authmon")) ::_exit(0);
      Monitor(lk[1]).run();
      ::_exit(0);
    }
    ::close(lk[1]);
    bool sent = send_fd(ctl, m > 0 ? lk[0] : -1, m);
    ::close(lk[0]);
    if (m > 0) monitor = m;
    if (!sent) break;
  }
  if (monitor > 0) {
    ::kill(monitor, SIGKILL);
    ::waitpid(monitor, nullptr, 0);
  }
  ::_exit(0);
}

}  // namespace

Supervisor start_supervisor() {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    throw std::runtime_error(std::string("auth monitor: socketpair: ") + std::strerror(errno));
  }
  pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) {
    int e = errno;
    ::close(sv[0]);
    ::close(sv[1]);
    throw std::runtime_error(std::string("auth monitor: fork: ") + std::strerror(e));
  }
  if (pid == 0) {
    ::close(sv[0]);
    supervisor_main(sv[1], parent);
  }
  ::close(sv[1]);
  return {sv[0], pid};
}

int request_monitor_link(int control_fd, pid_t* monitor_pid, std::chrono::milliseconds timeout) {
  char m = 'M';
  ssize_t w;
  do {
    w = ::send(control_fd, &m, 1, MSG_NOSIGNAL);
  } while (w < 0 && errno == EINTR);
  if (w != 1) return -1;
  pollfd p{control_fd, POLLIN, 0};
  int r;
  do {
    r = ::poll(&p, 1, static_cast<int>(timeout.count()));
  } while (r < 0 && errno == EINTR);
  if (r <= 0) {
    if (r == 0) errno = ETIMEDOUT;
    return -1;
  }
  int32_t pid = -1;
  iovec iov{&pid, sizeof pid};
  msghdr mh{};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int))];
  mh.msg_control = ctl;
  mh.msg_controllen = sizeof ctl;
  ssize_t n;
  do {
    n = ::recvmsg(control_fd, &mh, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n != static_cast<ssize_t>(sizeof pid)) {
    if (n >= 0) errno = EPIPE;
    return -1;
  }
  int fd = -1;
  for (cmsghdr* c = CMSG_FIRSTHDR(&mh); c != nullptr; c = CMSG_NXTHDR(&mh, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      std::memcpy(&fd, CMSG_DATA(c), sizeof fd);
    }
  }
  if (fd < 0) {
    errno = EAGAIN;
    return -1;
  }
  *monitor_pid = pid;
  return fd;
}

void run_monitor(int link_fd) { Monitor(link_fd).run(); }

}  // namespace socksgate::auth::pam
