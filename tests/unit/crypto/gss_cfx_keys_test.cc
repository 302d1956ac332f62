// CfxProtector from raw keys, without a KDC: both ends of a context in one process. Round trips,
// the sequence window, expiry, and a randomised attack on unwrap (every mutated, truncated,
// extended or random token is refused and leaves the state as it was). Interoperability with
// MIT on real contexts is gss_cfx_test.cc's job (run by tests/integration/test_gss_cfx.py).

#include <gtest/gtest.h>

#include <ctime>
#include <random>

#include "crypto/gss_cfx.h"

namespace socksgate::crypto {
namespace {

using Result = CfxProtector::Result;
using Order = CfxProtector::Order;

struct Ends {
  std::unique_ptr<CfxProtector> initiator, acceptor;
};

Ends make_ends(int32_t enctype, bool subkey, int64_t endtime = 0) {
  static std::vector<uint8_t> ctx_key(32), sub_key(32);
  std::mt19937 rng(enctype * 2 + subkey);
  for (auto& b : ctx_key) b = static_cast<uint8_t>(rng());
  for (auto& b : sub_key) b = static_cast<uint8_t>(rng());
  const size_t len = enctype == 17 ? 16 : 32;
  CfxProtector::KeyMaterial m;
  m.ctx_enctype = enctype;
  m.ctx_key = std::span<const uint8_t>(ctx_key).first(len);
  if (subkey) {
    m.subkey_enctype = enctype;
    m.subkey = std::span<const uint8_t>(sub_key).first(len);
  }
  m.endtime = endtime != 0 ? endtime : std::time(nullptr) + 3600;
  Ends e;
  std::string why;
  m.initiator = true;
  m.send_seq = 1000;
  m.recv_seq = 77;
  e.initiator = CfxProtector::from_keys(m, &why);
  EXPECT_NE(e.initiator, nullptr) << why;
  m.initiator = false;
  m.send_seq = 77;
  m.recv_seq = 1000;
  e.acceptor = CfxProtector::from_keys(m, &why);
  EXPECT_NE(e.acceptor, nullptr) << why;
  return e;
}

std::vector<uint8_t> wrap(CfxProtector& p, bool conf, const std::vector<uint8_t>& plain) {
  std::vector<uint8_t> t;
  std::string why;
  EXPECT_TRUE(p.wrap(conf, plain, &t, &why)) << why;
  return t;
}

Result unwrap(CfxProtector& p, const std::vector<uint8_t>& t, std::vector<uint8_t>* plain,
              bool* conf, Order order = Order::kStream) {
  plain->clear();
  return p.unwrap(t, order, plain, conf);
}

class CfxKeys : public ::testing::TestWithParam<std::tuple<int32_t, bool>> {};

TEST_P(CfxKeys, RoundTripsBothWays) {
  auto [et, sub] = GetParam();
  Ends e = make_ends(et, sub);
  ASSERT_TRUE(e.initiator && e.acceptor);
  EXPECT_EQ(e.initiator->enctype(), et);
  for (bool conf : {true, false}) {
    for (size_t n : {0, 1, 15, 16, 17, 33, 1000, 65000}) {
      std::vector<uint8_t> plain(n);
      for (size_t i = 0; i < n; ++i) plain[i] = static_cast<uint8_t>(i * 13 + n);
      for (int dir = 0; dir < 2; ++dir) {
        CfxProtector& from = dir ? *e.acceptor : *e.initiator;
        CfxProtector& to = dir ? *e.initiator : *e.acceptor;
        auto t = wrap(from, conf, plain);
        EXPECT_EQ(t.size(), n + from.overhead(conf));
        EXPECT_EQ(t[2] & 0x01, dir) << "SentByAcceptor";
        EXPECT_EQ((t[2] & 0x04) != 0, sub) << "AcceptorSubkey";
        std::vector<uint8_t> got;
        bool c = !conf;
        ASSERT_EQ(unwrap(to, t, &got, &c), Result::kOk) << n;
        EXPECT_EQ(got, plain);
        EXPECT_EQ(c, conf);
      }
    }
  }
}

TEST_P(CfxKeys, RandomAttacksNeverVerify) {
  auto [et, sub] = GetParam();
  Ends e = make_ends(et, sub);
  ASSERT_TRUE(e.initiator && e.acceptor);
  std::mt19937 rng(12345);
  for (int round = 0; round < 300; ++round) {
    bool conf = round % 2 == 0;
    std::vector<uint8_t> plain(rng() % 200);
    for (auto& b : plain) b = static_cast<uint8_t>(rng());
    auto good = wrap(*e.initiator, conf, plain);
    for (int k = 0; k < 20; ++k) {
      auto bad = good;
      switch (rng() % 4) {
        case 0:  // flip one bit anywhere but RRC (a valid rotation of a valid token verifies)
          for (;;) {
            size_t i = rng() % bad.size();
            if (i == 6 || i == 7) continue;
            bad[i] ^= static_cast<uint8_t>(1u << (rng() % 8));
            break;
          }
          break;
        case 1:  // truncate
          bad.resize(rng() % bad.size());
          break;
        case 2:  // extend
          bad.push_back(static_cast<uint8_t>(rng()));
          break;
        default:  // random bytes behind a plausible header
          for (size_t i = 16; i < bad.size(); ++i) bad[i] = static_cast<uint8_t>(rng());
          break;
      }
      std::vector<uint8_t> got;
      bool c = false;
      if (bad == good) continue;
      EXPECT_NE(unwrap(*e.acceptor, bad, &got, &c, Order::kDatagram), Result::kOk);
      EXPECT_TRUE(got.empty());
    }
    std::vector<uint8_t> got;
    bool c = false;
    ASSERT_EQ(unwrap(*e.acceptor, good, &got, &c), Result::kOk) << "state changed, round " << round;
    EXPECT_EQ(got, plain);
  }
}

INSTANTIATE_TEST_SUITE_P(Enctypes, CfxKeys,
                         ::testing::Combine(::testing::Values(17, 18), ::testing::Bool()));

TEST(CfxKeysTest, StartsAtTheGivenSequenceNumbers) {
  Ends e = make_ends(18, true);
  auto t = wrap(*e.initiator, true, {1, 2, 3});
  EXPECT_EQ(t[15], 1000 % 256);
  EXPECT_EQ(e.initiator->send_seq(), 1001u);
  EXPECT_EQ(e.acceptor->recv_next(), 1000u);
  std::vector<uint8_t> got;
  bool c = false;
  EXPECT_EQ(unwrap(*e.acceptor, t, &got, &c), Result::kOk);
  EXPECT_EQ(e.acceptor->recv_next(), 1001u);
}

TEST(CfxKeysTest, ExpiredContextNeitherWrapsNorUnwraps) {
  Ends live = make_ends(18, true);
  auto t = wrap(*live.initiator, true, {1, 2, 3});
  Ends dead = make_ends(18, true, std::time(nullptr) - 1);
  std::vector<uint8_t> out;
  std::string why;
  EXPECT_FALSE(dead.initiator->wrap(true, std::vector<uint8_t>{1}, &out, &why));
  EXPECT_NE(why.find("expired"), std::string::npos) << why;
  EXPECT_TRUE(out.empty());
  bool c = false;
  EXPECT_EQ(dead.acceptor->unwrap(t, Order::kStream, &out, &c), Result::kExpired);
}

TEST(CfxKeysTest, UnsupportedKeysAreRefusedWithAReason) {
  std::vector<uint8_t> key(32, 7);
  CfxProtector::KeyMaterial m;
  m.endtime = std::time(nullptr) + 60;
  std::string why;
  for (int32_t et : {0, 16, 19, 20, 23, 25}) {  // none, des3, aes-sha2 x2, rc4, camellia
    m.ctx_enctype = et;
    m.ctx_key = key;
    why.clear();
    EXPECT_EQ(CfxProtector::from_keys(m, &why), nullptr) << et;
    EXPECT_FALSE(why.empty());
  }
  m.ctx_enctype = 18;
  m.ctx_key = std::span<const uint8_t>(key).first(16);  // aes256 needs 32 bytes
  EXPECT_EQ(CfxProtector::from_keys(m, &why), nullptr);
}

TEST(CfxKeysTest, TokensUnderAnAbsentSubkeyAreRefused) {
  Ends with = make_ends(18, true);
  Ends without = make_ends(18, false);
  auto t = wrap(*with.initiator, false, {9, 9});
  std::vector<uint8_t> got;
  bool c = false;
  EXPECT_EQ(unwrap(*without.acceptor, t, &got, &c), Result::kMalformed);
}

}  // namespace
}  // namespace socksgate::crypto

