// pam_sgtest: a PAM module for socksgate's integration tests only (never install it). Each
// action applies to one named user, so one service file can hold them all:
//   auth     sleep_user=NAME sleep_ms=N      sleeps N ms, then PAM_IGNORE
//   auth     rewrite_user=FROM:TO            sets PAM_USER to TO (after the password check)
//   auth     echo_user=NAME                  asks an echo-on question (nobody can answer it)
//   auth     chat_user=NAME                  sends three messages in one conversation call
//   account  acct_expired=NAME               PAM_ACCT_EXPIRED
//   account  pw_expired=NAME                 PAM_NEW_AUTHTOK_REQD
// Everything else: PAM_IGNORE.
#include <security/pam_modules.h>
#include <time.h>

#include <cstdlib>
#include <cstring>
#include <string>

namespace {

std::string arg(int argc, const char** argv, const char* key) {
  size_t n = std::strlen(key);
  for (int i = 0; i < argc; ++i) {
    if (std::strncmp(argv[i], key, n) == 0 && argv[i][n] == '=') return argv[i] + n + 1;
  }
  return "";
}

std::string user_of(pam_handle_t* h) {
  const void* u = nullptr;
  if (pam_get_item(h, PAM_USER, &u) != PAM_SUCCESS || u == nullptr) return "";
  return static_cast<const char*>(u);
}

int converse(pam_handle_t* h, int n, const pam_message** msgs, pam_response** resp) {
  const void* c = nullptr;
  if (pam_get_item(h, PAM_CONV, &c) != PAM_SUCCESS || c == nullptr) return PAM_CONV_ERR;
  auto* conv = static_cast<const pam_conv*>(c);
  return conv->conv(n, msgs, resp, conv->appdata_ptr);
}

void free_resp(pam_response* r, int n) {
  if (r == nullptr) return;
  for (int i = 0; i < n; ++i) std::free(r[i].resp);
  std::free(r);
}

}  // namespace

extern "C" int pam_sm_authenticate(pam_handle_t* h, int, int argc, const char** argv) {
  std::string user = user_of(h);
  if (!user.empty() && user == arg(argc, argv, "sleep_user")) {
    long ms = std::atol(arg(argc, argv, "sleep_ms").c_str());
    timespec ts{ms / 1000, (ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0) {
    }
    return PAM_IGNORE;
  }
  if (!user.empty() && user == arg(argc, argv, "echo_user")) {
    pam_message m{PAM_PROMPT_ECHO_ON, "One-time code: "};
    const pam_message* ms[] = {&m};
    pam_response* r = nullptr;
    int rc = converse(h, 1, ms, &r);
    free_resp(r, 1);
    return rc == PAM_SUCCESS ? PAM_AUTH_ERR : PAM_CONV_ERR;
  }
  if (!user.empty() && user == arg(argc, argv, "chat_user")) {
    pam_message a{PAM_TEXT_INFO, "sgtest: welcome"};
    pam_message b{PAM_ERROR_MSG, "sgtest: your password expires in 3 days"};
    pam_message c{PAM_TEXT_INFO, "sgtest: have a nice day"};
    const pam_message* ms[] = {&a, &b, &c};
    pam_response* r = nullptr;
    int rc = converse(h, 3, ms, &r);
    free_resp(r, 3);
    return rc == PAM_SUCCESS ? PAM_IGNORE : PAM_CONV_ERR;
  }
  std::string rw = arg(argc, argv, "rewrite_user");
  if (size_t colon = rw.find(':'); colon != std::string::npos && user == rw.substr(0, colon)) {
    std::string to = rw.substr(colon + 1);
    return pam_set_item(h, PAM_USER, to.c_str()) == PAM_SUCCESS ? PAM_IGNORE : PAM_SYSTEM_ERR;
  }
  return PAM_IGNORE;
}

extern "C" int pam_sm_setcred(pam_handle_t*, int, int, const char**) { return PAM_IGNORE; }

extern "C" int pam_sm_acct_mgmt(pam_handle_t* h, int, int argc, const char** argv) {
  std::string user = user_of(h);
  if (user.empty()) return PAM_IGNORE;
  if (user == arg(argc, argv, "acct_expired")) return PAM_ACCT_EXPIRED;
  if (user == arg(argc, argv, "pw_expired")) return PAM_NEW_AUTHTOK_REQD;
  return PAM_IGNORE;
}
