#include "auth/userpass/password_file.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "crypto/password_hash.h"

namespace socksgate::auth::userpass {
namespace {
std::string join(const std::string& file, const std::vector<PasswordFileError::Problem>& v) {
  std::string s;
  for (const auto& p : v) {
    if (!s.empty()) s += '\n';
    s += file + ":" + std::to_string(p.line) + ": " + p.message;
  }
  return s;
}
}  // namespace

PasswordFileError::PasswordFileError(std::string file, std::vector<Problem> problems)
    : std::runtime_error(join(file, problems)),
      file_(std::move(file)),
      entries_(std::move(problems)) {}

std::vector<std::string> PasswordFileError::problems() const {
  std::vector<std::string> out;
  for (const auto& p : entries_)
    out.push_back(file_ + ":" + std::to_string(p.line) + ": " + p.message);
  return out;
}

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
  std::vector<PasswordFileError::Problem> problems;
  int line_no = 0;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string_view::npos) eol = text.size();
    std::string_view line = text.substr(pos, eol - pos);
    pos = eol + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    size_t first = line.find_first_not_of(" \t");
    if (first == std::string_view::npos || line[first] == '#') continue;
    size_t colon = line.find(':');
    if (colon == std::string_view::npos) {
      problems.push_back({line_no, "expected user:hash"});
      continue;
    }
    std::string_view user = line.substr(0, colon);
    std::string_view hash = line.substr(colon + 1);
    if (user.empty()) {
      problems.push_back({line_no, "empty user name"});
      continue;
    }
    if (user.size() > 255) {
      problems.push_back({line_no, "user name longer than 255 bytes (RFC 1929 limit)"});
      continue;
    }
    // Only the password field matters; ignore trailing shadow-style fields if present.
    if (size_t c2 = hash.find(':'); c2 != std::string_view::npos) hash = hash.substr(0, c2);
    if (std::string why = crypto::check_hash_format(hash); !why.empty()) {
      problems.push_back({line_no, "user \"" + std::string(user) + "\": " + why});
      continue;
    }
    if (!pf.users_.emplace(std::string(user), std::string(hash)).second) {
      problems.push_back({line_no, "duplicate user \"" + std::string(user) + "\""});
    }
  }
  if (!problems.empty()) throw PasswordFileError(std::string(file_name), std::move(problems));
  return pf;
}

std::optional<std::string_view> PasswordFile::find(std::string_view user) const {
  auto it = users_.find(user);
  if (it == users_.end()) return std::nullopt;
  return std::string_view(it->second);
}

}  // namespace socksgate::auth::userpass
