#include "flags.h"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <sstream>

namespace longattn::app {
namespace {

std::string fmt_int(int64_t x) {
  if (x == std::numeric_limits<int64_t>::min()) return "-inf";
  if (x == std::numeric_limits<int64_t>::max()) return "inf";
  return std::to_string(x);
}

std::string fmt_double(double x) {
  std::ostringstream s;
  s << x;
  return s.str();
}

// "an integer >= 1", "an integer in [0, 64]", "an integer".
std::string int_range(int64_t lo, int64_t hi) {
  const bool has_lo = lo != std::numeric_limits<int64_t>::min();
  const bool has_hi = hi != std::numeric_limits<int64_t>::max();
  if (has_lo && has_hi) return "an integer in [" + fmt_int(lo) + ", " + fmt_int(hi) + "]";
  if (has_lo) return "an integer >= " + fmt_int(lo);
  if (has_hi) return "an integer <= " + fmt_int(hi);
  return "an integer";
}

bool parse_int(const std::string& v, int64_t& x) {
  const char* b = v.data();
  const char* e = b + v.size();
  if (b != e && *b == '+') ++b;  // from_chars does not take a leading '+'
  auto r = std::from_chars(b, e, x);
  return b != e && r.ec == std::errc() && r.ptr == e;
}

}  // namespace

Flags::Flags(std::string command, std::map<std::string, std::string> known,
             std::vector<std::string> switches)
    : command_(std::move(command)), known_(std::move(known)), switches_(std::move(switches)) {
  for (auto& s : switches_) known_.emplace(s, "");
}

void Flags::parse(const Args& args) {
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a.rfind("--", 0) != 0) throw UsageError("unexpected argument '" + a + "' (flags start with --)");
    std::string name = a.substr(2), value;
    bool inline_value = false;
    if (auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      inline_value = true;
    }
    if (!known_.count(name)) {
      std::string list;
      for (auto& [k, text] : known_) list += (list.empty() ? "--" : ", --") + k;
      throw UsageError("unknown flag --" + name + " for '" + command_ + "'; known: " + list);
    }
    bool is_switch = std::find(switches_.begin(), switches_.end(), name) != switches_.end();
    if (is_switch) {
      if (inline_value) throw UsageError("flag --" + name + " takes no value, got '" + value + "'");
      value = "1";
    } else if (!inline_value) {
      if (i + 1 >= args.size()) throw UsageError("flag --" + name + " needs a value");
      value = args[++i];
    }
    if (values_.count(name)) throw UsageError("flag --" + name + " given twice");
    values_[name] = value;
  }
}

std::string Flags::get(const std::string& name, const std::string& fallback) const {
  auto it = values_.find(name);
  return it == values_.end() ? fallback : it->second;
}

std::string Flags::require(const std::string& name, const std::string& what) const {
  auto it = values_.find(name);
  if (it == values_.end() || it->second.empty())
    throw UsageError("flag --" + name + " is required (" + what + ")");
  return it->second;
}

std::string Flags::get_choice(const std::string& name, const std::string& fallback,
                              const std::vector<std::string>& choices) const {
  const std::string v = get(name, fallback);
  if (std::find(choices.begin(), choices.end(), v) != choices.end()) return v;
  std::string list;
  for (auto& c : choices) list += (list.empty() ? "" : ", ") + c;
  throw UsageError("flag --" + name + " got '" + v + "'; allowed: " + list);
}

int64_t Flags::get_int(const std::string& name, int64_t fallback, int64_t lo, int64_t hi) const {
  if (!has(name)) return fallback;
  const std::string& v = values_.at(name);
  int64_t x = 0;
  if (!parse_int(v, x) || x < lo || x > hi)
    throw UsageError("flag --" + name + " got '" + v + "'; allowed: " + int_range(lo, hi));
  return x;
}

uint64_t Flags::get_uint64(const std::string& name, uint64_t fallback) const {
  if (!has(name)) return fallback;
  const std::string& v = values_.at(name);
  uint64_t x = 0;
  auto r = std::from_chars(v.data(), v.data() + v.size(), x);
  if (v.empty() || r.ec != std::errc() || r.ptr != v.data() + v.size())
    throw UsageError("flag --" + name + " got '" + v + "'; allowed: an integer in [0, 2^64 - 1]");
  return x;
}

double Flags::get_double(const std::string& name, double fallback, double lo, double hi, bool lo_open,
                         bool hi_open) const {
  if (!has(name)) return fallback;
  const std::string& v = values_.at(name);
  char* end = nullptr;
  errno = 0;
  const double x = v.empty() ? 0.0 : std::strtod(v.c_str(), &end);
  const bool parsed = !v.empty() && end == v.c_str() + v.size() && std::isfinite(x);
  const bool in_range = (lo_open ? x > lo : x >= lo) && (hi_open ? x < hi : x <= hi);
  if (parsed && in_range) return x;
  std::string allowed = "a finite number";
  const bool has_lo = lo != -std::numeric_limits<double>::max();
  const bool has_hi = hi != std::numeric_limits<double>::max();
  if (has_lo && has_hi)
    allowed += std::string(" in ") + (lo_open ? "(" : "[") + fmt_double(lo) + ", " + fmt_double(hi) +
               (hi_open ? ")" : "]");
  else if (has_lo)
    allowed += (lo_open ? " > " : " >= ") + fmt_double(lo);
  else if (has_hi)
    allowed += (hi_open ? " < " : " <= ") + fmt_double(hi);
  throw UsageError("flag --" + name + " got '" + v + "'; allowed: " + allowed);
}

std::vector<std::string> Flags::get_list(const std::string& name,
                                         std::vector<std::string> fallback) const {
  if (!has(name)) return fallback;
  std::vector<std::string> out;
  std::stringstream s(values_.at(name));
  for (std::string item; std::getline(s, item, ',');)
    if (!item.empty()) out.push_back(item);
  if (out.empty()) throw UsageError("flag --" + name + " got an empty list");
  return out;
}

std::vector<int64_t> Flags::get_int_list(const std::string& name, std::vector<int64_t> fallback,
                                         int64_t lo, int64_t hi) const {
  if (!has(name)) return fallback;
  std::vector<int64_t> out;
  for (auto& item : get_list(name, {})) {
    int64_t x = 0;
    if (!parse_int(item, x) || x < lo || x > hi)
      throw UsageError("flag --" + name + " got '" + values_.at(name) +
                       "'; allowed: comma-separated items, each " + int_range(lo, hi));
    out.push_back(x);
  }
  return out;
}

std::string Flags::help() const {
  std::ostringstream s;
  s << "flags for '" << command_ << "':\n";
  for (auto& [name, text] : known_) {
    const bool is_switch = std::find(switches_.begin(), switches_.end(), name) != switches_.end();
    s << "  --" << name << (is_switch ? "" : " VALUE");
    if (!text.empty()) s << "\n      " << text;
    s << "\n";
  }
  s << "  --help\n      this list\n";
  return s.str();
}

}  // namespace longattn::app
