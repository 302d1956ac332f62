// socksgate: the gateway's single binary. Subcommands:
//   run, validate, explain, hash-password, agent, audit verify, sessions, close-user, metrics,
//   version  (see `socksgate --help`)
// Exit codes: 0 success (explain: allowed), 1 runtime failure (audit verify: tampered), 2 usage
// or invalid configuration, 3 explain: denied, 4 audit verify: intact with gaps.

#include <arpa/inet.h>
#include <fcntl.h>
#include <grp.h>
#include <netdb.h>
#include <pthread.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "auth/gateway_auth.h"
#include "auth/pam/monitor.h"
#include "auth/pam/monitor_client.h"
#include "auth/userpass/login_throttle.h"
#include "crypto/password_hash.h"
#include "crypto/secure.h"
#include "gateway/admin.h"
#include "gateway/agent.h"
#include "gateway/agent_config.h"
#include "gateway/audit_log.h"
#include "gateway/audit_verify.h"
#include "gateway/config.h"
#include "gateway/limits.h"
#include "gateway/log.h"
#include "gateway/privsep.h"
#include "gateway/server.h"
#include "gateway/socks5.h"
#include "gateway/tcp_tuning.h"
#include "gateway/upstream.h"
#include "gateway/version.h"
#include "policy/lint.h"

namespace sg = socksgate::gateway;
namespace policy = socksgate::policy;

