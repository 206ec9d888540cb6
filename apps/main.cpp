// The `longattn` command-line tool.
#include <algorithm>
#include <exception>
#include <iostream>
#include <string>

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

std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

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
      std::cerr << "longattn " << name << ": " << first_line(e.what()) << "\n(see `longattn " << name
                << " --help`)\n";
      return 2;
    } catch (const std::exception& e) {
      // torch's c10::Error appends a C++ backtrace after the first line; a user needs the message.
      std::cerr << "longattn " << name << ": error: " << first_line(e.what()) << "\n";
      return 1;
    } catch (...) {
      std::cerr << "longattn " << name << ": error: unknown exception\n";
      return 1;
    }
  }
  std::cerr << "longattn: unknown command '" << name << "'\n\n";
  usage(std::cerr);
  return 2;
}
