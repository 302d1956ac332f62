// tlsbench: a loopback benchmark client for SOCKS5 inside TLS (socksgate's TLS listeners, or
// stunnel in front of Dante), used by scripts/bench-tls.sh. OpenSSL directly, blocking sockets,
// one thread per stream or per concurrent client; the targets come from `socksbench serve`.
//
//   tlsbench throughput --proxy IP:PORT --ca FILE --port SOURCE_OR_SINK [--streams N]
//                       [--duration S] [--direction download|upload] [--pids PID,...]
//   tlsbench setup      --proxy IP:PORT --ca FILE --port ECHO [--concurrency C]
//                       [--duration S] [--resume] [--pids PID,...]
// Common: --server-name NAME (SNI and the name to verify, default localhost), --label TEXT.
// Each run prints one JSON line on stdout. The SOCKS5 method is "no authentication": the
// figures are about TLS and relaying, not password hashing.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.h"

namespace {

using namespace bench_util;

struct Options {
  std::string scenario;
  sockaddr_in proxy{};
  std::string proxy_text;
  std::string ca;
  std::string server_name = "localhost";
  int port = 0;
  int streams = 1;
  int concurrency = 8;
  double duration_s = 3;
  bool upload = false;
  bool resume = false;
  std::vector<pid_t> pids;
  std::string label;
};

[[noreturn]] void usage(const std::string& why) {
  std::fprintf(stderr, "tlsbench: %s (see the comment at the top of bench/tlsbench.cc)\n",
               why.c_str());
  std::exit(2);
}

Options parse(int argc, char** argv) {
  if (argc < 2) usage("missing scenario");
  Options o;
  o.scenario = argv[1];
  for (int i = 2; i < argc; ++i) {
    std::string k = argv[i];
    auto val = [&]() -> std::string {
      if (i + 1 >= argc) usage("missing value for " + k);
      return argv[++i];
    };
    if (k == "--proxy") {
      o.proxy_text = val();
      auto colon = o.proxy_text.rfind(':');
      if (colon == std::string::npos) usage("--proxy IP:PORT");
      o.proxy.sin_family = AF_INET;
      o.proxy.sin_port = htons(static_cast<uint16_t>(std::atoi(o.proxy_text.c_str() + colon + 1)));
      if (inet_pton(AF_INET, o.proxy_text.substr(0, colon).c_str(), &o.proxy.sin_addr) != 1)
        usage("--proxy IP:PORT");
    } else if (k == "--ca") {
      o.ca = val();
    } else if (k == "--server-name") {
      o.server_name = val();
    } else if (k == "--port") {
      o.port = std::atoi(val().c_str());
    } else if (k == "--streams") {
      o.streams = std::atoi(val().c_str());
    } else if (k == "--concurrency") {
      o.concurrency = std::atoi(val().c_str());
    } else if (k == "--duration") {
      o.duration_s = std::atof(val().c_str());
    } else if (k == "--direction") {
      std::string d = val();
      if (d != "upload" && d != "download") usage("--direction upload|download");
      o.upload = d == "upload";
    } else if (k == "--resume") {
      o.resume = true;
    } else if (k == "--pids") {
      std::string s = val();
      for (size_t p = 0; p < s.size();) {
        size_t c = s.find(',', p);
        o.pids.push_back(static_cast<pid_t>(std::atoi(s.substr(p, c - p).c_str())));
        p = c == std::string::npos ? s.size() : c + 1;
      }
    } else if (k == "--label") {
      o.label = val();
    } else {
      usage("unknown option " + k);
    }
  }
  if (o.ca.empty() || o.proxy_text.empty() || o.port <= 0) usage("--proxy, --ca, --port needed");
  if (o.streams < 1 || o.streams > 64 || o.concurrency < 1 || o.concurrency > 256)
    usage("--streams 1..64, --concurrency 1..256");
  return o;
}

double proxy_cpu(const std::vector<pid_t>& pids) {
  return pids.empty() ? 0 : tree_cpu_seconds(pids);
}

class Tls {
 public:
  explicit Tls(const Options& o) : o_(o) {
    ctx_ = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(ctx_, TLS1_2_VERSION);
    if (SSL_CTX_load_verify_locations(ctx_, o.ca.c_str(), nullptr) != 1) usage("cannot load --ca");
    SSL_CTX_set_verify(ctx_, SSL_VERIFY_PEER, nullptr);
    SSL_CTX_set_session_cache_mode(ctx_, SSL_SESS_CACHE_CLIENT);
    // The suite the ceiling (`openssl speed -evp aes-128-gcm`) measures, for every proxy.
    SSL_CTX_set_ciphersuites(ctx_, "TLS_AES_128_GCM_SHA256");
    SSL_CTX_set_cipher_list(ctx_, "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256");
  }
  ~Tls() { SSL_CTX_free(ctx_); }

