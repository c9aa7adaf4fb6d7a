// The `ferry` CLI's subcommands. Each Add*Command registers its options on the app and sets
// the callback that runs it; the callback stores the process exit code in *exit_code.
#pragma once

#include <CLI/CLI.hpp>

namespace ferry::cli {

void AddConvertCommand(CLI::App& app, int* exit_code);
void AddInspectCommand(CLI::App& app, int* exit_code);
void AddCompareCommand(CLI::App& app, int* exit_code);
void AddServeCommand(CLI::App& app, int* exit_code);

}  // namespace ferry::cli
