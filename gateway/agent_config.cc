#include "gateway/agent_config.h"

#include <fcntl.h>
#include <strings.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <asio/ip/address.hpp>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <set>

#include "auth/gateway_auth.h"
#include "crypto/secure.h"
#include "gateway/config_reader.h"
#include "gateway/log.h"
#include "policy/json_source.h"

namespace socksgate::gateway {
namespace {

using config_io::ObjectReader;
using config_io::Ptr;
using config_io::read_duration;
using config_io::read_enum;
using config_io::required_array;
using config_io::resolve_path;
using policy::Diagnostic;
using policy::JsonSource;

bool is_loopback(const asio::ip::address& a) {
  if (a.is_v4()) return a.to_v4().is_loopback();
  return a.to_v6().is_loopback() ||
         (a.to_v6().is_v4_mapped() &&
          asio::ip::make_address_v4(asio::ip::v4_mapped, a.to_v6()).is_loopback());
}

void read_listen(const JsonSource& src, std::vector<Diagnostic>* diags, AgentConfig* cfg) {
  Ptr at("/listen");
  const nlohmann::json* listen = required_array(src, "listen", diags);
  if (listen == nullptr) return;
  const auto& arr = *listen;
  std::set<std::string> names;
  for (size_t i = 0; i < arr.size(); ++i) {
    ObjectReader r(src, at / i, diags, {"name", "address", "port", "comment"});
    if (!r.ok()) continue;
    AgentListenConfig l;
    l.name = r.string("name", false).value_or("local" + std::to_string(i));
    if (!names.insert(l.name).second) {
      diags->push_back(src.at_value(r.ptr("name"), "listener name \"" + l.name + "\" repeated"));
    }
    if (auto a = r.string("address", true)) {
      asio::error_code ec;
      auto ip = asio::ip::make_address(*a, ec);
      if (ec || !is_loopback(ip)) {
        diags->push_back(
            src.at_value(r.ptr("address"),
                         "\"address\" must be a loopback IP address (127.0.0.1, ::1): the "
                         "agent's local SOCKS port has no authentication"));
      } else {
        l.address = ip.to_string();
      }
    }
    if (auto p = r.integer("port", 0, 65535)) l.port = static_cast<uint16_t>(*p);
    cfg->listen.push_back(std::move(l));
  }
}

bool is_hex64(const std::string& s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return std::isxdigit(static_cast<unsigned char>(c)) != 0;
         });
}

void read_gateway(const JsonSource& src, std::vector<Diagnostic>* diags, AgentConfig* cfg) {
  if (!src.root().contains("gateway")) {
    diags->push_back(src.at_value(Ptr(), "missing required key \"gateway\""));
    return;
  }
  ObjectReader r(
      src, Ptr("/gateway"), diags,
      {"host", "port", "server_name", "ca", "pin_sha256", "client_cert", "client_key", "profile",
       "connect_timeout_ms", "handshake_timeout_ms", "request_timeout_ms", "comment"});
  if (!r.ok()) return;
  auto& g = cfg->gateway;
  if (auto h = r.string("host", true)) g.host = *h;
  if (!r.has("port")) {
    diags->push_back(src.at_value(Ptr("/gateway"), "missing required key \"port\""));
  } else if (auto p = r.integer("port", 1, 65535)) {
    g.port = static_cast<uint16_t>(*p);
  }
  g.tls.server_name = r.string("server_name", false).value_or(g.host);
  if (auto v = r.string("ca", false)) g.tls.ca_file = resolve_path(cfg->path, *v);
  if (auto v = r.string("pin_sha256", false)) {
    std::string pin = *v;
    if (pin.size() > 7 && strncasecmp(pin.c_str(), "sha256:", 7) == 0) pin = pin.substr(7);
    if (!is_hex64(pin)) {
      diags->push_back(
          src.at_value(r.ptr("pin_sha256"),
                       "\"pin_sha256\" must be 64 hex digits: the SHA-256 of the "
                       "gateway's public key (certs/make-certs.sh writes server.pin)"));
    } else {
      std::transform(pin.begin(), pin.end(), pin.begin(),
                     [](char c) { return static_cast<char>(std::tolower(c)); });
      g.tls.pin_sha256 = pin;
    }
  }
  if (!r.has("ca") && !r.has("pin_sha256")) {
    diags->push_back(src.at_value(Ptr("/gateway"),
                                  "the gateway's certificate must be verified: give \"ca\" (a CA "
                                  "file), \"pin_sha256\" (its key's SHA-256), or both"));
  }
  auto cert = r.string("client_cert", false);
  auto key = r.string("client_key", false);
  if (cert) g.tls.cert_file = resolve_path(cfg->path, *cert);
  if (key) g.tls.key_file = resolve_path(cfg->path, *key);
  if (r.has("client_cert") != r.has("client_key")) {
    diags->push_back(
        src.at_value(Ptr("/gateway"), "\"client_cert\" and \"client_key\" go together"));
  }
  if (auto p = read_enum<crypto::TlsProfile>(r, "profile",
                                             {{"intermediate", crypto::TlsProfile::kIntermediate},
                                              {"modern", crypto::TlsProfile::kModern}},
                                             src, diags)) {
    g.tls.profile = *p;
  }
  read_duration(r, "connect_timeout_ms", 100, 600000, &g.connect_timeout);
  read_duration(r, "handshake_timeout_ms", 100, 600000, &g.handshake_timeout);
  read_duration(r, "request_timeout_ms", 100, 600000, &g.request_timeout);
}

