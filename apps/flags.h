// A small, strict flag parser: --name value or --name=value; unknown flags are errors.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "command.h"

namespace longattn::app {

class Flags {
 public:
  // `known` maps each accepted flag (without --) to its help text; `switches` take no value.
  Flags(std::string command, std::map<std::string, std::string> known,
        std::vector<std::string> switches = {});
  void parse(const Args& args);  // throws UsageError

  bool has(const std::string& name) const { return values_.count(name) > 0; }
  std::string get(const std::string& name, const std::string& fallback) const;
  int64_t get_int(const std::string& name, int64_t fallback) const;
  double get_double(const std::string& name, double fallback) const;
  std::vector<int64_t> get_int_list(const std::string& name, std::vector<int64_t> fallback) const;
  std::vector<std::string> get_list(const std::string& name, std::vector<std::string> fallback) const;
  std::string help() const;

 private:
  std::string command_;
  std::map<std::string, std::string> known_;
  std::vector<std::string> switches_;
  std::map<std::string, std::string> values_;
};

}  // namespace longattn::app
