#pragma once
// JSON documents that remember where each key and value came from, so that configuration
// and policy errors can say `file:line:col: message` (admins fix files, not JSON pointers).
//
// Built on nlohmann/json's SAX interface; comments (// and /* */) are accepted. Pure: parses
// text already in memory.

#include <cstddef>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace socksgate::policy {

struct SourcePosition {
  int line = 1;    // 1-based
  int column = 1;  // 1-based, in bytes
};

// One problem found while loading a file. to_string() is "file:line:col: message".
struct Diagnostic {
  std::string file;
  SourcePosition pos;
  std::string message;
  std::string to_string() const;
};

// Thrown by loaders that stop at the first batch of problems; carries all of them.
class LoadError : public std::runtime_error {
 public:
  explicit LoadError(std::vector<Diagnostic> diags);
  const std::vector<Diagnostic>& diagnostics() const { return diags_; }

 private:
  std::vector<Diagnostic> diags_;
};

class JsonSource {
 public:
  // Parses `text`. On a syntax error, returns nullopt and appends one Diagnostic (with the
  // position of the error) to *diags. Nesting deeper than `max_depth` is a syntax error too.
  // A key repeated in one object is an error as well (nlohmann would keep the last one): each
  // repeat gets a Diagnostic, parsing goes on to find the others, and the result is nullopt.
  // `diags` may be null. Invalid UTF-8 is a syntax error.
  static std::optional<JsonSource> parse(std::string file, std::string_view text,
                                         std::vector<Diagnostic>* diags, int max_depth = 64);

  const nlohmann::json& root() const { return root_; }
  const std::string& file() const { return file_; }

  // Position of the value at JSON pointer `ptr` ("" is the root, "/rules/0/id"), or of the
  // nearest ancestor that has one.
  SourcePosition value_pos(const nlohmann::json::json_pointer& ptr) const;
  // Position of the key that names the value at `ptr` (falls back to value_pos).
  SourcePosition key_pos(const nlohmann::json::json_pointer& ptr) const;

  // Convenience: a Diagnostic at the value (or key) at `ptr`.
  Diagnostic at_value(const nlohmann::json::json_pointer& ptr, std::string message) const;
  Diagnostic at_key(const nlohmann::json::json_pointer& ptr, std::string message) const;

 private:
  std::string file_;
  nlohmann::json root_;
  std::map<std::string, SourcePosition> value_pos_;  // key: JSON pointer text
  std::map<std::string, SourcePosition> key_pos_;
  friend class JsonSourceBuilder;
};

}  // namespace socksgate::policy
