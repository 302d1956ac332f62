// gssbench: a loopback benchmark client for SOCKS5 with GSS-API sign-on and per-message
// protection (RFC 1961, method 01) against socksgate's plain-TCP GSS listeners, used by
// scripts/bench-gss.sh. MIT's libgssapi_krb5 directly, blocking sockets, one thread per stream or
// per concurrent client; the targets come from `socksbench serve`.
//
//   gssbench throughput --proxy IP:PORT --port SOURCE_OR_SINK --level integrity|confidentiality
//                       [--streams N] [--duration S] [--direction download|upload]
//                       [--pids PID,...]
//   gssbench setup      --proxy IP:PORT --port ECHO --level integrity|confidentiality
//                       [--concurrency C] [--duration S] [--pids PID,...]
//   gssbench speed      --level integrity|confidentiality [--duration S]
//                       (no network: gss_wrap/gss_unwrap between two contexts in this process,
//                       the acceptor's key from KRB5_KTNAME; CPU time per GiB)
// Common: --service NAME (host-based target name, default rcmd@localhost), --label TEXT,
//         --crypto mit|openssl: who computes the client's Wrap tokens once the context is up.
//         mit = gss_wrap/gss_unwrap (libk5crypto); openssl = socksgate's own RFC 4121 code
//         (crypto/gss_cfx.cc, the code the `socksgate agent` uses), only in a build inside the
//         socksgate tree (GSSBENCH_CFX). Default: openssl where built, else mit.
// Each run prints one JSON line on stdout.
//
// Credentials: the default credential cache (KRB5CCNAME), copied at start into a private
// MEMORY: cache (gss_store_cred_into) so that the threads never write one FILE cache; the
// initiator credential is acquired once from that copy and shared by every thread (MIT's krb5
// mechanism locks it). One warm-up sign-on before the measurement puts the service ticket into
// the copy, so the measured sessions do not talk to the KDC (as a client with a cached ticket).
//
// The initiator: greeting 05 01 01; context tokens 01 01 LEN TOKEN (gss_init_sec_context,
// MUTUAL|REPLAY|SEQUENCE|INTEG|CONF, krb5 mechanism); protection level 01 02 LEN wrap(level)
// and the server's wrapped answer (must equal the level asked for); then every message both
// ways (SOCKS request, reply, data) is 01 03 LEN gss_wrap(chunk) with conf_req = (level == 2),
// chunks sized with gss_wrap_size_limit so that each token is <= 65535 bytes. Every received
// token is unwrapped (verified) and its encryption state checked against the level.

#include <arpa/inet.h>
#include <gssapi/gssapi.h>
#include <gssapi/gssapi_ext.h>
#include <gssapi/gssapi_krb5.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.h"
#ifdef GSSBENCH_CFX
#include "crypto/gss_cfx.h"
#endif

namespace {

using namespace bench_util;

constexpr uint8_t kVer = 0x01, kMtypContext = 0x01, kMtypLevel = 0x02, kMtypData = 0x03,
                  kMtypAbort = 0xFF;
constexpr size_t kMaxToken = 65535;

struct Options {
  std::string scenario;
  sockaddr_in proxy{};
  std::string proxy_text;
  std::string service = "rcmd@localhost";
  int port = 0;
  int level = 0;  // 1 integrity, 2 confidentiality
  int streams = 1;
  int concurrency = 8;
  double duration_s = 3;
  bool upload = false;
  std::vector<pid_t> pids;
  std::string label;
#ifdef GSSBENCH_CFX
  bool openssl = true;
#else
  bool openssl = false;
#endif
};

[[noreturn]] void usage(const std::string& why) {
  std::fprintf(stderr, "gssbench: %s (see the comment at the top of bench/gssbench.cc)\n",
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
    } else if (k == "--service") {
      o.service = val();
    } else if (k == "--port") {
      o.port = std::atoi(val().c_str());
    } else if (k == "--level") {
      std::string l = val();
      if (l == "integrity") {
        o.level = 1;
      } else if (l == "confidentiality") {
        o.level = 2;
      } else {
        usage("--level integrity|confidentiality");
      }
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
    } else if (k == "--pids") {
      std::string s = val();
      for (size_t p = 0; p < s.size();) {
        size_t c = s.find(',', p);
        o.pids.push_back(static_cast<pid_t>(std::atoi(s.substr(p, c - p).c_str())));
        p = c == std::string::npos ? s.size() : c + 1;
      }
    } else if (k == "--label") {
      o.label = val();
    } else if (k == "--crypto") {
      std::string c = val();
      if (c != "mit" && c != "openssl") usage("--crypto mit|openssl");
      o.openssl = c == "openssl";
#ifndef GSSBENCH_CFX
      if (o.openssl) usage("--crypto openssl needs gssbench built inside the socksgate tree");
#endif
    } else {
      usage("unknown option " + k);
    }
  }
  if (o.level == 0) usage("--level needed");
  if (o.scenario != "speed" && (o.proxy_text.empty() || o.port <= 0))
    usage("--proxy, --port needed");
  if (o.streams < 1 || o.streams > 64 || o.concurrency < 1 || o.concurrency > 256)
    usage("--streams 1..64, --concurrency 1..256");
  if (!(o.duration_s > 0)) usage("--duration must be > 0");
  return o;
}

