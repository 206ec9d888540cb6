// Subcommands of the `longattn` tool register themselves here, one file or folder each.
#pragma once
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

namespace longattn::app {

using Args = std::vector<std::string>;

struct Command {
  std::string name;
  std::string summary;                 // one line for the usage message
  std::function<int(const Args&)> run; // arguments after the subcommand; returns the exit code
};

std::vector<Command>& commands();

struct RegisterCommand {
  explicit RegisterCommand(Command c) { commands().push_back(std::move(c)); }
};

// Thrown for bad flags or values; main prints the message and the usage, exits 2.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace longattn::app

namespace longattn::app {
inline bool wants_help(const Args& args) {
  for (auto& a : args)
    if (a == "--help" || a == "-h") return true;
  return false;
}
}  // namespace longattn::app