namespace {

constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;
constexpr int kExitDenied = 3;

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

const char* kMainHelp =
    "usage: socksgate <command> [options]\n"
    "\n"
    "A TLS-secured, authenticating SOCKS5 gateway.\n"
    "\n"
    "commands:\n"
    "  run            serve (the embedded demo configuration when no --config is given)\n"
    "  validate       check a configuration and everything it refers to\n"
    "  explain        show how policy decides one request, rule by rule\n"
    "  hash-password  read a password on stdin, print a crypt(3) yescrypt hash\n"
    "  audit verify   check an audit log's hash chain\n"
    "  agent          the client side: local SOCKS5/HTTP CONNECT proxy to a gateway over TLS\n"
    "  sessions       list the live sessions of a running gateway (admin listener)\n"
    "  close-user     close every session of one user (admin listener)\n"
    "  metrics        print a running gateway's metrics (admin listener)\n"
    "  version        print the version\n"
    "\n"
    "`socksgate <command> --help` describes each. Exit codes: 0 ok, 1 failure,\n"
    "2 usage or invalid configuration, 3 explain: denied.\n";

const std::map<std::string, std::string> kHelp = {
    {"run",
     "usage: socksgate run [--config FILE] [--ready-file FILE] [--log-level LEVEL]\n"
     "                     [--demo-pki DIR]\n"
     "\n"
     "Serves SOCKS5. Without --config, runs the embedded demo configuration: userpass on\n"
     "127.0.0.1:1080 and [::1]:1080, user \"demo\" with a random password printed at start.\n"
     "  --config FILE      JSON configuration (see docs/configuration.md)\n"
     "  --demo-pki DIR     demo only: also TLS on 127.0.0.1:1443 with DIR/server.pem and\n"
     "                     DIR/server.key (made by certs/make-certs.sh init DIR)\n"
     "  --ready-file FILE  once listening, write {\"pid\":..,\"listeners\":[..]} to FILE\n"
     "  --log-level LEVEL  debug | info | warn | error (default info)\n"
     "Signals: SIGHUP reloads, SIGUSR1 reopens the audit log, SIGTERM/SIGINT drain and stop.\n"},
    {"validate",
     "usage: socksgate validate --config FILE\n"
     "\n"
     "Loads FILE and the policy and password files it names; prints each problem as\n"
     "file:line:col: message. Exit 0 if valid, 2 if not.\n"
     "Then checks the policy as a whole and prints warnings as file:line:col: warning: ...\n"
     "(users not in the password file, undefined groups, rules that an earlier rule shadows,\n"
     "overlapping \"when\" windows); warnings alone still exit 0.\n"},
    {"explain",
     "usage: socksgate explain --config FILE --user USER --from IP --to HOST:PORT\n"
     "                         [--command connect|bind|udp] [--listener NAME]\n"
     "                         [--method METHOD] [--group GROUP]... [--no-resolve]\n"
     "                         [--client-certificate] [--protection LEVEL] [--channel-bound]\n"
     "                         [--at TIME]\n"
     "\n"
     "Shows the client-rule decision and, for each address HOST resolves to, the rule that\n"
     "decides and why each earlier rule did not match. --user \"\" means anonymous.\n"
     "--client-certificate: the client presented a verified TLS client certificate.\n"
     "--protection integrity|confidentiality|none: the GSS-API protection agreed (default for\n"
     "--method gssapi: confidentiality). --channel-bound: the GSS-API context is bound to TLS.\n"
     "--at 2026-11-27T10:00:00Z: decide as if the request came then (rules with \"when\");\n"
     "default now. UTC (Z) or an offset (+01:00).\n"
     "Exit 0 if the request would be allowed, 3 if denied.\n"},
    {"hash-password",
     "usage: socksgate hash-password\n"
     "\n"
     "Reads one password from standard input (no echo on a terminal) and prints its\n"
     "yescrypt hash, for password files (user:hash lines).\n"},
    {"audit",
     "usage: socksgate audit verify [--key KEYFILE] FILE...\n"
     "\n"
     "Checks the hash chain of an audit log (several files: one rotated log, oldest first).\n"
     "Prints \"FILE: ok: ...\" with the last sequence number and hash per intact file; at the\n"
     "first bad record prints \"FILE: record N (seq S): what\" and stops. --key: the\n"
     "audit.key_file of an HMAC'ed log.\n"
     "Exit 0 intact, 1 tampered or truncated, 2 usage or unreadable, 4 intact but records were\n"
     "lost while the log could not be written (audit_gap).\n"},
    {"agent",
     "usage: socksgate agent --config FILE [--ready-file FILE] [--log-level LEVEL]\n"
     "\n"
     "Runs on the user's machine: a SOCKS5 (no authentication) and HTTP CONNECT proxy on\n"
     "loopback that carries each session over TLS to a socksgate gateway and signs on there\n"
     "(CONNECT, BIND, and UDP ASSOCIATE with the datagrams inside the TLS connection).\n"
     "Passwords come from a file, an environment variable or a prompt, never the command line.\n"
     "  --config FILE      JSON configuration (see docs/agent.md)\n"
     "  --ready-file FILE  once listening, write {\"pid\":..,\"listeners\":[..]} to FILE\n"
     "  --log-level LEVEL  debug | info | warn | error (default info)\n"
     "Signals: SIGTERM/SIGINT stop.\n"},
    {"sessions",
     "usage: socksgate sessions --admin HOST:PORT [--token-file FILE] [--json]\n"
     "\n"
     "Lists the live sessions of a running gateway through its admin listener: id, user,\n"
     "listener, client, target, command, bytes up/down so far, age. --json prints the raw\n"
     "reply. Exit 0 on success, 1 if the gateway cannot be asked or refuses.\n"},
    {"close-user",
     "usage: socksgate close-user --admin HOST:PORT --user NAME [--token-file FILE]\n"
     "\n"
     "Closes every live session of NAME (audit close_reason \"admin_closed\") and prints how\n"
     "many. Exit 0 on success (also when there were none), 1 on failure.\n"},
    {"metrics",
     "usage: socksgate metrics --admin HOST:PORT [--token-file FILE]\n"
     "\n"
     "Prints the gateway's metrics (Prometheus text format, docs/metrics.md).\n"
     "Exit 0 on success, 1 on failure.\n"},
    {"version", "usage: socksgate version\n"},
};

// --name value / --name=value / --flag parsing; unknown options are usage errors.
class Args {
 public:
  Args(int argc, char** argv, int first, std::vector<std::string> with_value,
       std::vector<std::string> flags) {
    for (int i = first; i < argc; ++i) {
      std::string a = argv[i];
      if (a == "--help" || a == "-h") {
        help_ = true;
        continue;
      }
      if (a.rfind("--", 0) != 0) throw UsageError("unexpected argument \"" + a + "\"");
      std::string name = a.substr(2), value;
      bool has_eq = false;
      if (auto eq = name.find('='); eq != std::string::npos) {
        value = name.substr(eq + 1);
        name = name.substr(0, eq);
        has_eq = true;
      }
      if (std::find(flags.begin(), flags.end(), name) != flags.end()) {
        if (has_eq) throw UsageError("--" + name + " takes no value");
        values_[name].push_back("1");
      } else if (std::find(with_value.begin(), with_value.end(), name) != with_value.end()) {
        if (!has_eq) {
          if (i + 1 >= argc) throw UsageError("--" + name + " needs a value");
          value = argv[++i];
        }
        values_[name].push_back(value);
      } else {
        throw UsageError("unknown option --" + name);
      }
    }
  }
  bool help() const { return help_; }
  std::optional<std::string> get(const std::string& n) const {
    auto it = values_.find(n);
    if (it == values_.end()) return std::nullopt;
    if (it->second.size() > 1) throw UsageError("--" + n + " given more than once");
    return it->second.front();
  }
  std::string require(const std::string& n) const {
    auto v = get(n);
    if (!v) throw UsageError("missing --" + n);
    return *v;
  }
  std::vector<std::string> all(const std::string& n) const {
    auto it = values_.find(n);
    return it == values_.end() ? std::vector<std::string>{} : it->second;
  }
  bool flag(const std::string& n) const { return values_.count(n) != 0; }

