#pragma once
// The privileged auth monitor (OpenSSH's privilege separation, reduced to one job).
//
// Process tree, all forked before the gateway drops root:
//
//   gateway (run_as user) ──control socket──► supervisor (root, reads one byte at a time)
//        └──────────link (framed protocol)──► monitor (root, forked by the supervisor)
//                                                └─► one worker process per PAM transaction
//
// - The supervisor parses nothing: each byte 'M' on the control socket means "kill the current
//   monitor, fork a fresh one, send me my end of its link" (SCM_RIGHTS, with its pid as data).
//   It exits when the gateway closes the control socket (or dies: PR_SET_PDEATHSIG).
// - The monitor reads the link with the pure parser of auth/pam/monitor_protocol.h and answers
//   the fixed table (HELLO, AUTH) only; a malformed or out-of-order frame ends it (the gateway
//   sees EOF and asks the supervisor for a new one). It never sees network input: only what
//   the gateway put into frames.
// - Each AUTH runs in its own forked worker (one PAM handle, start to end, in a process of its
//   own: a module that sleeps, crashes or leaks state affects nobody else). At most
//   kMaxWorkers run at once, kMaxQueued more wait; beyond that the answer is "busy". A worker
//   that overruns its request's deadline is killed and the answer is "timeout".

#include <sys/types.h>

#include <chrono>
#include <cstddef>

namespace socksgate::auth::pam {

inline constexpr size_t kMaxWorkers = 16;
inline constexpr size_t kMaxQueued = 256;
inline constexpr std::chrono::milliseconds kMinTimeout{1000};
inline constexpr std::chrono::milliseconds kMaxTimeout{120000};

struct Supervisor {
  int control_fd = -1;  // the gateway's end (close-on-exec)
  pid_t pid = -1;
};

// Forks the supervisor. Call while the process has one thread (fork would otherwise copy
// locks held by other threads). Throws std::runtime_error on failure.
Supervisor start_supervisor();

// Asks the supervisor for a fresh monitor: returns the link's fd (close-on-exec) and sets
// *monitor_pid, or -1 (errno set) on failure. Blocking, bounded by `timeout`.
int request_monitor_link(int control_fd, pid_t* monitor_pid, std::chrono::milliseconds timeout);

// The monitor's loop over one link (exposed for tests): returns when the link closes or
// carries a protocol error; never returns to the caller's logic otherwise. Kills its workers.
void run_monitor(int link_fd);

}  // namespace socksgate::auth::pam
