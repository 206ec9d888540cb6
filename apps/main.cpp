// The `longattn` command-line tool.
#include <exception>
#include <iostream>

#include "command.h"

namespace longattn::app {

std::vector<Command>& commands() {
  static std::vector<Command> all;
  return all;
}

namespace {

void usage(std::ostream& out) {
  out << "usage: longattn <command> [flags]\n\ncommands:\n";
  for (auto& c : commands()) out << "  " << c.name << std::string(10 - std::min<size_t>(9, c.name.size()), ' ') << c.summary << "\n";
  out << "\n`longattn <command> --help` lists a command's flags.\n";
}

}  // namespace
}  // namespace longattn::app

int main(int argc, char** argv) {
  using namespace longattn::app;
  if (argc < 2) {
    usage(std::cerr);
    return 2;
  }
  std::string name = argv[1];
  if (name == "--help" || name == "-h" || name == "help") {
    usage(std::cout);
    return 0;
  }
  for (auto& c : commands()) {
    if (c.name != name) continue;
    Args args(argv + 2, argv + argc);
    try {
      return c.run(args);
    } catch (const UsageError& e) {
      std::cerr << "longattn " << name << ": " << e.what() << "\n(see `longattn " << name
                << " --help`)\n";
      return 2;
    } catch (const std::exception& e) {
      std::cerr << "longattn " << name << ": error: " << e.what() << "\n";
      return 1;
    }
  }
  std::cerr << "longattn: unknown command '" << name << "'\n\n";
  usage(std::cerr);
  return 2;
}