double proxy_cpu(const std::vector<pid_t>& pids) {
  return pids.empty() ? 0 : tree_cpu_seconds(pids);
}

const char* level_name(int level) { return level == 2 ? "confidentiality" : "integrity"; }

// MIT's text for a major/minor status pair.
std::string gss_error(const std::string& what, OM_uint32 major, OM_uint32 minor) {
  std::string out = what;
  out += ": ";
  for (int type : {GSS_C_GSS_CODE, GSS_C_MECH_CODE}) {
    OM_uint32 code = type == GSS_C_GSS_CODE ? major : minor;
    if (type == GSS_C_MECH_CODE && minor == 0) break;
    OM_uint32 ctx = 0, min2 = 0;
    do {
      gss_buffer_desc msg = GSS_C_EMPTY_BUFFER;
      if (gss_display_status(&min2, code, type, GSS_C_NO_OID, &ctx, &msg) != GSS_S_COMPLETE) break;
      if (out.back() != ' ') out += "; ";
      out.append(static_cast<const char*>(msg.value), msg.length);
      gss_release_buffer(&min2, &msg);
    } while (ctx != 0);
  }
  return out;
}

gss_OID krb5_mech() { return const_cast<gss_OID>(gss_mech_krb5); }

// The initiator credential (a private MEMORY: copy of the default ccache) and the target name,
// shared read-only by every thread.
class Gss {
 public:
  explicit Gss(const Options& o) {
    OM_uint32 minor = 0, major;
    gss_OID_set_desc mechs{1, krb5_mech()};
    gss_cred_id_t def = GSS_C_NO_CREDENTIAL;
    major = gss_acquire_cred(&minor, GSS_C_NO_NAME, GSS_C_INDEFINITE, &mechs, GSS_C_INITIATE, &def,
                             nullptr, nullptr);
    if (GSS_ERROR(major))
      fail(gss_error("acquiring the default credential (KRB5CCNAME)", major, minor));
    std::string ccache = "MEMORY:gssbench-" + std::to_string(getpid());
    gss_key_value_element_desc elem{"ccache", ccache.c_str()};
    gss_key_value_set_desc store{1, &elem};
    major = gss_store_cred_into(&minor, def, GSS_C_INITIATE, krb5_mech(), 1, 0, &store, nullptr,
                                nullptr);
    gss_release_cred(&minor, &def);
    if (GSS_ERROR(major)) fail(gss_error("copying the credential to " + ccache, major, minor));
    major = gss_acquire_cred_from(&minor, GSS_C_NO_NAME, GSS_C_INDEFINITE, &mechs, GSS_C_INITIATE,
                                  &store, &cred_, nullptr, nullptr);
    if (GSS_ERROR(major)) fail(gss_error("acquiring the credential from " + ccache, major, minor));
    gss_buffer_desc nb{o.service.size(), const_cast<char*>(o.service.data())};
    major = gss_import_name(&minor, &nb, GSS_C_NT_HOSTBASED_SERVICE, &target_);
    if (GSS_ERROR(major)) fail(gss_error("gss_import_name", major, minor));
  }
  ~Gss() {
    OM_uint32 minor = 0;
    gss_release_name(&minor, &target_);
    gss_release_cred(&minor, &cred_);
  }
  Gss(const Gss&) = delete;
  Gss& operator=(const Gss&) = delete;

  gss_cred_id_t cred() const { return cred_; }
  gss_name_t target() const { return target_; }

 private:
  [[noreturn]] static void fail(const std::string& why) {
    std::fprintf(stderr, "gssbench: %s\n", why.c_str());
    std::exit(1);
  }
  gss_cred_id_t cred_ = GSS_C_NO_CREDENTIAL;
  gss_name_t target_ = GSS_C_NO_NAME;
};

// One protected SOCKS5 session over a blocking socket: a buffered frame reader, a frame writer
// that batches tokens into one send(2).
class Conn {
 public:
  ~Conn() {
    OM_uint32 minor = 0;
    if (ctx_ != GSS_C_NO_CONTEXT) gss_delete_sec_context(&minor, &ctx_, GSS_C_NO_BUFFER);
    if (fd_ >= 0) close(fd_);
  }