void read_auth(const JsonSource& src, std::vector<Diagnostic>* diags, AgentConfig* cfg) {
  if (!src.root().contains("auth")) {
    diags->push_back(src.at_value(Ptr(), "missing required key \"auth\""));
    return;
  }
  ObjectReader r(src, Ptr("/auth"), diags,
                 {"method", "user", "password_file", "password_env", "prompt", "service", "ccache",
                  "protection", "channel_binding", "comment"});
  if (!r.ok()) return;
  auto& a = cfg->auth;
  if (auto m = r.string("method", true)) {
    // The factory is the one list of methods: asking it (with placeholder credentials) keeps
    // the config loader in step when a method is added.
    auth::GatewayAuthSettings probe;
    probe.method = *m;
    probe.user = "x";
    probe.password = "x";
    probe.service = "x@x";
    if (!auth::make_gateway_auth(std::move(probe))) {
      diags->push_back(src.at_value(
          r.ptr("method"), "unknown method \"" + *m +
                               "\" (known: " + std::string(auth::gateway_auth_methods()) + ")"));
      return;
    }
    a.method = *m;
  } else {
    return;
  }
  int sources = 0;
  if (auto f = r.string("password_file", false)) {
    a.password_file = resolve_path(cfg->path, *f);
    a.source = PasswordSource::kFile;
    ++sources;
  }
  if (auto e = r.string("password_env", false)) {
    a.password_env = *e;
    a.source = PasswordSource::kEnv;
    ++sources;
  }
  if (auto p = r.boolean("prompt"); p && *p) {
    a.source = PasswordSource::kPrompt;
    ++sources;
  }
  const bool gss_keys =
      r.has("service") || r.has("ccache") || r.has("protection") || r.has("channel_binding");
  if (a.method == "gssapi") {
    // The user's Kerberos ticket is the credential: no user name or password here.
    if (r.has("user") || sources > 0) {
      diags->push_back(src.at_value(Ptr("/auth"),
                                    "method \"gssapi\" takes no \"user\" or password (the "
                                    "Kerberos ticket in the user's cache is the identity)"));
    }
    a.service = r.string("service", false).value_or("rcmd@" + cfg->gateway.host);
    if (a.service.empty() || a.service.size() > 1024) {
      diags->push_back(src.at_value(r.ptr("service"), "\"service\" must be 1 to 1024 bytes"));
    }
    if (auto c = r.string("ccache", false)) {
      // "FILE:/path", "KEYRING:...", "DIR:..."; a bare path is a FILE: cache next to the config.
      a.ccache = c->find(':') == std::string::npos ? "FILE:" + resolve_path(cfg->path, *c) : *c;
    }
    if (auto p = r.string("protection", false)) {
      if (*p != "integrity" && *p != "confidentiality" && *p != "none") {
        diags->push_back(
            src.at_value(r.ptr("protection"),
                         "\"protection\" must be \"integrity\", \"confidentiality\" or \"none\""));
      } else {
        a.protection = *p;
      }
    }
    if (auto b = r.boolean("channel_binding")) a.channel_binding = *b;
    return;
  }
  if (gss_keys) {
    diags->push_back(src.at_value(Ptr("/auth"),
                                  "\"service\", \"ccache\", \"protection\" and "
                                  "\"channel_binding\" apply to method \"gssapi\" only"));
  }
  if (a.method == "none") {
    if (r.has("user") || sources > 0) {
      diags->push_back(src.at_value(Ptr("/auth"),
                                    "method \"none\" takes no \"user\" or password (the client "
                                    "certificate, if any, is the identity)"));
    }
    return;
  }
  if (auto u = r.string("user", true)) {
    if (u->size() > 255) {
      diags->push_back(src.at_value(r.ptr("user"), "\"user\" must be at most 255 bytes"));
    }
    a.user = *u;
  }
  if (sources != 1) {
    diags->push_back(src.at_value(Ptr("/auth"),
                                  "method \"userpass\" needs exactly one of \"password_file\", "
                                  "\"password_env\" or \"prompt\": true (never the command line)"));
  }
}

