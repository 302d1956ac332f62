#include "gateway/config.h"

#include <ifaddrs.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <asio/ip/address.hpp>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <stdexcept>
#include <tuple>

#include "crypto/password_hash.h"
#include "gateway/interfaces.h"

namespace socksgate::gateway {
namespace {

using nlohmann::json;
using Ptr = json::json_pointer;
using policy::Diagnostic;
using policy::JsonSource;

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot open: " + std::strerror(errno));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string resolve_path(const std::string& config_path, const std::string& p) {
  std::filesystem::path fp(p);
  if (fp.is_absolute() || config_path.empty() || config_path[0] == '<') return p;
  return (std::filesystem::path(config_path).parent_path() / fp).lexically_normal().string();
}

// Strict reading of one JSON object: every key must be known, every value of the right type.
class ObjectReader {
 public:
  ObjectReader(const JsonSource& src, Ptr at, std::vector<Diagnostic>* diags,
               std::initializer_list<std::string_view> keys)
      : src_(src), at_(std::move(at)), diags_(diags) {
    const json& v = src_.root().at(at_);
    if (!v.is_object()) {
      diags_->push_back(src_.at_value(at_, "expected an object"));
      ok_ = false;
      return;
    }
    for (const auto& [k, _] : v.items()) {
      bool known = false;
      for (auto allowed : keys) known = known || allowed == k;
      if (!known) {
        std::string list;
        for (auto allowed : keys) list += (list.empty() ? "" : ", ") + std::string(allowed);
        diags_->push_back(
            src_.at_key(at_ / k, "unknown key \"" + k + "\" (expected one of: " + list + ")"));
      }
    }
  }
  bool ok() const { return ok_; }
  bool has(const std::string& k) const { return ok_ && src_.root().at(at_).contains(k); }
  Ptr ptr(const std::string& k) const { return at_ / k; }
  const json& value(const std::string& k) const { return src_.root().at(at_ / k); }

  std::optional<std::string> string(const std::string& k, bool required, bool allow_empty = false) {
    if (!has(k)) {
      if (required && ok_)
        diags_->push_back(src_.at_value(at_, "missing required key \"" + k + "\""));
      return std::nullopt;
    }
    const json& v = value(k);
    if (!v.is_string()) {
      diags_->push_back(src_.at_value(ptr(k), "\"" + k + "\" must be a string"));
      return std::nullopt;
    }
    if (!allow_empty && v.get_ref<const std::string&>().empty()) {
      diags_->push_back(src_.at_value(ptr(k), "\"" + k + "\" must not be empty"));
      return std::nullopt;
    }
    return v.get<std::string>();
  }

  std::optional<int64_t> integer(const std::string& k, int64_t min, int64_t max) {
    if (!has(k)) return std::nullopt;
    const json& v = value(k);
    if (!v.is_number_integer()) {
      diags_->push_back(src_.at_value(ptr(k), "\"" + k + "\" must be an integer"));
      return std::nullopt;
    }
    int64_t x = v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)
                    ? INT64_MAX
                    : v.get<int64_t>();
    if (x < min || x > max) {
      diags_->push_back(src_.at_value(
          ptr(k),
          "\"" + k + "\" must be between " + std::to_string(min) + " and " + std::to_string(max)));
      return std::nullopt;
    }
    return x;
  }

  std::optional<bool> boolean(const std::string& k) {
    if (!has(k)) return std::nullopt;
    const json& v = value(k);
    if (!v.is_boolean()) {
      diags_->push_back(src_.at_value(ptr(k), "\"" + k + "\" must be true or false"));
      return std::nullopt;
    }
    return v.get<bool>();
  }

