#pragma once
// Strict reading of JSON configuration files (the gateway's and the agent's): every key must
// be known, every value of the right type; each problem is a policy::Diagnostic that says
// `file:line:col: message`. Shared by gateway/config.cc and gateway/agent_config.cc.

#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "policy/json_source.h"

namespace socksgate::gateway::config_io {

using Ptr = nlohmann::json::json_pointer;

// The whole file; throws std::runtime_error("PATH: cannot open: why").
std::string read_file(const std::string& path);
// `p` relative to the directory of `config_path` (absolute paths and embedded configs as is).
std::string resolve_path(const std::string& config_path, const std::string& p);

// Strict reading of one JSON object: every key must be known, every value of the right type.
class ObjectReader {
 public:
  ObjectReader(const policy::JsonSource& src, Ptr at, std::vector<policy::Diagnostic>* diags,
               std::initializer_list<std::string_view> keys)
      : src_(src), at_(std::move(at)), diags_(diags) {
    const nlohmann::json& v = src_.root().at(at_);
    if (!v.is_object()) {
      diags_->push_back(src_.at_value(at_, "expected an object"));
      ok_ = false;
      return;
    }
    for (const auto& [k, _] : v.items()) {
      bool known = false;
      for (auto allowed : keys) known = known || allowed == k;
      if (!known) {
        std::string list;
        for (auto allowed : keys) list += (list.empty() ? "" : ", ") + std::string(allowed);
        diags_->push_back(
            src_.at_key(at_ / k, "unknown key \"" + k + "\" (expected one of: " + list + ")"));
      }
    }
  }
  bool ok() const { return ok_; }
  bool has(const std::string& k) const { return ok_ && src_.root().at(at_).contains(k); }
  Ptr ptr(const std::string& k) const { return at_ / k; }
  const nlohmann::json& value(const std::string& k) const { return src_.root().at(at_ / k); }

  std::optional<std::string> string(const std::string& k, bool required, bool allow_empty = false) {
    if (!has(k)) {
      if (required && ok_)
        diags_->push_back(src_.at_value(at_, "missing required key \"" + k + "\""));
      return std::nullopt;
    }
    const nlohmann::json& v = value(k);
    if (!v.is_string()) {
      diags_->push_back(src_.at_value(ptr(k), "\"" + k + "\" must be a string"));
      return std::nullopt;
    }
    if (!allow_empty && v.get_ref<const std::string&>().empty()) {
      diags_->push_back(src_.at_value(ptr(k), "\"" + k + "\" must not be empty"));
      return std::nullopt;
    }
    return v.get<std::string>();
  }

  std::optional<int64_t> integer(const std::string& k, int64_t min, int64_t max) {
    if (!has(k)) return std::nullopt;
    const nlohmann::json& v = value(k);
    if (!v.is_number_integer()) {
      diags_->push_back(src_.at_value(ptr(k), "\"" + k + "\" must be an integer"));
      return std::nullopt;
    }
    int64_t x = v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)
                    ? INT64_MAX
                    : v.get<int64_t>();
    if (x < min || x > max) {
      diags_->push_back(src_.at_value(
          ptr(k),
          "\"" + k + "\" must be between " + std::to_string(min) + " and " + std::to_string(max)));
      return std::nullopt;
    }
    return x;
  }

  std::optional<bool> boolean(const std::string& k) {
    if (!has(k)) return std::nullopt;
    const nlohmann::json& v = value(k);
    if (!v.is_boolean()) {
      diags_->push_back(src_.at_value(ptr(k), "\"" + k + "\" must be true or false"));
      return std::nullopt;
    }
    return v.get<bool>();
  }

  std::optional<std::vector<std::string>> strings(const std::string& k) {
    if (!has(k)) return std::nullopt;
    const nlohmann::json& v = value(k);
    if (!v.is_array()) {
      diags_->push_back(src_.at_value(ptr(k), "\"" + k + "\" must be an array of strings"));
      return std::nullopt;
    }
    std::vector<std::string> out;
    bool good = true;
    for (size_t i = 0; i < v.size(); ++i) {
      if (!v[i].is_string()) {
        diags_->push_back(src_.at_value(ptr(k) / i, "expected a string"));
        good = false;
      } else {
        out.push_back(v[i].get<std::string>());
      }
    }
    if (!good) return std::nullopt;
    return out;
  }

 private:
  const policy::JsonSource& src_;
  Ptr at_;
  std::vector<policy::Diagnostic>* diags_;
  bool ok_ = true;
};

// The top-level key `key`, which must be a non-empty array: nullptr, with a diagnostic, when it
// is missing, of another type or empty.
inline const nlohmann::json* required_array(const policy::JsonSource& src, const std::string& key,
                                            std::vector<policy::Diagnostic>* diags) {
  if (!src.root().contains(key)) {
    diags->push_back(src.at_value(Ptr(), "missing required key \"" + key + "\""));
    return nullptr;
  }
  const Ptr at("/" + key);
  const nlohmann::json& arr = src.root().at(at);
  if (!arr.is_array() || arr.empty()) {
    diags->push_back(src.at_value(at, "\"" + key + "\" must be a non-empty array"));
    return nullptr;
  }
  return &arr;
}

template <typename Dur>
void read_duration(ObjectReader& r, const std::string& key, int64_t min, int64_t max, Dur* out) {
  if (auto v = r.integer(key, min, max)) *out = Dur(*v);
}

template <typename E>
std::optional<E> read_enum(ObjectReader& r, const std::string& key,
                           std::initializer_list<std::pair<std::string_view, E>> values,
                           const policy::JsonSource& src, std::vector<policy::Diagnostic>* diags) {
  auto v = r.string(key, false);
  if (!v) return std::nullopt;
  std::string list;
  for (const auto& [name, e] : values) {
    if (*v == name) return e;
    list += (list.empty() ? "" : ", ") + std::string(name);
  }
  diags->push_back(src.at_value(
      r.ptr(key), "unknown " + key + " \"" + *v + "\" (expected one of: " + list + ")"));
  return std::nullopt;
}

}  // namespace socksgate::gateway::config_io
