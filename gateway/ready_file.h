#pragma once
// The ready file of `run` and `agent` (--ready-file): `{"pid": …, "listeners": [{"name",
// "address", "port"}]}`, written once listening (and after a reload), so that tests and
// supervisors learn the ports of port-0 listeners. Written to FILE.tmp and renamed: a reader
// never sees half a file.

#include <asio/ip/tcp.hpp>
#include <string>
#include <vector>

namespace socksgate::gateway {

struct ReadyListener {
  std::string name;
  asio::ip::tcp::endpoint bound;
};

// `admin`: the gateway's admin listener, if any (written as "admin": {"address", "port"}).
void write_ready_file(const std::string& path, const std::vector<ReadyListener>& listeners,
                      const ReadyListener* admin = nullptr);

}  // namespace socksgate::gateway
