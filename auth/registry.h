#pragma once
// The explicit list of authentication methods the gateway knows. Adding a method is one entry
// in kMethods (auth/registry.cc) plus its folder; no static-initialisation tricks.

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "auth/authenticator.h"
#include "auth/gssapi/gss_authenticator.h"
#include "auth/userpass/userpass_authenticator.h"

namespace socksgate::auth {

struct MethodInfo {
  std::string_view name;  // as written in config and policy
  uint8_t code;           // RFC 1928 method code
};

std::span<const MethodInfo> known_methods();
std::optional<uint8_t> method_code(std::string_view name);

// Back-ends of one configuration snapshot (null when not configured).
struct AuthBackends {
  std::shared_ptr<const userpass::UserPassBackend> userpass;
  // GSS-API settings and acceptor credential, per listener name (listeners may differ).
  std::map<std::string, std::shared_ptr<const gssapi::GssBackend>, std::less<>> gssapi;
};

// A fresh authenticator for `name` on `listener`, or null when the method is unknown or its
// back-end is not configured (config validation rejects that before it can happen at run time).
std::unique_ptr<Authenticator> make_authenticator(std::string_view name,
                                                  const AuthBackends& backends,
                                                  std::string_view listener = {});

}  // namespace socksgate::auth