  // TCP connect + method selection + context + level + SOCKS5 CONNECT to 127.0.0.1:port.
  static std::unique_ptr<Conn> open(const Options& o, const Gss& gss, int port, std::string* err) {
    auto c = std::unique_ptr<Conn>(new Conn);
    c->level_ = o.level;
    c->fd_ = socket(AF_INET, SOCK_STREAM, 0);
    if (c->fd_ < 0) return fail(errno_text("socket"), err);
    int one = 1;
    setsockopt(c->fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    timeval tv{10, 0};
    setsockopt(c->fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(c->fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(c->fd_, reinterpret_cast<const sockaddr*>(&o.proxy), sizeof o.proxy) != 0)
      return fail(errno_text("connect"), err);
    uint8_t b[2];
    const uint8_t greet[3] = {0x05, 0x01, 0x01};
    if (!send_all(c->fd_, greet, 3) || !c->read_exact(b, 2))
      return fail(io_error("method selection"), err);
    if (b[0] != 0x05 || b[1] != 0x01) return fail("the proxy did not select method 01", err);
    if (!c->establish(gss, err) || !c->negotiate(err)) return nullptr;
#ifdef GSSBENCH_CFX
    if (o.openssl) {
      // The context goes to socksgate's RFC 4121 code; MIT verified one token (the level).
      socksgate::crypto::GssContext owned;
      *owned.out() = std::exchange(c->ctx_, GSS_C_NO_CONTEXT);
      std::string why;
      c->cfx_ = socksgate::crypto::CfxProtector::take_over(owned, 1, &why);
      if (c->cfx_ == nullptr) return fail("--crypto openssl: " + why, err);
      c->max_in_ = kMaxToken - c->cfx_->overhead(c->level_ == 2);
    }
#endif
    if (c->max_in_ == 0) {
      // The size limit for our level: every token, header included, within LEN's 65535.
      OM_uint32 minor = 0, max_in = 0;
      OM_uint32 major = gss_wrap_size_limit(&minor, c->ctx_, c->level_ == 2, GSS_C_QOP_DEFAULT,
                                            kMaxToken, &max_in);
      if (GSS_ERROR(major) || max_in == 0)
        return fail(gss_error("gss_wrap_size_limit", major, minor), err);
      c->max_in_ = max_in;
    }
    const uint8_t req[10] = {0x05,
                             0x01,
                             0x00,
                             0x01,
                             127,
                             0,
                             0,
                             1,
                             static_cast<uint8_t>(port >> 8),
                             static_cast<uint8_t>(port & 0xff)};
    uint8_t rep[10];
    if (!c->write(req, sizeof req, err) || !c->read(rep, sizeof rep, err)) return nullptr;
    if (rep[0] != 0x05 || rep[1] != 0x00) return fail("SOCKS CONNECT refused", err);
    return c;
  }

  // Wraps `n` bytes into as many tokens as needed and sends them in one go.
  bool write(const void* data, size_t n, std::string* err) {
    const auto* p = static_cast<const uint8_t*>(data);
    out_.clear();
    while (n > 0) {
      size_t k = std::min<size_t>(n, max_in_);
#ifdef GSSBENCH_CFX
      if (cfx_ != nullptr) {
        // As GssChannel::write_all(): equal tokens, in batches the AES lanes encrypt side by
        // side, each header first and then the token straight into the send buffer.
        auto header = [](size_t len, std::vector<uint8_t>* out) {
          const uint8_t h[4] = {kVer, kMtypData, static_cast<uint8_t>(len >> 8),
                                static_cast<uint8_t>(len & 0xff)};
          out->insert(out->end(), h, h + 4);
        };
        std::string why;
        if (!cfx_->append_stream(level_ == 2, {p, n}, max_in_, header, &out_, &why)) {
          *err = "wrap: " + why;
          return false;
        }
        break;
      }
#endif
      OM_uint32 minor = 0;
      int conf = 0;
      gss_buffer_desc in{k, const_cast<uint8_t*>(p)}, tok = GSS_C_EMPTY_BUFFER;
      OM_uint32 major = gss_wrap(&minor, ctx_, level_ == 2, GSS_C_QOP_DEFAULT, &in, &conf, &tok);
      if (GSS_ERROR(major)) {
        *err = gss_error("gss_wrap", major, minor);
        return false;
      }
      bool ok = tok.length >= 1 && tok.length <= kMaxToken && (conf != 0) == (level_ == 2);
      if (ok) append_frame(kMtypData, tok.value, tok.length);
      gss_release_buffer(&minor, &tok);
      if (!ok) {
        *err = "gss_wrap: token too large or wrong protection";
        return false;
      }
      p += k;
      n -= k;
    }
    if (!send_all(fd_, out_.data(), out_.size())) {
      *err = io_error("send");
      return false;
    }
    return true;
  }

  // Up to `cap` bytes of user data: what is left of the last token, else one new token.
  // Returns 0 with *err set on failure (a clean EOF sets "EOF").
  size_t read_some(void* dst, size_t cap, std::string* err) {
    if (plain_pos_ == plain_.size()) {
      if (!next_token(err)) return 0;
    }
    size_t k = std::min(cap, plain_.size() - plain_pos_);
    std::memcpy(dst, plain_.data() + plain_pos_, k);
    plain_pos_ += k;
    return k;
  }

  // Reads one data token and counts its bytes without copying them out (download loop).
  size_t discard_token(std::string* err) {
    size_t left = plain_.size() - plain_pos_;
    plain_pos_ = plain_.size();
    if (left > 0) return left;
    if (!next_token(err)) return 0;
    left = plain_.size() - plain_pos_;
    plain_pos_ = plain_.size();
    return left;
  }

  bool read(void* dst, size_t n, std::string* err) {
    auto* p = static_cast<uint8_t*>(dst);
    while (n > 0) {
      size_t k = read_some(p, n, err);
      if (k == 0) return false;
      p += k;
      n -= k;
    }
    return true;
  }

  size_t max_in() const { return max_in_; }

 private:
  Conn() = default;

  static std::unique_ptr<Conn> fail(std::string why, std::string* err) {
    *err = std::move(why);
    return nullptr;
  }

  void append_frame(uint8_t mtyp, const void* tok, size_t len) {
    const uint8_t h[4] = {kVer, mtyp, static_cast<uint8_t>(len >> 8),
                          static_cast<uint8_t>(len & 0xff)};
    out_.insert(out_.end(), h, h + 4);
    const auto* t = static_cast<const uint8_t*>(tok);
    out_.insert(out_.end(), t, t + len);
  }

  bool send_frame(uint8_t mtyp, const void* tok, size_t len, std::string* err) {
    out_.clear();
    append_frame(mtyp, tok, len);
    if (!send_all(fd_, out_.data(), out_.size())) {
      *err = io_error("send");
      return false;
    }
    return true;
  }

  // Exactly n bytes from the socket, through the receive buffer.
  bool read_exact(uint8_t* dst, size_t n) {
    while (n > 0) {
      if (in_pos_ == in_len_) {
        if (in_.empty()) in_.resize(256 * 1024);
        ssize_t r = recv(fd_, in_.data(), in_.size(), 0);
        if (r == 0) {
          errno = 0;
          return false;
        }
        if (r < 0) {
          if (errno == EINTR) continue;
          return false;
        }
        in_pos_ = 0;
        in_len_ = static_cast<size_t>(r);
      }
      size_t k = std::min(n, in_len_ - in_pos_);
      std::memcpy(dst, in_.data() + in_pos_, k);
      in_pos_ += k;
      dst += k;
      n -= k;
    }
    return true;
  }

  // One RFC 1961 message; false (with *err) on abort, EOF, a bad header or an I/O error.
  bool read_frame(uint8_t* mtyp, std::vector<uint8_t>* tok, std::string* err) {
    uint8_t h[4];
    if (!read_exact(h, 2)) {
      *err = errno == 0 ? "EOF" : io_error("recv");
      return false;
    }
    if (h[0] != kVer) {
      *err = "bad RFC 1961 version byte from the proxy";
      return false;
    }
    if (h[1] == kMtypAbort) {
      *err = "the proxy aborted (01 FF)";
      return false;
    }
    if (!read_exact(h + 2, 2)) {
      *err = io_error("recv");
      return false;
    }
    size_t len = static_cast<size_t>(h[2]) << 8 | h[3];
    tok->resize(len);
    if (!read_exact(tok->data(), len)) {
      *err = io_error("recv");
      return false;
    }
    *mtyp = h[1];
    return true;
  }

  bool next_token(std::string* err) {
    uint8_t mtyp = 0;
    if (!read_frame(&mtyp, &tok_, err)) return false;
    if (mtyp != kMtypData) {
      *err = "unexpected message type " + std::to_string(mtyp) + " instead of 03";
      return false;
    }
#ifdef GSSBENCH_CFX
    if (cfx_ != nullptr) {
      plain_.clear();
      plain_pos_ = 0;
      bool conf = false;
      auto r = cfx_->unwrap(tok_, socksgate::crypto::CfxProtector::Order::kStream, &plain_, &conf);
      if (r != socksgate::crypto::CfxProtector::Result::kOk) {
        *err = std::string("unwrap: ") + socksgate::crypto::CfxProtector::result_text(r);
        return false;
      }
      if (conf != (level_ == 2) || plain_.empty()) {
        *err = "a token with the wrong protection, or empty, from the proxy";
        return false;
      }
      return true;
    }
#endif
    OM_uint32 minor = 0;
    int conf = 0;
    gss_qop_t qop = 0;
    gss_buffer_desc in{tok_.size(), tok_.data()}, out = GSS_C_EMPTY_BUFFER;
    OM_uint32 major = gss_unwrap(&minor, ctx_, &in, &out, &conf, &qop);
    if (GSS_ERROR(major)) {
      *err = gss_error("gss_unwrap", major, minor);
      return false;
    }
    const auto* p = static_cast<const uint8_t*>(out.value);
    plain_.assign(p, p + out.length);
    plain_pos_ = 0;
    gss_release_buffer(&minor, &out);
    if ((conf != 0) != (level_ == 2)) {
      *err = "a token with the wrong protection from the proxy";
      return false;
    }
    if (plain_.empty()) {
      *err = "an empty data token from the proxy";
      return false;
    }
    return true;
  }

  bool establish(const Gss& gss, std::string* err) {
    OM_uint32 flags = GSS_C_MUTUAL_FLAG | GSS_C_REPLAY_FLAG | GSS_C_SEQUENCE_FLAG |
                      GSS_C_INTEG_FLAG | GSS_C_CONF_FLAG;
    std::vector<uint8_t> reply;
    bool have_reply = false;
    for (int round = 0; round < 8; ++round) {
      OM_uint32 minor = 0, ret_flags = 0;
      gss_buffer_desc in{reply.size(), reply.data()}, out = GSS_C_EMPTY_BUFFER;
      OM_uint32 major = gss_init_sec_context(
          &minor, gss.cred(), &ctx_, gss.target(), krb5_mech(), flags, 0, GSS_C_NO_CHANNEL_BINDINGS,
          have_reply ? &in : GSS_C_NO_BUFFER, nullptr, &out, &ret_flags, nullptr);
      bool sent = true;
      if (out.length > 0) {
        sent = out.length <= kMaxToken && send_frame(kMtypContext, out.value, out.length, err);
        if (out.length > kMaxToken) *err = "context token too large";
      }
      gss_release_buffer(&minor, &out);
      if (GSS_ERROR(major)) {
        *err = gss_error("gss_init_sec_context", major, minor);
        return false;
      }
      if (!sent) return false;
      if (major == GSS_S_COMPLETE) {
        if ((ret_flags & (GSS_C_INTEG_FLAG | GSS_C_CONF_FLAG)) !=
            (GSS_C_INTEG_FLAG | GSS_C_CONF_FLAG)) {
          *err = "the context offers no integrity or confidentiality";
          return false;
        }
        return true;
      }
      uint8_t mtyp = 0;
      if (!read_frame(&mtyp, &reply, err)) return false;
      if (mtyp != kMtypContext) {
        *err = "unexpected message type " + std::to_string(mtyp) + " during context setup";
        return false;
      }
      have_reply = true;
    }
    *err = "context not established after 8 rounds";
    return false;
  }

  bool negotiate(std::string* err) {
    OM_uint32 minor = 0;
    uint8_t octet = static_cast<uint8_t>(level_);
    int conf = 0;
    gss_buffer_desc in{1, &octet}, tok = GSS_C_EMPTY_BUFFER;
    OM_uint32 major = gss_wrap(&minor, ctx_, 0, GSS_C_QOP_DEFAULT, &in, &conf, &tok);
    if (GSS_ERROR(major)) {
      *err = gss_error("gss_wrap (level)", major, minor);
      return false;
    }
    bool sent = send_frame(kMtypLevel, tok.value, tok.length, err);
    gss_release_buffer(&minor, &tok);
    if (!sent) return false;
    uint8_t mtyp = 0;
    if (!read_frame(&mtyp, &tok_, err)) return false;
    if (mtyp != kMtypLevel) {
      *err = "unexpected message type " + std::to_string(mtyp) + " instead of 02";
      return false;
    }
    gss_buffer_desc rin{tok_.size(), tok_.data()}, rout = GSS_C_EMPTY_BUFFER;
    gss_qop_t qop = 0;
    major = gss_unwrap(&minor, ctx_, &rin, &rout, &conf, &qop);
    if (GSS_ERROR(major)) {
      *err = gss_error("gss_unwrap (level)", major, minor);
      return false;
    }
    int granted = rout.length == 1 ? static_cast<const uint8_t*>(rout.value)[0] : -1;
    gss_release_buffer(&minor, &rout);
    if (granted != level_) {
      *err = "asked for level " + std::to_string(level_) + ", the proxy granted " +
             std::to_string(granted);
      return false;
    }
    return true;
  }

  int fd_ = -1;
  int level_ = 0;
  gss_ctx_id_t ctx_ = GSS_C_NO_CONTEXT;
#ifdef GSSBENCH_CFX
  std::unique_ptr<socksgate::crypto::CfxProtector> cfx_;
#endif
  size_t max_in_ = 0;
  std::vector<uint8_t> in_;  // socket receive buffer
  size_t in_pos_ = 0, in_len_ = 0;
  std::vector<uint8_t> tok_;    // the token being unwrapped
  std::vector<uint8_t> plain_;  // the last token's user data
  size_t plain_pos_ = 0;
  std::vector<uint8_t> out_;  // frames being sent
};

void print_head(const Options& o) {
  std::printf(
      "{\"scenario\": \"%s\", \"label\": \"%s\", \"proxy\": \"%s\", \"level\": \"%s\", "
      "\"crypto\": \"%s\"",
      o.scenario.c_str(), json_escape(o.label).c_str(), o.proxy_text.c_str(), level_name(o.level),
      o.openssl ? "openssl" : "mit");
}

int print_error(const Options& o, const std::string& err) {
  print_head(o);
  std::printf(", \"error\": \"%s\"}\n", json_escape(err).c_str());
  return 1;
}

// One full session before measuring: gets the service ticket into the MEMORY cache.
bool warm_up(const Options& o, const Gss& gss, std::string* err) {
  return Conn::open(o, gss, o.port, err) != nullptr;
}

int throughput(const Options& o, const Gss& gss) {
  std::string err;
  if (!warm_up(o, gss, &err)) return print_error(o, err);
  std::vector<std::unique_ptr<Conn>> conns;
  for (int i = 0; i < o.streams; ++i) {
    auto c = Conn::open(o, gss, o.port, &err);
    if (!c) return print_error(o, err);
    conns.push_back(std::move(c));
  }
  size_t max_in = conns[0]->max_in();
  std::vector<unsigned long long> bytes(conns.size());
  std::vector<std::string> errors(conns.size());
  std::atomic<bool> go{false};
  Clock::time_point t0;
  const auto dur =
      std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.duration_s));
  auto worker = [&](size_t i) {
    Conn& c = *conns[i];
    std::vector<uint8_t> buf(256 * 1024, 'x');
    while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
    if (!o.upload) {
      uint8_t g = 'g';
      if (!c.write(&g, 1, &errors[i])) return;
    }
    while (Clock::now() < t0 + dur) {
      if (o.upload) {
        if (!c.write(buf.data(), buf.size(), &errors[i])) break;
        bytes[i] += buf.size();
      } else {
        size_t n = c.discard_token(&errors[i]);
        if (n == 0) break;
        bytes[i] += n;
      }
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
  conns.clear();
  unsigned long long total = 0;
  for (auto b : bytes) total += b;
  double gib = static_cast<double>(total) / (1024.0 * 1024 * 1024);
  print_head(o);
  std::printf(
      ", \"streams\": %d, \"direction\": \"%s\", \"max_chunk\": %zu, \"seconds\": %.3f, "
      "\"bytes\": %llu, \"gib_per_s\": %.4f, \"proxy_cpu_s\": %.3f, \"cpu_s_per_gib\": %.3f, "
      "\"client_cpu_s\": %.3f",
      o.streams, o.upload ? "upload" : "download", max_in, secs, total, gib / secs, cpu1 - cpu0,
      gib > 0 ? (cpu1 - cpu0) / gib : NAN, self1 - self0);
  // A stream that failed before the deadline (not a timeout-free EOF after it) is reported.
  for (auto& e : errors) {
    if (!e.empty() && total == 0) {
      std::printf(", \"first_error\": \"%s\"", json_escape(e).c_str());
      break;
    }
  }
  std::printf("}\n");
  return total > 0 ? 0 : 1;
}

int setup(const Options& o, const Gss& gss) {
  std::string err;
  if (!warm_up(o, gss, &err)) return print_error(o, err);
  std::atomic<long long> ok{0}, errors{0};
  std::mutex mu;
  std::string first_error;
  std::vector<std::vector<double>> lat(static_cast<size_t>(o.concurrency));
  std::atomic<bool> go{false};
  Clock::time_point t0;
  const auto dur =
      std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.duration_s));
  auto worker = [&](size_t i) {
    while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
    while (Clock::now() < t0 + dur) {
      auto s0 = Clock::now();
      std::string e;
      auto c = Conn::open(o, gss, o.port, &e);
      uint8_t q = 'Q';
      if (c && c->write(&q, 1, &e) && c->read(&q, 1, &e) && q == 'Q') {
        c.reset();
        ok.fetch_add(1, std::memory_order_relaxed);
        lat[i].push_back(std::chrono::duration<double, std::micro>(Clock::now() - s0).count());
      } else {
        errors.fetch_add(1, std::memory_order_relaxed);
        std::lock_guard lock(mu);
        if (first_error.empty()) first_error = e.empty() ? "echo failed" : e;
      }
    }
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
      ", \"concurrency\": %d, \"seconds\": %.3f, \"sessions\": %lld, \"errors\": %lld, "
      "\"sessions_per_s\": %.1f, \"p50_us\": %.1f, \"p99_us\": %.1f, "
      "\"proxy_cpu_us_per_session\": %.1f, \"client_cpu_s\": %.3f",
      o.concurrency, secs, n, errors.load(), static_cast<double>(n) / secs, percentile(all, 0.5),
      percentile(all, 0.99), n > 0 ? (cpu1 - cpu0) / static_cast<double>(n) * 1e6 : NAN,
      self1 - self0);
  if (!first_error.empty())
    std::printf(", \"first_error\": \"%s\"", json_escape(first_error).c_str());
  std::printf("}\n");
  return n > 0 ? 0 : 1;
}

