#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "apps/data/json.h"
#include "apps/data/text.h"
#include "temp_file.h"

using namespace longattn::data;
using data_test::expect_data_error;
using data_test::TempFile;

namespace {
std::vector<int32_t> bytes(const std::string& s) {
  std::vector<int32_t> t;
  for (unsigned char c : s) t.push_back(3 + c);
  return t;
}
}  // namespace

TEST(Json, DecodesEscapesAndSkipsOtherMembers) {
  auto o = parse_json_object(
      R"( {"label": 3, "text": "a\"b\\c\/\n\t\u00e9\ud83d\ude00 \u20ac", "x": [1, {"y": null}, -2.5e3], "ok": true} )");
  EXPECT_EQ(o["label"].kind, JsonValue::Integer);
  EXPECT_EQ(o["label"].integer, 3);
  EXPECT_EQ(o["text"].str, "a\"b\\c/\n\t\xC3\xA9\xF0\x9F\x98\x80 \xE2\x82\xAC");
  EXPECT_EQ(o["x"].kind, JsonValue::Array);
  EXPECT_EQ(o["ok"].kind, JsonValue::Bool);
  EXPECT_EQ(parse_json_object("{\"t\": \"caf\xC3\xA9\"}")["t"].str, "caf\xC3\xA9");  // raw UTF-8 passes through
  EXPECT_TRUE(parse_json_object("{}").empty());
}

TEST(Json, StrictAboutMalformedInput) {
  const std::vector<std::pair<std::string, std::string>> bad = {
      {R"({"a": 1,})", "expected a string key"},
      {R"({'a': 1})", "expected a string key"},
      {R"({"a": 1} x)", "unexpected text after the object"},
      {R"({"a": "\ude00"})", "lone low surrogate"},
      {R"({"a": "\ud83dx"})", "high surrogate not followed"},
      {R"({"a": "\q"})", "invalid escape \\q"},
      {R"({"a": "\u12G4"})", "four hex digits"},
      {"{\"a\": \"tab\there\"}", "control character"},
      {R"({"a": 1, "a": 2})", "duplicate key"},
      {R"({"a": 01})", "expected ',' or"},  // leading zeros are not JSON: the number ends after 0
      {R"({"a": tru})", "expected a value"},
      {R"({"a": "open)", "unterminated string"},
      {R"([1, 2])", "expected '{'"},
      {R"({"a" 1})", "':' after the key"},
      {std::string(300, '[') , "expected '{'"},
  };
  for (const auto& [text, reason] : bad) {
    try {
      parse_json_object(text);
      ADD_FAILURE() << "accepted: " << text;
    } catch (const JsonError& e) {
      EXPECT_NE(std::string(e.what()).find(reason), std::string::npos) << text << " -> " << e.what();
    }
  }
  EXPECT_THROW(parse_json_object("{\"a\": " + std::string(300, '[') + std::string(300, ']') + "}"), JsonError);
}

TEST(Text, TsvAndJsonlGiveByteTokens) {
  TempFile tsv("text.tsv", "1\thello\r\n0\tw\xC3\xB6rld\n");
  const Dataset d = read_text_file(tsv.path);
  ASSERT_EQ(d.size(), 2u);
  EXPECT_EQ(d.examples[0].tokens, bytes("hello"));
  EXPECT_EQ(d.examples[1].tokens, bytes("w\xC3\xB6rld"));
  EXPECT_EQ(d.vocab_size, 259);
  EXPECT_EQ(d.num_classes, 2);
  TempFile jsonl("text.jsonl", "{\"label\": 2, \"text\": \"tab\\tnl\\n\", \"id\": 7}\n{\"text\": \"x\", \"label\": 0}");
  const Dataset j = read_text_file(jsonl.path);
  ASSERT_EQ(j.size(), 2u);
  EXPECT_EQ(j.examples[0].tokens, bytes("tab\tnl\n"));
  EXPECT_EQ(j.num_classes, 3);
  TextOptions o;
  o.max_length = 3;
  TextStats stats;
  EXPECT_EQ(read_text_file(tsv.path, o, &stats).examples[0].tokens, bytes("hel"));
  EXPECT_EQ(stats.truncated, 2);
}

TEST(Text, MalformedLinesNameFileLineReason) {
  TempFile fields("f.tsv", "1\tok\n0\tfine\n1\ttoo\tmany\n");
  expect_data_error([&] { read_text_tsv(fields.path); }, fields.path, 3, "expected 2 tab-separated fields (label, text), got 3");
  TempFile label("l.tsv", "1\tok\npos\tgood\n");
  expect_data_error([&] { read_text_tsv(label.path); }, label.path, 2, "label 'pos' is not a non-negative integer");
  TempFile blank("b.tsv", "1\tok\n\n0\tno\n");
  expect_data_error([&] { read_text_tsv(blank.path); }, blank.path, 2, "empty line");
  TempFile empty_text("e.tsv", "1\t\n");
  expect_data_error([&] { read_text_tsv(empty_text.path); }, empty_text.path, 1, "empty text");
  TempFile json("j.jsonl", "{\"label\": 1, \"text\": \"a\"}\n{\"label\": 1, \"text\": \"a\",}\n");
  expect_data_error([&] { read_text_jsonl(json.path); }, json.path, 2, "invalid JSON: column 26: expected a string key");
  TempFile nolabel("n.jsonl", "{\"text\": \"a\"}\n");
  expect_data_error([&] { read_text_jsonl(nolabel.path); }, nolabel.path, 1, "no \"label\" member");
  TempFile float_label("fl.jsonl", "{\"label\": 1.0, \"text\": \"a\"}\n");
  expect_data_error([&] { read_text_jsonl(float_label.path); }, float_label.path, 1, "\"label\" must be a non-negative integer, got a non-integer number");
  TempFile text_kind("tk.jsonl", "{\"label\": 1, \"text\": [\"a\"]}\n");
  expect_data_error([&] { read_text_jsonl(text_kind.path); }, text_kind.path, 1, "\"text\" must be a string, got an array");
  TempFile nothing("z.tsv", "");
  expect_data_error([&] { read_text_tsv(nothing.path); }, nothing.path, 0, "empty file");
  TextOptions o;
  o.num_classes = 2;
  TempFile big("big.tsv", "1\ta\n5\tb\n");
  expect_data_error([&] { read_text_tsv(big.path, o); }, big.path, 0, "label 5 outside [0, 2)");
}

TEST(Retrieval, ThreeAndFiveColumnLayouts) {
  TempFile three("r3.tsv", "1\tabc\tde\n0\tx\ty\n");
  const Dataset d = read_retrieval_tsv(three.path);
  ASSERT_TRUE(d.paired);
  EXPECT_EQ(d.examples[0].tokens, bytes("abc"));
  EXPECT_EQ(d.examples[0].tokens2, bytes("de"));
  TempFile five("r5.tsv", "1\tid1\tid2\tabc\tde\n");
  EXPECT_EQ(read_retrieval_tsv(five.path).examples[0].tokens2, bytes("de"));
  TempFile mixed("rm.tsv", "1\tabc\tde\n1\tid1\tid2\tabc\tde\n");
  expect_data_error([&] { read_retrieval_tsv(mixed.path); }, mixed.path, 2, "expected 3 tab-separated fields like the first line, got 5");
  TempFile empty_doc("re.tsv", "1\tabc\t\n");
  expect_data_error([&] { read_retrieval_tsv(empty_doc.path); }, empty_doc.path, 1, "empty second document");
}
