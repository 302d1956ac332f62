#include "auth/gssapi/rfc1961.h"

#include <gtest/gtest.h>

#include <vector>

#include "crypto/parse.h"

namespace socksgate::auth::gssapi {
namespace {

using crypto::ParseErrc;
using Bytes = std::vector<uint8_t>;

Bytes message(uint8_t type, size_t len, uint8_t fill = 0xAB) {
  Bytes b{0x01, type, static_cast<uint8_t>(len >> 8), static_cast<uint8_t>(len & 0xFF)};
  b.resize(4 + len, fill);
  return b;
}

TEST(Rfc1961, ParsesEachTypeAndPointsIntoInput) {
  for (uint8_t t : {0x01, 0x02, 0x03}) {
    Bytes b = message(t, 5);
    MessageView m;
    size_t consumed = 0;
    ASSERT_FALSE(parse_message(b, &m, &consumed));
    EXPECT_EQ(static_cast<uint8_t>(m.type), t);
    EXPECT_EQ(consumed, 9u);
    EXPECT_EQ(m.token.size(), 5u);
    EXPECT_EQ(m.token.data(), b.data() + 4);
  }
}

TEST(Rfc1961, AbortIsTwoBytes) {
  Bytes b{0x01, 0xFF, 0x01, 0x01};
  MessageView m{MessageType::kContext, {}};
  size_t consumed = 0;
  ASSERT_FALSE(parse_message(b, &m, &consumed));
  EXPECT_EQ(m.type, MessageType::kAbort);
  EXPECT_TRUE(m.token.empty());
  EXPECT_EQ(consumed, 2u);
  auto a = encode_abort();
  EXPECT_EQ(Bytes(a.begin(), a.end()), (Bytes{0x01, 0xFF}));
}

TEST(Rfc1961, EveryTruncationNeedsMoreAndLeavesOutputUntouched) {
  for (size_t len : {1u, 2u, 255u, 256u, 65535u}) {
    Bytes b = message(0x01, len);
    for (size_t k = 0; k < b.size(); ++k) {
      MessageView m{MessageType::kProtection, {}};
      size_t consumed = 77;
      ASSERT_EQ(parse_message(std::span(b).first(k), &m, &consumed), ParseErrc::kNeedMore)
          << len << " " << k;
      EXPECT_EQ(m.type, MessageType::kProtection);
      EXPECT_EQ(consumed, 77u);
    }
  }
}

TEST(Rfc1961, MergedMessagesParseOneAtATime) {
  Bytes a = message(0x01, 3, 0x11);
  Bytes b = message(0x03, 300, 0x22);
  Bytes all = a;
  all.insert(all.end(), b.begin(), b.end());
  all.push_back(0x01);
  all.push_back(0xFF);
  std::span<const uint8_t> in(all);
  MessageView m;
  size_t consumed = 0;
  ASSERT_FALSE(parse_message(in, &m, &consumed));
  EXPECT_EQ(m.type, MessageType::kContext);
  EXPECT_EQ(m.token[0], 0x11);
  in = in.subspan(consumed);
  ASSERT_FALSE(parse_message(in, &m, &consumed));
  EXPECT_EQ(m.type, MessageType::kEncapsulated);
  EXPECT_EQ(m.token.size(), 300u);
  EXPECT_EQ(m.token[299], 0x22);
  in = in.subspan(consumed);
  ASSERT_FALSE(parse_message(in, &m, &consumed));
  EXPECT_EQ(m.type, MessageType::kAbort);
  EXPECT_EQ(in.size(), consumed);
}

TEST(Rfc1961, BadVersionTypeAndEmptyToken) {
  MessageView m;
  size_t c = 0;
  EXPECT_EQ(parse_message(Bytes{0x05}, &m, &c), Rfc1961Errc::kBadVersion);
  EXPECT_EQ(parse_message(Bytes{0x00, 0x01, 0, 1, 0}, &m, &c), Rfc1961Errc::kBadVersion);
  EXPECT_EQ(parse_message(Bytes{0x01, 0x04}, &m, &c), Rfc1961Errc::kBadType);
  EXPECT_EQ(parse_message(Bytes{0x01, 0x00}, &m, &c), Rfc1961Errc::kBadType);
  EXPECT_EQ(parse_message(Bytes{0x01, 0x01, 0x00, 0x00}, &m, &c), Rfc1961Errc::kEmptyToken);
  // The errors are decided as early as the bytes allow (no waiting for a LEN that never comes).
  EXPECT_EQ(parse_message(Bytes{0x01, 0x04, 0xFF}, &m, &c), Rfc1961Errc::kBadType);
}

TEST(Rfc1961, EncodeRoundTrips) {
  Bytes token(65535, 0x5A);
  Bytes wire = encode_message(MessageType::kEncapsulated, token);
  ASSERT_EQ(wire.size(), kMaxMessageSize);
  EXPECT_EQ(wire[0], 0x01);
  EXPECT_EQ(wire[1], 0x03);
  EXPECT_EQ(wire[2], 0xFF);
  EXPECT_EQ(wire[3], 0xFF);
  MessageView m;
  size_t c = 0;
  ASSERT_FALSE(parse_message(wire, &m, &c));
  EXPECT_EQ(Bytes(m.token.begin(), m.token.end()), token);
  Bytes small = encode_message(MessageType::kProtection, Bytes{0x02});
  EXPECT_EQ(small, (Bytes{0x01, 0x02, 0x00, 0x01, 0x02}));
}

TEST(Rfc1961, ParseLevel) {
  Level l = Level::kNone;
  EXPECT_FALSE(parse_level(Bytes{1}, &l));
  EXPECT_EQ(l, Level::kIntegrity);
  EXPECT_FALSE(parse_level(Bytes{2}, &l));
  EXPECT_EQ(l, Level::kConfidentiality);
  EXPECT_FALSE(parse_level(Bytes{3}, &l));
  EXPECT_EQ(l, Level::kPerMessage);
  EXPECT_FALSE(parse_level(Bytes{0}, &l));
  EXPECT_EQ(l, Level::kNone);
  l = Level::kIntegrity;
  EXPECT_EQ(parse_level(Bytes{4}, &l), Rfc1961Errc::kBadLevel);
  EXPECT_EQ(parse_level(Bytes{}, &l), Rfc1961Errc::kBadLevel);
  EXPECT_EQ(parse_level(Bytes{1, 1}, &l), Rfc1961Errc::kBadLevel);
  EXPECT_EQ(l, Level::kIntegrity);
}

TEST(Rfc1961, ChooseLevel) {
  const LevelPolicy integ{Level::kIntegrity}, conf{Level::kConfidentiality}, none{Level::kNone};
  // Requirement confidentiality: every request gets confidentiality, if the context can.
  for (Level r : {Level::kIntegrity, Level::kConfidentiality, Level::kPerMessage}) {
    EXPECT_EQ(choose_level(r, conf, true, true), Level::kConfidentiality);
    EXPECT_EQ(choose_level(r, conf, true, false), std::nullopt);
    EXPECT_EQ(choose_level(r, conf, false, true), std::nullopt);
  }
  // Requirement integrity: integrity, or confidentiality when the client asks and can have it.
  EXPECT_EQ(choose_level(Level::kIntegrity, integ, true, true), Level::kIntegrity);
  EXPECT_EQ(choose_level(Level::kNone, integ, true, true), Level::kIntegrity);
  EXPECT_EQ(choose_level(Level::kNone, conf, true, true), Level::kConfidentiality);
  EXPECT_EQ(choose_level(Level::kPerMessage, integ, true, true), Level::kIntegrity);
  EXPECT_EQ(choose_level(Level::kConfidentiality, integ, true, true), Level::kConfidentiality);
  EXPECT_EQ(choose_level(Level::kConfidentiality, integ, true, false), Level::kIntegrity);
  EXPECT_EQ(choose_level(Level::kIntegrity, integ, false, false), std::nullopt);
  // "No protection" only ever when configured (TLS listeners).
  EXPECT_EQ(choose_level(Level::kConfidentiality, none, true, true), Level::kNone);
}

}  // namespace
}  // namespace socksgate::auth::gssapi
