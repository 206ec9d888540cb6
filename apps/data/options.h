// key=value options for tasks and commands, strict: a key nobody asked for is an error that lists
// the known keys, and a value that does not parse names the key and the value.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace longattn::data {

class Options {
 public:
  Options() = default;
  // Parses "a=1,b=x" (commas or whitespace separate items). Throws std::invalid_argument on an item without '='.
  static Options parse(const std::string& text);
  void set(const std::string& key, const std::string& value) { values_[key] = value; }
  bool has(const std::string& key) const { return values_.count(key) != 0; }

  std::string get(const std::string& key, const std::string& fallback);
  int64_t get_int(const std::string& key, int64_t fallback);
  double get_double(const std::string& key, double fallback);
  // Throws std::invalid_argument naming every key that no get*() call asked for, and the ones that were asked for.
  void check_all_used(const std::string& context) const;

 private:
  std::map<std::string, std::string> values_;
  std::set<std::string> asked_;
};

}  // namespace longattn::data
