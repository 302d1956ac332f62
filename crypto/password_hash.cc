#include "crypto/password_hash.h"

#include <crypt.h>

#include <array>
#include <cstring>
#include <memory>
#include <stdexcept>

#include "crypto/secure.h"

namespace socksgate::crypto {
namespace {

constexpr std::array<std::string_view, 8> kAccepted = {"$y$", "$gy$", "$7$",  "$6$",
                                                       "$5$", "$2b$", "$2y$", "$2a$"};

bool has_prefix(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

}  // namespace

std::string check_hash_format(std::string_view hash) {
  if (hash.empty()) return "empty hash";
  if (hash.find_first_of(" \t\r\n:") != std::string_view::npos)
    return "hash contains whitespace or ':'";
  for (auto p : kAccepted) {
    if (has_prefix(hash, p)) return {};
  }
  if (has_prefix(hash, "$1$") || has_prefix(hash, "$apr1$")) {
    return "MD5 hashes are not accepted (too weak); use yescrypt, sha512-crypt or bcrypt";
  }
  if (hash[0] != '$')
    return "DES or plain-text passwords are not accepted; use yescrypt, sha512-crypt or bcrypt";
  return "unsupported hash method; use yescrypt ($y$), sha512-crypt ($6$) or bcrypt ($2b$)";
}

bool verify_password(std::string_view password, std::string_view hash) {
  if (!check_hash_format(hash).empty()) return false;
  // crypt_rn wants NUL-terminated strings; a password with an embedded NUL cannot match.
  if (password.find('\0') != std::string_view::npos) return false;
  std::string pw(password);
  std::string setting(hash);
  auto data = std::make_unique<crypt_data>();  // ~32 KiB: keep it off the stack
  std::memset(data.get(), 0, sizeof(crypt_data));
  const char* out = crypt_rn(pw.c_str(), setting.c_str(), data.get(), sizeof(crypt_data));
  bool ok = out != nullptr && out[0] != '*' && constant_time_equal(std::string_view(out), hash);
  secure_zero(pw.data(), pw.size());
  secure_zero(data.get(), sizeof(crypt_data));
  return ok;
}

std::string hash_password(std::string_view password) {
  if (password.find('\0') != std::string_view::npos) {
    throw std::invalid_argument("password contains a NUL byte");
  }
  char salt[CRYPT_GENSALT_OUTPUT_SIZE];
  if (crypt_gensalt_rn("$y$", 0, nullptr, 0, salt, sizeof salt) == nullptr) {
    throw std::runtime_error("crypt_gensalt_rn failed: " + std::string(std::strerror(errno)));
  }
  auto data = std::make_unique<crypt_data>();
  std::memset(data.get(), 0, sizeof(crypt_data));
  std::string pw(password);
  const char* out = crypt_rn(pw.c_str(), salt, data.get(), sizeof(crypt_data));
  secure_zero(pw.data(), pw.size());
  if (out == nullptr || out[0] == '*') throw std::runtime_error("crypt_rn failed");
  std::string result(out);
  secure_zero(data.get(), sizeof(crypt_data));
  return result;
}

}  // namespace socksgate::crypto