  std::optional<std::vector<std::string>> strings(const std::string& k) {
    if (!has(k)) return std::nullopt;
    const json& v = value(k);
    if (!v.is_array()) {
      diags_->push_back(src_.at_value(ptr(k), "\"" + k + "\" must be an array of strings"));
      return std::nullopt;
    }
    std::vector<std::string> out;
    bool good = true;
    for (size_t i = 0; i < v.size(); ++i) {
      if (!v[i].is_string()) {
        diags_->push_back(src_.at_value(ptr(k) / i, "expected a string"));
        good = false;
      } else {
        out.push_back(v[i].get<std::string>());
      }
    }
    if (!good) return std::nullopt;
    return out;
  }

 private:
  const JsonSource& src_;
  Ptr at_;
  std::vector<Diagnostic>* diags_;
  bool ok_ = true;
};

template <typename Dur>
void read_duration(ObjectReader& r, const std::string& key, int64_t min, int64_t max, Dur* out) {
  if (auto v = r.integer(key, min, max)) *out = Dur(*v);
}

template <typename E>
std::optional<E> read_enum(ObjectReader& r, const std::string& key,
                           std::initializer_list<std::pair<std::string_view, E>> values,
                           const JsonSource& src, std::vector<Diagnostic>* diags) {
  auto v = r.string(key, false);
  if (!v) return std::nullopt;
  std::string list;
  for (const auto& [name, e] : values) {
    if (*v == name) return e;
    list += (list.empty() ? "" : ", ") + std::string(name);
  }
  diags->push_back(src.at_value(
      r.ptr(key), "unknown " + key + " \"" + *v + "\" (expected one of: " + list + ")"));
  return std::nullopt;
}

TlsListenerConfig read_tls(const JsonSource& src, const Ptr& at, std::vector<Diagnostic>* diags,
                           const std::string& config_path, const std::string& listener) {
  TlsListenerConfig t;
  t.server.listener = listener;
  ObjectReader r(src, at, diags,
                 {"cert", "key", "profile", "handshake_timeout_ms", "session_tickets",
                  "ticket_rotation_s", "client_cert", "comment"});
  if (!r.ok()) return t;
  if (auto v = r.string("cert", true)) t.server.cert_file = resolve_path(config_path, *v);
  if (auto v = r.string("key", true)) t.server.key_file = resolve_path(config_path, *v);
  if (auto p = read_enum<crypto::TlsProfile>(r, "profile",
                                             {{"intermediate", crypto::TlsProfile::kIntermediate},
                                              {"modern", crypto::TlsProfile::kModern}},
                                             src, diags)) {
    t.server.profile = *p;
  }
  read_duration(r, "handshake_timeout_ms", 100, 600000, &t.handshake_timeout);
  if (auto v = r.boolean("session_tickets")) t.server.session_tickets = *v;
  read_duration(r, "ticket_rotation_s", 60, 7 * 86400, &t.server.ticket_rotation);
  if (r.has("client_cert")) {
    ObjectReader c(src, r.ptr("client_cert"), diags,
                   {"mode", "ca", "crl", "depth", "identity", "same_user", "comment"});
    if (!c.ok()) return t;
    if (auto m =
            read_enum<crypto::ClientCertMode>(c, "mode",
                                              {{"none", crypto::ClientCertMode::kNone},
                                               {"optional", crypto::ClientCertMode::kOptional},
                                               {"required", crypto::ClientCertMode::kRequired}},
                                              src, diags)) {
      t.server.client_cert = *m;
    }
    if (auto v = c.string("ca", false)) t.server.ca_file = resolve_path(config_path, *v);
    if (auto v = c.string("crl", false)) t.server.crl_file = resolve_path(config_path, *v);
    if (auto v = c.integer("depth", 1, 16)) t.server.verify_depth = static_cast<int>(*v);
    if (auto id = read_enum<crypto::CertIdentity>(c, "identity",
                                                  {{"cn", crypto::CertIdentity::kCommonName},
                                                   {"email", crypto::CertIdentity::kSanEmail},
                                                   {"dns", crypto::CertIdentity::kSanDns},
                                                   {"uri", crypto::CertIdentity::kSanUri}},
                                                  src, diags)) {
      t.server.identity = *id;
    }
    if (auto v = c.boolean("same_user")) t.same_user = *v;
    if (t.server.client_cert != crypto::ClientCertMode::kNone && t.server.ca_file.empty()) {
      diags->push_back(src.at_value(r.ptr("client_cert"),
                                    "client certificates need \"ca\": the CA bundle they must "
                                    "chain to"));
    }
  }
  return t;
}

