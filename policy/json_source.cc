#include "policy/json_source.h"

#include <algorithm>
#include <iterator>
#include <utility>

namespace socksgate::policy {
namespace {

using json = nlohmann::json;

std::string join_diagnostics(const std::vector<Diagnostic>& diags) {
  std::string out;
  for (const auto& d : diags) {
    if (!out.empty()) out += '\n';
    out += d.to_string();
  }
  return out;
}

// Feeds nlohmann's lexer byte by byte and remembers how far it has read, so that each SAX
// event can be placed in the text. The lexer's input adapter keeps its own copy of the
// iterator, hence the shared high-water mark.
class CountingIterator {
 public:
  using iterator_category = std::input_iterator_tag;
  using value_type = char;
  using difference_type = std::ptrdiff_t;
  using pointer = const char*;
  using reference = const char&;

  CountingIterator() = default;
  CountingIterator(const char* p, size_t* consumed, const char* begin)
      : p_(p), begin_(begin), consumed_(consumed) {}

  reference operator*() const {
    auto read = static_cast<size_t>(p_ - begin_) + 1;
    if (read > *consumed_) *consumed_ = read;
    return *p_;
  }
  CountingIterator& operator++() {
    ++p_;
    return *this;
  }
  CountingIterator operator++(int) {
    CountingIterator old = *this;
    ++p_;
    return old;
  }
  friend bool operator==(const CountingIterator& a, const CountingIterator& b) {
    return a.p_ == b.p_;
  }