namespace socksgate::crypto {
namespace {

TEST(CfxTokensFor, FewestThatFitThenFullBatchesWhenEncrypting) {
  constexpr size_t kMax = 65475;  // gss_wrap_size_limit for aes256 confidentiality
  // Integrity: as few tokens as fit, each near the 64 KiB bound.
  EXPECT_EQ(CfxProtector::tokens_for(false, 1, kMax), 1u);
  EXPECT_EQ(CfxProtector::tokens_for(false, 64 << 10, kMax), 2u);
  EXPECT_EQ(CfxProtector::tokens_for(false, 256 << 10, kMax), 5u);
  // Confidentiality: at least four tokens of 16 KiB or more where the data allows, then a
  // multiple of four, so that every batch fills the AES lanes.
  EXPECT_EQ(CfxProtector::tokens_for(true, 1, kMax), 1u);
  EXPECT_EQ(CfxProtector::tokens_for(true, 20 << 10, kMax), 1u);
  EXPECT_EQ(CfxProtector::tokens_for(true, 40 << 10, kMax), 2u);
  EXPECT_EQ(CfxProtector::tokens_for(true, 64 << 10, kMax), 4u);
  EXPECT_EQ(CfxProtector::tokens_for(true, 4 * kMax, kMax), 4u);
  EXPECT_EQ(CfxProtector::tokens_for(true, 256 << 10, kMax), 8u);
  EXPECT_EQ(CfxProtector::tokens_for(true, 0, kMax), 1u);
  // Whatever the size, equal pieces never exceed the bound and are never below 16 KiB when
  // more than one token was asked for beyond what fits.
  for (size_t n = 1; n <= (size_t{600} << 10); n += 997) {
    for (bool conf : {false, true}) {
      const size_t tokens = CfxProtector::tokens_for(conf, n, kMax);
      const size_t piece = (n + tokens - 1) / tokens;
      ASSERT_LE(piece, kMax) << n;
      ASSERT_GE(tokens, (n + kMax - 1) / kMax) << n;
      if (conf && tokens > (n + kMax - 1) / kMax && tokens <= CfxProtector::kBatch) {
        ASSERT_GE(piece, size_t{16} << 10) << n;
      }
    }
  }
}

}  // namespace
}  // namespace socksgate::crypto
