// `ferry lab up|down|status|guest|disk`: the lab from the command line (docs/lab.md).
//
//   ferry lab up [--hosts N] [--guests N] [--root DIR] [--accel auto|kvm|tcg]
//                [--address-base B] [--output text|json]
//   ferry lab down [--root DIR]
//   ferry lab status [--root DIR] [--output text|json]
//   ferry lab guest [NAME] [--host N] [--pool P] [--volume V] [--disk-format F] ...
//   ferry lab disk --out FILE [--data-mib N] [--cmdline-extra TEXT] [--format raw|qcow2]
//                  [--root DIR] [--output text|json]
//
// The callbacks store the process exit code in *exit_code (0, or ExitCodeFor the error).
#pragma once

#include <CLI/CLI.hpp>

namespace ferry::lab {

void AddLabCommand(CLI::App& app, int* exit_code);

}  // namespace ferry::lab
