#include "auth/pam/monitor_protocol.h"

#include "crypto/parse.h"

namespace socksgate::auth::pam {
namespace {

class ProtocolCategory : public std::error_category {
 public:
  const char* name() const noexcept override { return "auth-monitor"; }
  std::string message(int c) const override {
    switch (static_cast<ProtocolErrc>(c)) {
      case ProtocolErrc::kBadLength:
        return "frame length out of bounds";
      case ProtocolErrc::kBadType:
        return "frame type not allowed in this direction";
      case ProtocolErrc::kMalformed:
        return "malformed frame body";
      case ProtocolErrc::kOutOfOrder:
        return "request out of order";
      case ProtocolErrc::kBadVersion:
        return "unsupported protocol version";
      case ProtocolErrc::kEmptyField:
        return "empty service, user or password";
      case ProtocolErrc::kUnknownRequest:
        return "reply to a request that is not in flight";
    }
    return "unknown auth-monitor protocol error";
  }
};

// Bounds-checked reading of a frame body.
class Reader {
 public:
  explicit Reader(std::span<const uint8_t> b) : b_(b) {}
  bool u8(uint8_t* v) {
    if (b_.size() - pos_ < 1) return false;
    *v = b_[pos_++];
    return true;
  }
  bool u16(uint16_t* v) {
    if (b_.size() - pos_ < 2) return false;
    *v = static_cast<uint16_t>(b_[pos_] << 8 | b_[pos_ + 1]);
    pos_ += 2;
    return true;
  }
  bool u32(uint32_t* v) {
    if (b_.size() - pos_ < 4) return false;
    *v = static_cast<uint32_t>(b_[pos_]) << 24 | static_cast<uint32_t>(b_[pos_ + 1]) << 16 |
         static_cast<uint32_t>(b_[pos_ + 2]) << 8 | static_cast<uint32_t>(b_[pos_ + 3]);
    pos_ += 4;
    return true;
  }
  bool str8(std::string* s) {
    uint8_t n;
    if (!u8(&n) || b_.size() - pos_ < n) return false;
    s->assign(reinterpret_cast<const char*>(b_.data() + pos_), n);
    pos_ += n;
    return true;
  }
  bool str16(std::string* s, size_t max) {
    uint16_t n;
    if (!u16(&n) || n > max || b_.size() - pos_ < n) return false;
    s->assign(reinterpret_cast<const char*>(b_.data() + pos_), n);
    pos_ += n;
    return true;
  }
  bool done() const { return pos_ == b_.size(); }

 private:
  std::span<const uint8_t> b_;
  size_t pos_ = 0;
};

class Writer {
 public:
  explicit Writer(FrameType t, uint32_t id) {
    out_.resize(4);
    out_.push_back(static_cast<uint8_t>(t));
    u32(id);
  }
  void u8(uint8_t v) { out_.push_back(v); }
  void u16(uint16_t v) {
    out_.push_back(static_cast<uint8_t>(v >> 8));
    out_.push_back(static_cast<uint8_t>(v));
  }
  void u32(uint32_t v) {
    for (int s = 24; s >= 0; s -= 8) out_.push_back(static_cast<uint8_t>(v >> s));
  }
  bool str8(const std::string& s) {
    if (s.size() > 255) return false;
    u8(static_cast<uint8_t>(s.size()));
    out_.insert(out_.end(), s.begin(), s.end());
    return true;
  }
  bool str16(const std::string& s, size_t max) {
    if (s.size() > max) return false;
    u16(static_cast<uint16_t>(s.size()));
    out_.insert(out_.end(), s.begin(), s.end());
    return true;
  }
  std::vector<uint8_t> finish() {
    if (out_.size() > kMaxFrame) return {};
    uint32_t len = static_cast<uint32_t>(out_.size() - 4);
    for (int i = 0; i < 4; ++i) out_[i] = static_cast<uint8_t>(len >> (24 - 8 * i));
    return std::move(out_);
  }