void read_listeners(const JsonSource& src, std::vector<Diagnostic>* diags, Config* cfg,
                    bool have_userpass) {
  Ptr at("/listeners");
  if (!src.root().contains("listeners")) {
    diags->push_back(src.at_value(Ptr(), "missing required key \"listeners\""));
    return;
  }
  const json& arr = src.root().at(at);
  if (!arr.is_array() || arr.empty()) {
    diags->push_back(src.at_value(at, "\"listeners\" must be a non-empty array"));
    return;
  }
  std::set<std::string> names;
  std::set<std::pair<std::string, uint16_t>> endpoints;
  for (size_t i = 0; i < arr.size(); ++i) {
    ObjectReader r(src, at / i, diags,
                   {"name", "address", "port", "methods", "external", "udp_advertise", "socks4",
                    "tls", "comment"});
    if (!r.ok()) continue;
    ListenerConfig l;
    auto name = r.string("name", true);
    auto address = r.string("address", true);
    auto port = r.integer("port", 0, 65535);
    auto methods = r.strings("methods");
    if (name) {
      if (!names.insert(*name).second) {
        diags->push_back(src.at_value(r.ptr("name"), "duplicate listener name \"" + *name + "\""));
      }
      l.name = *name;
    }
    if (address) {
      // An IP literal, or an interface name resolved now (and again on every reload).
      auto ip = policy::IpAddress::parse(*address);
      l.address_spec = *address;
      if (ip && address->find('%') == std::string::npos) {
        l.address = *address;
      } else if (auto h = resolve_host_addresses(*address); h && !ip) {
        l.address = (h->v4 ? *h->v4 : *h->v6).to_string();
      } else {
        diags->push_back(src.at_value(
            r.ptr("address"), "\"" + *address +
                                  "\" is neither an IP address (e.g. \"127.0.0.1\", \"::1\", "
                                  "\"0.0.0.0\") nor an interface of this host with an address"));
      }
    }
    if (port) l.port = static_cast<uint16_t>(*port);
    if (auto ext = r.string("external", false)) {
      auto h = resolve_host_addresses(*ext);
      bool wildcard = *ext == "0.0.0.0" || *ext == "::";
      if (!h || wildcard) {
        diags->push_back(src.at_value(r.ptr("external"),
                                      "\"" + *ext +
                                          "\" is not a usable address for \"external\" (an IP "
                                          "of this host, e.g. \"192.0.2.10\", or an interface "
                                          "name, e.g. \"eth1\")"));
      } else {
        l.external = *ext;
        l.external_addrs = *h;
      }
    }
    if (auto v4 = r.boolean("socks4")) l.socks4 = *v4;
    if (r.has("tls")) l.tls = read_tls(src, r.ptr("tls"), diags, cfg->path, l.name);
    if (auto adv = r.string("udp_advertise", false)) {
      auto ip = policy::IpAddress::parse(*adv);
      if (!ip || adv->find('%') != std::string::npos || *adv == "0.0.0.0" || *adv == "::") {
        diags->push_back(
            src.at_value(r.ptr("udp_advertise"),
                         "\"" + *adv + "\" is not a usable address for \"udp_advertise\""));
      }
      l.udp_advertise = *adv;
    }
    if (!r.has("methods")) {
      diags->push_back(src.at_value(at / i, "missing required key \"methods\""));
    } else if (methods) {
      if (methods->empty())
        diags->push_back(src.at_value(r.ptr("methods"), "\"methods\" must not be empty"));
      std::set<std::string> seen;
      for (size_t m = 0; m < methods->size(); ++m) {
        const std::string& name_m = (*methods)[m];
        if (!auth::method_code(name_m)) {
          diags->push_back(src.at_value(
              r.ptr("methods") / m, "unknown method \"" + name_m + "\" (known: none, userpass)"));
        } else if (name_m == "userpass" && !have_userpass) {
          diags->push_back(src.at_value(r.ptr("methods") / m,
                                        "method \"userpass\" needs \"auth\": {\"userpass\": ...}"));
        }
        if (!seen.insert(name_m).second) {
          diags->push_back(
              src.at_value(r.ptr("methods") / m, "method \"" + name_m + "\" listed twice"));
        }
      }
      l.methods = *methods;
    }
    if (address && port && *port != 0 && !endpoints.emplace(*address, *port).second) {
      diags->push_back(src.at_value(r.ptr("port"), "another listener already uses " + *address +
                                                       " port " + std::to_string(*port)));
    }
    cfg->listeners.push_back(std::move(l));
  }
}

