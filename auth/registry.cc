#include "auth/registry.h"

#include <array>

#include "auth/none/none_authenticator.h"

namespace socksgate::auth {
namespace {
constexpr std::array<MethodInfo, 3> kMethods = {{
    {"none", kMethodNone},
    {"gssapi", kMethodGssapi},
    {"userpass", kMethodUserPass},
}};
}  // namespace

std::span<const MethodInfo> known_methods() { return kMethods; }

std::optional<uint8_t> method_code(std::string_view name) {
  for (const auto& m : kMethods) {
    if (m.name == name) return m.code;
  }
  return std::nullopt;
}

std::unique_ptr<Authenticator> make_authenticator(std::string_view name,
                                                  const AuthBackends& backends,
                                                  std::string_view listener) {
  if (name == "none") return std::make_unique<NoneAuthenticator>();
  if (name == "userpass" && backends.userpass) {
    return std::make_unique<userpass::UserPassAuthenticator>(backends.userpass);
  }
  if (name == "gssapi") {
    if (auto it = backends.gssapi.find(listener); it != backends.gssapi.end() && it->second) {
      return std::make_unique<gssapi::GssAuthenticator>(it->second);
    }
  }
  return nullptr;
}

}  // namespace socksgate::auth
