// Test-only LD_PRELOAD shim for ThreadSanitizer runs: pam_wrapper (1.1.4, Debian 12) loads
// libpam with RTLD_DEEPBIND, which the sanitizer runtimes refuse (google/sanitizers#611), and
// this version has no PAM_WRAPPER_DISABLE_DEEPBIND switch yet. Preloaded ahead of libtsan, this
// dlopen clears the flag and hands over to the next dlopen (the sanitizer's, then libc's).
#include <dlfcn.h>

extern "C" void* dlopen(const char* file, int flags) {
  using Fn = void* (*)(const char*, int);
  static Fn next = reinterpret_cast<Fn>(dlsym(RTLD_NEXT, "dlopen"));
  return next(file, flags & ~RTLD_DEEPBIND);
}
