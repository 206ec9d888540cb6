// The `data`, `train` and `eval` subcommands of the longattn tool; main() dispatches to them with
// the arguments after the subcommand name. Each returns the process exit code; bad flags throw
// app::UsageError (naming the flag, the value and what is allowed), other failures throw
// std::exception (data errors name the file, line and reason), and main() prints them.
#pragma once

#include "apps/command.h"

namespace longattn::train {

int data_command(const app::Args& args);
int train_command(const app::Args& args);
int eval_command(const app::Args& args);

}  // namespace longattn::train
