// A small, strict flag parser: --name value or --name=value; unknown flags are errors.
//
// Every getter validates: a value that does not parse or lies outside what the flag allows is a
// UsageError naming the flag, the value given and what is allowed, so the tool never runs with
// nonsense and never crashes on it later (a zero head count dividing, a zero batch looping).
#pragma once
#include <cstdint>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "command.h"

namespace longattn::app {

class Flags {
 public:
  // `known` maps each accepted flag (without --) to its help text (which states its default);
  // `switches` take no value.
  Flags(std::string command, std::map<std::string, std::string> known,
        std::vector<std::string> switches = {});
  void parse(const Args& args);  // throws UsageError

  bool has(const std::string& name) const { return values_.count(name) > 0; }
  std::string get(const std::string& name, const std::string& fallback) const;
  // The value of a flag the command cannot run without; `what` says what it names.
  std::string require(const std::string& name, const std::string& what) const;
  // One of `choices`.
  std::string get_choice(const std::string& name, const std::string& fallback,
                         const std::vector<std::string>& choices) const;
  // An integer in [lo, hi].
  int64_t get_int(const std::string& name, int64_t fallback,
                  int64_t lo = std::numeric_limits<int64_t>::min(),
                  int64_t hi = std::numeric_limits<int64_t>::max()) const;
  // A non-negative integer below 2^64 (seeds).
  uint64_t get_uint64(const std::string& name, uint64_t fallback) const;
  // A finite number in [lo, hi], or (lo, hi] with lo_open, or [lo, hi) with hi_open.
  double get_double(const std::string& name, double fallback,
                    double lo = -std::numeric_limits<double>::max(),
                    double hi = std::numeric_limits<double>::max(), bool lo_open = false,
                    bool hi_open = false) const;
  std::vector<int64_t> get_int_list(const std::string& name, std::vector<int64_t> fallback,
                                    int64_t lo = std::numeric_limits<int64_t>::min(),
                                    int64_t hi = std::numeric_limits<int64_t>::max()) const;
  std::vector<std::string> get_list(const std::string& name, std::vector<std::string> fallback) const;
  std::string help() const;

 private:
  std::string command_;
  std::map<std::string, std::string> known_;
  std::vector<std::string> switches_;
  std::map<std::string, std::string> values_;
};

}  // namespace longattn::app