void read_rest(const JsonSource& src, std::vector<Diagnostic>* diags, AgentConfig* cfg) {
  if (src.root().contains("backoff")) {
    ObjectReader r(src, Ptr("/backoff"), diags, {"initial_ms", "max_ms", "comment"});
    read_duration(r, "initial_ms", 10, 60000, &cfg->backoff.initial);
    read_duration(r, "max_ms", 10, 600000, &cfg->backoff.max);
    if (cfg->backoff.max < cfg->backoff.initial) {
      diags->push_back(src.at_value(Ptr("/backoff"), "\"max_ms\" must be >= \"initial_ms\""));
    }
  }
  if (src.root().contains("limits")) {
    ObjectReader r(src, Ptr("/limits"), diags,
                   {"negotiation_timeout_ms", "idle_timeout_s", "max_sessions", "comment"});
    read_duration(r, "negotiation_timeout_ms", 100, 600000, &cfg->limits.negotiation_timeout);
    read_duration(r, "idle_timeout_s", 1, 30 * 86400, &cfg->limits.idle_timeout);
    if (auto v = r.integer("max_sessions", 1, 1000000))
      cfg->limits.max_sessions = static_cast<uint32_t>(*v);
  }
}

std::string trim_line(std::string s) {
  if (auto nl = s.find('\n'); nl != std::string::npos) {
    std::string rest = s.substr(nl);
    crypto::secure_zero(rest.data(), rest.size());
    s.resize(nl);
  }
  if (!s.empty() && s.back() == '\r') s.pop_back();
  return s;
}

std::string prompt_password(const AgentConfig& cfg) {
  int fd = ::open("/dev/tty", O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    throw std::runtime_error("auth.prompt: no terminal to ask for the password on (/dev/tty: " +
                             std::string(std::strerror(errno)) +
                             "); use \"password_file\" or \"password_env\"");
  }
  std::string prompt =
      "socksgate agent: password for " + cfg.auth.user + " at " + cfg.gateway.host + ": ";
  (void)!::write(fd, prompt.data(), prompt.size());
  termios old{};
  bool tty = ::tcgetattr(fd, &old) == 0;
  if (tty) {
    termios noecho = old;
    noecho.c_lflag &= ~static_cast<tcflag_t>(ECHO);
    noecho.c_lflag |= ECHONL;
    ::tcsetattr(fd, TCSAFLUSH, &noecho);
  }
  std::string pw;
  char c;
  while (pw.size() < 1024) {
    ssize_t n = ::read(fd, &c, 1);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0 || c == '\n') break;
    pw.push_back(c);
  }
  c = 0;
  if (tty) ::tcsetattr(fd, TCSAFLUSH, &old);
  ::close(fd);
  return trim_line(std::move(pw));
}

}  // namespace

AgentConfig load_agent_config_text(const std::string& path, std::string_view text) {
  std::vector<Diagnostic> diags;
  auto src = JsonSource::parse(path, text, &diags);
  if (!src) throw policy::LoadError(std::move(diags));
  AgentConfig cfg;
  cfg.path = path;
  ObjectReader top(*src, Ptr(), &diags,
                   {"listen", "gateway", "auth", "backoff", "limits", "comment"});
  if (!top.ok()) throw policy::LoadError(std::move(diags));
  read_listen(*src, &diags, &cfg);
  read_gateway(*src, &diags, &cfg);
  read_auth(*src, &diags, &cfg);
  read_rest(*src, &diags, &cfg);
  if (!diags.empty()) {
    std::stable_sort(diags.begin(), diags.end(), [](const Diagnostic& a, const Diagnostic& b) {
      return std::tie(a.pos.line, a.pos.column) < std::tie(b.pos.line, b.pos.column);
    });
    throw policy::LoadError(std::move(diags));
  }
  return cfg;
}

AgentConfig load_agent_config(const std::string& path) {
  return load_agent_config_text(path, config_io::read_file(path));
}

std::string read_agent_password(const AgentConfig& cfg) {
  const auto& a = cfg.auth;
  std::string pw;
  std::string where;
  switch (a.source) {
    case PasswordSource::kNone:
      return "";
    case PasswordSource::kFile: {
      where = "auth.password_file " + a.password_file;
      struct stat st {};
      if (::stat(a.password_file.c_str(), &st) == 0 && (st.st_mode & 077) != 0) {
        log::warn("agent: ", a.password_file,
                  " is readable by other users; chmod 600 it (the password is a secret)");
      }
      pw = trim_line(config_io::read_file(a.password_file));
      break;
    }
    case PasswordSource::kEnv: {
      where = "auth.password_env " + a.password_env;
      const char* v = std::getenv(a.password_env.c_str());
      if (v == nullptr) throw std::runtime_error(where + ": the variable is not set");
      pw = v;
      break;
    }
    case PasswordSource::kPrompt:
      where = "auth.prompt";
      pw = prompt_password(cfg);
      break;
  }
  if (pw.empty()) throw std::runtime_error(where + ": the password is empty");
  if (pw.size() > 255) {
    crypto::secure_zero(pw.data(), pw.size());
    throw std::runtime_error(where + ": the password is longer than 255 bytes (RFC 1929)");
  }
  return pw;
}

}  // namespace socksgate::gateway
