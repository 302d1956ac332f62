#include "gateway/ready_file.h"

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

namespace socksgate::gateway {

void write_ready_file(const std::string& path, const std::vector<ReadyListener>& listeners,
                      const ReadyListener* admin) {
  nlohmann::json j;
  j["pid"] = ::getpid();
  j["listeners"] = nlohmann::json::array();
  for (const auto& l : listeners) {
    j["listeners"].push_back(
        {{"name", l.name}, {"address", l.bound.address().to_string()}, {"port", l.bound.port()}});
  }
  if (admin != nullptr) {
    j["admin"] = {{"address", admin->bound.address().to_string()}, {"port", admin->bound.port()}};
  }
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp);
    out << j.dump() << "\n";
  }
  std::rename(tmp.c_str(), path.c_str());
}

}  // namespace socksgate::gateway