  // TCP connect + TLS handshake + SOCKS5 CONNECT (method none) to 127.0.0.1:port.
  SSL* open(int port, SSL_SESSION* resume, std::string* err) const {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    timeval tv{10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, reinterpret_cast<const sockaddr*>(&o_.proxy), sizeof o_.proxy) != 0) {
      *err = errno_text("connect");
      close(fd);
      return nullptr;
    }
    SSL* ssl = SSL_new(ctx_);
    SSL_set_fd(ssl, fd);
    SSL_set_tlsext_host_name(ssl, o_.server_name.c_str());
    SSL_set1_host(ssl, o_.server_name.c_str());
    if (resume) SSL_set_session(ssl, resume);
    if (SSL_connect(ssl) != 1) {
      *err = "TLS handshake: " + openssl_error();
      finish(ssl);
      return nullptr;
    }
    uint8_t b[32] = {0x05, 0x01, 0x00};
    if (!write_all(ssl, b, 3) || !read_all(ssl, b, 2) || b[1] != 0x00) {
      *err = "SOCKS method selection failed";
      finish(ssl);
      return nullptr;
    }
    uint8_t req[10] = {0x05,
                       0x01,
                       0x00,
                       0x01,
                       127,
                       0,
                       0,
                       1,
                       static_cast<uint8_t>(port >> 8),
                       static_cast<uint8_t>(port & 0xff)};
    if (!write_all(ssl, req, sizeof req) || !read_all(ssl, b, 10) || b[1] != 0x00) {
      *err = "SOCKS CONNECT failed";
      finish(ssl);
      return nullptr;
    }
    return ssl;
  }

  static bool write_all(SSL* ssl, const void* p, size_t n) {
    size_t done = 0;
    return n == 0 || (SSL_write_ex(ssl, p, n, &done) == 1 && done == n);
  }
  static bool read_all(SSL* ssl, void* p, size_t n) {
    auto* c = static_cast<uint8_t*>(p);
    while (n > 0) {
      size_t got = 0;
      if (SSL_read_ex(ssl, c, n, &got) != 1) return false;
      c += got;
      n -= got;
    }
    return true;
  }
  static void finish(SSL* ssl) {
    int fd = SSL_get_fd(ssl);
    SSL_free(ssl);
    close(fd);
  }
  static std::string openssl_error() {
    unsigned long e = ERR_get_error();
    ERR_clear_error();
    if (e == 0) return errno ? std::strerror(errno) : "connection closed";
    const char* r = ERR_reason_error_string(e);
    return r ? r : "error";
  }

 private:
  const Options& o_;
  SSL_CTX* ctx_;
};

void print_head(const Options& o) {
  std::printf("{\"scenario\": \"%s\", \"label\": \"%s\", \"proxy\": \"%s\"", o.scenario.c_str(),
              json_escape(o.label).c_str(), o.proxy_text.c_str());
}

int throughput(const Options& o, const Tls& tls) {
  std::vector<SSL*> conns;
  std::string err;
  for (int i = 0; i < o.streams; ++i) {
    SSL* s = tls.open(o.port, nullptr, &err);
    if (!s) {
      print_head(o);
      std::printf(", \"error\": \"%s\"}\n", json_escape(err).c_str());
      return 1;
    }
    conns.push_back(s);
  }
  std::string version = SSL_get_version(conns[0]), cipher = SSL_get_cipher_name(conns[0]);
  std::vector<unsigned long long> bytes(conns.size());
  std::atomic<bool> go{false};
  Clock::time_point t0;
  const auto dur =
      std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.duration_s));
  auto worker = [&](size_t i) {
    SSL* s = conns[i];
    std::vector<uint8_t> buf(256 * 1024, 'x');
    while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
    if (!o.upload) {
      uint8_t g = 'g';
      if (!Tls::write_all(s, &g, 1)) return;
    }
    while (Clock::now() < t0 + dur) {
      size_t n = 0;
      int r = o.upload ? SSL_write_ex(s, buf.data(), buf.size(), &n)
                       : SSL_read_ex(s, buf.data(), buf.size(), &n);
      if (r != 1) break;
      bytes[i] += n;
    }
  };
  double cpu0 = proxy_cpu(o.pids), self0 = self_cpu_seconds();
  std::vector<std::thread> threads;
  for (size_t i = 0; i < conns.size(); ++i) threads.emplace_back(worker, i);
  t0 = Clock::now();
  go.store(true, std::memory_order_release);
  for (auto& t : threads) t.join();
  double secs = seconds_between(t0, Clock::now());
  double cpu1 = proxy_cpu(o.pids), self1 = self_cpu_seconds();
  for (SSL* s : conns) Tls::finish(s);
  unsigned long long total = 0;
  for (auto b : bytes) total += b;
  double gib = static_cast<double>(total) / (1024.0 * 1024 * 1024);
  print_head(o);
  std::printf(
      ", \"streams\": %d, \"direction\": \"%s\", \"tls_version\": \"%s\", \"cipher\": \"%s\", "
      "\"seconds\": %.3f, \"bytes\": %llu, \"gib_per_s\": %.4f, \"proxy_cpu_s\": %.3f, "
      "\"cpu_s_per_gib\": %.3f, \"client_cpu_s\": %.3f}\n",
      o.streams, o.upload ? "upload" : "download", version.c_str(), cipher.c_str(), secs, total,
      gib / secs, cpu1 - cpu0, gib > 0 ? (cpu1 - cpu0) / gib : NAN, self1 - self0);
  return total > 0 ? 0 : 1;
}