 private:
  const char* p_ = nullptr;
  const char* begin_ = nullptr;
  size_t* consumed_ = nullptr;
};

bool is_number_char(char c) {
  return (c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E';
}

// nlohmann's messages quote the bytes it read; keep diagnostics printable and valid UTF-8.
std::string printable(std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : s) {
    if (c < 0x20 || c >= 0x7f) {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 0xf];
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

std::string escape_pointer_token(std::string_view key) {
  std::string out;
  out.reserve(key.size());
  for (char c : key) {
    if (c == '~') {
      out += "~0";
    } else if (c == '/') {
      out += "~1";
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace

std::string Diagnostic::to_string() const {
  return file + ":" + std::to_string(pos.line) + ":" + std::to_string(pos.column) + ": " + message;
}

LoadError::LoadError(std::vector<Diagnostic> diags)
    : std::runtime_error(join_diagnostics(diags)), diags_(std::move(diags)) {}

// SAX handler: builds the DOM (as json_sax_dom_parser does) and records where each key and
// value starts, by JSON pointer.
class JsonSourceBuilder {
 public:
  JsonSourceBuilder(JsonSource* out, std::string_view text, const size_t* consumed, int max_depth,
                    std::vector<Diagnostic>* diags)
      : out_(out), text_(text), consumed_(consumed), max_depth_(max_depth), diags_(diags) {
    line_starts_.push_back(0);
    for (size_t i = 0; i < text.size(); ++i) {
      if (text[i] == '\n') line_starts_.push_back(i + 1);
    }
  }

  bool failed() const { return failed_; }

  bool null() { return value(json(nullptr), literal_start(4)); }
  bool boolean(bool b) { return value(json(b), literal_start(b ? 4 : 5)); }
  bool number_integer(json::number_integer_t v) { return value(json(v), number_start()); }
  bool number_unsigned(json::number_unsigned_t v) { return value(json(v), number_start()); }
  bool number_float(json::number_float_t v, const std::string& /*raw*/) {
    return value(json(v), number_start());
  }
  bool string(std::string& s) { return value(json(std::move(s)), string_start()); }
  bool binary(json::binary_t& b) { return value(json(std::move(b)), bracket_start()); }

  bool start_object(size_t /*elements*/) { return open(json::value_t::object); }
  bool start_array(size_t /*elements*/) { return open(json::value_t::array); }
  bool end_object() { return close(); }
  bool end_array() { return close(); }

  bool key(std::string& k) {
    Frame& f = stack_.back();
    size_t start = string_start();
    path_.resize(f.path_len);
    path_ += '/';
    path_ += escape_pointer_token(k);
    auto [it, inserted] = out_->key_pos_.emplace(path_, position(start));
    if (f.value->contains(k)) {
      // nlohmann would silently keep the last one; an admin who repeats a key has almost
      // certainly lost an edit.
      SourcePosition first = inserted ? SourcePosition{} : it->second;
      // A generated file may repeat keys by the thousand: report the first ones.
      if (duplicates_ < kMaxDuplicateReports) {
        add(start, "duplicate key \"" + printable(k) + "\" (first at line " +
                       std::to_string(first.line) + ", column " + std::to_string(first.column) +
                       ")");
      } else if (duplicates_ == kMaxDuplicateReports) {
        add(start, "too many duplicate keys; only the first " +
                       std::to_string(kMaxDuplicateReports) + " are reported");
      }
      ++duplicates_;
      has_duplicates_ = true;
    }
    f.key = std::move(k);
    return true;
  }

  template <class Exception>
  bool parse_error(size_t byte, const std::string& /*last_token*/, const Exception& ex) {
    // "[json.exception.parse_error.101] parse error at line 1, column 7: <what>": the position
    // is reported our way, keep only what went wrong.
    std::string_view what = ex.what();
    if (what.starts_with("[")) {
      size_t close = what.find("] ");
      if (close != std::string_view::npos) what.remove_prefix(close + 2);
    }
    if (what.starts_with("parse error")) {
      size_t colon = what.find(": ");
      if (colon != std::string_view::npos) what.remove_prefix(colon + 2);
    }
    // `byte` counts the last character read (or one past the end). When the lexer read a
    // whole token that the grammar did not expect, point at the token's start instead.
    size_t offset = std::min(byte > 0 ? byte - 1 : 0, text_.size());
    if (offset < text_.size()) {
      bool whole_token = what.find("unexpected string literal") != std::string_view::npos ||
                         what.find("unexpected number literal") != std::string_view::npos ||
                         what.find("number overflow") != std::string_view::npos;
      if (whole_token && text_[offset] == '"') {
        offset = string_start(offset);
      } else if (whole_token) {
        while (offset > 0 && is_number_char(text_[offset - 1])) --offset;
      }
    }
    add(offset, printable(what));
    failed_ = true;
    return false;
  }

  bool has_duplicates() const { return has_duplicates_; }

 private:
  struct Frame {
    json* value;
    size_t path_len;  // length of path_ for the container itself
    size_t next_index = 0;
    std::string key;
  };

  SourcePosition position(size_t offset) const {
    auto it = std::upper_bound(line_starts_.begin(), line_starts_.end(), offset);
    size_t line = static_cast<size_t>(it - line_starts_.begin());  // >= 1
    return {static_cast<int>(line), static_cast<int>(offset - line_starts_[line - 1] + 1)};
  }

  void add(size_t offset, std::string message) {
    diags_->push_back({out_->file_, position(offset), std::move(message)});
  }

  size_t consumed() const { return std::min(*consumed_, text_.size()); }

  size_t bracket_start() const { return consumed() > 0 ? consumed() - 1 : 0; }

  size_t literal_start(size_t len) const { return consumed() >= len ? consumed() - len : 0; }

  // The lexer reads one character past a number (unless the number ends the text). In a valid
  // document that character is never part of a number, which tells the two cases apart.
  size_t number_start() const {
    size_t end = consumed();
    if (end > 0 && !is_number_char(text_[end - 1])) --end;
    while (end > 0 && is_number_char(text_[end - 1])) --end;
    return end;
  }

  // The lexer stops right after the closing quote; walk back to the opening quote, i.e. the
  // nearest quote not escaped by an odd number of backslashes.
  size_t string_start() const { return string_start(consumed() > 0 ? consumed() - 1 : 0); }

  size_t string_start(size_t close) const {
    size_t i = close;
    while (i > 0) {
      --i;
      if (text_[i] != '"') continue;
      size_t backslashes = 0;
      while (i - backslashes > 0 && text_[i - backslashes - 1] == '\\') ++backslashes;
      if (backslashes % 2 == 0) return i;
    }
    return 0;
  }

  // Sets path_ to the pointer of the value about to be added and returns where it goes.
  json* slot() {
    if (stack_.empty()) {
      path_.clear();
      return &out_->root_;
    }
    Frame& f = stack_.back();
    if (f.value->is_array()) {
      path_.resize(f.path_len);
      path_ += '/';
      path_ += std::to_string(f.next_index++);
      f.value->push_back(json());
      return &f.value->back();
    }
    // path_ was set by key().
    return &(*f.value)[f.key];
  }

  bool value(json v, size_t start) {
    json* dst = slot();
    *dst = std::move(v);
    out_->value_pos_.emplace(path_, position(start));
    return true;
  }

  bool open(json::value_t type) {
    size_t start = bracket_start();
    if (static_cast<int>(stack_.size()) >= max_depth_) {
      add(start, "nesting deeper than " + std::to_string(max_depth_) + " levels");
      failed_ = true;
      return false;
    }
    json* dst = slot();
    *dst = json(type);
    out_->value_pos_.emplace(path_, position(start));
    stack_.push_back(Frame{dst, path_.size(), 0, {}});
    return true;
  }

  bool close() {
    stack_.pop_back();
    return true;
  }

  JsonSource* out_;
  std::string_view text_;
  const size_t* consumed_;
  int max_depth_;
  std::vector<Diagnostic>* diags_;
  std::vector<size_t> line_starts_;
  std::vector<Frame> stack_;
  std::string path_;
  bool failed_ = false;
  bool has_duplicates_ = false;
  static constexpr size_t kMaxDuplicateReports = 100;
  size_t duplicates_ = 0;
};

std::optional<JsonSource> JsonSource::parse(std::string file, std::string_view text,
                                            std::vector<Diagnostic>* diags, int max_depth) {
  JsonSource src;
  src.file_ = std::move(file);
  size_t consumed = 0;
  std::vector<Diagnostic> local;
  JsonSourceBuilder builder(&src, text, &consumed, max_depth, &local);
  CountingIterator first(text.data(), &consumed, text.data());
  CountingIterator last(text.data() + text.size(), &consumed, text.data());
  bool ok = json::sax_parse(first, last, &builder, nlohmann::json::input_format_t::json,
                            /*strict=*/true, /*ignore_comments=*/true);
  if (diags != nullptr) diags->insert(diags->end(), local.begin(), local.end());
  if (!ok || builder.failed() || builder.has_duplicates()) return std::nullopt;
  return src;
}

SourcePosition JsonSource::value_pos(const nlohmann::json::json_pointer& ptr) const {
  auto p = ptr;
  while (true) {
    auto it = value_pos_.find(p.to_string());
    if (it != value_pos_.end()) return it->second;
    if (p.empty()) return {};
    p = p.parent_pointer();
  }
}

SourcePosition JsonSource::key_pos(const nlohmann::json::json_pointer& ptr) const {
  auto it = key_pos_.find(ptr.to_string());
  if (it != key_pos_.end()) return it->second;
  return value_pos(ptr);
}

Diagnostic JsonSource::at_value(const nlohmann::json::json_pointer& ptr,
                                std::string message) const {
  return {file_, value_pos(ptr), std::move(message)};
}

Diagnostic JsonSource::at_key(const nlohmann::json::json_pointer& ptr, std::string message) const {
  return {file_, key_pos(ptr), std::move(message)};
}

}  // namespace socksgate::policy