void read_userpass(const JsonSource& src, std::vector<Diagnostic>* diags, Config* cfg) {
  ObjectReader auth(src, Ptr("/auth"), diags, {"userpass"});
  if (!auth.ok() || !auth.has("userpass")) return;
  ObjectReader r(src, Ptr("/auth/userpass"), diags,
                 {"file", "users", "cache_ttl_s", "failure_delay_ms", "throttle", "comment"});
  if (!r.ok()) return;
  UserPassConfig up;
  auto file = r.string("file", false);
  if (file) up.file = resolve_path(cfg->path, *file);
  if (r.has("users")) {
    const json& u = r.value("users");
    if (!u.is_object()) {
      diags->push_back(src.at_value(r.ptr("users"), "\"users\" must be an object of user: hash"));
    } else {
      for (const auto& [name, hash] : u.items()) {
        if (!hash.is_string()) {
          diags->push_back(src.at_value(r.ptr("users") / name, "the hash must be a string"));
          continue;
        }
        if (std::string why = crypto::check_hash_format(hash.get<std::string>()); !why.empty()) {
          diags->push_back(src.at_value(r.ptr("users") / name, "user \"" + name + "\": " + why));
          continue;
        }
        up.inline_users.emplace_back(name, hash.get<std::string>());
      }
    }
  }
  if (!file && !r.has("users")) {
    diags->push_back(src.at_value(Ptr("/auth/userpass"),
                                  "userpass needs \"file\" (htpasswd-style) or \"users\""));
  }
  if (auto v = r.integer("cache_ttl_s", 0, 86400)) up.settings.cache_ttl = std::chrono::seconds(*v);
  if (auto v = r.integer("failure_delay_ms", 0, 60000))
    up.settings.failure_delay = std::chrono::milliseconds(*v);
  if (r.has("throttle")) {
    ObjectReader t(src, r.ptr("throttle"), diags, {"max_failures", "window_s", "lockout_s"});
    if (t.ok()) {
      if (auto v = t.integer("max_failures", 0, 1000000))
        up.throttle.max_failures = static_cast<int>(*v);
      if (auto v = t.integer("window_s", 1, 86400)) up.throttle.window = std::chrono::seconds(*v);
      if (auto v = t.integer("lockout_s", 0, 86400)) up.throttle.lockout = std::chrono::seconds(*v);
    }
  }
  cfg->userpass = std::move(up);
}