// The per-message crypto on its own, no network: an initiator and an acceptor context in this
// process (the acceptor's key from the keytab, KRB5_KTNAME), then gss_wrap on the initiator and
// gss_unwrap on the acceptor of full-size tokens for --duration seconds, timed in thread CPU
// time. What the library can do per core: the ceiling of the GSS path, like `openssl speed`
// for TLS.
double thread_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

int speed(const Options& o, const Gss& gss) {
  OM_uint32 minor = 0, major;
  gss_OID_set_desc mechs{1, krb5_mech()};
  gss_cred_id_t acred = GSS_C_NO_CREDENTIAL;
  major = gss_acquire_cred(&minor, GSS_C_NO_NAME, GSS_C_INDEFINITE, &mechs, GSS_C_ACCEPT, &acred,
                           nullptr, nullptr);
  if (GSS_ERROR(major))
    return print_error(o, gss_error("acceptor credential (KRB5_KTNAME)", major, minor));
  gss_ctx_id_t ictx = GSS_C_NO_CONTEXT, actx = GSS_C_NO_CONTEXT;
  auto cleanup = [&] {
    gss_delete_sec_context(&minor, &ictx, GSS_C_NO_BUFFER);
    gss_delete_sec_context(&minor, &actx, GSS_C_NO_BUFFER);
    gss_release_cred(&minor, &acred);
  };
  const OM_uint32 flags = GSS_C_MUTUAL_FLAG | GSS_C_REPLAY_FLAG | GSS_C_SEQUENCE_FLAG |
                          GSS_C_INTEG_FLAG | GSS_C_CONF_FLAG;
  std::vector<uint8_t> to_acceptor, to_initiator;
  bool done = false;
  for (int round = 0; round < 8 && !done; ++round) {
    gss_buffer_desc in{to_initiator.size(), to_initiator.data()}, out = GSS_C_EMPTY_BUFFER;
    major = gss_init_sec_context(&minor, gss.cred(), &ictx, gss.target(), krb5_mech(), flags, 0,
                                 GSS_C_NO_CHANNEL_BINDINGS, round ? &in : GSS_C_NO_BUFFER, nullptr,
                                 &out, nullptr, nullptr);
    const auto* p = static_cast<const uint8_t*>(out.value);
    to_acceptor.assign(p, p + out.length);
    gss_release_buffer(&minor, &out);
    if (GSS_ERROR(major)) {
      cleanup();
      return print_error(o, gss_error("gss_init_sec_context", major, minor));
    }
    done = major == GSS_S_COMPLETE;
    if (to_acceptor.empty()) break;
    gss_buffer_desc ain{to_acceptor.size(), to_acceptor.data()}, aout = GSS_C_EMPTY_BUFFER;
    major = gss_accept_sec_context(&minor, &actx, acred, &ain, GSS_C_NO_CHANNEL_BINDINGS, nullptr,
                                   nullptr, &aout, nullptr, nullptr, nullptr);
    p = static_cast<const uint8_t*>(aout.value);
    to_initiator.assign(p, p + aout.length);
    gss_release_buffer(&minor, &aout);
    if (GSS_ERROR(major)) {
      cleanup();
      return print_error(o, gss_error("gss_accept_sec_context", major, minor));
    }
  }
  if (!done) {
    cleanup();
    return print_error(o, "contexts not established");
  }
  const int conf_req = o.level == 2;
  OM_uint32 max_in = 0;
  major = gss_wrap_size_limit(&minor, ictx, conf_req, GSS_C_QOP_DEFAULT, kMaxToken, &max_in);
  if (GSS_ERROR(major) || max_in == 0) {
    cleanup();
    return print_error(o, gss_error("gss_wrap_size_limit", major, minor));
  }
  std::vector<uint8_t> data(max_in, 'x');
  double wrap_s = 0, unwrap_s = 0;
  unsigned long long tokens = 0;
  auto t0 = Clock::now();
  const auto dur =
      std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.duration_s));
  std::string err;