 private:
  bool help_ = false;
  std::map<std::string, std::vector<std::string>> values_;
};

void print_diagnostics(const std::exception& e) {
  if (auto* le = dynamic_cast<const policy::LoadError*>(&e)) {
    for (const auto& d : le->diagnostics()) std::fprintf(stderr, "%s\n", d.to_string().c_str());
  } else {
    std::fprintf(stderr, "%s\n", e.what());
  }
}

std::string random_password() {
  static constexpr char kAlphabet[] = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
  std::array<uint8_t, 16> b;
  socksgate::crypto::random_bytes(b);
  std::string s;
  for (uint8_t x : b) s.push_back(kAlphabet[x % (sizeof(kAlphabet) - 1)]);
  return s;
}

void apply_log_level(const Args& args) {
  if (auto lvl = args.get("log-level")) {
    static const std::map<std::string, sg::log::Level> kLevels = {
        {"debug", sg::log::Level::kDebug},
        {"info", sg::log::Level::kInfo},
        {"warn", sg::log::Level::kWarn},
        {"error", sg::log::Level::kError}};
    auto it = kLevels.find(*lvl);
    if (it == kLevels.end()) throw UsageError("--log-level must be debug, info, warn or error");
    sg::log::set_min_level(it->second);
  }
}

int cmd_run(const Args& args) {
  auto throttle = std::make_shared<socksgate::auth::userpass::LoginThrottle>();
  apply_log_level(args);
  sg::ServerOptions opts;
  opts.ready_file = args.get("ready-file").value_or("");
  opts.throttle = throttle;
  sg::Snapshot snap;
  if (auto path = args.get("config")) {
    opts.config_path = *path;
    snap = sg::load_snapshot(*path, throttle);
  } else {
    std::string pw = random_password();
    std::string pki = args.get("demo-pki").value_or("");
    snap = sg::default_snapshot(pw, throttle, pki);
    std::fprintf(stderr,
                 "socksgate: embedded demo configuration\n"
                 "  SOCKS5 with username/password on 127.0.0.1:1080 and [::1]:1080\n"
                 "  user: demo   password: %s\n"
                 "  try:  curl --socks5-hostname demo:%s@127.0.0.1:1080 http://127.0.0.1:8000/\n",
                 pw.c_str(), pw.c_str());
    if (!pki.empty()) {
      std::fprintf(
          stderr,
          "  TLS (then SOCKS5 inside) on 127.0.0.1:1443, CA %s/ca.pem, key pin %s/server.pin\n"
          "  try:  openssl s_client -connect 127.0.0.1:1443 -CAfile %s/ca.pem -brief\n",
          pki.c_str(), pki.c_str(), pki.c_str());
    }
  }
  // Privilege separation (gateway/privsep.h, auth/pam/monitor.h). Still one thread here: fork
  // the auth monitor's supervisor now, with the privileges we were started with, then forbid
  // new privileges for this process and every thread it will start.
  bool root = ::geteuid() == 0;
  sg::kernel_congestion_controls();  // read /proc now: a run_as.chroot hides it from reloads
  std::optional<sg::DropPlan> plan;
  if (root) plan = sg::plan_drop(snap.config->run_as);
  auto supervisor = socksgate::auth::pam::start_supervisor();
  sg::set_no_new_privs();
  auto monitor = std::make_unique<socksgate::auth::pam::MonitorClient>(supervisor.control_fd);
  monitor->set_logger([](bool error, const std::string& text) {
    if (error) {
      sg::log::warn(text);
    } else {
      sg::log::info(text);
    }
  });
  socksgate::auth::pam::set_monitor_client(monitor.get());
  if (root) {
    sg::log::info("privilege separation: auth monitor supervisor pid=", supervisor.pid,
                  " stays root; the gateway becomes ", plan->user, ":", plan->group,
                  plan->chroot.empty() ? std::string() : " in chroot " + plan->chroot,
                  " once its listeners are bound");
    const std::string audit_file = snap.config->audit.file;
    opts.after_bind = [&plan, audit_file] {
      // The audit file is the gateway's own output: after the drop it must still be able to
      // reopen it (recovery after a full disk, reload). Created now if the writer has not yet.
      if (!audit_file.empty()) {
        int fd = ::open(audit_file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        if (fd < 0 || ::fchown(fd, plan->uid, plan->gid) != 0) {
          sg::log::warn("cannot hand the audit file ", audit_file, " to ", plan->user, ": ",
                        std::strerror(errno), " (it may not be reopened after the drop)");
        }
        if (fd >= 0) ::close(fd);
      }
      sg::drop_privileges(*plan);
      // Names from the plan: NSS may be out of reach inside a chroot.
      sg::log::info("privileges dropped: serving as uid=", plan->uid, "(", plan->user,
                    ") gid=", plan->gid, "(", plan->group, ")",
                    ", no supplementary groups, no capabilities, no_new_privs");
    };
  } else {
    sg::log::warn("started unprivileged as ", sg::describe_credentials(),
                  ": no privilege drop (run_as ignored); the auth monitor runs as this user "
                  "too, so only back-ends that need no root work (password files; PAM modules "
                  "that need no root, e.g. pam_sss, pam_ldap, pam_radius; pam_unix checks only "
                  "this user's own password)");
    opts.after_bind = [] {
      sg::drop_capabilities();
      sg::log::info("serving as ", sg::describe_credentials(), ", no capabilities, no_new_privs");
    };
  }
  // Writes to a peer that went away must be errors, not a process kill (splice can raise it).
  std::signal(SIGPIPE, SIG_IGN);
  // SIGHUP/SIGTERM/SIGINT are for the control thread only: block them before any worker
  // thread exists (threads inherit the mask); Server::run unblocks them on this thread. A
  // signal delivered to a worker parked in a wait may otherwise be handled late.
  sigset_t control_signals;
  sigemptyset(&control_signals);
  sigaddset(&control_signals, SIGHUP);
  sigaddset(&control_signals, SIGTERM);
  sigaddset(&control_signals, SIGINT);
  sigaddset(&control_signals, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &control_signals, nullptr);
  sg::Server server(std::move(snap), opts);
  int rc = server.run();
  // Sessions' loops have stopped: complete any PAM request still waiting before they go.
  monitor->shutdown();
  socksgate::auth::pam::set_monitor_client(nullptr);
  return rc;
}

int cmd_agent(const Args& args) {
  apply_log_level(args);
  sg::AgentConfig cfg = sg::load_agent_config(args.require("config"));
  socksgate::auth::GatewayAuthSettings as;
  as.method = cfg.auth.method;
  as.user = cfg.auth.user;
  as.service = cfg.auth.service;
  as.ccache = cfg.auth.ccache;
  as.protection = cfg.auth.protection;
  as.channel_binding = cfg.auth.channel_binding;
  try {
    as.password = sg::read_agent_password(cfg);
  } catch (const std::runtime_error& e) {
    std::fprintf(stderr, "socksgate agent: %s\n", e.what());
    return kExitUsage;
  }
  auto auth = socksgate::auth::make_gateway_auth(std::move(as));
  std::signal(SIGPIPE, SIG_IGN);
  std::optional<sg::Agent> agent;
  try {
    agent.emplace(std::move(cfg), std::move(auth),
                  sg::AgentOptions{args.get("ready-file").value_or("")});
  } catch (const socksgate::crypto::TlsError& e) {
    std::fprintf(stderr, "socksgate agent: gateway TLS settings: %s\n", e.what());
    return kExitUsage;
  }
  return agent->run();
}

// A Unix group of this host (what PAM's back-end reports as a user's groups).
bool host_group_exists(std::string_view name) {
  std::string n(name);
  group gr{};
  group* found = nullptr;
  std::vector<char> buf(16384);
  while (getgrnam_r(n.c_str(), &gr, buf.data(), buf.size(), &found) == ERANGE &&
         buf.size() < (1u << 22)) {
    buf.resize(buf.size() * 2);
  }
  return found != nullptr;
}

int cmd_validate(const Args& args) {
  std::string path = args.require("config");
  auto snap = sg::load_snapshot(path, nullptr);
  sg::plan_drop(snap.config->run_as);  // run_as names must exist on this host
  const auto& cfg = *snap.config;
  policy::LintContext lc;
  using Kind = socksgate::auth::userpass::UserPassBackendKind;
  if (cfg.userpass && snap.backends.userpass && cfg.userpass->settings.backend == Kind::kFile) {
    auto backend = snap.backends.userpass;
    lc.known_user = [backend](std::string_view u) { return backend->file().find(u).has_value(); };
    lc.users_source = cfg.userpass->file.empty() ? std::string("auth.userpass.users")
                                                 : "the password file " + cfg.userpass->file;
  }
  if (cfg.userpass && cfg.userpass->settings.backend == Kind::kPam) {
    lc.external_group = host_group_exists;
    lc.groups_source = "a group on this host (which PAM would report)";
  }
  auto warnings = policy::lint(*snap.policy, lc);
  // Warnings are part of the report (stdout); stderr is for what makes the configuration invalid.
  for (const auto& w : warnings) std::printf("%s\n", w.to_string().c_str());
  std::printf("%s: ok (%zu listeners, %zu client rules, %zu rules, %zu warnings)\n", path.c_str(),
              cfg.listeners.size(), snap.policy->client_rule_count(), snap.policy->rule_count(),
              warnings.size());
  return kExitOk;
}

// "2026-11-27T10:00:00Z", "2026-11-27T11:00:00+01:00" (seconds optional).
std::chrono::system_clock::time_point parse_at(const std::string& s) {
  int y = 0, mo = 0, d = 0, h = 0, mi = 0, sec = 0, used = 0;
  bool ok = std::sscanf(s.c_str(), "%4d-%2d-%2dT%2d:%2d%n", &y, &mo, &d, &h, &mi, &used) == 5;
  std::string rest = ok ? s.substr(static_cast<size_t>(used)) : std::string();
  if (ok && rest.size() >= 3 && rest[0] == ':') {
    int n = 0;
    ok = std::sscanf(rest.c_str(), ":%2d%n", &sec, &n) == 1 && n == 3;
    rest = rest.substr(3);
  }
  long offset = 0;
  if (ok && rest == "Z") {
  } else if (ok && rest.size() == 6 && (rest[0] == '+' || rest[0] == '-') && rest[3] == ':') {
    int oh = 0, om = 0, n = 0;
    ok = std::sscanf(rest.c_str() + 1, "%2d:%2d%n", &oh, &om, &n) == 2 && n == 5 && oh < 24 &&
         om < 60;
    offset = (rest[0] == '-' ? -1 : 1) * (oh * 3600L + om * 60L);
  } else {
    ok = false;
  }
  static constexpr int kMonthDays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
  ok = ok && y >= 1970 && y <= 2200 && mo >= 1 && mo <= 12 && d >= 1 &&
       d <= kMonthDays[mo - 1] - (mo == 2 && !leap ? 1 : 0) && h >= 0 && h <= 23 && mi >= 0 &&
       mi <= 59 && sec >= 0 && sec <= 59;
  if (!ok) {
    throw UsageError("--at \"" + s +
                     "\" is not a time such as 2026-11-27T10:00:00Z or 2026-11-27T11:00+01:00");
  }
  // Days since 1970-01-01 of a proleptic Gregorian date (civil calendar arithmetic).
  int yy = mo <= 2 ? y - 1 : y;
  long era = yy / 400;
  long yoe = yy - era * 400;
  long doy = (153L * (mo + (mo > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  long days = era * 146097 + doe - 719468;
  long secs = days * 86400 + h * 3600L + mi * 60L + sec - offset;
  return std::chrono::system_clock::time_point(std::chrono::seconds(secs));
}

std::string where(const policy::RuleOrigin& o) {
  if (o.file.empty()) return "implicit";
  return o.file + ":" + std::to_string(o.pos.line) + ":" + std::to_string(o.pos.column);
}

void print_trace(const std::vector<policy::TraceStep>& trace) {
  for (const auto& t : trace) {
    std::printf("      %-5s %s (%s): %s\n", t.matched ? "match" : "skip", t.rule_id.c_str(),
                where(t.origin).c_str(), t.detail.c_str());
  }
}

int cmd_explain(const Args& args) {
  std::string path = args.require("config");
  std::string user = args.require("user");
  std::string from = args.require("from");
  std::string to = args.require("to");
  auto snap = sg::load_snapshot(path, nullptr);
  const auto& cfg = *snap.config;
  const policy::Policy& pol = *snap.policy;

  auto client = policy::IpAddress::parse(from);
  if (!client) throw UsageError("--from \"" + from + "\" is not an IP address");
  size_t colon = to.rfind(':');
  if (colon == std::string::npos || colon == 0) throw UsageError("--to must be HOST:PORT");
  std::string host = to.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  int port = 0;
  try {
    size_t used = 0;
    port = std::stoi(to.substr(colon + 1), &used);
    if (used != to.size() - colon - 1) port = -1;
  } catch (...) {
    port = -1;
  }
  if (port < 1 || port > 65535) throw UsageError("--to: port must be 1..65535");
  auto command = policy::command_from_string(args.get("command").value_or("connect"));
  if (!command) throw UsageError("--command must be connect, bind or udp");
  std::string listener = args.get("listener").value_or(cfg.listeners.front().name);
  const sg::ListenerConfig* lc = cfg.find_listener(listener);
  if (lc == nullptr) throw UsageError("no listener named \"" + listener + "\" in " + path);
  std::string method = args.get("method").value_or(user.empty() ? "none" : lc->methods.front());
  auto at = std::chrono::system_clock::now();
  if (auto a = args.get("at")) at = parse_at(*a);

  std::vector<policy::TraceStep> trace;
  policy::Decision cd = pol.decide_client({*client, listener}, &trace);
  std::printf("client %s on listener %s: %s by %s (%s)\n", from.c_str(), listener.c_str(),
              cd.allowed() ? "pass" : "BLOCK", cd.rule_id.c_str(), where(cd.origin).c_str());
  print_trace(trace);
  if (!cd.allowed()) {
    std::printf("decision: block (%s)\n", cd.reason.c_str());
    return kExitDenied;
  }

  policy::DecisionRequest req;
  req.user = user;
  req.groups = args.all("group");
  req.method = method;
  req.client_certificate = args.flag("client-certificate");
  if (auto p = args.get("protection")) {
    if (*p != "integrity" && *p != "confidentiality" && *p != "none")
      throw UsageError("--protection must be integrity, confidentiality or none");
    if (method != "gssapi") throw UsageError("--protection applies to --method gssapi only");
    req.protection = *p;
  } else if (method == "gssapi") {
    req.protection = "confidentiality";
  }
  req.channel_bound = args.flag("channel-bound");
  if (req.channel_bound && method != "gssapi")
    throw UsageError("--channel-bound applies to --method gssapi only");
  req.listener = listener;
  req.client = *client;
  req.command = *command;
  req.port = static_cast<uint16_t>(port);
  req.time = at;
  std::vector<policy::IpAddress> addrs;
  if (auto ip = policy::IpAddress::parse(host)) {
    addrs.push_back(*ip);
  } else {
    req.host = host;
    trace.clear();
    policy::Decision pre = pol.decide(req, &trace);
    std::printf("name %s (before resolving): %s by %s (%s)\n", host.c_str(),
                pre.allowed() ? "pass" : "BLOCK", pre.rule_id.c_str(), where(pre.origin).c_str());
    print_trace(trace);
    if (!pre.allowed()) {
      std::printf("decision: block (%s)\n", pre.reason.c_str());
      return kExitDenied;
    }
    if (args.flag("no-resolve")) {
      std::printf("decision: pass for the name; addresses not resolved (--no-resolve)\n");
      return kExitOk;
    }
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    if (int rc = getaddrinfo(host.c_str(), nullptr, &hints, &res); rc != 0) {
      std::printf("decision: block (cannot resolve %s: %s)\n", host.c_str(), gai_strerror(rc));
      return kExitDenied;
    }
    for (addrinfo* p = res; p; p = p->ai_next) {
      char buf[INET6_ADDRSTRLEN];
      const void* a =
          p->ai_family == AF_INET
              ? static_cast<const void*>(&reinterpret_cast<sockaddr_in*>(p->ai_addr)->sin_addr)
              : static_cast<const void*>(&reinterpret_cast<sockaddr_in6*>(p->ai_addr)->sin6_addr);
      inet_ntop(p->ai_family, a, buf, sizeof buf);
      if (auto ip = policy::IpAddress::parse(buf)) {
        if (std::find(addrs.begin(), addrs.end(), *ip) == addrs.end()) addrs.push_back(*ip);
      }
    }
    freeaddrinfo(res);
  }
  bool any = false;
  for (const auto& a : addrs) {
    req.address = a;
    trace.clear();
    policy::Decision d = pol.decide(req, &trace);
    std::printf("address %s port %d: %s by %s (%s): %s\n", a.to_string().c_str(), port,
                d.allowed() ? "pass" : "BLOCK", d.rule_id.c_str(), where(d.origin).c_str(),
                d.reason.c_str());
    if (d.allowed() && d.limits.any()) {
      std::printf("  limits of %s: %s\n", d.rule_id.c_str(), sg::describe_limits(d.limits).c_str());
    }
    print_trace(trace);
    any = any || d.allowed();
  }
  std::printf("decision: %s\n", any ? "pass" : "block");
  return any ? kExitOk : kExitDenied;
}

// socksgate audit verify [--key KEYFILE] FILE...
int cmd_audit(int argc, char** argv) {
  if (argc >= 3 && (std::strcmp(argv[2], "--help") == 0 || std::strcmp(argv[2], "-h") == 0)) {
    std::fputs(kHelp.at("audit").c_str(), stdout);
    return kExitOk;
  }
  if (argc < 3 || std::strcmp(argv[2], "verify") != 0) {
    throw UsageError(argc < 3 ? "missing subcommand (verify)"
                              : std::string("unknown subcommand \"") + argv[2] + "\"");
  }
  std::vector<std::string> files;
  std::string key_file;
  for (int i = 3; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      std::fputs(kHelp.at("audit").c_str(), stdout);
      return kExitOk;
    }
    if (a == "--key" || a.rfind("--key=", 0) == 0) {
      if (a == "--key") {
        if (i + 1 >= argc) throw UsageError("--key needs a value");
        key_file = argv[++i];
      } else {
        key_file = a.substr(6);
      }
    } else if (a.rfind("--", 0) == 0) {
      throw UsageError("unknown option " + a);
    } else {
      files.push_back(a);
    }
  }
  if (files.empty()) throw UsageError("no FILE to verify");
  std::vector<uint8_t> key;
  if (!key_file.empty()) key = sg::load_audit_key(key_file);
  int rc = sg::verify_audit_files(files, key, std::cout, std::cerr);
  std::cout.flush();
  socksgate::crypto::secure_zero(key.data(), key.size());
  return rc;
}

// The admin subcommands: one HTTP request to the admin listener.
std::string read_token(const Args& args) {
  auto f = args.get("token-file");
  if (!f) return {};
  FILE* in = std::fopen(f->c_str(), "re");
  if (in == nullptr) {
    throw std::runtime_error(*f + ": cannot open: " + std::strerror(errno));
  }
  std::string t;
  char buf[512];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, in)) > 0 && t.size() < 4096) t.append(buf, n);
  std::fclose(in);
  while (!t.empty() && (t.back() == '\n' || t.back() == '\r')) t.pop_back();
  if (t.empty()) throw std::runtime_error(*f + ": empty token file");
  return t;
}

sg::http::Response ask_admin(const Args& args, const std::string& method,
                             const std::string& target) {
  std::string admin = args.require("admin");
  std::string token = read_token(args);
  sg::http::Response r;
  try {
    r = sg::admin_request(admin, method, target, token);
  } catch (const std::invalid_argument& e) {
    throw UsageError(e.what());
  }
  socksgate::crypto::secure_zero(token.data(), token.size());
  if (r.status != 200) {
    std::string why = r.body;
    try {
      why = nlohmann::json::parse(r.body).at("error").get<std::string>();
    } catch (const std::exception&) {
    }
    while (!why.empty() && why.back() == '\n') why.pop_back();
    throw std::runtime_error("the admin listener answered " + std::to_string(r.status) + ": " +
                             why);
  }
  return r;
}

std::string human_bytes(uint64_t n) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(n);
  size_t u = 0;
  while (v >= 1024 && u + 1 < std::size(units)) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
  return buf;
}

