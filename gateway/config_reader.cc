#include "gateway/config_reader.h"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace socksgate::gateway::config_io {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot open: " + std::strerror(errno));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string resolve_path(const std::string& config_path, const std::string& p) {
  std::filesystem::path fp(p);
  if (fp.is_absolute() || config_path.empty() || config_path[0] == '<') return p;
  return (std::filesystem::path(config_path).parent_path() / fp).lexically_normal().string();
}

}  // namespace socksgate::gateway::config_io