#ifdef GSSBENCH_CFX
  if (o.openssl) {
    // Both contexts to socksgate's RFC 4121 code; same message size as MIT's run.
    using socksgate::crypto::CfxProtector;
    socksgate::crypto::GssContext i_owned, a_owned;
    *i_owned.out() = std::exchange(ictx, GSS_C_NO_CONTEXT);
    *a_owned.out() = std::exchange(actx, GSS_C_NO_CONTEXT);
    std::string why;
    auto iw = CfxProtector::take_over(i_owned, 0, &why);
    auto aw = iw ? CfxProtector::take_over(a_owned, 0, &why) : nullptr;
    if (aw == nullptr) {
      cleanup();
      return print_error(o, "--crypto openssl: " + why);
    }
    // Full-size tokens in batches of kBatch, as the gateway's relay makes them.
    constexpr size_t kBatch = CfxProtector::kBatch;
    const size_t tok_len = iw->token_size(conf_req != 0, data.size());
    std::vector<uint8_t> toks(kBatch * tok_len), out;
    std::array<std::span<const uint8_t>, kBatch> plains;
    std::array<uint8_t*, kBatch> dests;
    for (size_t i = 0; i < kBatch; ++i) {
      plains[i] = data;
      dests[i] = toks.data() + i * tok_len;
    }
    while (Clock::now() < t0 + dur) {
      bool conf = false;
      double c0 = thread_cpu_seconds();
      bool ok = iw->wrap_into(conf_req != 0, plains, dests, &why);
      double c1 = thread_cpu_seconds();
      auto r = ok ? CfxProtector::Result::kOk : CfxProtector::Result::kMalformed;
      for (size_t i = 0; i < kBatch && r == CfxProtector::Result::kOk; ++i) {
        out.clear();
        r = aw->unwrap({dests[i], tok_len}, CfxProtector::Order::kStream, &out, &conf);
        if (out.size() != data.size() || conf != (conf_req != 0))
          r = CfxProtector::Result::kMalformed;
      }
      double c2 = thread_cpu_seconds();
      if (r != CfxProtector::Result::kOk) {
        err = ok ? std::string("unwrap: ") + CfxProtector::result_text(r) : "wrap: " + why;
        break;
      }
      wrap_s += c1 - c0;
      unwrap_s += c2 - c1;
      tokens += kBatch;
    }
  }
