#pragma once
// RFC 1961 GSS-API method (01) wire format. Pure: no I/O, no GSS calls, bounded (a message is at
// most 4 + 65535 bytes, the LEN field's limit).
//
//   every message:  VER(01) MTYP LEN(2, big-endian) TOKEN(LEN)
//   abort:          VER(01) MTYP(FF)                 (no LEN, no TOKEN)
//
// MTYP 01 carries context-establishment tokens, 02 the protection-level subnegotiation (a
// one-octet level, gss_wrap'ed, or bare in the "NEC" variant), 03 encapsulated user data (each
// SOCKS message, TCP chunk and UDP datagram one gss_wrap token). Which MTYP is allowed when is
// the caller's business: the parser only checks that the message is well formed.

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <system_error>
#include <vector>

namespace socksgate::auth::gssapi {

inline constexpr uint8_t kVersion = 0x01;
inline constexpr size_t kHeaderSize = 4;
inline constexpr size_t kMaxTokenSize = 65535;
inline constexpr size_t kMaxMessageSize = kHeaderSize + kMaxTokenSize;

enum class MessageType : uint8_t {
  kContext = 0x01,       // security-context establishment
  kProtection = 0x02,    // protection-level subnegotiation
  kEncapsulated = 0x03,  // per-message protected user data
  kAbort = 0xFF,         // the peer gives up (two bytes, no LEN)
};

// Protection levels (RFC 1961 section 4). kNone is not on the RFC's list: it is what a
// TLS-only "no per-message protection" option grants, never chosen unless configured.
enum class Level : uint8_t {
  kNone = 0x00,
  kIntegrity = 0x01,
  kConfidentiality = 0x02,
  kPerMessage = 0x03,  // "selective per-message": only ever requested, the server picks 1 or 2
};

enum class Rfc1961Errc {
  kBadVersion = 1,  // VER is not 01
  kBadType,         // MTYP is none of 01, 02, 03, FF
  kEmptyToken,      // LEN 0 (every RFC 1961 message carries a token)
  kBadLevel,        // a protection-level token that is not one octet of 0, 1, 2 or 3
};
const std::error_category& rfc1961_category();
inline std::error_code make_error_code(Rfc1961Errc e) {
  return {static_cast<int>(e), rfc1961_category()};
}

}  // namespace socksgate::auth::gssapi

template <>
struct std::is_error_code_enum<socksgate::auth::gssapi::Rfc1961Errc> : std::true_type {};

namespace socksgate::auth::gssapi {

// A parsed message; `token` points into the parser's input (valid as long as that is).
struct MessageView {
  MessageType type = MessageType::kAbort;
  std::span<const uint8_t> token;
};

// Returns crypto::ParseErrc::kNeedMore (consuming nothing, *out untouched) until a whole
// message is in `in`; then fills *out and *consumed. An abort is complete after two bytes.
// Never reads past `in`; on error *out is untouched.
std::error_code parse_message(std::span<const uint8_t> in, MessageView* out, size_t* consumed);

// Appends `VER MTYP LEN TOKEN` to *out. token.size() must be 1..65535 (the caller sizes
// tokens; asserting, not trimming, keeps a bug from sending a truncated token).
void append_message(MessageType type, std::span<const uint8_t> token, std::vector<uint8_t>* out);
std::vector<uint8_t> encode_message(MessageType type, std::span<const uint8_t> token);
inline std::array<uint8_t, 2> encode_abort() { return {kVersion, 0xFF}; }

// The protection-level token's content (after gss_unwrap, or as sent in the NEC variant).
// 0 ("no per-message protection") is accepted as a request: curl asks for it; what it gets is
// choose_level's business.
std::error_code parse_level(std::span<const uint8_t> token, Level* out);

// What the server grants, given what the client asked, the level its policy requires and what
// the established context can do. Returns nullopt when the requirement cannot be met (the
// server then aborts with 01 FF):
//   - a request for 3 ("per-message") gets the required level;
//   - a request for 0 (none) gets the required level (raised like any request below it);
//   - a request below the required level is raised to it;
//   - a request above it is granted as asked when the context can (else the required level);
//   - confidentiality needs a context with GSS_C_CONF_FLAG, integrity GSS_C_INTEG_FLAG;
//   - required kNone grants kNone whatever was asked (configured only on TLS listeners).
struct LevelPolicy {
  Level required = Level::kConfidentiality;
};
std::optional<Level> choose_level(Level requested, LevelPolicy policy, bool context_integ,
                                  bool context_conf);

}  // namespace socksgate::auth::gssapi
