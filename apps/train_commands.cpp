// Registers the trainer's subcommands (apps/train/commands.h) with the tool.
#include <vector>

#include "command.h"
#include "apps/train/commands.h"

namespace longattn::app {
namespace {

std::function<int(const Args&)> adapt(int (*f)(int, char**)) {
  return [f](const Args& args) {
    std::vector<std::string> copy(args);
    std::vector<char*> argv;
    for (auto& a : copy) argv.push_back(a.data());
    argv.push_back(nullptr);
    return f(static_cast<int>(copy.size()), argv.data());
  };
}

RegisterCommand data_cmd({"data", "generate or convert a task's data into dataset files", adapt(train::data_command)});
RegisterCommand train_cmd({"train", "train an encoder on a task (AdamW, checkpoints, --resume)", adapt(train::train_command)});
RegisterCommand eval_cmd({"eval", "report a saved model's test metrics", adapt(train::eval_command)});

}  // namespace
}  // namespace longattn::app
