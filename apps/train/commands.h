// The `data`, `train` and `eval` subcommands of the longattn tool; main() dispatches to them with
// the arguments after the subcommand name. Each returns the process exit code and prints errors
// (file, line and reason for data) on stderr.
#pragma once

namespace longattn::train {

int data_command(int argc, char** argv);
int train_command(int argc, char** argv);
int eval_command(int argc, char** argv);

}  // namespace longattn::train
