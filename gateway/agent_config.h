#pragma once
// The agent's configuration (`socksgate agent --config FILE`): strict JSON like the gateway's
// (comments allowed, unknown keys are errors, every problem as `file:line:col: message`),
// relative paths relative to the config file. Reference: docs/agent.md.

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "crypto/tls.h"

namespace socksgate::gateway {

// A local listener: SOCKS5 without authentication and HTTP CONNECT, on loopback only.
struct AgentListenConfig {
  std::string name;
  std::string address;  // a loopback IP literal (127.0.0.0/8 or ::1)
  uint16_t port = 1080;
};

struct AgentGatewayConfig {
  std::string host;  // name or IP of the gateway's TLS listener
  uint16_t port = 0;
  crypto::TlsClientSettings tls;  // server_name, ca_file, pin_sha256, cert_file, key_file
  // Budget for reaching the gateway, retries with backoff included.
  std::chrono::milliseconds connect_timeout{10000};
  // TLS handshake, method selection and sign-on together.
  std::chrono::milliseconds handshake_timeout{10000};
  // How long the gateway may take to answer a request (it connects to the target meanwhile).
  std::chrono::milliseconds request_timeout{30000};
};

enum class PasswordSource { kNone, kFile, kEnv, kPrompt };

struct AgentAuthConfig {
  std::string method = "userpass";  // see auth::gateway_auth_methods()
  std::string user;
  PasswordSource source = PasswordSource::kNone;
  std::string password_file;  // resolved path
  std::string password_env;   // variable name
  // gssapi: the gateway's service name (default "rcmd@<gateway host>"), the ticket cache
  // (default: KRB5CCNAME's), the protection level required, and whether TLS channel bindings
  // are sent.
  std::string service;
  std::string ccache;
  std::string protection = "confidentiality";
  bool channel_binding = true;
};

struct AgentBackoffConfig {
  std::chrono::milliseconds initial{100};  // first wait after the gateway became unreachable
  std::chrono::milliseconds max{5000};     // the wait doubles up to this
};

struct AgentLimitsConfig {
  std::chrono::milliseconds negotiation_timeout{10000};  // a local client's greeting/request
  std::chrono::seconds idle_timeout{3600};
  uint32_t max_sessions = 1024;
};

struct AgentConfig {
  std::string path;
  std::vector<AgentListenConfig> listen;
  AgentGatewayConfig gateway;
  AgentAuthConfig auth;
  AgentBackoffConfig backoff;
  AgentLimitsConfig limits;
};

// Loads and validates. Throws policy::LoadError (all diagnostics) or std::runtime_error
// (unreadable file).
AgentConfig load_agent_config(const std::string& path);
AgentConfig load_agent_config_text(const std::string& path, std::string_view text);

// The password from its configured source: the first line of the file, the environment
// variable, or a prompt on /dev/tty with echo off. Throws std::runtime_error with a one-line
// reason (unreadable file, unset or empty variable, no terminal, empty password).
std::string read_agent_password(const AgentConfig& cfg);

}  // namespace socksgate::gateway
