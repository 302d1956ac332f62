#include "crypto/aes_cbc_lanes.h"

#include <openssl/crypto.h>

#include <cstring>

#if defined(__x86_64__)
#include <immintrin.h>
#define SOCKSGATE_AESNI 1
#define SOCKSGATE_AESNI_FN __attribute__((target("aes,sse4.1")))
#endif

namespace socksgate::crypto {
namespace {

#ifdef SOCKSGATE_AESNI

constexpr size_t kBlock = 16;

SOCKSGATE_AESNI_FN inline __m128i load(const uint8_t* p) {
  return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
}
SOCKSGATE_AESNI_FN inline void store(uint8_t* p, __m128i v) {
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), v);
}

// FIPS 197 key expansion: w[i] ^= w[i-1] for the three later words of a 128-bit group.
SOCKSGATE_AESNI_FN inline __m128i prefix_xor(__m128i k) {
  k = _mm_xor_si128(k, _mm_slli_si128(k, 4));
  k = _mm_xor_si128(k, _mm_slli_si128(k, 4));
  return _mm_xor_si128(k, _mm_slli_si128(k, 4));
}

// One AES-128 round key from the previous one (Rcon is an immediate of aeskeygenassist).
template <int Rcon>
SOCKSGATE_AESNI_FN inline __m128i next128(__m128i k) {
  __m128i t = _mm_shuffle_epi32(_mm_aeskeygenassist_si128(k, Rcon), 0xff);
  return _mm_xor_si128(prefix_xor(k), t);
}

SOCKSGATE_AESNI_FN void expand128(const uint8_t* key, __m128i* rk) {
  rk[0] = load(key);
  rk[1] = next128<0x01>(rk[0]);
  rk[2] = next128<0x02>(rk[1]);
  rk[3] = next128<0x04>(rk[2]);
  rk[4] = next128<0x08>(rk[3]);
  rk[5] = next128<0x10>(rk[4]);
  rk[6] = next128<0x20>(rk[5]);
  rk[7] = next128<0x40>(rk[6]);
  rk[8] = next128<0x80>(rk[7]);
  rk[9] = next128<0x1b>(rk[8]);
  rk[10] = next128<0x36>(rk[9]);
}

// AES-256: round keys 2i and 2i+1 from 2i-2 and 2i-1 (the second uses SubWord without RotWord
// and no Rcon); the last call makes only round key 14.
template <int Rcon>
SOCKSGATE_AESNI_FN inline void next256(__m128i* rk, int i) {
  __m128i t = _mm_shuffle_epi32(_mm_aeskeygenassist_si128(rk[i - 1], Rcon), 0xff);
  rk[i] = _mm_xor_si128(prefix_xor(rk[i - 2]), t);
  if (i == 14) return;
  t = _mm_shuffle_epi32(_mm_aeskeygenassist_si128(rk[i], 0x00), 0xaa);
  rk[i + 1] = _mm_xor_si128(prefix_xor(rk[i - 1]), t);
}

SOCKSGATE_AESNI_FN void expand256(const uint8_t* key, __m128i* rk) {
  rk[0] = load(key);
  rk[1] = load(key + 16);
  next256<0x01>(rk, 2);
  next256<0x02>(rk, 4);
  next256<0x04>(rk, 6);
  next256<0x08>(rk, 8);
  next256<0x10>(rk, 10);
  next256<0x20>(rk, 12);
  next256<0x40>(rk, 14);
}

template <int Rounds>
SOCKSGATE_AESNI_FN inline __m128i encrypt_block(const __m128i* rk, __m128i x) {
  x = _mm_xor_si128(x, rk[0]);
  for (int r = 1; r < Rounds; ++r) x = _mm_aesenc_si128(x, rk[r]);
  return _mm_aesenclast_si128(x, rk[Rounds]);
}

// `blocks` CBC blocks of each of N lanes, in place; chain[l] is lane l's previous ciphertext
// block. The lanes' rounds interleave, so N blocks are in the AES unit at once.
template <int N, int Rounds>
SOCKSGATE_AESNI_FN void cbc_lanes(const __m128i* rk, uint8_t* const* data, __m128i* chain,
                                  size_t blocks) {
  // Fully unrolled so that the N chains stay in registers (GCC keeps an array in memory
  // otherwise, which halves the speed).
  __m128i c[N];
#pragma GCC unroll 4
  for (int l = 0; l < N; ++l) c[l] = chain[l];
  for (size_t b = 0; b < blocks; ++b) {
    const size_t off = b * kBlock;
#pragma GCC unroll 4
    for (int l = 0; l < N; ++l)
      c[l] = _mm_xor_si128(_mm_xor_si128(load(data[l] + off), c[l]), rk[0]);
#pragma GCC unroll 14
    for (int r = 1; r < Rounds; ++r) {
      const __m128i k = rk[r];
#pragma GCC unroll 4
      for (int l = 0; l < N; ++l) c[l] = _mm_aesenc_si128(c[l], k);
    }
#pragma GCC unroll 4
    for (int l = 0; l < N; ++l) {
      c[l] = _mm_aesenclast_si128(c[l], rk[Rounds]);
      store(data[l] + off, c[l]);
    }
  }
#pragma GCC unroll 4
  for (int l = 0; l < N; ++l) chain[l] = c[l];
}

