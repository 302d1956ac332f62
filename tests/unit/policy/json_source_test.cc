#include "policy/json_source.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

namespace socksgate::policy {
namespace {

using Ptr = nlohmann::json::json_pointer;
using ::testing::HasSubstr;

std::string at(SourcePosition p) { return std::to_string(p.line) + ":" + std::to_string(p.column); }

// Parses text that must be valid.
JsonSource parse_ok(std::string_view text) {
  std::vector<Diagnostic> diags;
  auto src = JsonSource::parse("t.json", text, &diags);
  EXPECT_TRUE(src.has_value());
  EXPECT_TRUE(diags.empty()) << (diags.empty() ? "" : diags[0].to_string());
  return src ? std::move(*src) : JsonSource();
}

// Parses text that must fail; returns the diagnostics as "line:col: message" lines.
std::vector<std::string> parse_fail(std::string_view text, int max_depth = 64) {
  std::vector<Diagnostic> diags;
  auto src = JsonSource::parse("t.json", text, &diags, max_depth);
  EXPECT_FALSE(src.has_value());
  std::vector<std::string> out;
  for (const auto& d : diags) {
    EXPECT_EQ(d.file, "t.json");
    out.push_back(at(d.pos) + ": " + d.message);
  }
  return out;
}

TEST(JsonSourceTest, PositionsOfKeysAndValuesAcrossLinesAndComments) {
  const std::string text =
      "// policy for the lab\n"                               // 1
      "{\n"                                                   // 2
      "  /* groups\n"                                         // 3
      "     span lines */ \"groups\": {\n"                    // 4
      "    \"eng\": [\"alice\", \"bob\"]\n"                   // 5
      "  },\n"                                                // 6
      "  \"rules\": [\n"                                      // 7
      "    { \"id\": \"r\\\"1\", // trailing\n"               // 8
      "      \"ports\": [443, -1.5e3, 8080],\n"               // 9
      "      \"ok\": true, \"no\": false, \"nil\": null }\n"  // 10
      "  ]\n"                                                 // 11
      "}\n";
  JsonSource src = parse_ok(text);
  EXPECT_EQ(src.file(), "t.json");
  EXPECT_EQ(src.root()["groups"]["eng"][1], "bob");
  EXPECT_EQ(src.root()["rules"][0]["id"], "r\"1");

  EXPECT_EQ(at(src.value_pos(Ptr(""))), "2:1");
  EXPECT_EQ(at(src.key_pos(Ptr("/groups"))), "4:20");
  EXPECT_EQ(at(src.value_pos(Ptr("/groups"))), "4:30");
  EXPECT_EQ(at(src.key_pos(Ptr("/groups/eng"))), "5:5");
  EXPECT_EQ(at(src.value_pos(Ptr("/groups/eng"))), "5:12");
  EXPECT_EQ(at(src.value_pos(Ptr("/groups/eng/0"))), "5:13");
  EXPECT_EQ(at(src.value_pos(Ptr("/groups/eng/1"))), "5:22");
  EXPECT_EQ(at(src.key_pos(Ptr("/rules"))), "7:3");
  EXPECT_EQ(at(src.value_pos(Ptr("/rules"))), "7:12");
  EXPECT_EQ(at(src.value_pos(Ptr("/rules/0"))), "8:5");
  EXPECT_EQ(at(src.key_pos(Ptr("/rules/0/id"))), "8:7");
  EXPECT_EQ(at(src.value_pos(Ptr("/rules/0/id"))), "8:13");  // string with an escaped quote
  EXPECT_EQ(at(src.key_pos(Ptr("/rules/0/ports"))), "9:7");
  EXPECT_EQ(at(src.value_pos(Ptr("/rules/0/ports/0"))), "9:17");
  EXPECT_EQ(at(src.value_pos(Ptr("/rules/0/ports/1"))), "9:22");
  EXPECT_EQ(at(src.value_pos(Ptr("/rules/0/ports/2"))), "9:30");
  EXPECT_EQ(at(src.value_pos(Ptr("/rules/0/ok"))), "10:13");
  EXPECT_EQ(at(src.value_pos(Ptr("/rules/0/no"))), "10:25");
  EXPECT_EQ(at(src.value_pos(Ptr("/rules/0/nil"))), "10:39");
  // Array elements have no key: key_pos falls back to the value.
  EXPECT_EQ(at(src.key_pos(Ptr("/rules/0"))), "8:5");
  // Unknown pointers fall back to the nearest ancestor that has a position.
  EXPECT_EQ(at(src.value_pos(Ptr("/rules/0/missing"))), "8:5");
  EXPECT_EQ(at(src.key_pos(Ptr("/rules/7/x"))), "7:12");
}

TEST(JsonSourceTest, NumbersAndLiteralsAtEndOfInput) {
  EXPECT_EQ(at(parse_ok("42").value_pos(Ptr(""))), "1:1");
  EXPECT_EQ(at(parse_ok("  -0.5e-7").value_pos(Ptr(""))), "1:3");
  EXPECT_EQ(at(parse_ok("\n\ntrue").value_pos(Ptr(""))), "3:1");
  EXPECT_EQ(at(parse_ok("[1,22,333]").value_pos(Ptr("/2"))), "1:7");
  EXPECT_EQ(at(parse_ok("[1/*c*/,2]").value_pos(Ptr("/1"))), "1:9");
  EXPECT_EQ(at(parse_ok("{\"a\":1//c\n}").value_pos(Ptr("/a"))), "1:6");
}

TEST(JsonSourceTest, StringsWithEscapesAndKeysNeedingPointerEscapes) {
  JsonSource src = parse_ok("{\"a/b\": \"\\\\\", \"m~n\": \"x\\\\\\\"y\", \"\": \"\\u00e9\"}");
  EXPECT_EQ(at(src.key_pos(Ptr("/a~1b"))), "1:2");
  EXPECT_EQ(at(src.value_pos(Ptr("/a~1b"))), "1:9");
  EXPECT_EQ(at(src.key_pos(Ptr("/m~0n"))), "1:15");
  EXPECT_EQ(at(src.value_pos(Ptr("/m~0n"))), "1:22");
  EXPECT_EQ(at(src.key_pos(Ptr("/"))), "1:32");
  EXPECT_EQ(src.root()[""], "\xc3\xa9");
}

TEST(JsonSourceTest, AcceptsUtf8AndBom) {
  JsonSource src = parse_ok("\xef\xbb\xbf{\"name\": \"J\xc3\xbcrgen\"}");
  EXPECT_EQ(src.root()["name"], "J\xc3\xbcrgen");
  EXPECT_EQ(at(src.key_pos(Ptr("/name"))), "1:5");  // columns count bytes, BOM included
}

TEST(JsonSourceTest, SyntaxErrorsCarryTheirPosition) {
  EXPECT_THAT(parse_fail("{\n  \"a\": }"),
              ::testing::ElementsAre("2:8: syntax error while parsing value - unexpected '}'; "
                                     "expected '[', '{', or a literal"));
  EXPECT_THAT(parse_fail("{\"a\": 1,}"),
              ::testing::ElementsAre(HasSubstr("1:9: syntax error while parsing object key")));
  EXPECT_THAT(parse_fail("[1,\n2"),
              ::testing::ElementsAre(HasSubstr("2:2: syntax error while parsing array - "
                                               "unexpected end of input")));
  EXPECT_THAT(parse_fail(""), ::testing::ElementsAre(HasSubstr("1:1: syntax error")));
  EXPECT_THAT(parse_fail("{\"a\": \"x"),
              ::testing::ElementsAre(HasSubstr("1:9: syntax error while parsing value - invalid "
                                               "string: missing closing quote")));
  EXPECT_THAT(parse_fail("{} x"), ::testing::ElementsAre(HasSubstr("1:4: syntax error")));
  EXPECT_THAT(parse_fail("{\"a\": 1e999}"),
              ::testing::ElementsAre("1:7: number overflow parsing '1e999'"));
  // An unexpected token is reported where it starts.
  EXPECT_THAT(parse_fail("{\"a\": 1 \"b\": 2}"),
              ::testing::ElementsAre("1:9: syntax error while parsing object - unexpected string "
                                     "literal; expected '}'"));
  EXPECT_THAT(parse_fail("[\"a\" 12.5]"),
              ::testing::ElementsAre("1:6: syntax error while parsing array - unexpected number "
                                     "literal; expected ']'"));
  EXPECT_THAT(parse_fail("/* unterminated"), ::testing::ElementsAre(HasSubstr("1:")));
  EXPECT_THAT(parse_fail("{'a': 1}"), ::testing::ElementsAre(HasSubstr("1:2: syntax error")));
}

TEST(JsonSourceTest, InvalidUtf8IsASyntaxErrorNotACrash) {
  EXPECT_THAT(parse_fail("{\"a\": \"\xff\"}"),
              ::testing::ElementsAre("1:8: syntax error while parsing value - invalid string: "
                                     "ill-formed UTF-8 byte; last read: '\"\\xff'"));
  EXPECT_THAT(parse_fail("{\"\xc3\": 1}"), ::testing::ElementsAre(HasSubstr("ill-formed UTF-8")));
  EXPECT_THAT(parse_fail("\xff"), ::testing::ElementsAre(HasSubstr("1:1: syntax error")));
  // Overlong encoding of '/' and a UTF-16 surrogate encoded as UTF-8.
  EXPECT_EQ(parse_fail("[\"\xc0\xaf\"]").size(), 1u);
  EXPECT_EQ(parse_fail("[\"\xed\xa0\x80\"]").size(), 1u);
  // Diagnostics themselves stay printable.
  for (const auto& line : parse_fail("[\"\x01\x80\"]")) {
    for (unsigned char c : line) EXPECT_TRUE(c >= 0x20 && c < 0x7f) << line;
  }
}

TEST(JsonSourceTest, DuplicateKeysAreErrors) {
  EXPECT_THAT(parse_fail("{\n  \"a\": 1,\n  \"b\": {\"x\": 1, \"x\": 2},\n  \"a\": 3\n}"),
              ::testing::ElementsAre("3:17: duplicate key \"x\" (first at line 3, column 9)",
                                     "4:3: duplicate key \"a\" (first at line 2, column 3)"));
  // The same key in different objects is fine.
  parse_ok("[{\"a\": 1}, {\"a\": 2}, {\"b\": {\"a\": 3}}]");
}

TEST(JsonSourceTest, DuplicateKeysAndASyntaxErrorAreAllReported) {
  auto diags = parse_fail("{\"a\": 1, \"a\": 2, \"b\": ]}");
  ASSERT_EQ(diags.size(), 2u);
  EXPECT_THAT(diags[0], HasSubstr("1:10: duplicate key \"a\""));
  EXPECT_THAT(diags[1], HasSubstr("1:23: syntax error"));
}

TEST(JsonSourceTest, EnforcesMaxDepth) {
  std::string ok = std::string(64, '[') + std::string(64, ']');
  parse_ok(ok);
  std::string deep = std::string(65, '[') + std::string(65, ']');
  EXPECT_THAT(parse_fail(deep), ::testing::ElementsAre("1:65: nesting deeper than 64 levels"));
  EXPECT_THAT(parse_fail("{\"a\": {\"b\": [1]}}", 2),
              ::testing::ElementsAre("1:13: nesting deeper than 2 levels"));
  // Far deeper than any stack would take recursively: still one clean error.
  std::string abyss = std::string(200000, '[');
  EXPECT_THAT(parse_fail(abyss), ::testing::ElementsAre("1:65: nesting deeper than 64 levels"));
}

TEST(JsonSourceTest, NullDiagsPointerIsAllowed) {
  EXPECT_FALSE(JsonSource::parse("x", "{", nullptr).has_value());
  EXPECT_TRUE(JsonSource::parse("x", "{}", nullptr).has_value());
}

TEST(JsonSourceTest, DiagnosticHelpers) {
  JsonSource src = parse_ok("{\n \"k\":\n   7}");
  Diagnostic d = src.at_value(Ptr("/k"), "bad value");
  EXPECT_EQ(d.to_string(), "t.json:3:4: bad value");
  EXPECT_EQ(src.at_key(Ptr("/k"), "bad key").to_string(), "t.json:2:2: bad key");
}

TEST(JsonSourceTest, LoadErrorJoinsDiagnostics) {
  LoadError e({{"a.json", {1, 2}, "first"}, {"a.json", {3, 4}, "second"}});
  EXPECT_STREQ(e.what(), "a.json:1:2: first\na.json:3:4: second");
  ASSERT_EQ(e.diagnostics().size(), 2u);
  EXPECT_EQ(e.diagnostics()[1].message, "second");
}

}  // namespace
}  // namespace socksgate::policy