void read_rest(const JsonSource& src, std::vector<Diagnostic>* diags, Config* cfg) {
  if (src.root().contains("audit")) {
    ObjectReader r(src, Ptr("/audit"), diags, {"file", "stdout", "comment"});
    if (auto f = r.string("file", false)) cfg->audit.file = resolve_path(cfg->path, *f);
    if (auto s = r.boolean("stdout")) cfg->audit.to_stdout = *s;
  }
  if (src.root().contains("limits")) {
    ObjectReader r(src, Ptr("/limits"), diags,
                   {"max_sessions", "max_sessions_per_user", "max_sessions_per_source",
                    "negotiation_timeout_ms", "connect_timeout_ms", "idle_timeout_s",
                    "drain_timeout_s", "comment"});
    auto& l = cfg->limits;
    if (auto v = r.integer("max_sessions", 1, 10000000)) l.max_sessions = static_cast<uint32_t>(*v);
    if (auto v = r.integer("max_sessions_per_user", 0, 10000000))
      l.max_sessions_per_user = static_cast<uint32_t>(*v);
    if (auto v = r.integer("max_sessions_per_source", 0, 10000000))
      l.max_sessions_per_source = static_cast<uint32_t>(*v);
    read_duration(r, "negotiation_timeout_ms", 100, 600000, &l.negotiation_timeout);
    read_duration(r, "connect_timeout_ms", 100, 600000, &l.connect_timeout);
    read_duration(r, "idle_timeout_s", 1, 30 * 86400, &l.idle_timeout);
    read_duration(r, "drain_timeout_s", 0, 86400, &l.drain_timeout);
  }
  if (src.root().contains("bind")) {
    ObjectReader r(src, Ptr("/bind"), diags, {"ports", "timeout_s", "max_per_user", "comment"});
    auto& b = cfg->bind;
    if (auto p = r.string("ports", false)) {
      unsigned lo = 0, hi = 0;
      char dash = 0, extra = 0;
      int n = std::sscanf(p->c_str(), "%u%c%u%c", &lo, &dash, &hi, &extra);
      if (n != 3 || dash != '-' || lo < 1024 || hi > 65535 || lo > hi) {
        diags->push_back(src.at_value(
            r.ptr("ports"), "\"ports\" must be \"MIN-MAX\" with 1024 <= MIN <= MAX <= 65535"));
      } else {
        b.port_min = static_cast<uint16_t>(lo);
        b.port_max = static_cast<uint16_t>(hi);
      }
    }
    read_duration(r, "timeout_s", 1, 86400, &b.timeout);
    if (auto v = r.integer("max_per_user", 0, 100000)) b.max_per_user = static_cast<uint32_t>(*v);
  }
  if (src.root().contains("udp")) {
    ObjectReader r(src, Ptr("/udp"), diags,
                   {"idle_timeout_s", "max_datagrams_per_s", "max_bytes_per_s", "max_destinations",
                    "comment"});
    auto& u = cfg->udp;
    read_duration(r, "idle_timeout_s", 1, 86400, &u.idle_timeout);
    if (auto v = r.integer("max_datagrams_per_s", 1, 10000000))
      u.max_datagrams_per_s = static_cast<uint32_t>(*v);
    if (auto v = r.integer("max_bytes_per_s", 1024, int64_t{1} << 40))
      u.max_bytes_per_s = static_cast<uint64_t>(*v);
    if (auto v = r.integer("max_destinations", 1, 1000000))
      u.max_destinations = static_cast<uint32_t>(*v);
  }
  if (src.root().contains("threads")) {
    ObjectReader r(src, Ptr("/threads"), diags, {"io", "blocking", "blocking_queue", "resolver"});
    auto& t = cfg->threads;
    if (auto v = r.integer("io", 0, 256)) t.io = static_cast<uint32_t>(*v);
    if (auto v = r.integer("blocking", 0, 256)) t.blocking = static_cast<uint32_t>(*v);
    if (auto v = r.integer("blocking_queue", 1, 1000000))
      t.blocking_queue = static_cast<uint32_t>(*v);
    if (auto v = r.integer("resolver", 1, 256)) t.resolver = static_cast<uint32_t>(*v);
  }
}

