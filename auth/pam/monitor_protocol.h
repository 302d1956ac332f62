#pragma once
// The framed protocol between the unprivileged gateway and the privileged auth monitor
// (auth/pam/monitor.h). Pure: no I/O, bounded, incremental; fuzzed (tests/fuzz/monitor_fuzz.cc).
//
// Every frame: LEN(4, big-endian; bytes that follow, 5..kMaxFrame) TYPE(1) ID(4, big-endian)
// BODY. Strings are STR8 (one length byte, then bytes) or STR16 (two length bytes).
//
//   gateway -> monitor                         monitor -> gateway
//   01 HELLO  VERSION(1)                       81 HELLO_OK VERSION(1)
//   02 AUTH   TIMEOUT_MS(4) SERVICE(STR8)      82 RESULT STATUS(1) PAM_CODE(4) USER(STR8)
//             USER(STR8) PASSWORD(STR8)                  NGROUPS(2) GROUP(STR8)*
//             RHOST(STR8)                                NMSGS(1) (KIND(1) TEXT(STR16))*
//
// The table is fixed: HELLO once (ID 0) first, then AUTH requests with strictly increasing
// IDs. Anything else (unknown type, trailing bytes, a second HELLO, an ID that does not
// increase, an empty user or password) is a protocol error: the monitor drops the link and
// the gateway starts a fresh monitor. RESULT answers one in-flight AUTH by its ID, in any
// order.

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <system_error>
#include <vector>

namespace socksgate::auth::pam {

inline constexpr uint8_t kProtocolVersion = 1;
inline constexpr size_t kMaxFrame = 16384;  // whole frame, LEN included
inline constexpr size_t kMaxGroups = 256;
inline constexpr size_t kMaxMessages = 16;
inline constexpr size_t kMaxMessageText = 512;

enum class FrameType : uint8_t {
  kHello = 0x01,
  kAuth = 0x02,
  kHelloOk = 0x81,
  kResult = 0x82,
};

enum class ProtocolErrc {
  kBadLength = 1,   // LEN outside 5..kMaxFrame-4
  kBadType,         // a type this direction does not carry
  kMalformed,       // body shorter/longer than its fields, a bound exceeded
  kOutOfOrder,      // HELLO not first, twice, or an ID that does not increase
  kBadVersion,      // HELLO with a version we do not speak
  kEmptyField,      // AUTH with an empty service, user or password
  kUnknownRequest,  // RESULT for an ID that is not in flight
};
const std::error_category& protocol_category();
inline std::error_code make_error_code(ProtocolErrc e) {
  return {static_cast<int>(e), protocol_category()};
}

}  // namespace socksgate::auth::pam

template <>
struct std::is_error_code_enum<socksgate::auth::pam::ProtocolErrc> : std::true_type {};

namespace socksgate::auth::pam {

// Outcome of one PAM transaction, as the gateway audits it.
enum class PamStatus : uint8_t {
  kOk = 0,
  kBadPassword = 1,      // PAM_AUTH_ERR
  kUnknownUser = 2,      // PAM_USER_UNKNOWN
  kAccountExpired = 3,   // PAM_ACCT_EXPIRED
  kPasswordExpired = 4,  // PAM_NEW_AUTHTOK_REQD / PAM_AUTHTOK_EXPIRED
  kDenied = 5,           // PAM_PERM_DENIED, PAM_MAXTRIES, other account refusals
  kConversation = 6,     // a prompt we cannot answer (echo-on, a second password)
  kTimeout = 7,          // the transaction overran its deadline (the worker was killed)
  kBusy = 8,             // too many transactions queued
  kError = 9,            // anything else (PAM_SYSTEM_ERR, PAM_ABORT, a worker crash, ...)
  kUnavailable = 10,     // no monitor (gateway side only, never on the wire)
};
inline constexpr uint8_t kMaxStatus = 9;
// Audit token for a status: "bad_password", "unknown_user", "account_expired", ...
std::string_view status_token(PamStatus s);

struct PamMessage {
  uint8_t kind = 0;  // PAM_TEXT_INFO (4) or PAM_ERROR_MSG (3)
  std::string text;
};

struct AuthRequest {
  uint32_t id = 0;
  uint32_t timeout_ms = 0;
  std::string service;
  std::string user;
  std::string password;
  std::string rhost;
};

struct AuthResult {
  uint32_t id = 0;
  PamStatus status = PamStatus::kError;
  int32_t pam_code = 0;  // the PAM return code that decided (diagnostics only)
  std::string user;      // PAM_USER after the transaction: the policy identity
  std::vector<std::string> groups;
  std::vector<PamMessage> messages;
};

// One frame from the gateway: HELLO or AUTH.
struct Request {
  FrameType type = FrameType::kHello;
  uint8_t version = 0;  // HELLO
  AuthRequest auth;     // AUTH
};

// One frame from the monitor: HELLO_OK or RESULT.
struct Reply {
  FrameType type = FrameType::kHelloOk;
  uint8_t version = 0;  // HELLO_OK
  AuthResult result;    // RESULT
};

// Parsers: crypto::ParseErrc::kNeedMore until a whole frame is in `in`, then *out and
// *consumed are set. On any error *out is untouched; an error other than kNeedMore is final
// for the link. Never read past `in`.
std::error_code parse_request(std::span<const uint8_t> in, Request* out, size_t* consumed);
std::error_code parse_reply(std::span<const uint8_t> in, Reply* out, size_t* consumed);

// Encoders. Strings longer than their field's bound are refused (empty vector returned) rather
// than cut: the caller checks its inputs first.
std::vector<uint8_t> encode_hello(uint8_t version = kProtocolVersion);
std::vector<uint8_t> encode_auth(const AuthRequest& r);
std::vector<uint8_t> encode_hello_ok(uint8_t version = kProtocolVersion);
std::vector<uint8_t> encode_result(const AuthResult& r);

// The monitor's view of the request order: HELLO (ID 0) first and once, then AUTH with
// strictly increasing IDs.
class RequestSequencer {
 public:
  std::error_code accept(const Request& r);
  bool hello_seen() const { return hello_; }

 private:
  bool hello_ = false;
  bool any_auth_ = false;
  uint32_t last_id_ = 0;
};

}  // namespace socksgate::auth::pam