 private:
  std::vector<uint8_t> out_;
};

// Splits off one frame: its type, ID and body.
std::error_code split_frame(std::span<const uint8_t> in, uint8_t* type, uint32_t* id,
                            std::span<const uint8_t>* body, size_t* consumed) {
  if (in.size() < 4) return crypto::ParseErrc::kNeedMore;
  uint32_t len = static_cast<uint32_t>(in[0]) << 24 | static_cast<uint32_t>(in[1]) << 16 |
                 static_cast<uint32_t>(in[2]) << 8 | static_cast<uint32_t>(in[3]);
  if (len < 5 || len > kMaxFrame - 4) return ProtocolErrc::kBadLength;
  if (in.size() - 4 < len) return crypto::ParseErrc::kNeedMore;
  *type = in[4];
  *id = static_cast<uint32_t>(in[5]) << 24 | static_cast<uint32_t>(in[6]) << 16 |
        static_cast<uint32_t>(in[7]) << 8 | static_cast<uint32_t>(in[8]);
  *body = in.subspan(9, len - 5);
  *consumed = 4 + len;
  return {};
}

}  // namespace

const std::error_category& protocol_category() {
  static const ProtocolCategory c;
  return c;
}

std::string_view status_token(PamStatus s) {
  switch (s) {
    case PamStatus::kOk:
      return "ok";
    case PamStatus::kBadPassword:
      return "bad_password";
    case PamStatus::kUnknownUser:
      return "unknown_user";
    case PamStatus::kAccountExpired:
      return "account_expired";
    case PamStatus::kPasswordExpired:
      return "password_expired";
    case PamStatus::kDenied:
      return "account_denied";
    case PamStatus::kConversation:
      return "pam_conversation";
    case PamStatus::kTimeout:
      return "pam_timeout";
    case PamStatus::kBusy:
      return "busy";
    case PamStatus::kError:
      return "pam_error";
    case PamStatus::kUnavailable:
      return "pam_unavailable";
  }
  return "pam_error";
}

std::error_code parse_request(std::span<const uint8_t> in, Request* out, size_t* consumed) {
  uint8_t type;
  uint32_t id;
  std::span<const uint8_t> body;
  size_t used;
  if (auto ec = split_frame(in, &type, &id, &body, &used)) return ec;
  Reader r(body);
  Request req;
  switch (static_cast<FrameType>(type)) {
    case FrameType::kHello:
      req.type = FrameType::kHello;
      req.auth.id = id;
      if (!r.u8(&req.version) || !r.done()) return ProtocolErrc::kMalformed;
      break;
    case FrameType::kAuth:
      req.type = FrameType::kAuth;
      req.auth.id = id;
      if (!r.u32(&req.auth.timeout_ms) || !r.str8(&req.auth.service) || !r.str8(&req.auth.user) ||
          !r.str8(&req.auth.password) || !r.str8(&req.auth.rhost) || !r.done()) {
        return ProtocolErrc::kMalformed;
      }
      break;
    default:
      return ProtocolErrc::kBadType;
  }
  *out = std::move(req);
  *consumed = used;
  return {};
}

std::error_code parse_reply(std::span<const uint8_t> in, Reply* out, size_t* consumed) {
  uint8_t type;
  uint32_t id;
  std::span<const uint8_t> body;
  size_t used;
  if (auto ec = split_frame(in, &type, &id, &body, &used)) return ec;
  Reader r(body);
  Reply rep;
  switch (static_cast<FrameType>(type)) {
    case FrameType::kHelloOk:
      rep.type = FrameType::kHelloOk;
      rep.result.id = id;
      if (!r.u8(&rep.version) || !r.done()) return ProtocolErrc::kMalformed;
      break;
    case FrameType::kResult: {
      rep.type = FrameType::kResult;
      AuthResult& a = rep.result;
      a.id = id;
      uint8_t status;
      uint32_t code;
      uint16_t ngroups;
      uint8_t nmsgs;
      if (!r.u8(&status) || status > kMaxStatus || !r.u32(&code) || !r.str8(&a.user) ||
          !r.u16(&ngroups) || ngroups > kMaxGroups) {
        return ProtocolErrc::kMalformed;
      }
      a.status = static_cast<PamStatus>(status);
      a.pam_code = static_cast<int32_t>(code);
      for (uint16_t i = 0; i < ngroups; ++i) {
        std::string g;
        if (!r.str8(&g)) return ProtocolErrc::kMalformed;
        a.groups.push_back(std::move(g));
      }
      if (!r.u8(&nmsgs) || nmsgs > kMaxMessages) return ProtocolErrc::kMalformed;
      for (uint8_t i = 0; i < nmsgs; ++i) {
        PamMessage m;
        if (!r.u8(&m.kind) || !r.str16(&m.text, kMaxMessageText)) return ProtocolErrc::kMalformed;
        a.messages.push_back(std::move(m));
      }
      if (!r.done()) return ProtocolErrc::kMalformed;
      break;
    }
    default:
      return ProtocolErrc::kBadType;
  }
  *out = std::move(rep);
  *consumed = used;
  return {};
}

std::vector<uint8_t> encode_hello(uint8_t version) {
  Writer w(FrameType::kHello, 0);
  w.u8(version);
  return w.finish();
}

std::vector<uint8_t> encode_hello_ok(uint8_t version) {
  Writer w(FrameType::kHelloOk, 0);
  w.u8(version);
  return w.finish();
}

std::vector<uint8_t> encode_auth(const AuthRequest& r) {
  Writer w(FrameType::kAuth, r.id);
  w.u32(r.timeout_ms);
  if (!w.str8(r.service) || !w.str8(r.user) || !w.str8(r.password) || !w.str8(r.rhost)) return {};
  return w.finish();
}

std::vector<uint8_t> encode_result(const AuthResult& r) {
  if (r.groups.size() > kMaxGroups || r.messages.size() > kMaxMessages ||
      static_cast<uint8_t>(r.status) > kMaxStatus) {
    return {};
  }
  Writer w(FrameType::kResult, r.id);
  w.u8(static_cast<uint8_t>(r.status));
  w.u32(static_cast<uint32_t>(r.pam_code));
  if (!w.str8(r.user)) return {};
  w.u16(static_cast<uint16_t>(r.groups.size()));
  for (const auto& g : r.groups) {
    if (!w.str8(g)) return {};
  }
  w.u8(static_cast<uint8_t>(r.messages.size()));
  for (const auto& m : r.messages) {
    w.u8(m.kind);
    if (!w.str16(m.text, kMaxMessageText)) return {};
  }
  return w.finish();
}

std::error_code RequestSequencer::accept(const Request& r) {
  if (r.type == FrameType::kHello) {
    if (hello_ || r.auth.id != 0) return ProtocolErrc::kOutOfOrder;
    if (r.version != kProtocolVersion) return ProtocolErrc::kBadVersion;
    hello_ = true;
    return {};
  }
  if (!hello_ || r.auth.id == 0 || (any_auth_ && r.auth.id <= last_id_)) {
    return ProtocolErrc::kOutOfOrder;
  }
  if (r.auth.service.empty() || r.auth.user.empty() || r.auth.password.empty()) {
    return ProtocolErrc::kEmptyField;
  }
  any_auth_ = true;
  last_id_ = r.auth.id;
  return {};
}

}  // namespace socksgate::auth::pam
