#include "flags.h"

#include <algorithm>
#include <sstream>

namespace longattn::app {

Flags::Flags(std::string command, std::map<std::string, std::string> known,
             std::vector<std::string> switches)
    : command_(std::move(command)), known_(std::move(known)), switches_(std::move(switches)) {
  for (auto& s : switches_) known_.emplace(s, "");
}

void Flags::parse(const Args& args) {
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a.rfind("--", 0) != 0) throw UsageError("unexpected argument '" + a + "'");
    std::string name = a.substr(2), value;
    bool inline_value = false;
    if (auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      inline_value = true;
    }
    if (!known_.count(name)) throw UsageError("unknown flag --" + name + " for '" + command_ + "'");
    bool is_switch = std::find(switches_.begin(), switches_.end(), name) != switches_.end();
    if (is_switch) {
      if (inline_value) throw UsageError("flag --" + name + " takes no value");
      value = "1";
    } else if (!inline_value) {
      if (i + 1 >= args.size()) throw UsageError("flag --" + name + " needs a value");
      value = args[++i];
    }
    values_[name] = value;
  }
}

std::string Flags::get(const std::string& name, const std::string& fallback) const {
  auto it = values_.find(name);
  return it == values_.end() ? fallback : it->second;
}

int64_t Flags::get_int(const std::string& name, int64_t fallback) const {
  if (!has(name)) return fallback;
  const std::string& v = values_.at(name);
  try {
    size_t used = 0;
    int64_t x = std::stoll(v, &used);
    if (used == v.size()) return x;
  } catch (...) {
  }
  throw UsageError("flag --" + name + " needs an integer, got '" + v + "'");
}

double Flags::get_double(const std::string& name, double fallback) const {
  if (!has(name)) return fallback;
  const std::string& v = values_.at(name);
  try {
    size_t used = 0;
    double x = std::stod(v, &used);
    if (used == v.size()) return x;
  } catch (...) {
  }
  throw UsageError("flag --" + name + " needs a number, got '" + v + "'");
}

std::vector<std::string> Flags::get_list(const std::string& name,
                                         std::vector<std::string> fallback) const {
  if (!has(name)) return fallback;
  std::vector<std::string> out;
  std::stringstream s(values_.at(name));
  for (std::string item; std::getline(s, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}

std::vector<int64_t> Flags::get_int_list(const std::string& name,
                                         std::vector<int64_t> fallback) const {
  if (!has(name)) return fallback;
  std::vector<int64_t> out;
  for (auto& item : get_list(name, {})) {
    try {
      size_t used = 0;
      out.push_back(std::stoll(item, &used));
      if (used != item.size()) throw 0;
    } catch (...) {
      throw UsageError("flag --" + name + " needs comma-separated integers, got '" +
                       values_.at(name) + "'");
    }
  }
  return out;
}

std::string Flags::help() const {
  std::ostringstream s;
  s << "flags for '" << command_ << "':\n";
  for (auto& [name, text] : known_) s << "  --" << name << (text.empty() ? "" : "  " + text) << "\n";
  return s.str();
}

}  // namespace longattn::app
