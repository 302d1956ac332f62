#include "policy/address.h"

#include <gtest/gtest.h>

#include <string>

namespace socksgate::policy {
namespace {

std::string canon(std::string_view text) {
  auto a = IpAddress::parse(text);
  return a ? a->to_string() : "<invalid>";
}

std::string cidr(std::string_view text) {
  auto c = Cidr::parse(text);
  return c ? c->to_string() : "<invalid>";
}

bool prot(std::string_view text) {
  auto a = IpAddress::parse(text);
  EXPECT_TRUE(a.has_value()) << text;
  return a && a->is_protected();
}

TEST(IpAddressTest, ParsesDottedQuad) {
  auto a = IpAddress::parse("192.0.2.1");
  ASSERT_TRUE(a);
  EXPECT_TRUE(a->is_v4());
  EXPECT_EQ(a->bytes()[0], 192);
  EXPECT_EQ(a->bytes()[3], 1);
  EXPECT_EQ(a->to_string(), "192.0.2.1");
  EXPECT_EQ(canon("0.0.0.0"), "0.0.0.0");
  EXPECT_EQ(canon("255.255.255.255"), "255.255.255.255");
  EXPECT_EQ(IpAddress(), *IpAddress::parse("0.0.0.0"));
}

TEST(IpAddressTest, RejectsAmbiguousOrMalformedIpv4) {
  for (const char* bad :
       {"",         "1.2.3",      "1.2.3.4.5",    "256.1.1.1",  "1.2.3.256",  "01.2.3.4",
        "1.2.3.04", "00.0.0.0",   "0x7f.0.0.1",   "0x7f000001", "2130706433", "127.1",
        "1.2.3.",   ".1.2.3",     "1..2.3",       "1.2.3.4 ",   " 1.2.3.4",   "+1.2.3.4",
        "-1.2.3.4", "1.2.3.4/32", "1.2.3.4%eth0", "1.2.3.a",    "1234.1.1.1", "a.b.c.d"}) {
    EXPECT_FALSE(IpAddress::parse(bad).has_value()) << bad;
  }
  EXPECT_FALSE(IpAddress::parse(std::string_view("1.2.3.4\0", 8)).has_value());
}

TEST(IpAddressTest, ParsesIpv6Forms) {
  EXPECT_EQ(canon("2001:db8::1"), "2001:db8::1");
  EXPECT_EQ(canon("2001:DB8:0:0:0:0:0:1"), "2001:db8::1");
  EXPECT_EQ(canon("2001:0db8:0000:0000:0000:0000:0000:0001"), "2001:db8::1");
  EXPECT_EQ(canon("::"), "::");
  EXPECT_EQ(canon("::1"), "::1");
  EXPECT_EQ(canon("1::"), "1::");
  EXPECT_EQ(canon("1:2:3:4:5:6:7::"), "1:2:3:4:5:6:7:0");
  EXPECT_EQ(canon("::2:3:4:5:6:7:8"), "0:2:3:4:5:6:7:8");
  EXPECT_EQ(canon("1:2:3:4:5:6:7:8"), "1:2:3:4:5:6:7:8");
  // RFC 5952: the longest run of zeros is compressed, the first one on a tie.
  EXPECT_EQ(canon("1:0:0:2:0:0:0:3"), "1:0:0:2::3");
  EXPECT_EQ(canon("1:0:0:2:0:0:3:4"), "1::2:0:0:3:4");
  EXPECT_EQ(canon("2001:db8:0:1:1:1:1:1"), "2001:db8:0:1:1:1:1:1");
  EXPECT_EQ(canon("fe80::1%eth0"), "fe80::1");
  EXPECT_EQ(canon("fe80::1%1"), "fe80::1");
  EXPECT_EQ(canon("2001:db8::1.2.3.4"), "2001:db8::102:304");
  EXPECT_EQ(canon("1:2:3:4:5:6:1.2.3.4"), "1:2:3:4:5:6:102:304");
}

TEST(IpAddressTest, RejectsMalformedIpv6) {
  for (const char* bad : {":",
                          ":::",
                          "1:::2",
                          "1::2::3",
                          ":1::",
                          "1::2:",
                          "1:2:3:4:5:6:7",
                          "1:2:3:4:5:6:7:8:9",
                          "1:2:3:4:5:6:7:8::",
                          "::1:2:3:4:5:6:7:8",
                          "12345::",
                          "g::",
                          "::1.2.3",
                          "::1.2.3.04",
                          "::1.2.3.4:1",
                          "1:2:3:4:5:6:7:1.2.3.4",
                          "fe80::1%",
                          "fe80::1%eth 0",
                          "fe80::1%a/b",
                          "[::1]",
                          "::1 ",
                          "1.2.3.4::"}) {
    EXPECT_FALSE(IpAddress::parse(bad).has_value()) << bad;
  }
}

TEST(IpAddressTest, CanonicalisesEveryIpv4Spelling) {
  // A client must not reach 127.0.0.1 by spelling it as IPv6.
  for (const char* spelling :
       {"127.0.0.1", "::ffff:127.0.0.1", "::FFFF:7f00:1", "0:0:0:0:0:ffff:7f00:0001",
        "::ffff:7f00:1%lo", "::127.0.0.1", "::7f00:1", "64:ff9b::127.0.0.1", "64:ff9b::7f00:1",
        "0064:ff9b:0:0:0:0:7f00:1"}) {
    auto a = IpAddress::parse(spelling);
    ASSERT_TRUE(a) << spelling;
    EXPECT_TRUE(a->is_v4()) << spelling;
    EXPECT_EQ(a->to_string(), "127.0.0.1") << spelling;
    EXPECT_EQ(*a, IpAddress::v4({127, 0, 0, 1})) << spelling;
    EXPECT_TRUE(a->is_protected()) << spelling;
  }
  EXPECT_EQ(canon("::ffff:0.0.0.0"), "0.0.0.0");
  EXPECT_EQ(canon("::0.0.0.2"), "0.0.0.2");
  // :: and ::1 are IPv6's own unspecified and loopback addresses.
  EXPECT_FALSE(IpAddress::parse("::")->is_v4());
  EXPECT_FALSE(IpAddress::parse("::1")->is_v4());
  EXPECT_FALSE(IpAddress::parse("::0.0.0.1")->is_v4());
  // Near misses stay IPv6.
  EXPECT_EQ(canon("::fffe:7f00:1"), "::fffe:7f00:1");
  EXPECT_EQ(canon("64:ff9b:1::7f00:1"), "64:ff9b:1::7f00:1");
  EXPECT_EQ(canon("::1:ffff:7f00:1"), "::1:ffff:7f00:1");
}

TEST(IpAddressTest, V6FactoryCanonicalises) {
  std::array<uint8_t, 16> mapped{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 1, 2, 3};
  EXPECT_EQ(IpAddress::v6(mapped), IpAddress::v4({10, 1, 2, 3}));
  std::array<uint8_t, 16> loop{};
  loop[15] = 1;
  EXPECT_FALSE(IpAddress::v6(loop).is_v4());
}

TEST(IpAddressTest, ProtectedRangesAndTheirBoundaries) {
  struct Case {
    const char* addr;
    const char* range;  // "" = not protected
  };
  for (const Case& c :
       std::initializer_list<Case>{{"0.0.0.0", "unspecified"},
                                   {"0.255.255.255", "unspecified"},
                                   {"1.0.0.0", ""},
                                   {"9.255.255.255", ""},
                                   {"10.0.0.0", "private"},
                                   {"10.255.255.255", "private"},
                                   {"11.0.0.0", ""},
                                   {"100.63.255.255", ""},
                                   {"100.64.0.0", "private"},
                                   {"100.127.255.255", "private"},
                                   {"100.128.0.0", ""},
                                   {"126.255.255.255", ""},
                                   {"127.0.0.0", "loopback"},
                                   {"127.255.255.255", "loopback"},
                                   {"128.0.0.0", ""},
                                   {"169.253.255.255", ""},
                                   {"169.254.0.0", "link-local"},
                                   {"169.254.169.254", "link-local"},
                                   {"169.255.0.0", ""},
                                   {"172.15.255.255", ""},
                                   {"172.16.0.0", "private"},
                                   {"172.31.255.255", "private"},
                                   {"172.32.0.0", ""},
                                   {"192.167.255.255", ""},
                                   {"192.168.0.0", "private"},
                                   {"192.168.255.255", "private"},
                                   {"192.169.0.0", ""},
                                   {"223.255.255.255", ""},
                                   {"224.0.0.0", "multicast"},
                                   {"239.255.255.255", "multicast"},
                                   {"240.0.0.0", ""},
                                   {"255.255.255.254", ""},
                                   {"255.255.255.255", "broadcast"},
                                   {"8.8.8.8", ""},
                                   {"::", "unspecified"},
                                   {"::1", "loopback"},
                                   {"::2", "unspecified"},  // IPv4-compatible 0.0.0.2
                                   {"fe80::", "link-local"},
                                   {"febf:ffff::", "link-local"},
                                   {"fec0::", ""},
                                   {"fe7f:ffff::", ""},
                                   {"ff00::", "multicast"},
                                   {"ff02::1", "multicast"},
                                   {"fc00::", "private"},
                                   {"fdff:ffff::1", "private"},
                                   {"fe00::", ""},
                                   {"fbff:ffff::", ""},
                                   {"2001:db8::1", ""},
                                   {"::ffff:10.1.2.3", "private"},
                                   {"64:ff9b::a9fe:a9fe", "link-local"}}) {
    auto a = IpAddress::parse(c.addr);
    ASSERT_TRUE(a) << c.addr;
    EXPECT_EQ(a->protected_range(), c.range) << c.addr;
    EXPECT_EQ(a->is_protected(), std::string(c.range) != "") << c.addr;
  }
  EXPECT_TRUE(prot("127.0.0.1"));
  EXPECT_FALSE(prot("93.184.216.34"));
}

TEST(IpAddressTest, OrdersAndCompares) {
  EXPECT_LT(*IpAddress::parse("10.0.0.1"), *IpAddress::parse("10.0.0.2"));
  EXPECT_EQ(*IpAddress::parse("::ffff:10.0.0.1"), *IpAddress::parse("10.0.0.1"));
  EXPECT_NE(*IpAddress::parse("::1"), *IpAddress::parse("127.0.0.1"));
}

TEST(CidrTest, ParsesBlocksAndBareAddresses) {
  EXPECT_EQ(cidr("10.0.0.0/8"), "10.0.0.0/8");
  EXPECT_EQ(cidr("10.1.2.3"), "10.1.2.3/32");
  EXPECT_EQ(cidr("0.0.0.0/0"), "0.0.0.0/0");
  EXPECT_EQ(cidr("::/0"), "::/0");
  EXPECT_EQ(cidr("::1"), "::1/128");
  EXPECT_EQ(cidr("::1/128"), "::1/128");
  EXPECT_EQ(cidr("2001:db8::/32"), "2001:db8::/32");
  EXPECT_EQ(cidr("fe80::%eth0/10"), "fe80::/10");
  // Host bits are cleared.
  EXPECT_EQ(cidr("10.1.2.3/8"), "10.0.0.0/8");
  EXPECT_EQ(cidr("2001:db8::1/32"), "2001:db8::/32");
}

TEST(CidrTest, ReportsHostBits) {
  bool host_bits = true;
  ASSERT_TRUE(Cidr::parse("10.0.0.0/8", &host_bits));
  EXPECT_FALSE(host_bits);
  ASSERT_TRUE(Cidr::parse("10.1.0.0/8", &host_bits));
  EXPECT_TRUE(host_bits);
  ASSERT_TRUE(Cidr::parse("2001:db8::1/64", &host_bits));
  EXPECT_TRUE(host_bits);
  ASSERT_TRUE(Cidr::parse("64:ff9b::/64", &host_bits));
  EXPECT_FALSE(host_bits);
  ASSERT_TRUE(Cidr::parse("10.1.2.3", &host_bits));
  EXPECT_FALSE(host_bits);
}

TEST(CidrTest, MappedBlocksBecomeIpv4Blocks) {
  EXPECT_EQ(cidr("::ffff:10.0.0.0/104"), "10.0.0.0/8");
  EXPECT_EQ(cidr("::ffff:0:0/96"), "0.0.0.0/0");
  EXPECT_EQ(cidr("::ffff:127.0.0.1"), "127.0.0.1/32");
  EXPECT_EQ(cidr("::ffff:127.0.0.1/128"), "127.0.0.1/32");
  EXPECT_EQ(cidr("64:ff9b::10.0.0.0/104"), "10.0.0.0/8");
  EXPECT_EQ(cidr("::10.0.0.0/104"), "10.0.0.0/8");
  // Blocks wider than the /96 stay IPv6; so do the single addresses :: and ::1.
  EXPECT_EQ(cidr("::ffff:10.0.0.0/80"), "::/80");
  EXPECT_EQ(cidr("64:ff9b::/64"), "64:ff9b::/64");
  EXPECT_EQ(cidr("::/128"), "::/128");
  EXPECT_EQ(cidr("::1/128"), "::1/128");
}

TEST(CidrTest, RejectsMalformed) {
  for (const char* bad : {"", "/8", "10.0.0.0/", "10.0.0.0/33", "10.0.0.0/-1", "10.0.0.0/+8",
                          "10.0.0.0/08", "10.0.0.0/8/8", "10.0.0/8", "::/129", "::/1000",
                          "10.0.0.0 /8", "10.0.0.0/ 8", "localhost/8", "10.0.0.0/0x8"}) {
    EXPECT_FALSE(Cidr::parse(bad).has_value()) << bad;
  }
}

TEST(CidrTest, Contains) {
  auto c = *Cidr::parse("10.0.0.0/8");
  EXPECT_TRUE(c.contains(*IpAddress::parse("10.0.0.0")));
  EXPECT_TRUE(c.contains(*IpAddress::parse("10.255.255.255")));
  EXPECT_TRUE(c.contains(*IpAddress::parse("::ffff:10.9.9.9")));
  EXPECT_FALSE(c.contains(*IpAddress::parse("11.0.0.0")));
  EXPECT_FALSE(c.contains(*IpAddress::parse("9.255.255.255")));
  EXPECT_FALSE(c.contains(*IpAddress::parse("a00::")));

  auto odd = *Cidr::parse("172.16.0.0/12");
  EXPECT_TRUE(odd.contains(*IpAddress::parse("172.31.255.255")));
  EXPECT_FALSE(odd.contains(*IpAddress::parse("172.32.0.0")));

  auto v6 = *Cidr::parse("2001:db8::/33");
  EXPECT_TRUE(v6.contains(*IpAddress::parse("2001:db8:7fff::1")));
  EXPECT_FALSE(v6.contains(*IpAddress::parse("2001:db8:8000::1")));

  // Families never mix: a /0 of one family does not contain the other.
  EXPECT_TRUE(Cidr::parse("0.0.0.0/0")->contains(*IpAddress::parse("203.0.113.9")));
  EXPECT_FALSE(Cidr::parse("0.0.0.0/0")->contains(*IpAddress::parse("2001:db8::1")));
  EXPECT_FALSE(Cidr::parse("::/0")->contains(*IpAddress::parse("203.0.113.9")));
  EXPECT_TRUE(Cidr::parse("::/0")->contains(*IpAddress::parse("2001:db8::1")));

  auto host = *Cidr::parse("192.0.2.7");
  EXPECT_TRUE(host.contains(*IpAddress::parse("192.0.2.7")));
  EXPECT_FALSE(host.contains(*IpAddress::parse("192.0.2.6")));
}

TEST(CidrTest, ConstructorClearsHostBitsAndClampsPrefix) {
  Cidr c(*IpAddress::parse("192.168.1.77"), 24);
  EXPECT_EQ(c.to_string(), "192.168.1.0/24");
  EXPECT_EQ(c, *Cidr::parse("192.168.1.0/24"));
  EXPECT_EQ(Cidr(*IpAddress::parse("192.168.1.77"), 99).prefix_len(), 32);
  EXPECT_EQ(Cidr(*IpAddress::parse("2001:db8::1"), 200).prefix_len(), 128);
}

}  // namespace
}  // namespace socksgate::policy
