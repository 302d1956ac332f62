#pragma once
// Small RAII owners for MIT krb5's GSS-API handles, made where the C handles enter our code
// (crypto/ owns them because the per-message protection channel needs them; auth/gssapi
// establishes contexts with them). Each owner is move-only and releases its handle with the
// matching gss_release_* / gss_delete_sec_context call.
//
// GSS calls on one context are not thread-safe: a context belongs to one session and is only
// touched on that session's thread (or, during establishment, by the one blocking-pool task the
// session is waiting for). Credentials (gss_cred_id_t) are shared read-only by the sessions of
// one configuration snapshot; MIT locks them internally.

#include <gssapi/gssapi.h>
#include <gssapi/gssapi_krb5.h>

#include <cstdint>
#include <span>
#include <string>
#include <utility>

namespace socksgate::crypto {

// A buffer the GSS library allocated (output tokens, display names).
class GssBuffer {
 public:
  GssBuffer() = default;
  GssBuffer(const GssBuffer&) = delete;
  GssBuffer& operator=(const GssBuffer&) = delete;
  ~GssBuffer() {
    OM_uint32 minor;
    if (buf_.value != nullptr) gss_release_buffer(&minor, &buf_);
  }
  gss_buffer_t get() { return &buf_; }
  std::span<const uint8_t> bytes() const {
    return {static_cast<const uint8_t*>(buf_.value), buf_.length};
  }
  std::string str() const { return {static_cast<const char*>(buf_.value), buf_.length}; }
  bool empty() const { return buf_.length == 0; }

 private:
  gss_buffer_desc buf_{0, nullptr};
};

// A buffer descriptor pointing at our bytes (input tokens); owns nothing.
inline gss_buffer_desc gss_view(std::span<const uint8_t> b) {
  return {b.size(), const_cast<uint8_t*>(b.data())};
}

class GssName {
 public:
  GssName() = default;
  explicit GssName(gss_name_t n) : name_(n) {}
  GssName(GssName&& o) noexcept : name_(std::exchange(o.name_, GSS_C_NO_NAME)) {}
  GssName& operator=(GssName&& o) noexcept {
    std::swap(name_, o.name_);
    return *this;
  }
  ~GssName() {
    OM_uint32 minor;
    if (name_ != GSS_C_NO_NAME) gss_release_name(&minor, &name_);
  }
  gss_name_t get() const { return name_; }
  gss_name_t* out() { return &name_; }

 private:
  gss_name_t name_ = GSS_C_NO_NAME;
};

class GssCred {
 public:
  GssCred() = default;
  explicit GssCred(gss_cred_id_t c) : cred_(c) {}
  GssCred(GssCred&& o) noexcept : cred_(std::exchange(o.cred_, GSS_C_NO_CREDENTIAL)) {}
  GssCred& operator=(GssCred&& o) noexcept {
    std::swap(cred_, o.cred_);
    return *this;
  }
  ~GssCred() {
    OM_uint32 minor;
    if (cred_ != GSS_C_NO_CREDENTIAL) gss_release_cred(&minor, &cred_);
  }
  gss_cred_id_t get() const { return cred_; }
  gss_cred_id_t* out() { return &cred_; }

 private:
  gss_cred_id_t cred_ = GSS_C_NO_CREDENTIAL;
};

class GssContext {
 public:
  GssContext() = default;
  GssContext(GssContext&& o) noexcept : ctx_(std::exchange(o.ctx_, GSS_C_NO_CONTEXT)) {}
  GssContext& operator=(GssContext&& o) noexcept {
    std::swap(ctx_, o.ctx_);
    return *this;
  }
  ~GssContext() {
    // RFC 1961 section 6: the context-deletion token is not sent; each side deletes locally.
    OM_uint32 minor;
    if (ctx_ != GSS_C_NO_CONTEXT) gss_delete_sec_context(&minor, &ctx_, GSS_C_NO_BUFFER);
  }
  gss_ctx_id_t get() const { return ctx_; }
  gss_ctx_id_t* out() { return &ctx_; }

 private:
  gss_ctx_id_t ctx_ = GSS_C_NO_CONTEXT;
};

// "major text; minor text" for a failed call, e.g. "Unspecified GSS failure.  Minor code may
// provide more information; Request is a replay". Never empty.
std::string gss_status_text(OM_uint32 major, OM_uint32 minor, gss_OID mech = GSS_C_NO_OID);

}  // namespace socksgate::crypto
