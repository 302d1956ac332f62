#pragma once
// A password file in htpasswd form: one `user:hash` per line, crypt(3) hashes (see
// crypto/password_hash.h). Blank lines and lines starting with '#' are ignored. Immutable
// once loaded; shared by all sessions of one configuration snapshot.

#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace socksgate::auth::userpass {

// Every problem in the file, each "file:line: message", joined by newlines.
class PasswordFileError : public std::runtime_error {
 public:
  struct Problem {
    int line;
    std::string message;
  };
  PasswordFileError(std::string file, std::vector<Problem> problems);
  const std::string& file() const { return file_; }
  const std::vector<Problem>& entries() const { return entries_; }
  // "file:line: message" each.
  std::vector<std::string> problems() const;

 private:
  std::string file_;
  std::vector<Problem> entries_;
};

class PasswordFile {
 public:
  PasswordFile() = default;
  // Reads and validates the file; throws PasswordFileError listing every bad line (unknown or
  // weak hash kind, duplicate user, missing ':'), or std::runtime_error if it cannot be read.
  static PasswordFile load(const std::string& path);
  static PasswordFile parse(std::string_view file_name, std::string_view text);

  // The stored hash for `user`, if any.
  std::optional<std::string_view> find(std::string_view user) const;
  size_t size() const { return users_.size(); }

 private:
  std::map<std::string, std::string, std::less<>> users_;
};

}  // namespace socksgate::auth::userpass
