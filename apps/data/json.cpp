#include "apps/data/json.h"

#include <charconv>

namespace longattn::data {
namespace {

class Parser {
 public:
  explicit Parser(const std::string& s) : s_(s) {}

  std::map<std::string, JsonValue> top() {
    ws();
    if (peek() != '{') fail("expected '{' starting an object");
    auto members = object(true);
    ws();
    if (i_ != s_.size()) fail("unexpected text after the object");
    return members;
  }

 private:
  [[noreturn]] void fail(const std::string& why) const { throw JsonError(i_ + 1, why); }
  int peek() const { return i_ < s_.size() ? static_cast<unsigned char>(s_[i_]) : -1; }
  void ws() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r')) ++i_;
  }
  void expect(char c, const char* what) {
    if (peek() != c) fail(std::string("expected ") + what);
    ++i_;
  }

  // Parses an object at s_[i_] == '{'. Only the top level keeps its members.
  std::map<std::string, JsonValue> object(bool keep) {
    std::map<std::string, JsonValue> out;
    ++i_;
    ws();
    if (peek() == '}') {
      ++i_;
      return out;
    }
    for (;;) {
      ws();
      if (peek() != '"') fail("expected a string key");
      const size_t key_at = i_;
      std::string key = string();
      ws();
      expect(':', "':' after the key");
      ws();
      JsonValue v = value();
      if (keep && !out.emplace(std::move(key), std::move(v)).second) {
        i_ = key_at;
        fail("duplicate key");
      }
      ws();
      if (peek() == ',') {
        ++i_;
        continue;
      }
      expect('}', "',' or '}' in the object");
      return out;
    }
  }

  void array() {
    ++i_;
    ws();
    if (peek() == ']') {
      ++i_;
      return;
    }
    for (;;) {
      ws();
      value();
      ws();
      if (peek() == ',') {
        ++i_;
        continue;
      }
      expect(']', "',' or ']' in the array");
      return;
    }
  }

  JsonValue value() {
    JsonValue v;
    const int c = peek();
    if ((c == '{' || c == '[') && ++depth_ > kMaxDepth) fail("nesting deeper than " + std::to_string(kMaxDepth));
    if (c == '"') {
      v.kind = JsonValue::String;
      v.str = string();
    } else if (c == '{') {
      v.kind = JsonValue::Object;
      object(false);
      --depth_;
    } else if (c == '[') {
      v.kind = JsonValue::Array;
      array();
      --depth_;
    } else if (c == '-' || (c >= '0' && c <= '9')) {
      number(v);
    } else if (literal("true") || literal("false")) {
      v.kind = JsonValue::Bool;
    } else if (literal("null")) {
      v.kind = JsonValue::Null;
    } else {
      fail(c < 0 ? "unexpected end of line, expected a value" : "expected a value");
    }
    return v;
  }

  bool literal(const char* w) {
    const std::string word(w);
    if (s_.compare(i_, word.size(), word) != 0) return false;
    i_ += word.size();
    return true;
  }

  void number(JsonValue& v) {
    const size_t start = i_;
    if (peek() == '-') ++i_;
    if (peek() == '0') {
      ++i_;
    } else if (peek() >= '1' && peek() <= '9') {
      while (peek() >= '0' && peek() <= '9') ++i_;
    } else {
      fail("expected a digit");
    }
    bool integral = true;
    if (peek() == '.') {
      integral = false;
      ++i_;
      if (!(peek() >= '0' && peek() <= '9')) fail("expected a digit after '.'");
      while (peek() >= '0' && peek() <= '9') ++i_;
    }
    if (peek() == 'e' || peek() == 'E') {
      integral = false;
      ++i_;
      if (peek() == '+' || peek() == '-') ++i_;
      if (!(peek() >= '0' && peek() <= '9')) fail("expected a digit in the exponent");
      while (peek() >= '0' && peek() <= '9') ++i_;
    }
    v.kind = integral ? JsonValue::Integer : JsonValue::Number;
    if (integral) {
      auto r = std::from_chars(s_.data() + start, s_.data() + i_, v.integer);
      if (r.ec != std::errc()) {
        i_ = start;
        fail("integer out of range");
      }
    }
  }

  unsigned hex4() {
    unsigned u = 0;
    for (int k = 0; k < 4; ++k) {
      const int c = peek();
      unsigned d;
      if (c >= '0' && c <= '9') d = unsigned(c - '0');
      else if (c >= 'a' && c <= 'f') d = unsigned(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') d = unsigned(c - 'A' + 10);
      else fail("expected four hex digits after \\u");
      u = u * 16 + d;
      ++i_;
    }
    return u;
  }

  static void put_utf8(std::string& out, unsigned cp) {
    if (cp < 0x80) {
      out += char(cp);
    } else if (cp < 0x800) {
      out += char(0xC0 | (cp >> 6));
      out += char(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += char(0xE0 | (cp >> 12));
      out += char(0x80 | ((cp >> 6) & 0x3F));
      out += char(0x80 | (cp & 0x3F));
    } else {
      out += char(0xF0 | (cp >> 18));
      out += char(0x80 | ((cp >> 12) & 0x3F));
      out += char(0x80 | ((cp >> 6) & 0x3F));
      out += char(0x80 | (cp & 0x3F));
    }
  }

  // Parses a string at s_[i_] == '"' and returns its bytes. Raw bytes >= 0x80 pass through as they
  // are (the file's own UTF-8); escapes are decoded.
  std::string string() {
    std::string out;
    ++i_;
    for (;;) {
      const int c = peek();
      if (c < 0) fail("unterminated string");
      if (c == '"') {
        ++i_;
        return out;
      }
      if (c < 0x20) fail("control character inside a string (must be escaped)");
      if (c != '\\') {
        out += char(c);
        ++i_;
        continue;
      }
      ++i_;
      const int e = peek();
      ++i_;
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          const size_t at = i_ - 2;
          unsigned cp = hex4();
          if (cp >= 0xDC00 && cp <= 0xDFFF) {
            i_ = at;
            fail("lone low surrogate \\u" + std::string(s_, at + 2, 4));
          }
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (!(peek() == '\\' && i_ + 1 < s_.size() && s_[i_ + 1] == 'u')) {
              i_ = at;
              fail("high surrogate not followed by a \\u low surrogate");
            }
            i_ += 2;
            const unsigned lo = hex4();
            if (lo < 0xDC00 || lo > 0xDFFF) {
              i_ = at;
              fail("high surrogate followed by \\u" + std::string(s_, i_ + 8, 4) + ", not a low surrogate");
            }
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          }
          put_utf8(out, cp);
          break;
        }
        default:
          i_ -= 2;
          fail(e < 0 ? "unterminated escape" : "invalid escape \\" + std::string(1, char(e)));
      }
    }
  }

  static constexpr int kMaxDepth = 256;  // bounds the recursion on hostile input
  const std::string& s_;
  size_t i_ = 0;
  int depth_ = 0;
};

}  // namespace

std::map<std::string, JsonValue> parse_json_object(const std::string& line) { return Parser(line).top(); }

const char* json_kind_name(JsonValue::Kind k) {
  switch (k) {
    case JsonValue::String: return "a string";
    case JsonValue::Integer: return "an integer";
    case JsonValue::Number: return "a non-integer number";
    case JsonValue::Bool: return "a boolean";
    case JsonValue::Null: return "null";
    case JsonValue::Array: return "an array";
    default: return "an object";
  }
}

}  // namespace longattn::data