// "admin": the admin listener. A token file is read now (so that a bad one fails validation
// and a reload); an address other than loopback needs one.
void read_admin(const JsonSource& src, std::vector<Diagnostic>* diags, Config* cfg) {
  if (!src.root().contains("admin")) return;
  ObjectReader r(src, Ptr("/admin"), diags,
                 {"address", "port", "token_file", "metrics_users", "comment"});
  if (!r.ok()) return;
  AdminConfig a;
  if (auto v = r.string("address", false)) {
    auto ip = policy::IpAddress::parse(*v);
    if (!ip) {
      diags->push_back(src.at_value(r.ptr("address"), "\"address\" must be an IP address"));
    } else {
      a.address = *v;
    }
  }
  if (auto v = r.integer("port", 0, 65535)) a.port = static_cast<uint16_t>(*v);
  if (auto v = r.string("token_file", false)) {
    a.token_file = resolve_path(cfg->path, *v);
    try {
      std::string t = read_file(a.token_file);
      while (!t.empty() && (t.back() == '\n' || t.back() == '\r')) t.pop_back();
      if (t.size() < 16) {
        diags->push_back(src.at_value(r.ptr("token_file"),
                                      a.token_file + ": the token must be one line of at least "
                                                     "16 characters"));
      } else if (t.find_first_of("\r\n \t") != std::string::npos) {
        diags->push_back(
            src.at_value(r.ptr("token_file"), a.token_file + ": the token must be one line without "
                                                             "spaces"));
      } else {
        a.token = std::move(t);
      }
    } catch (const std::runtime_error& e) {
      diags->push_back(src.at_value(r.ptr("token_file"), e.what()));
    }
  }
  if (auto v = r.strings("metrics_users")) {
    std::set<std::string> seen;
    for (size_t i = 0; i < v->size(); ++i) {
      if ((*v)[i].empty() || !seen.insert((*v)[i]).second) {
        diags->push_back(src.at_value(r.ptr("metrics_users") / i,
                                      (*v)[i].empty() ? "empty user name" : "user listed twice"));
      }
    }
    if (v->size() > 1000) {
      diags->push_back(
          src.at_value(r.ptr("metrics_users"), "at most 1000 users get per-user series"));
    }
    a.metrics_users = *v;
  }
  std::error_code ec;
  asio::ip::address addr = asio::ip::make_address(a.address, ec);
  bool loopback =
      !ec && (addr.is_loopback() ||
              (addr.is_v6() && addr.to_v6().is_v4_mapped() &&
               asio::ip::make_address_v4(asio::ip::v4_mapped, addr.to_v6()).is_loopback()));
  if (!loopback && a.token_file.empty()) {
    diags->push_back(src.at_value(Ptr("/admin"), "the admin listener on " + a.address +
                                                     " is not loopback: it needs \"token_file\""));
  }
  cfg->admin = std::move(a);
}

// Addresses of this host that a wildcard listener answers on: protected like loopback.
void add_own_addresses(const Config& cfg, std::vector<policy::IpAddress>* out) {
  bool wildcard = false;
  for (const auto& l : cfg.listeners) {
    auto ip = policy::IpAddress::parse(l.address);
    if (!ip) continue;
    if (l.address == "0.0.0.0" || l.address == "::") {
      wildcard = true;
    } else {
      out->push_back(*ip);
    }
  }
  if (!wildcard) return;
  ifaddrs* ifa = nullptr;
  if (getifaddrs(&ifa) != 0) return;
  for (ifaddrs* p = ifa; p != nullptr; p = p->ifa_next) {
    if (p->ifa_addr == nullptr) continue;
    if (p->ifa_addr->sa_family == AF_INET) {
      auto* sin = reinterpret_cast<sockaddr_in*>(p->ifa_addr);
      std::array<uint8_t, 4> b;
      std::memcpy(b.data(), &sin->sin_addr, 4);
      out->push_back(policy::IpAddress::v4(b));
    } else if (p->ifa_addr->sa_family == AF_INET6) {
      auto* sin6 = reinterpret_cast<sockaddr_in6*>(p->ifa_addr);
      std::array<uint8_t, 16> b;
      std::memcpy(b.data(), &sin6->sin6_addr, 16);
      out->push_back(policy::IpAddress::v6(b));
    }
  }
  freeifaddrs(ifa);
}

}  // namespace

const ListenerConfig* Config::find_listener(std::string_view name) const {
  for (const auto& l : listeners) {
    if (l.name == name) return &l;
  }
  return nullptr;
}

