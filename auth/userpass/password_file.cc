#include "auth/userpass/password_file.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "crypto/password_hash.h"

namespace socksgate::auth::userpass {
namespace {
std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& p : v) {
    if (!s.empty()) s += '\n';
    s += p;
  }
  return s;
}
}  // namespace

PasswordFileError::PasswordFileError(std::vector<std::string> problems)
    : std::runtime_error(join(problems)), problems_(std::move(problems)) {}

PasswordFile PasswordFile::load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw std::runtime_error(path + ": cannot open password file: " + std::strerror(errno));
  }
  std::stringstream ss;
  ss << in.rdbuf();
  return parse(path, ss.str());
}

PasswordFile PasswordFile::parse(std::string_view file_name, std::string_view text) {
  PasswordFile pf;
  std::vector<std::string> problems;
  int line_no = 0;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string_view::npos) eol = text.size();
    std::string_view line = text.substr(pos, eol - pos);
    pos = eol + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    auto where = [&] { return std::string(file_name) + ":" + std::to_string(line_no) + ": "; };
    size_t first = line.find_first_not_of(" \t");
    if (first == std::string_view::npos || line[first] == '#') continue;
    size_t colon = line.find(':');
    if (colon == std::string_view::npos) {
      problems.push_back(where() + "expected user:hash");
      continue;
    }
    std::string_view user = line.substr(0, colon);
    std::string_view hash = line.substr(colon + 1);
    if (user.empty()) {
      problems.push_back(where() + "empty user name");
      continue;
    }
    if (user.size() > 255) {
      problems.push_back(where() + "user name longer than 255 bytes (RFC 1929 limit)");
      continue;
    }
    // Only the password field matters; ignore trailing shadow-style fields if present.
    if (size_t c2 = hash.find(':'); c2 != std::string_view::npos) hash = hash.substr(0, c2);
    if (std::string why = crypto::check_hash_format(hash); !why.empty()) {
      problems.push_back(where() + "user \"" + std::string(user) + "\": " + why);
      continue;
    }
    if (!pf.users_.emplace(std::string(user), std::string(hash)).second) {
      problems.push_back(where() + "duplicate user \"" + std::string(user) + "\"");
    }
  }
  if (!problems.empty()) throw PasswordFileError(std::move(problems));
  return pf;
}

std::optional<std::string_view> PasswordFile::find(std::string_view user) const {
  auto it = users_.find(user);
  if (it == users_.end()) return std::nullopt;
  return std::string_view(it->second);
}

}  // namespace socksgate::auth::userpass
