// Registers the trainer's subcommands (apps/train/commands.h) with the tool.
#include "command.h"
#include "apps/train/commands.h"

namespace longattn::app {
namespace {

RegisterCommand data_cmd({"data", "generate or convert a task's data into dataset files", train::data_command});
RegisterCommand train_cmd({"train", "train an encoder on a task (AdamW, checkpoints, --resume)", train::train_command});
RegisterCommand eval_cmd({"eval", "report a saved model's test metrics", train::eval_command});

}  // namespace
}  // namespace longattn::app