Snapshot load_snapshot_text(const std::string& path, std::string_view text,
                            std::shared_ptr<auth::userpass::LoginThrottle> throttle) {
  std::vector<Diagnostic> diags;
  auto src = JsonSource::parse(path, text, &diags);
  if (!src) throw policy::LoadError(std::move(diags));
  auto cfg = std::make_shared<Config>();
  cfg->path = path;
  ObjectReader top(*src, Ptr(), &diags,
                   {"listeners", "auth", "policy", "audit", "limits", "bind", "udp", "threads",
                    "admin", "comment"});
  if (!top.ok()) throw policy::LoadError(std::move(diags));

  if (top.has("auth")) read_userpass(*src, &diags, cfg.get());
  read_listeners(*src, &diags, cfg.get(), cfg->userpass.has_value());
  read_rest(*src, &diags, cfg.get());
  read_admin(*src, &diags, cfg.get());

  // The policy: a file of its own, or an object inline.
  std::optional<policy::Policy> pol;
  if (!top.has("policy")) {
    diags.push_back(src->at_value(
        Ptr(), "missing required key \"policy\" ({\"file\": ...} or {\"inline\": {...}})"));
  } else {
    ObjectReader r(*src, Ptr("/policy"), &diags, {"file", "inline", "comment"});
    if (r.ok()) {
      if (r.has("file") == r.has("inline")) {
        diags.push_back(src->at_value(Ptr("/policy"),
                                      "\"policy\" needs exactly one of \"file\" or \"inline\""));
      } else if (diags.empty()) {
        policy::LoadOptions opts;
        add_own_addresses(*cfg, &opts.own_addresses);
        for (const auto& l : cfg->listeners) opts.known_listeners.push_back(l.name);
        try {
          if (r.has("file")) {
            auto f = r.string("file", true);
            if (!f) throw policy::LoadError(std::move(diags));
            cfg->policy_file = resolve_path(path, *f);
            std::string ptext = read_file(cfg->policy_file);
            pol = policy::load_policy_text(cfg->policy_file, ptext, opts);
          } else {
            pol = policy::load_policy(*src, Ptr("/policy/inline"), opts);
          }
        } catch (const policy::LoadError& e) {
          for (const auto& d : e.diagnostics()) diags.push_back(d);
        } catch (const std::runtime_error& e) {
          diags.push_back(src->at_value(Ptr("/policy/file"), e.what()));
        }
      }
    }
  }
  if (!diags.empty()) {
    // Report in file order, whatever order the checks ran in.
    // The config file's own problems first, then those of the files it names.
    std::stable_sort(diags.begin(), diags.end(), [&](const Diagnostic& a, const Diagnostic& b) {
      int fa = a.file == path ? 0 : 1, fb = b.file == path ? 0 : 1;
      return std::tie(fa, a.file, a.pos.line, a.pos.column) <
             std::tie(fb, b.file, b.pos.line, b.pos.column);
    });
    throw policy::LoadError(std::move(diags));
  }

  Snapshot snap;
  if (cfg->userpass) {
    // The password file: every bad line is a diagnostic of its own, an unreadable file is one
    // at the config key that names it; inline users must not repeat file users.
    std::string text;
    if (!cfg->userpass->file.empty()) {
      try {
        text = read_file(cfg->userpass->file);
        auth::userpass::PasswordFile::parse(cfg->userpass->file, text);
      } catch (const auth::userpass::PasswordFileError& e) {
        for (const auto& p : e.entries()) diags.push_back({e.file(), {p.line, 1}, p.message});
      } catch (const std::runtime_error& e) {
        diags.push_back(src->at_value(Ptr("/auth/userpass/file"), e.what()));
      }
    }
    auto file_users = [&]() -> std::optional<auth::userpass::PasswordFile> {
      try {
        return auth::userpass::PasswordFile::parse(cfg->userpass->file, text);
      } catch (const std::exception&) {
        return std::nullopt;
      }
    }();
    for (const auto& [u, h] : cfg->userpass->inline_users) {
      if (file_users && file_users->find(u)) {
        diags.push_back(src->at_key(Ptr("/auth/userpass/users") / u,
                                    "user \"" + u + "\" is also in " + cfg->userpass->file));
      }
      text += "\n" + u + ":" + h;
    }
    if (diags.empty()) {
      auto pf = auth::userpass::PasswordFile::parse(cfg->userpass->file, text);
      if (throttle) throttle->configure(cfg->userpass->throttle);
      snap.backends.userpass = std::make_shared<const auth::userpass::UserPassBackend>(
          std::move(pf), cfg->userpass->settings, throttle);
    }
  }
  if (!diags.empty()) throw policy::LoadError(std::move(diags));
  // TLS: certificates, keys and CRLs are loaded now, so that a bad pair fails validation (and
  // a reload) instead of the first handshake.
  for (size_t i = 0; i < cfg->listeners.size(); ++i) {
    const auto& l = cfg->listeners[i];
    if (!l.tls) continue;
    try {
      snap.tls.emplace(l.name, crypto::TlsServerContext::create(l.tls->server));
    } catch (const crypto::TlsError& e) {
      diags.push_back(src->at_value(Ptr("/listeners") / i / "tls", e.what()));
    }
  }
  if (!diags.empty()) throw policy::LoadError(std::move(diags));
  for (const auto& e : pol->egress_names()) {
    auto h = resolve_host_addresses(e);
    if (!h) {
      diags.push_back(src->at_value(Ptr("/policy"), "a rule's \"egress\": \"" + e +
                                                        "\" is neither an IP address nor an "
                                                        "interface of this host with an address"));
    } else {
      snap.egress.emplace(e, *h);
    }
  }
  if (!diags.empty()) throw policy::LoadError(std::move(diags));
  snap.policy = std::make_shared<const policy::Policy>(std::move(*pol));
  snap.config = std::move(cfg);
  return snap;
}

