// `longattn attentions`: the attention registry (nn/attention.h) as JSON, for one layer's
// configuration: each mechanism's name, description, parameters and buffers (name and shape),
// its parameter count and its fixed settings. tests/python/test_registry.py compares it with
// the Python twin (longattn.nn.encoder.ATTENTIONS).
#include <iostream>
#include <sstream>
#include <string>

#include "command.h"
#include "flags.h"
#include "nn/attention.h"
#include "nn/encoder.h"
#include "nn/yoso.h"

namespace longattn::app {
namespace {

std::string quoted(const std::string& s) {
  std::string r = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') r += '\\';
    r += c;
  }
  return r + "\"";
}

std::string shapes(const torch::OrderedDict<std::string, torch::Tensor>& named) {
  std::ostringstream s;
  s << "{";
  bool first = true;
  for (const auto& item : named) {
    s << (first ? "" : ", ") << quoted(item.key()) << ": [";
    for (int64_t d = 0; d < item.value().dim(); ++d) s << (d ? ", " : "") << item.value().size(d);
    s << "]";
    first = false;
  }
  return s.str() + "}";
}

// The fixed settings a mechanism was built with (those not visible as a tensor's shape).
std::string settings(const nn::AttentionCoreImpl& core) {
  std::ostringstream s;
  s << "{";
  if (auto* y = dynamic_cast<const nn::YOSOAttentionImpl*>(&core)) {
    const auto& o = y->options;
    s << "\"hash_bits\": " << o.hash_bits() << ", \"num_hashes\": " << o.num_hashes()
      << ", \"hashing\": " << quoted(o.hashing()) << ", \"backward\": " << quoted(o.backward())
      << ", \"conv_window\": " << o.conv_window()
      << ", \"use_expectation\": " << (o.use_expectation() ? "true" : "false");
  }
  return s.str() + "}";
}

int run_attentions(const Args& args) {
  Flags flags("attentions", {{"dim", "model width (default 64)"},
                             {"heads", "attention heads (default 2)"},
                             {"max-len", "longest sequence (default 512)"},
                             {"seed", "layer seed (default 0)"}});
  if (wants_help(args)) {
    std::cout << "usage: longattn attentions [--dim D] [--heads H] [--max-len N] [--seed S]\n"
              << flags.help();
    return 0;
  }
  flags.parse(args);
  nn::AttentionSpec spec;
  spec.dim = flags.get_int("dim", 64);
  spec.heads = flags.get_int("heads", 2);
  spec.max_len = flags.get_int("max-len", 512);
  spec.seed = static_cast<uint64_t>(flags.get_int("seed", 0));
  std::cout << "[\n";
  bool first = true;
  for (const auto& entry : nn::attention_registry()) {
    nn::AttentionSpec s = spec;
    s.name = entry.name;
    auto core = entry.make(s);
    std::cout << (first ? "" : ",\n") << "  {\"name\": " << quoted(entry.name)
              << ", \"description\": " << quoted(entry.description)
              << ", \"parameters\": " << shapes(core->named_parameters())
              << ", \"buffers\": " << shapes(core->named_buffers())
              << ", \"parameter_count\": " << nn::count_parameters(*core)
              << ", \"settings\": " << settings(*core) << "}";
    first = false;
  }
  std::cout << "\n]\n";
  return 0;
}

RegisterCommand reg({"attentions", "the attention registry for one configuration, as JSON",
                     run_attentions});

}  // namespace
}  // namespace longattn::app
