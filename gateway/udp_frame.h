#pragma once
// UDP in a stream, framing version 1: how UDP datagrams travel inside one TLS connection
// between the agent and a gateway (docs/agent.md, "UDP over TLS"). After authentication the
// client sends a SOCKS5 request with the private command kCommandUdpInStream; after a REP 00
// reply both directions carry frames
//
//   VER(1) = 0x01   LEN(2, big-endian)   DATAGRAM(LEN bytes)
//
// where DATAGRAM is an RFC 1928 UDP datagram (RSV FRAG ATYP DST.ADDR DST.PORT DATA). An unknown
// VER ends the stream; EOF ends the association. Pure, incremental and bounded.

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <system_error>
#include <vector>

namespace socksgate::gateway::socks5 {

inline constexpr uint8_t kCommandUdpInStream = 0x80;
inline constexpr uint8_t kUdpFrameVersion = 0x01;
inline constexpr size_t kUdpFrameHeaderSize = 3;
inline constexpr size_t kMaxUdpFrameSize = kUdpFrameHeaderSize + 0xffff;

enum class UdpFrameErrc { kBadVersion = 1 };
const std::error_category& udp_frame_category();
inline std::error_code make_error_code(UdpFrameErrc e) {
  return {static_cast<int>(e), udp_frame_category()};
}

}  // namespace socksgate::gateway::socks5

template <>
struct std::is_error_code_enum<socksgate::gateway::socks5::UdpFrameErrc> : std::true_type {};

namespace socksgate::gateway::socks5 {

// One frame: *datagram points into `in` (valid until the caller drops the consumed bytes).
// kNeedMore until the whole frame is there; UdpFrameErrc::kBadVersion as soon as VER is read.
std::error_code parse_udp_frame(std::span<const uint8_t> in, std::span<const uint8_t>* datagram,
                                size_t* consumed);
// VER and LEN of a frame carrying `len` bytes (the caller puts them right before the datagram).
std::array<uint8_t, kUdpFrameHeaderSize> encode_udp_frame_header(uint16_t len);

}  // namespace socksgate::gateway::socks5
