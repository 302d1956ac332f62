#include "gateway/config.h"

#include <ifaddrs.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

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
#include "crypto/secure.h"
#include "gateway/config_reader.h"
#include "gateway/interfaces.h"
#include "gateway/tcp_tuning.h"

namespace socksgate::gateway {
namespace {

using nlohmann::json;
using Ptr = json::json_pointer;
using config_io::ObjectReader;
using config_io::read_duration;
using config_io::read_enum;
using config_io::read_file;
using config_io::required_array;
using config_io::resolve_path;
using policy::Diagnostic;
using policy::JsonSource;

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
    if (auto v = c.integer("depth", 0, 16)) t.server.verify_depth = static_cast<int>(*v);
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

// The GSS-API keys present in the object at `at`, applied over *g (so a listener's object
// overrides the auth.gssapi defaults key by key).
void read_gssapi_keys(const JsonSource& src, const Ptr& at, std::vector<Diagnostic>* diags,
                      const std::string& config_path, GssapiConfig* g) {
  ObjectReader r(src, at, diags,
                 {"keytab", "principal", "realms", "name_mapping", "protection", "nec",
                  "require_channel_binding", "max_round_trips", "comment"});
  if (!r.ok()) return;
  if (auto kt = r.string("keytab", false)) {
    std::string path = *kt;
    if (path.rfind("FILE:", 0) == 0) {
      path = path.substr(5);
    } else if (path.find(':') != std::string::npos && path.find('/') > path.find(':')) {
      diags->push_back(src.at_value(
          r.ptr("keytab"),
          "\"keytab\" must be a file (\"FILE:/path\" or a path), not \"" + *kt + "\""));
      path.clear();
    }
    if (!path.empty()) g->keytab = "FILE:" + resolve_path(config_path, path);
  }
  if (auto p = r.string("principal", false)) g->principal = *p;
  if (auto realms = r.strings("realms")) {
    for (size_t i = 0; i < realms->size(); ++i) {
      if ((*realms)[i].empty() || (*realms)[i].find('@') != std::string::npos) {
        diags->push_back(src.at_value(r.ptr("realms") / i, "not a realm name"));
      }
    }
    g->realms = *realms;
  }
  if (auto m = r.string("name_mapping", false)) {
    if (*m != "strip_realm" && *m != "auth_to_local") {
      diags->push_back(src.at_value(r.ptr("name_mapping"),
                                    "\"name_mapping\" must be \"strip_realm\" or "
                                    "\"auth_to_local\""));
    } else {
      g->name_mapping = *m;
    }
  }
  if (auto p = r.string("protection", false)) {
    if (*p != "integrity" && *p != "confidentiality" && *p != "none") {
      diags->push_back(
          src.at_value(r.ptr("protection"),
                       "\"protection\" must be \"integrity\", \"confidentiality\" or \"none\""));
    } else {
      g->protection = *p;
    }
  }
  if (auto n = r.boolean("nec")) g->nec = *n;
  if (auto b = r.boolean("require_channel_binding")) g->require_channel_binding = *b;
  if (auto v = r.integer("max_round_trips", 1, 64)) g->max_round_trips = static_cast<uint32_t>(*v);
}

// "audit": outputs, the chain's key and epochs, durability (docs/configuration.md).
void read_audit(const JsonSource& src, std::vector<Diagnostic>* diags, Config* cfg) {
  ObjectReader r(src, Ptr("/audit"), diags,
                 {"file", "stdout", "syslog", "syslog_socket", "key_file", "epoch_records",
                  "epoch_seconds", "on_failure", "commit_delay_ms", "per_user_dir", "comment"});
  AuditConfig& a = cfg->audit;
  if (auto f = r.string("file", false)) a.file = resolve_path(cfg->path, *f);
  if (auto s = r.boolean("stdout")) a.to_stdout = *s;
  if (r.has("syslog")) {
    const json& v = r.value("syslog");
    if (v.is_boolean()) {
      a.syslog_facility = v.get<bool>() ? "authpriv" : "";
    } else if (v.is_string() && syslog_facility_code(v.get<std::string>()) >= 0) {
      a.syslog_facility = v.get<std::string>();
    } else {
      diags->push_back(src.at_value(r.ptr("syslog"),
                                    "\"syslog\" must be true, false or a facility: auth, "
                                    "authpriv, daemon, user, local0..local7"));
    }
  }
  if (auto s = r.string("syslog_socket", false)) a.syslog_socket = *s;
  if (auto k = r.string("key_file", false)) {
    a.key_file = resolve_path(cfg->path, *k);
    try {
      auto key = load_audit_key(a.key_file);  // checked here so that `validate` says so
      crypto::secure_zero(key.data(), key.size());
    } catch (const std::exception& e) {
      diags->push_back(src.at_value(r.ptr("key_file"), e.what()));
    }
  }
  if (auto v = r.integer("epoch_records", 1, int64_t{1} << 40))
    a.epoch_records = static_cast<uint64_t>(*v);
  read_duration(r, "epoch_seconds", 1, 10 * 365 * 86400, &a.epoch_seconds);
  if (auto f = r.string("on_failure", false)) {
    if (*f == "fail-closed" || *f == "fail-open") {
      a.fail_open = *f == "fail-open";
    } else {
      diags->push_back(src.at_value(r.ptr("on_failure"),
                                    "\"on_failure\" must be \"fail-closed\" or \"fail-open\""));
    }
  }
  read_duration(r, "commit_delay_ms", 0, 1000, &a.commit_delay);
  if (auto d = r.string("per_user_dir", false)) {
    a.per_user_dir = resolve_path(cfg->path, *d);
    struct stat st {};
    if (::stat(a.per_user_dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
      diags->push_back(
          src.at_value(r.ptr("per_user_dir"), a.per_user_dir + ": not an existing directory"));
    }
  }
}

// "congestion_control": a name the gateway may set on its sockets on this host.
void read_congestion_control(const JsonSource& src, ObjectReader& r, std::vector<Diagnostic>* diags,
                             std::string* out) {
  auto name = r.string("congestion_control", false, true);
  if (!name) return;
  KernelCongestionControls kernel = kernel_congestion_controls();
  if (auto why = congestion_control_problem(*name, kernel.available, kernel.allowed)) {
    diags->push_back(src.at_value(r.ptr("congestion_control"), "\"congestion_control\" " + *why));
    return;
  }
  *out = *name;
}

void read_listeners(const JsonSource& src, std::vector<Diagnostic>* diags, Config* cfg,
                    bool have_userpass) {
  Ptr at("/listeners");
  const json* listeners = required_array(src, "listeners", diags);
  if (listeners == nullptr) return;
  const json& arr = *listeners;
  std::set<std::string> names;
  std::set<std::pair<std::string, uint16_t>> endpoints;
  for (size_t i = 0; i < arr.size(); ++i) {
    ObjectReader r(src, at / i, diags,
                   {"name", "address", "port", "methods", "external", "udp_advertise", "socks4",
                    "tls", "gssapi", "congestion_control", "comment"});
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
    read_congestion_control(src, r, diags, &l.congestion_control);
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
          diags->push_back(
              src.at_value(r.ptr("methods") / m,
                           "unknown method \"" + name_m + "\" (known: none, gssapi, userpass)"));
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
    bool uses_gss =
        methods && std::find(methods->begin(), methods->end(), "gssapi") != methods->end();
    if (r.has("gssapi") && !uses_gss) {
      diags->push_back(src.at_key(r.ptr("gssapi"),
                                  "\"gssapi\" settings on a listener whose "
                                  "methods do not include \"gssapi\""));
    }
    if (uses_gss) {
      GssapiConfig g = cfg->gssapi.value_or(GssapiConfig{});
      if (r.has("gssapi")) read_gssapi_keys(src, r.ptr("gssapi"), diags, cfg->path, &g);
      Ptr where = r.has("gssapi") ? r.ptr("gssapi") : r.ptr("methods");
      if (g.keytab.empty()) {
        diags->push_back(src.at_value(where,
                                      "method \"gssapi\" needs a \"keytab\" (in "
                                      "\"auth\": {\"gssapi\": ...} or the listener's "
                                      "\"gssapi\")"));
      }
      if (g.protection == "none" && !l.tls) {
        // Inside TLS the session is protected by TLS (curl >= 8.17 asks for no per-message
        // protection); never on plain TCP, where it would leave the whole session unprotected
        // after a Kerberos sign-on.
        diags->push_back(src.at_value(where,
                                      "\"protection\": \"none\" is only allowed on TLS "
                                      "listeners"));
      }
      if (g.require_channel_binding && !l.tls) {
        // Channel binding ties the Kerberos context to a TLS channel; without TLS no client
        // could ever satisfy it.
        diags->push_back(src.at_value(where,
                                      "\"require_channel_binding\" needs a TLS listener "
                                      "(the binding is to the TLS channel)"));
      }
      l.gssapi = std::move(g);
    }
    if (address && port && *port != 0 && !endpoints.emplace(*address, *port).second) {
      diags->push_back(src.at_value(r.ptr("port"), "another listener already uses " + *address +
                                                       " port " + std::to_string(*port)));
    }
    cfg->listeners.push_back(std::move(l));
  }
}

void read_userpass(const JsonSource& src, std::vector<Diagnostic>* diags, Config* cfg) {
  ObjectReader auth(src, Ptr("/auth"), diags, {"userpass", "gssapi"});
  if (auth.ok() && auth.has("gssapi")) {
    GssapiConfig g;
    read_gssapi_keys(src, Ptr("/auth/gssapi"), diags, cfg->path, &g);
    cfg->gssapi = std::move(g);
  }
  if (!auth.ok() || !auth.has("userpass")) return;
  ObjectReader r(src, Ptr("/auth/userpass"), diags,
                 {"backend", "pam_service", "pam_timeout_ms", "file", "users", "cache_ttl_s",
                  "failure_delay_ms", "throttle", "comment"});
  if (!r.ok()) return;
  UserPassConfig up;
  if (auto b = r.string("backend", false)) {
    if (*b == "pam") {
      up.settings.backend = auth::userpass::UserPassBackendKind::kPam;
    } else if (*b != "file") {
      diags->push_back(src.at_value(r.ptr("backend"), "\"backend\" must be \"file\" or \"pam\""));
    }
  }
  if (up.settings.backend == auth::userpass::UserPassBackendKind::kPam) {
    // PAM: the stack decides; no password file, and never a cache (account checks and
    // one-time passwords must run on every login).
    for (const char* k : {"file", "users", "cache_ttl_s"}) {
      if (r.has(k)) {
        diags->push_back(
            src.at_key(r.ptr(k), std::string("\"") + k + "\" is for backend \"file\" only"));
      }
    }
    if (auto svc = r.string("pam_service", false)) {
      if (svc->size() > 64 || svc->find('/') != std::string::npos) {
        diags->push_back(src.at_value(r.ptr("pam_service"),
                                      "\"pam_service\" must be a PAM service name (no '/', at "
                                      "most 64 bytes)"));
      } else {
        up.settings.pam_service = *svc;
      }
    }
    if (auto v = r.integer("pam_timeout_ms", 1000, 120000)) {
      up.settings.pam_timeout = std::chrono::milliseconds(*v);
    }
  } else {
    for (const char* k : {"pam_service", "pam_timeout_ms"}) {
      if (r.has(k)) {
        diags->push_back(
            src.at_key(r.ptr(k), std::string("\"") + k + "\" is for backend \"pam\" only"));
      }
    }
  }
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
  if (!file && !r.has("users") &&
      up.settings.backend == auth::userpass::UserPassBackendKind::kFile) {
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
  if (src.root().contains("run_as")) {
    // Names are resolved when the gateway starts (plan_drop), not here: a reload may run
    // inside a chroot without NSS.
    ObjectReader r(src, Ptr("/run_as"), diags, {"user", "group", "chroot", "comment"});
    if (auto u = r.string("user", false)) {
      if (*u == "root") {
        diags->push_back(src.at_value(r.ptr("user"),
                                      "\"run_as\" must not be root: the gateway "
                                      "never serves traffic as root"));
      }
      cfg->run_as.user = *u;
    }
    if (auto g = r.string("group", false)) cfg->run_as.group = *g;
    if (auto c = r.string("chroot", false)) {
      if (c->front() != '/') {
        diags->push_back(src.at_value(r.ptr("chroot"), "\"chroot\" must be an absolute path"));
      }
      cfg->run_as.chroot = *c;
    }
  }
  if (src.root().contains("audit")) {
    read_audit(src, diags, cfg);
  }
  if (src.root().contains("limits")) {
    ObjectReader r(src, Ptr("/limits"), diags,
                   {"max_sessions", "max_sessions_per_user", "max_sessions_per_source",
                    "negotiation_timeout_ms", "connect_timeout_ms", "idle_timeout_s",
                    "drain_timeout_s", "state_file", "comment"});
    auto& l = cfg->limits;
    if (auto f = r.string("state_file", false)) l.state_file = resolve_path(cfg->path, *f);
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
  if (src.root().contains("upstream")) {
    ObjectReader r(src, Ptr("/upstream"), diags, {"congestion_control", "comment"});
    read_congestion_control(src, r, diags, &cfg->upstream.congestion_control);
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
                   {"listeners", "auth", "policy", "audit", "limits", "bind", "udp", "upstream",
                    "threads", "run_as", "admin", "comment"});
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
    ObjectReader r(*src, Ptr("/policy"), &diags,
                   {"file", "inline", "dir", "revoke_grace_s", "comment"});
    if (auto g = r.integer("revoke_grace_s", 0, 86400))
      cfg->revoke_grace = std::chrono::seconds(*g);
    std::string dir;
    if (auto d = r.string("dir", false)) {
      dir = resolve_path(path, *d);
      std::error_code dec;
      if (!std::filesystem::is_directory(dir, dec)) {
        diags.push_back(src->at_value(Ptr("/policy/dir"), dir + ": not a directory"));
      }
      cfg->policy_dir = dir;
    }
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
            if (dir.empty()) {
              pol = policy::load_policy_text(cfg->policy_file, ptext, opts);
            } else {
              std::vector<Diagnostic> pdiags;
              auto psrc = JsonSource::parse(cfg->policy_file, ptext, &pdiags);
              if (!psrc) throw policy::LoadError(std::move(pdiags));
              pol = policy::load_policy_set(*psrc, Ptr(), dir, opts);
            }
          } else if (dir.empty()) {
            pol = policy::load_policy(*src, Ptr("/policy/inline"), opts);
          } else {
            pol = policy::load_policy_set(*src, Ptr("/policy/inline"), dir, opts);
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
  // GSS-API: the acceptor credential of each listener, acquired now (a missing keytab or
  // principal is a load error, and the keytab is opened before any privilege drop).
  for (size_t i = 0; i < cfg->listeners.size(); ++i) {
    const ListenerConfig& l = cfg->listeners[i];
    if (!l.gssapi) continue;
    const GssapiConfig& g = *l.gssapi;
    auth::gssapi::GssSettings gs;
    gs.keytab = g.keytab;
    gs.principal = g.principal == "any"  ? std::string()
                   : g.principal.empty() ? auth::gssapi::default_principal()
                                         : g.principal;
    gs.realms = g.realms;
    Ptr where =
        src->root().at(Ptr("/listeners") / i).contains("gssapi") ? Ptr("/listeners") / i / "gssapi"
        : top.has("auth") && src->root().at("auth").contains("gssapi") ? Ptr("/auth/gssapi")
                                                                       : Ptr("/listeners") / i;
    if (gs.realms.empty()) {
      std::string realm = auth::gssapi::default_realm();
      if (realm.empty()) {
        diags.push_back(src->at_value(where,
                                      "no \"realms\" given and the krb5 configuration "
                                      "has no default_realm"));
        continue;
      }
      gs.realms.push_back(realm);
    }
    gs.mapping = g.name_mapping == "auth_to_local" ? auth::gssapi::NameMapping::kAuthToLocal
                                                   : auth::gssapi::NameMapping::kStripRealm;
    gs.required = g.protection == "integrity" ? auth::gssapi::Level::kIntegrity
                  : g.protection == "none"    ? auth::gssapi::Level::kNone
                                              : auth::gssapi::Level::kConfidentiality;
    gs.nec = g.nec;
    gs.require_channel_binding = g.require_channel_binding;
    gs.max_round_trips = g.max_round_trips;
    try {
      snap.backends.gssapi[l.name] = std::make_shared<const auth::gssapi::GssBackend>(gs);
    } catch (const std::runtime_error& e) {
      diags.push_back(src->at_value(where, e.what()));
    }
  }
  if (!diags.empty()) throw policy::LoadError(std::move(diags));
  // TLS: certificates, keys and CRLs are loaded now, so that a bad pair fails validation (and
  // a reload) instead of the first handshake.
  for (size_t i = 0; i < cfg->listeners.size(); ++i) {
    const auto& l = cfg->listeners[i];
    if (!l.tls) continue;
    try {
      // Unreadable files are reported like every other file (with the run_as hint after a
      // privilege drop), not as an OpenSSL error code.
      for (const std::string* f : {&l.tls->server.cert_file, &l.tls->server.key_file,
                                   &l.tls->server.ca_file, &l.tls->server.crl_file}) {
        if (!f->empty()) read_file(*f);
      }
      snap.tls.emplace(l.name, crypto::TlsServerContext::create(l.tls->server));
    } catch (const std::runtime_error& e) {  // TlsError, or an unreadable file
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
  if (pol->uses_quotas() && cfg->limits.state_file.empty()) {
    diags.push_back(src->at_value(Ptr("/policy"),
                                  "a rule sets a byte quota (\"limits\": {\"quota\": ...}): set "
                                  "\"limits\": {\"state_file\": ...} so that usage survives a "
                                  "restart"));
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
