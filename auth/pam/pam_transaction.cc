#include "auth/pam/pam_transaction.h"

#include <grp.h>
#include <pwd.h>
#include <security/pam_appl.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <memory>

#include "crypto/secure.h"

namespace socksgate::auth::pam {
namespace {

struct Conversation {
  const std::string* password = nullptr;
  int password_prompts = 0;
  bool unanswerable = false;  // an echo-on prompt, too many password prompts, unknown style
  std::vector<PamMessage>* messages = nullptr;
};

void record(Conversation* c, int style, const char* text) {
  if (c->messages->size() >= kMaxMessages) return;
  std::string t = text ? text : "";
  if (t.size() > kMaxMessageText) t.resize(kMaxMessageText);
  c->messages->push_back({static_cast<uint8_t>(style), std::move(t)});
}

void free_responses(pam_response* r, int n) {
  for (int i = 0; i < n; ++i) {
    if (r[i].resp) {
      crypto::secure_zero(r[i].resp, std::strlen(r[i].resp));
      std::free(r[i].resp);
    }
  }
  std::free(r);
}

extern "C" int converse(int n, const struct pam_message** msg, struct pam_response** resp,
                        void* appdata) {
  auto* c = static_cast<Conversation*>(appdata);
  if (n <= 0 || n > PAM_MAX_NUM_MSG) return PAM_CONV_ERR;
  auto* r = static_cast<pam_response*>(std::calloc(static_cast<size_t>(n), sizeof(pam_response)));
  if (r == nullptr) return PAM_BUF_ERR;
  for (int i = 0; i < n; ++i) {
    const pam_message* m = msg[i];
    switch (m->msg_style) {
      case PAM_PROMPT_ECHO_OFF:
        if (++c->password_prompts > kMaxPasswordPrompts) {
          c->unanswerable = true;
          free_responses(r, n);
          return PAM_CONV_ERR;
        }
        r[i].resp = strdup(c->password->c_str());
        if (r[i].resp == nullptr) {
          free_responses(r, n);
          return PAM_BUF_ERR;
        }
        break;
      case PAM_ERROR_MSG:
      case PAM_TEXT_INFO:
        record(c, m->msg_style, m->msg);
        break;
      default:  // PAM_PROMPT_ECHO_ON (a user name or an OTP we do not have), binary prompts
        c->unanswerable = true;
        free_responses(r, n);
        return PAM_CONV_ERR;
    }
  }
  *resp = r;
  return PAM_SUCCESS;
}

PamStatus status_of(int rc, bool unanswerable) {
  if (unanswerable) return PamStatus::kConversation;
  switch (rc) {
    case PAM_SUCCESS:
      return PamStatus::kOk;
    case PAM_AUTH_ERR:
    case PAM_CRED_INSUFFICIENT:
      return PamStatus::kBadPassword;
    case PAM_USER_UNKNOWN:
      return PamStatus::kUnknownUser;
    case PAM_ACCT_EXPIRED:
      return PamStatus::kAccountExpired;
    case PAM_NEW_AUTHTOK_REQD:
    case PAM_AUTHTOK_EXPIRED:
      return PamStatus::kPasswordExpired;
    case PAM_PERM_DENIED:
    case PAM_MAXTRIES:
      return PamStatus::kDenied;
    case PAM_CONV_ERR:
      return PamStatus::kConversation;
    default:
      return PamStatus::kError;
  }
}

}  // namespace

std::vector<std::string> unix_groups(const std::string& user) {
  std::vector<std::string> out;
  long bufsize = sysconf(_SC_GETPW_R_SIZE_MAX);
  std::vector<char> buf(bufsize > 0 ? static_cast<size_t>(bufsize) : 16384);
  passwd pw{};
  passwd* pwp = nullptr;
  while (getpwnam_r(user.c_str(), &pw, buf.data(), buf.size(), &pwp) == ERANGE &&
         buf.size() < (1u << 20)) {
    buf.resize(buf.size() * 2);
  }
  if (pwp == nullptr) return out;
  int n = 64;
  std::vector<gid_t> gids(static_cast<size_t>(n));
  if (getgrouplist(user.c_str(), pw.pw_gid, gids.data(), &n) < 0) {
    if (n <= 0 || n > 65536) return out;
    gids.resize(static_cast<size_t>(n));
    if (getgrouplist(user.c_str(), pw.pw_gid, gids.data(), &n) < 0) return out;
  }
  gids.resize(static_cast<size_t>(n));
  std::vector<char> gbuf(16384);
  for (gid_t g : gids) {
    if (out.size() >= kMaxGroups) break;
    group gr{};
    group* grp = nullptr;
    while (getgrgid_r(g, &gr, gbuf.data(), gbuf.size(), &grp) == ERANGE &&
           gbuf.size() < (1u << 22)) {
      gbuf.resize(gbuf.size() * 2);
    }
    if (grp == nullptr || grp->gr_name == nullptr) continue;
    std::string name = grp->gr_name;
    if (name.empty() || name.size() > 255) continue;
    bool dup = false;
    for (const auto& x : out) dup = dup || x == name;
    if (!dup) out.push_back(std::move(name));
  }
  return out;
}

AuthResult run_pam_transaction(const AuthRequest& req, void (*after_start)(void*), void* arg) {
  AuthResult res;
  res.id = req.id;
  Conversation conv;
  conv.password = &req.password;
  conv.messages = &res.messages;
  pam_conv pc{converse, &conv};
  pam_handle_t* h = nullptr;
  int rc = pam_start(req.service.c_str(), req.user.c_str(), &pc, &h);
  if (after_start != nullptr) after_start(arg);
  if (rc != PAM_SUCCESS || h == nullptr) {
    res.status = PamStatus::kError;
    res.pam_code = rc;
    return res;
  }
  // pam_end with the status of the last call, whatever path leaves this function.
  int last = rc;
  auto closer = [&last](pam_handle_t* p) { pam_end(p, last); };
  std::unique_ptr<pam_handle_t, decltype(closer)> handle(h, closer);

  if (!req.rhost.empty()) last = rc = pam_set_item(h, PAM_RHOST, req.rhost.c_str());
  if (rc == PAM_SUCCESS) last = rc = pam_authenticate(h, PAM_DISALLOW_NULL_AUTHTOK);
  // Always the account check after a good password: expired or locked accounts are denied.
  if (rc == PAM_SUCCESS) last = rc = pam_acct_mgmt(h, PAM_DISALLOW_NULL_AUTHTOK);
  res.pam_code = rc;
  res.status = status_of(rc, conv.unanswerable);
  if (res.status == PamStatus::kOk) {
    // A module may have mapped the name (e.g. "ALICE@CORP" -> "alice"): policy sees PAM's.
    const void* item = nullptr;
    if (pam_get_item(h, PAM_USER, &item) != PAM_SUCCESS || item == nullptr) {
      res.status = PamStatus::kError;
      return res;
    }
    res.user = static_cast<const char*>(item);
    if (res.user.empty() || res.user.size() > 255) {
      res.user.clear();
      res.status = PamStatus::kError;
      return res;
    }
    res.groups = unix_groups(res.user);
  }
  return res;
}

}  // namespace socksgate::auth::pam
