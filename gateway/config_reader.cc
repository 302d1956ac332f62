#include "gateway/config_reader.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "gateway/privsep.h"

namespace socksgate::gateway::config_io {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    int e = errno;
    std::string why = path + ": cannot open: " + std::strerror(e);
    if (e == EACCES && ::geteuid() != 0) {
      // After the privilege drop (gateway/privsep.h) reloads read files as the run_as user.
      why += " (socksgate runs as " + describe_credentials() +
             "; files it re-reads on reload must be readable by that user)";
    }
    throw std::runtime_error(why);
  }
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
