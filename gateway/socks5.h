#pragma once
// RFC 1928 wire format: greeting, method selection, request, reply. Pure, incremental and
// bounded: each parser returns crypto::ParseErrc::kNeedMore (consuming nothing) until a whole
// message is in `in`, never reads past `in`, and leaves *out untouched on error. A message
// split over many reads or merged with the next one parses exactly as if it came in one read.

#include <array>
#include <asio/ip/address.hpp>
#include <asio/ip/tcp.hpp>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <system_error>
#include <vector>

namespace socksgate::gateway::socks5 {

inline constexpr uint8_t kVersion = 0x05;
inline constexpr size_t kMaxGreetingSize = 2 + 255;
inline constexpr size_t kMaxRequestSize = 4 + 1 + 255 + 2;

// 0x80 is socksgate's private "UDP in stream" (UDP ASSOCIATE whose datagrams travel as frames
// inside the connection, for TLS clients behind NAT; docs/udp-over-tls.md).
enum class Command : uint8_t {
  kConnect = 0x01,
  kBind = 0x02,
  kUdpAssociate = 0x03,
  kUdpInStream = 0x80,
};
enum class AddressType : uint8_t { kIpv4 = 0x01, kDomain = 0x03, kIpv6 = 0x04 };

// REP field values.
enum class Reply : uint8_t {
  kSucceeded = 0x00,
  kGeneralFailure = 0x01,
  kNotAllowed = 0x02,
  kNetworkUnreachable = 0x03,
  kHostUnreachable = 0x04,
  kConnectionRefused = 0x05,
  kTtlExpired = 0x06,
  kCommandNotSupported = 0x07,
  kAddressTypeNotSupported = 0x08,
};

enum class Errc {
  kBadVersion = 1,      // first byte is not 05
  kNoMethods,           // NMETHODS == 0
  kUnknownCommand,      // CMD not 01/02/03      -> REP 07
  kUnknownAddressType,  // ATYP not 01/03/04     -> REP 08
  kEmptyDomain,         // domain of length 0    -> REP 01
  kBadDomain,           // domain with a NUL byte -> REP 01
};
const std::error_category& category();
inline std::error_code make_error_code(Errc e) { return {static_cast<int>(e), category()}; }

}  // namespace socksgate::gateway::socks5

template <>
struct std::is_error_code_enum<socksgate::gateway::socks5::Errc> : std::true_type {};

namespace socksgate::gateway::socks5 {

struct Greeting {
  std::vector<uint8_t> methods;  // 1..255 method codes, in the client's order
};

// A destination as the client sent it.
struct Address {
  AddressType type = AddressType::kIpv4;
  asio::ip::address ip;           // for kIpv4 / kIpv6
  std::string domain;             // for kDomain: 1..255 bytes, no NUL (not otherwise validated)
  std::string to_string() const;  // "192.0.2.1", "[2001:db8::1]", "example.com"
};

struct Request {
  uint8_t command = 0;  // raw CMD byte; see Command
  Address dst;
  uint16_t port = 0;
};

// `ATYP ADDR PORT` starting at in[at] (shared by requests and UDP headers). kNeedMore when
// `in` ends inside it; on success *end is the offset just past PORT. Outputs untouched on error.
std::error_code parse_address_port(std::span<const uint8_t> in, size_t at, Address* addr,
                                   uint16_t* port, size_t* end);

std::error_code parse_greeting(std::span<const uint8_t> in, Greeting* out, size_t* consumed);
// On kUnknownCommand the error is returned as soon as CMD is readable (the client gets REP 07
// without having to send the rest). On kUnknownAddressType likewise once ATYP is readable.
std::error_code parse_request(std::span<const uint8_t> in, Request* out, size_t* consumed);

std::array<uint8_t, 2> encode_method_selection(uint8_t method);

// The client side (the agent talking to a gateway).

// A reply as a server sent it: `05 REP RSV ATYP BND.ADDR BND.PORT`.
struct ReplyMessage {
  uint8_t rep = 0;  // raw REP byte; see Reply
  Address bound;
  uint16_t port = 0;
};
inline constexpr size_t kMaxReplySize = kMaxRequestSize;
// Errors: Errc::kBadVersion (first byte not 05), kUnknownAddressType, kEmptyDomain,
// kBadDomain. RSV is not checked (servers are not consistent about it).
std::error_code parse_reply(std::span<const uint8_t> in, ReplyMessage* out, size_t* consumed);
// The server's method selection `05 METHOD`; Errc::kBadVersion if the first byte is not 05.
std::error_code parse_method_selection(std::span<const uint8_t> in, uint8_t* method,
                                       size_t* consumed);
// `05 NMETHODS METHODS...` (1..255 methods).
std::vector<uint8_t> encode_greeting(std::span<const uint8_t> methods);
// `05 CMD 00 ATYP DST.ADDR DST.PORT` for any command byte (private ones too); a domain must
// be 1..255 bytes.
std::vector<uint8_t> encode_request(uint8_t command, const Address& dst, uint16_t port);

// `05 REP 00 ATYP BND.ADDR BND.PORT`. An IPv4-mapped IPv6 address is sent as IPv4.
std::vector<uint8_t> encode_reply(Reply rep, const asio::ip::tcp::endpoint& bound);
// Appends `ATYP ADDR PORT` for an endpoint (shared with UDP headers later).
void append_address(std::vector<uint8_t>* out, const asio::ip::address& addr, uint16_t port);
// The same for a destination as a client sent it, domain names included (1..255 bytes).
void append_address(std::vector<uint8_t>* out, const Address& dst, uint16_t port);

}  // namespace socksgate::gateway::socks5
