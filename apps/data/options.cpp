#include "apps/data/options.h"

#include <charconv>
#include <cstdlib>
#include <stdexcept>

namespace longattn::data {

Options Options::parse(const std::string& text) {
  Options o;
  std::string item;
  auto flush = [&] {
    if (item.empty()) return;
    const auto eq = item.find('=');
    if (eq == std::string::npos || eq == 0) throw std::invalid_argument("option '" + item + "' is not key=value");
    o.values_[item.substr(0, eq)] = item.substr(eq + 1);
    item.clear();
  };
  for (char c : text) {
    if (c == ',' || c == ' ' || c == '\t' || c == '\n') flush();
    else item += c;
  }
  flush();
  return o;
}

std::string Options::get(const std::string& key, const std::string& fallback) {
  asked_.insert(key);
  auto it = values_.find(key);
  return it == values_.end() ? fallback : it->second;
}

int64_t Options::get_int(const std::string& key, int64_t fallback) {
  asked_.insert(key);
  auto it = values_.find(key);
  if (it == values_.end()) return fallback;
  int64_t v;
  const std::string& s = it->second;
  auto r = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || r.ec != std::errc() || r.ptr != s.data() + s.size())
    throw std::invalid_argument("option " + key + "=" + s + ": not an integer");
  return v;
}

double Options::get_double(const std::string& key, double fallback) {
  asked_.insert(key);
  auto it = values_.find(key);
  if (it == values_.end()) return fallback;
  const std::string& s = it->second;
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  if (s.empty() || end != s.c_str() + s.size()) throw std::invalid_argument("option " + key + "=" + s + ": not a number");
  return v;
}

void Options::check_all_used(const std::string& context) const {
  std::string unknown, known;
  for (const auto& [k, v] : values_)
    if (!asked_.count(k)) unknown += (unknown.empty() ? "" : ", ") + k;
  if (unknown.empty()) return;
  for (const auto& k : asked_) known += (known.empty() ? "" : ", ") + k;
  throw std::invalid_argument(context + ": unknown option(s) " + unknown + " (known: " + known + ")");
}

}  // namespace longattn::data