int cmd_sessions(const Args& args) {
  auto r = ask_admin(args, "GET", "/sessions");
  if (args.flag("json")) {
    std::fputs(r.body.c_str(), stdout);
    return kExitOk;
  }
  nlohmann::json j = nlohmann::json::parse(r.body);
  std::printf("%-16s %-12s %-10s %-22s %-30s %-8s %10s %10s %8s\n", "ID", "USER", "LISTENER",
              "CLIENT", "TARGET", "COMMAND", "UP", "DOWN", "AGE");
  for (const auto& s : j.at("sessions")) {
    std::printf("%-16s %-12s %-10s %-22s %-30s %-8s %10s %10s %7.1fs\n", s.value("id", "").c_str(),
                s.value("user", "").c_str(), s.value("listener", "").c_str(),
                s.value("client", "").c_str(), s.value("target", "").c_str(),
                s.value("command", "").c_str(),
                human_bytes(s.value("bytes_up", uint64_t{0})).c_str(),
                human_bytes(s.value("bytes_down", uint64_t{0})).c_str(), s.value("age_s", 0.0));
  }
  return kExitOk;
}

int cmd_close_user(const Args& args) {
  args.require("admin");
  std::string user = args.require("user");
  if (user.empty()) throw UsageError("--user must not be empty");
  auto r = ask_admin(args, "POST", "/sessions/close?user=" + sg::http::percent_encode(user));
  nlohmann::json j = nlohmann::json::parse(r.body);
  std::printf("closed %llu sessions of %s\n",
              static_cast<unsigned long long>(j.value("closed", uint64_t{0})),
              j.value("user", user).c_str());
  return kExitOk;
}

