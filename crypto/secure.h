#pragma once
// Small primitives for handling secrets: constant-time comparison, wiping, randomness and
// keyed hashing (OpenSSL).

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace socksgate::crypto {

// Compares without an early exit; different lengths compare unequal (length is not secret).
bool constant_time_equal(std::string_view a, std::string_view b);

// Overwrites memory in a way the compiler cannot drop.
void secure_zero(void* p, size_t n);

// Cryptographically secure random bytes; aborts if the RNG fails (nothing sane to do).
void random_bytes(std::span<uint8_t> out);

using Sha256Digest = std::array<uint8_t, 32>;
Sha256Digest hmac_sha256(std::span<const uint8_t> key, std::span<const uint8_t> data);

}  // namespace socksgate::crypto