namespace socksgate::policy {
namespace {

TEST(JsonSourceTest, ManyDuplicateKeysAreReportedOnceEach_UpToALimit) {
  std::string text = "{\"a\": 1";
  for (int i = 0; i < 5000; ++i) text += ", \"a\": 1";
  text += "}";
  auto diags = parse_fail(text);
  ASSERT_EQ(diags.size(), 101u);
  EXPECT_THAT(diags[0], HasSubstr("duplicate key \"a\""));
  EXPECT_THAT(diags[100], HasSubstr("too many duplicate keys; only the first 100 are reported"));
}

TEST(JsonSourceTest, DeepNestingOfEveryKindIsOneError) {
  // 100,000 nested arrays, objects, and a mix: the depth limit stops the SAX parse before the
  // DOM gets deep, so neither parsing nor destruction recurses deeply.
  EXPECT_THAT(parse_fail(std::string(100000, '[') + std::string(100000, ']')),
              ::testing::ElementsAre("1:65: nesting deeper than 64 levels"));
  std::string objects;
  for (int i = 0; i < 100000; ++i) objects += "{\"a\":";
  EXPECT_THAT(parse_fail(objects), ::testing::ElementsAre(HasSubstr("nesting deeper than 64")));
  std::string mixed;
  for (int i = 0; i < 50000; ++i) mixed += "[{\"k\":";
  EXPECT_THAT(parse_fail(mixed), ::testing::ElementsAre(HasSubstr("nesting deeper than 64")));
}

}  // namespace
}  // namespace socksgate::policy
