#pragma once
// RFC 1928 section 7 UDP request header, which prefixes every datagram between a client and
// the UDP ASSOCIATE relay:
//
//   RSV(2) FRAG(1) ATYP DST.ADDR DST.PORT DATA
//
// Pure and bounded. Unlike the TCP parsers there is no "need more": a datagram is always
// whole, so a header cut short is an error (UdpErrc::kTruncated). On error *out is untouched.

#include <asio/ip/address.hpp>
#include <cstddef>
#include <cstdint>
#include <span>
#include <system_error>
#include <vector>

#include "gateway/socks5.h"

namespace socksgate::gateway::socks5 {

// RSV, FRAG, ATYP, longest DST.ADDR (length byte + 255-byte domain), DST.PORT.
inline constexpr size_t kMaxUdpHeaderSize = 2 + 1 + 1 + 1 + 255 + 2;

enum class UdpErrc {
  kTruncated = 1,    // the datagram ends inside the header
  kBadFrameVersion,  // UDP in stream: a frame with a VER other than 1
  kEmptyFrame,       // UDP in stream: LEN 0 (a datagram always has a header)
};
const std::error_category& udp_category();
inline std::error_code make_error_code(UdpErrc e) { return {static_cast<int>(e), udp_category()}; }

}  // namespace socksgate::gateway::socks5

template <>
struct std::is_error_code_enum<socksgate::gateway::socks5::UdpErrc> : std::true_type {};

namespace socksgate::gateway::socks5 {

struct UdpHeader {
  uint8_t frag = 0;  // raw FRAG; 0 = standalone datagram (the relay drops the others)
  Address dst;
  uint16_t port = 0;
  size_t header_size = 0;  // DATA starts here; it may be empty
};

// Errors: UdpErrc::kTruncated, and Errc::kUnknownAddressType / kEmptyDomain / kBadDomain as for
// a SOCKS5 request (the unknown ATYP is reported before a truncated address, an empty domain
// before a truncated port, as parse_request does).
std::error_code parse_udp_header(std::span<const uint8_t> datagram, UdpHeader* out);

// Appends `00 00 00 ATYP ADDR PORT` (FRAG 0). An IPv4-mapped IPv6 address is sent as IPv4.
void encode_udp_header(std::vector<uint8_t>* out, const asio::ip::address& addr, uint16_t port);
// The same for a destination as a client sent it, domain names included (FRAG 0); a domain
// must be 1..255 bytes, as parse_udp_header and parse_request give it.
void encode_udp_header(std::vector<uint8_t>* out, const Address& dst, uint16_t port);

// UDP in stream (socksgate extension, docs/udp-over-tls.md): after `05 80 00 ATYP ADDR PORT`
// and a success reply, datagrams travel inside the TCP/TLS connection as frames
//
//   VER(1) = 0x01   LEN(2, big-endian)   DATAGRAM(LEN)   (DATAGRAM = header above + DATA)
//
// parse_stream_frame is incremental (crypto::ParseErrc::kNeedMore until a frame is whole);
// *datagram points into `in`.
inline constexpr uint8_t kStreamFrameVersion = 0x01;
inline constexpr size_t kMaxStreamFrameSize = 3 + 65535;
std::error_code parse_stream_frame(std::span<const uint8_t> in, std::span<const uint8_t>* datagram,
                                   size_t* consumed);
// Appends one frame; `datagram` must be 1..65535 bytes.
void encode_stream_frame(std::vector<uint8_t>* out, std::span<const uint8_t> datagram);

}  // namespace socksgate::gateway::socks5
