// A tiny, strict JSON reader for one object per line (JSONL): enough to pull string and integer
// members out of {"label": 1, "text": "..."} while accepting (and skipping) any other valid member.
// Strict means RFC 8259: no trailing commas, no comments, no single quotes, no control characters
// inside strings, no lone surrogates, no duplicate keys, nothing after the object but whitespace.
#pragma once

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>

namespace longattn::data {

struct JsonError : std::runtime_error {
  JsonError(size_t column, const std::string& reason)
      : std::runtime_error("column " + std::to_string(column) + ": " + reason), column(column) {}
  size_t column;  // 1-based position in the line
};

// A top-level member's value: strings are decoded (escapes, \uXXXX to UTF-8), integers are kept
// exact; every other kind (float, bool, null, array, object) is only recorded by kind.
struct JsonValue {
  enum Kind { String, Integer, Number, Bool, Null, Array, Object } kind = Null;
  std::string str;      // String
  int64_t integer = 0;  // Integer
};

// Parses one JSON object; throws JsonError (with the column) on anything malformed.
std::map<std::string, JsonValue> parse_json_object(const std::string& line);

const char* json_kind_name(JsonValue::Kind k);

}  // namespace longattn::data