int setup(const Options& o, const Tls& tls) {
  std::atomic<long long> ok{0}, errors{0}, resumed{0};
  std::mutex mu;
  std::string first_error;
  std::vector<std::vector<double>> lat(static_cast<size_t>(o.concurrency));
  std::atomic<bool> go{false};
  Clock::time_point t0;
  const auto dur =
      std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.duration_s));
  auto worker = [&](size_t i) {
    SSL_SESSION* session = nullptr;
    while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
    while (Clock::now() < t0 + dur) {
      auto s0 = Clock::now();
      std::string err;
      SSL* s = tls.open(o.port, o.resume ? session : nullptr, &err);
      uint8_t c = 'Q';
      if (s && Tls::write_all(s, &c, 1) && Tls::read_all(s, &c, 1)) {
        ok.fetch_add(1, std::memory_order_relaxed);
        if (SSL_session_reused(s)) resumed.fetch_add(1, std::memory_order_relaxed);
        lat[i].push_back(std::chrono::duration<double, std::micro>(Clock::now() - s0).count());
        if (o.resume) {
          if (session) SSL_SESSION_free(session);
          session = SSL_get1_session(s);
        }
      } else {
        errors.fetch_add(1, std::memory_order_relaxed);
        std::lock_guard lock(mu);
        if (first_error.empty()) first_error = err.empty() ? "echo failed" : err;
      }
      if (s) Tls::finish(s);
    }
    if (session) SSL_SESSION_free(session);
  };
  double cpu0 = proxy_cpu(o.pids), self0 = self_cpu_seconds();
  std::vector<std::thread> threads;
  for (int i = 0; i < o.concurrency; ++i) threads.emplace_back(worker, static_cast<size_t>(i));
  t0 = Clock::now();
  go.store(true, std::memory_order_release);
  for (auto& t : threads) t.join();
  double secs = seconds_between(t0, Clock::now());
  double cpu1 = proxy_cpu(o.pids), self1 = self_cpu_seconds();
  std::vector<double> all;
  for (auto& v : lat) all.insert(all.end(), v.begin(), v.end());
  long long n = ok.load();
  print_head(o);
  std::printf(
      ", \"concurrency\": %d, \"resume\": %s, \"seconds\": %.3f, \"sessions\": %lld, "
      "\"resumed\": %lld, \"errors\": %lld, \"sessions_per_s\": %.1f, \"p50_us\": %.1f, "
      "\"p99_us\": %.1f, \"proxy_cpu_us_per_session\": %.1f, \"client_cpu_s\": %.3f",
      o.concurrency, o.resume ? "true" : "false", secs, n, resumed.load(), errors.load(),
      static_cast<double>(n) / secs, percentile(all, 0.5), percentile(all, 0.99),
      n > 0 ? (cpu1 - cpu0) / static_cast<double>(n) * 1e6 : NAN, self1 - self0);
  if (!first_error.empty())
    std::printf(", \"first_error\": \"%s\"", json_escape(first_error).c_str());
  std::printf("}\n");
  return n > 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);
  Options o = parse(argc, argv);
  Tls tls(o);
  if (o.scenario == "throughput") return throughput(o, tls);
  if (o.scenario == "setup") return setup(o, tls);
  usage("unknown scenario " + o.scenario);
}
