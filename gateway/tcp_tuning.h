#pragma once
// TCP congestion control per socket (TCP_CONGESTION), for the two legs the gateway sends on:
// to clients (a listener's "congestion_control", set on its listening sockets and inherited by
// every accepted connection) and to destinations ("upstream": {"congestion_control"}, set on
// each outgoing and BIND socket). Unset = the kernel's default
// (net.ipv4.tcp_congestion_control).
//
// Why it matters: with BBR, which paces every flow with a per-socket hrtimer, a relay in a VM
// pays a timer reprogramming (a VM exit) for most segments it sends. docs/performance.md
// measures the difference.

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace socksgate::gateway {

// Names from /proc/sys/net/ipv4/tcp_{available,allowed}_congestion_control and the kernel's
// default (tcp_congestion_control). When a file cannot be read (e.g. inside run_as.chroot),
// what it said when last read; empty if it never could be. The gateway reads them once at
// start, before any chroot, so that reloads inside one can still check and apply settings.
struct KernelCongestionControls {
  std::vector<std::string> available;
  std::vector<std::string> allowed;
  std::string default_name;
};
KernelCongestionControls kernel_congestion_controls();

// Why `name` cannot be used by the gateway on this host (not available, or available but not
// allowed to processes without CAP_NET_ADMIN, which the gateway gives up after binding), or
// nullopt when it can. `available` / `allowed`: kernel_congestion_controls() (parameters for
// tests).
std::optional<std::string> congestion_control_problem(std::string_view name,
                                                      const std::vector<std::string>& available,
                                                      const std::vector<std::string>& allowed);

// Sets `name` on socket `fd`; an empty name does nothing. Returns 0 or the errno.
int set_congestion_control(int fd, const std::string& name);

// set_congestion_control for a socket the gateway is about to use; a failure does not stop
// the connection (the kernel's default stays) and is logged once per name and error.
void apply_congestion_control(int fd, const std::string& name, std::string_view what);

}  // namespace socksgate::gateway