int cmd_metrics(const Args& args) {
  auto r = ask_admin(args, "GET", "/metrics");
  std::fwrite(r.body.data(), 1, r.body.size(), stdout);
  return kExitOk;
}

int cmd_hash_password() {
  bool tty = ::isatty(STDIN_FILENO);
  termios old{};
  if (tty) {
    std::fprintf(stderr, "password: ");
    tcgetattr(STDIN_FILENO, &old);
    termios noecho = old;
    noecho.c_lflag &= ~static_cast<tcflag_t>(ECHO);
    tcsetattr(STDIN_FILENO, TCSANOW, &noecho);
  }
  std::string pw;
  std::getline(std::cin, pw);
  if (tty) {
    tcsetattr(STDIN_FILENO, TCSANOW, &old);
    std::fprintf(stderr, "\n");
  }
  if (!pw.empty() && pw.back() == '\r') pw.pop_back();
  if (pw.empty()) {
    std::fprintf(stderr, "socksgate: hash-password: empty password\n");
    return kExitUsage;
  }
  std::string h = socksgate::crypto::hash_password(pw);
  socksgate::crypto::secure_zero(pw.data(), pw.size());
  std::printf("%s\n", h.c_str());
  return kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0 ||
      std::strcmp(argv[1], "help") == 0) {
    std::fputs(kMainHelp, argc < 2 ? stderr : stdout);
    return argc < 2 ? kExitUsage : kExitOk;
  }
  std::string cmd = argv[1];
  auto help = kHelp.find(cmd);
  if (help == kHelp.end()) {
    std::fprintf(stderr, "socksgate: unknown command \"%s\" (see socksgate --help)\n", cmd.c_str());
    return kExitUsage;
  }
  try {
    if (cmd == "audit") return cmd_audit(argc, argv);
    std::optional<Args> args;
    if (cmd == "run") {
      args.emplace(argc, argv, 2,
                   std::vector<std::string>{"config", "ready-file", "log-level", "demo-pki"},
                   std::vector<std::string>{});
    } else if (cmd == "agent") {
      args.emplace(argc, argv, 2, std::vector<std::string>{"config", "ready-file", "log-level"},
                   std::vector<std::string>{});
    } else if (cmd == "validate") {
      args.emplace(argc, argv, 2, std::vector<std::string>{"config"}, std::vector<std::string>{});
    } else if (cmd == "explain") {
      args.emplace(argc, argv, 2,
                   std::vector<std::string>{"config", "user", "from", "to", "command", "listener",
                                            "method", "group", "protection", "at"},
                   std::vector<std::string>{"no-resolve", "client-certificate", "channel-bound"});
    } else if (cmd == "sessions" || cmd == "metrics") {
      args.emplace(
          argc, argv, 2, std::vector<std::string>{"admin", "token-file"},
          cmd == "sessions" ? std::vector<std::string>{"json"} : std::vector<std::string>{});
    } else if (cmd == "close-user") {
      args.emplace(argc, argv, 2, std::vector<std::string>{"admin", "token-file", "user"},
                   std::vector<std::string>{});
    } else {
      args.emplace(argc, argv, 2, std::vector<std::string>{}, std::vector<std::string>{});
    }
    if (args->help()) {
      std::fputs(help->second.c_str(), stdout);
      return kExitOk;
    }
    if (cmd == "run") return cmd_run(*args);
    if (cmd == "agent") return cmd_agent(*args);
    if (cmd == "validate") return cmd_validate(*args);
    if (cmd == "explain") return cmd_explain(*args);
    if (cmd == "hash-password") return cmd_hash_password();
    if (cmd == "sessions") return cmd_sessions(*args);
    if (cmd == "close-user") return cmd_close_user(*args);
    if (cmd == "metrics") return cmd_metrics(*args);
    std::printf("socksgate %s\n", sg::kVersion);
    return kExitOk;
  } catch (const UsageError& e) {
    std::fprintf(stderr, "socksgate %s: %s (see socksgate %s --help)\n", cmd.c_str(), e.what(),
                 cmd.c_str());
    return kExitUsage;
  } catch (const policy::LoadError& e) {
    print_diagnostics(e);
    return kExitUsage;
  } catch (const socksgate::auth::userpass::PasswordFileError& e) {
    print_diagnostics(e);
    return kExitUsage;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "socksgate %s: %s\n", cmd.c_str(), e.what());
    return kExitFailure;
  }
}
