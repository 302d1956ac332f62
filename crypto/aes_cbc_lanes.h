#pragma once
// AesCtsLanes: AES-CBC-CTS (the CS3 variant of RFC 3962, zero IV) encryption of several
// independent messages at once, their CBC chains interleaved on AES-NI.
//
// Why: CBC encryption is one serial chain per message. Each AES round waits for the previous
// one, so a single chain uses a fraction of what the AES unit can do (AES-256-CBC encrypts at
// ~1.4 GB/s per core here, its decryption, which has no chain, at ~9). RFC 4121 Wrap tokens
// are separate chains, so encrypting four tokens side by side keeps four blocks in flight.
// OpenSSL has no public interface for this (its multi-buffer AES-CBC is internal to TLS
// records), hence this small piece of our own. Tests compare every output against OpenSSL's
// AES-*-CBC-CTS and, through crypto::CfxProtector, against MIT's gss_unwrap.
//
// Only where the CPU has AES-NI (and SSE4.1): make() answers nullptr elsewhere, and callers
// keep OpenSSL's serial path.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

namespace socksgate::crypto {

class AesCtsLanes {
 public:
  static constexpr size_t kMaxLanes = 4;

  // A 16- or 32-byte AES key. nullptr without AES-NI or with another key length.
  static std::unique_ptr<AesCtsLanes> make(std::span<const uint8_t> key);
  // Whether this CPU can run it at all.
  static bool available();

  ~AesCtsLanes();
  AesCtsLanes(const AesCtsLanes&) = delete;
  AesCtsLanes& operator=(const AesCtsLanes&) = delete;

  // Encrypts each message in place (at least 16 bytes each, at most kMaxLanes messages):
  // CBC with a zero IV, then the last two blocks swapped and the last one truncated (CS3).
  // False if a message is shorter than one block or there are too many.
  bool encrypt(std::span<const std::span<uint8_t>> messages) const;

 private:
  AesCtsLanes() = default;
  alignas(16) uint8_t round_keys_[15 * 16] = {};
  int rounds_ = 0;
};

}  // namespace socksgate::crypto