template <int Rounds>
SOCKSGATE_AESNI_FN void cbc_dispatch(const __m128i* rk, int n, uint8_t* const* data, __m128i* chain,
                                     size_t blocks) {
  switch (n) {
    case 1:
      return cbc_lanes<1, Rounds>(rk, data, chain, blocks);
    case 2:
      return cbc_lanes<2, Rounds>(rk, data, chain, blocks);
    case 3:
      return cbc_lanes<3, Rounds>(rk, data, chain, blocks);
    default:
      return cbc_lanes<4, Rounds>(rk, data, chain, blocks);
  }
}

// CS3 ending of one message whose `full` whole blocks are CBC-encrypted in place: with a
// partial last block, encrypt it (zero-padded) after the last whole one and swap the two,
// truncating; with none, swap the last two whole blocks.
template <int Rounds>
SOCKSGATE_AESNI_FN void cts_finish(const __m128i* rk, std::span<uint8_t> m) {
  const size_t full = m.size() / kBlock, tail = m.size() % kBlock;
  uint8_t* last_full = m.data() + (full - 1) * kBlock;
  if (tail == 0) {
    if (full < 2) return;
    __m128i a = load(last_full - kBlock), b = load(last_full);
    store(last_full - kBlock, b);
    store(last_full, a);
    return;
  }
  alignas(16) uint8_t padded[kBlock] = {};
  std::memcpy(padded, last_full + kBlock, tail);
  const __m128i c = load(last_full);
  const __m128i e = encrypt_block<Rounds>(rk, _mm_xor_si128(c, load(padded)));
  store(padded, c);
  std::memcpy(last_full + kBlock, padded, tail);
  store(last_full, e);
  OPENSSL_cleanse(padded, sizeof padded);
}

template <int Rounds>
SOCKSGATE_AESNI_FN void encrypt_all(const uint8_t* keys, std::span<const std::span<uint8_t>> ms) {
  __m128i rk[Rounds + 1];
  for (int r = 0; r <= Rounds; ++r)
    rk[r] = _mm_load_si128(reinterpret_cast<const __m128i*>(keys) + r);
  // Lanes still holding whole blocks, the shortest run first out.
  uint8_t* data[AesCtsLanes::kMaxLanes];
  size_t left[AesCtsLanes::kMaxLanes];
  __m128i chain[AesCtsLanes::kMaxLanes];
  int n = 0;
  for (std::span<uint8_t> m : ms) {
    data[n] = m.data();
    left[n] = m.size() / kBlock;
    chain[n] = _mm_setzero_si128();
    ++n;
  }
  while (n > 0) {
    size_t common = left[0];
    for (int l = 1; l < n; ++l) common = left[l] < common ? left[l] : common;
    cbc_dispatch<Rounds>(rk, n, data, chain, common);
    int kept = 0;
    for (int l = 0; l < n; ++l) {
      if (left[l] == common) continue;
      data[kept] = data[l] + common * kBlock;
      left[kept] = left[l] - common;
      chain[kept] = chain[l];
      ++kept;
    }
    n = kept;
  }
  for (std::span<uint8_t> m : ms) cts_finish<Rounds>(rk, m);
  OPENSSL_cleanse(rk, sizeof rk);
}

SOCKSGATE_AESNI_FN void expand(std::span<const uint8_t> key, uint8_t* out) {
  __m128i rk[15];
  if (key.size() == 16)
    expand128(key.data(), rk);
  else
    expand256(key.data(), rk);
  const int count = key.size() == 16 ? 11 : 15;
  for (int r = 0; r < count; ++r) _mm_store_si128(reinterpret_cast<__m128i*>(out) + r, rk[r]);
  OPENSSL_cleanse(rk, sizeof rk);
}

#endif  // SOCKSGATE_AESNI

}  // namespace

bool AesCtsLanes::available() {
#ifdef SOCKSGATE_AESNI
  return __builtin_cpu_supports("aes") && __builtin_cpu_supports("sse4.1");
#else
  return false;
#endif
}

std::unique_ptr<AesCtsLanes> AesCtsLanes::make(std::span<const uint8_t> key) {
  if (!available() || (key.size() != 16 && key.size() != 32)) return nullptr;
  std::unique_ptr<AesCtsLanes> a(new AesCtsLanes());
#ifdef SOCKSGATE_AESNI
  expand(key, a->round_keys_);
#endif
  a->rounds_ = key.size() == 16 ? 10 : 14;
  return a;
}

AesCtsLanes::~AesCtsLanes() { OPENSSL_cleanse(round_keys_, sizeof round_keys_); }

bool AesCtsLanes::encrypt(std::span<const std::span<uint8_t>> messages) const {
  if (messages.size() > kMaxLanes) return false;
  for (std::span<uint8_t> m : messages)
    if (m.size() < 16) return false;
#ifdef SOCKSGATE_AESNI
  if (rounds_ == 10)
    encrypt_all<10>(round_keys_, messages);
  else
    encrypt_all<14>(round_keys_, messages);
  return true;
#else
  return false;
#endif
}

}  // namespace socksgate::crypto