Snapshot load_snapshot(const std::string& path,
                       std::shared_ptr<auth::userpass::LoginThrottle> throttle) {
  return load_snapshot_text(path, read_file(path), std::move(throttle));
}

Snapshot default_snapshot(const std::string& demo_password,
                          std::shared_ptr<auth::userpass::LoginThrottle> throttle,
                          const std::string& demo_pki) {
  json doc = {
      {"listeners",
       {{{"name", "loopback4"},
         {"address", "127.0.0.1"},
         {"port", 1080},
         {"methods", {"userpass"}}},
        {{"name", "loopback6"}, {"address", "::1"}, {"port", 1080}, {"methods", {"userpass"}}}}},
      {"auth", {{"userpass", {{"users", {{"demo", crypto::hash_password(demo_password)}}}}}}},
      {"audit", {{"stdout", true}}},
      {"policy",
       {{"inline",
         {{"client_rules",
           {{{"id", "loopback-clients"},
             {"action", "pass"},
             {"from", {"127.0.0.0/8", "::1/128"}}}}},
          {"rules",
           {{{"id", "demo-loopback"},
             {"action", "pass"},
             {"users", {"demo"}},
             {"commands", {"connect"}},
             {"to", {"127.0.0.0/8", "::1/128"}},
             {"ports", {"1024-65535"}}},
            {{"id", "demo-public"},
             {"action", "pass"},
             {"users", {"demo"}},
             {"commands", {"connect"}}},
            {{"id", "deny-rest"}, {"action", "block"}}}}}}}},
  };
  if (!demo_pki.empty()) {
    doc["listeners"].push_back(
        {{"name", "tls4"},
         {"address", "127.0.0.1"},
         {"port", 1443},
         {"methods", {"userpass"}},
         {"tls", {{"cert", demo_pki + "/server.pem"}, {"key", demo_pki + "/server.key"}}}});
  }
  return load_snapshot_text("<embedded>", doc.dump(2), std::move(throttle));
}

}  // namespace socksgate::gateway
