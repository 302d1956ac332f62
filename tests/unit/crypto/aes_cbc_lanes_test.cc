// AesCtsLanes against OpenSSL's AES-128/256-CBC-CTS (CS3, zero IV): every length class around
// the block size, batches of one to four messages of unequal lengths, the FIPS 197 key
// schedule through a known answer, and refusal of what it cannot do.

#include "crypto/aes_cbc_lanes.h"

#include <gtest/gtest.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>

#include <algorithm>
#include <random>
#include <vector>

namespace socksgate::crypto {
namespace {

std::vector<uint8_t> openssl_cts(std::span<const uint8_t> key, std::span<const uint8_t> in) {
  EVP_CIPHER* c =
      EVP_CIPHER_fetch(nullptr, key.size() == 16 ? "AES-128-CBC-CTS" : "AES-256-CBC-CTS", nullptr);
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  const uint8_t iv[16] = {};
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_CIPHER_PARAM_CTS_MODE, const_cast<char*>("CS3"), 0),
      OSSL_PARAM_construct_end()};
  std::vector<uint8_t> out(in.size());
  int n = 0;
  EXPECT_EQ(EVP_CipherInit_ex2(ctx, c, key.data(), iv, 1, params), 1);
  EXPECT_EQ(EVP_CipherUpdate(ctx, out.data(), &n, in.data(), static_cast<int>(in.size())), 1);
  EXPECT_EQ(static_cast<size_t>(n), in.size());
  EVP_CIPHER_CTX_free(ctx);
  EVP_CIPHER_free(c);
  return out;
}

std::vector<uint8_t> random_bytes(std::mt19937& rng, size_t n) {
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

TEST(AesCtsLanes, AvailableOnTheMachinesWeRunOn) {
  // Every x86-64 CPU of the last decade has AES-NI; without it the fast path silently never
  // runs and the benchmark figures would not be what they say.
  ASSERT_TRUE(AesCtsLanes::available());
}

TEST(AesCtsLanes, Fips197KnownAnswer) {
  // FIPS 197 appendix C.1 / C.3: one block is CBC with a zero IV and no stealing.
  std::vector<uint8_t> k128(16), k256(32), block(16);
  for (size_t i = 0; i < 32; ++i) k256[i] = static_cast<uint8_t>(i);
  std::copy(k256.begin(), k256.begin() + 16, k128.begin());
  for (size_t i = 0; i < 16; ++i) block[i] = static_cast<uint8_t>(i * 0x11);
  const std::vector<uint8_t> want128 = {0x69, 0xc4, 0xe0, 0xd8, 0x6a, 0x7b, 0x04, 0x30,
                                        0xd8, 0xcd, 0xb7, 0x80, 0x70, 0xb4, 0xc5, 0x5a};
  const std::vector<uint8_t> want256 = {0x8e, 0xa2, 0xb7, 0xca, 0x51, 0x67, 0x45, 0xbf,
                                        0xea, 0xfc, 0x49, 0x90, 0x4b, 0x49, 0x60, 0x89};
  auto a128 = AesCtsLanes::make(k128);
  auto a256 = AesCtsLanes::make(k256);
  ASSERT_NE(a128, nullptr);
  ASSERT_NE(a256, nullptr);
  std::vector<uint8_t> b1 = block, b2 = block;
  std::span<uint8_t> m1[] = {b1};
  std::span<uint8_t> m2[] = {b2};
  ASSERT_TRUE(a128->encrypt(m1));
  ASSERT_TRUE(a256->encrypt(m2));
  EXPECT_EQ(b1, want128);
  EXPECT_EQ(b2, want256);
}

TEST(AesCtsLanes, MatchesOpenSslForEveryLengthClassAndBatch) {
  std::mt19937 rng(4121);
  for (size_t key_len : {size_t{16}, size_t{32}}) {
    const std::vector<uint8_t> key = random_bytes(rng, key_len);
    auto lanes = AesCtsLanes::make(key);
    ASSERT_NE(lanes, nullptr);
    // Single messages: every length from one block to a few, then large ones.
    std::vector<size_t> lengths;
    for (size_t n = 16; n <= 80; ++n) lengths.push_back(n);
    for (size_t n : {size_t{255}, size_t{4096}, size_t{4111}, size_t{65475 + 32}, size_t{65536}})
      lengths.push_back(n);
    for (size_t n : lengths) {
      std::vector<uint8_t> plain = random_bytes(rng, n), mine = plain;
      std::span<uint8_t> one[] = {mine};
      ASSERT_TRUE(lanes->encrypt(one));
      ASSERT_EQ(mine, openssl_cts(key, plain)) << "key " << key_len << " length " << n;
    }
    // Batches of unequal lengths: the lanes finish at different blocks.
    for (int round = 0; round < 400; ++round) {
      const size_t count = 1 + rng() % AesCtsLanes::kMaxLanes;
      std::vector<std::vector<uint8_t>> plains, mine;
      std::vector<std::span<uint8_t>> spans;
      for (size_t i = 0; i < count; ++i) {
        const size_t n = round % 4 == 0 ? 16 + rng() % 20000 : 16 + rng() % 200;
        plains.push_back(random_bytes(rng, n));
      }
      mine = plains;
      for (auto& m : mine) spans.emplace_back(m);
      ASSERT_TRUE(lanes->encrypt(spans));
      for (size_t i = 0; i < count; ++i)
        ASSERT_EQ(mine[i], openssl_cts(key, plains[i]))
            << "key " << key_len << " batch of " << count << " message " << i << " length "
            << plains[i].size();
    }
  }
}

TEST(AesCtsLanes, RefusesWhatItCannotDo) {
  std::vector<uint8_t> key(24, 1);
  EXPECT_EQ(AesCtsLanes::make(key), nullptr);  // AES-192 is no Kerberos enctype
  key.resize(16);
  auto lanes = AesCtsLanes::make(key);
  ASSERT_NE(lanes, nullptr);
  std::vector<uint8_t> short_msg(15, 0), ok(16, 0);
  const std::vector<uint8_t> before = short_msg;
  std::span<uint8_t> too_short[] = {ok, short_msg};
  EXPECT_FALSE(lanes->encrypt(too_short));
  EXPECT_EQ(short_msg, before);
  std::vector<std::vector<uint8_t>> many(AesCtsLanes::kMaxLanes + 1, std::vector<uint8_t>(32));
  std::vector<std::span<uint8_t>> spans(many.begin(), many.end());
  EXPECT_FALSE(lanes->encrypt(spans));
}

}  // namespace
}  // namespace socksgate::crypto