#endif
  while (!o.openssl && Clock::now() < t0 + dur) {
    gss_buffer_desc in{data.size(), data.data()}, tok = GSS_C_EMPTY_BUFFER,
                                                  out = GSS_C_EMPTY_BUFFER;
    int conf = 0;
    double c0 = thread_cpu_seconds();
    major = gss_wrap(&minor, ictx, conf_req, GSS_C_QOP_DEFAULT, &in, &conf, &tok);
    double c1 = thread_cpu_seconds();
    if (GSS_ERROR(major)) {
      err = gss_error("gss_wrap", major, minor);
      break;
    }
    major = gss_unwrap(&minor, actx, &tok, &out, &conf, nullptr);
    double c2 = thread_cpu_seconds();
    bool ok = major == GSS_S_COMPLETE && out.length == data.size() && (conf != 0) == conf_req;
    if (!ok) err = gss_error("gss_unwrap", major, minor);
    gss_release_buffer(&minor, &tok);
    gss_release_buffer(&minor, &out);
    if (!ok) break;
    wrap_s += c1 - c0;
    unwrap_s += c2 - c1;
    ++tokens;
  }
  cleanup();
  if (!err.empty()) return print_error(o, err);
  double mib = static_cast<double>(tokens) * static_cast<double>(max_in) / (1024.0 * 1024);
  print_head(o);
  std::printf(
      ", \"chunk\": %u, \"tokens\": %llu, \"wrap_mib_per_cpu_s\": %.1f, "
      "\"unwrap_mib_per_cpu_s\": %.1f, \"wrap_cpu_s_per_gib\": %.3f, "
      "\"unwrap_cpu_s_per_gib\": %.3f}\n",
      max_in, tokens, wrap_s > 0 ? mib / wrap_s : NAN, unwrap_s > 0 ? mib / unwrap_s : NAN,
      mib > 0 ? wrap_s / (mib / 1024) : NAN, mib > 0 ? unwrap_s / (mib / 1024) : NAN);
  return tokens > 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);
  Options o = parse(argc, argv);
  if (o.scenario != "throughput" && o.scenario != "setup" && o.scenario != "speed")
    usage("unknown scenario " + o.scenario);
  Gss gss(o);
  if (o.scenario == "throughput") return throughput(o, gss);
  if (o.scenario == "speed") return speed(o, gss);
  return setup(o, gss);
}
