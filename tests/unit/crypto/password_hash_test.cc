#include "crypto/password_hash.h"

#include <crypt.h>
#include <gtest/gtest.h>

#include <string>

#include "crypto/secure.h"

namespace socksgate::crypto {
namespace {

// A hash made by libcrypt itself with the given method prefix, as mkpasswd/htpasswd would.
std::string make_hash(const char* prefix, const std::string& password) {
  char salt[CRYPT_GENSALT_OUTPUT_SIZE];
  EXPECT_NE(crypt_gensalt_rn(prefix, 0, nullptr, 0, salt, sizeof salt), nullptr) << prefix;
  crypt_data data{};
  const char* out = crypt_rn(password.c_str(), salt, &data, sizeof data);
  EXPECT_NE(out, nullptr);
  return out;
}

class HashKinds : public ::testing::TestWithParam<const char*> {};

TEST_P(HashKinds, VerifiesRightPasswordOnly) {
  std::string h = make_hash(GetParam(), "correct horse");
  EXPECT_EQ(check_hash_format(h), "");
  EXPECT_TRUE(verify_password("correct horse", h));
  EXPECT_FALSE(verify_password("correct horsf", h));
  EXPECT_FALSE(verify_password("", h));
  EXPECT_FALSE(verify_password(std::string("correct horse\0x", 15), h));
}

INSTANTIATE_TEST_SUITE_P(AllAccepted, HashKinds,
                         ::testing::Values("$y$", "$6$", "$2b$", "$5$", "$7$", "$gy$"));

TEST(PasswordHash, OwnHashIsYescryptAndVerifies) {
  std::string h = hash_password("s3cret");
  EXPECT_EQ(h.rfind("$y$", 0), 0u) << h;
  EXPECT_TRUE(verify_password("s3cret", h));
  EXPECT_FALSE(verify_password("s3cre", h));
  EXPECT_NE(hash_password("s3cret"), h) << "salt must be random";
}

TEST(PasswordHash, WeakAndMalformedHashesAreRefused) {
  EXPECT_NE(check_hash_format(""), "");
  EXPECT_NE(check_hash_format("$1$abc$def"), "");     // MD5-crypt
  EXPECT_NE(check_hash_format("$apr1$abc$def"), "");  // Apache MD5
  EXPECT_NE(check_hash_format("abJnggxhB/yWI"), "");  // DES
  EXPECT_NE(check_hash_format("plaintext"), "");
  EXPECT_NE(check_hash_format("$y$ has space"), "");
  EXPECT_NE(check_hash_format("$9$unknown"), "");
  std::string md5 = make_hash("$1$", "pw");
  EXPECT_FALSE(verify_password("pw", md5)) << "MD5 must never verify, even when correct";
  EXPECT_FALSE(verify_password("pw", "$y$garbage"));
  EXPECT_FALSE(verify_password("pw", "*"));
}

TEST(Secure, ConstantTimeEqual) {
  EXPECT_TRUE(constant_time_equal("abc", "abc"));
  EXPECT_FALSE(constant_time_equal("abc", "abd"));
  EXPECT_FALSE(constant_time_equal("abc", "abcd"));
  EXPECT_TRUE(constant_time_equal("", ""));
}

TEST(Secure, HmacSha256KnownAnswer) {
  // RFC 4231 test case 2.
  std::string key = "Jefe", msg = "what do ya want for nothing?";
  auto d = hmac_sha256({reinterpret_cast<const uint8_t*>(key.data()), key.size()},
                       {reinterpret_cast<const uint8_t*>(msg.data()), msg.size()});
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  for (uint8_t b : d) {
    hex.push_back(kHex[b >> 4]);
    hex.push_back(kHex[b & 15]);
  }
  EXPECT_EQ(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

}  // namespace
}  // namespace socksgate::crypto
