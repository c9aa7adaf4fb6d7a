// The `ferry` CLI's subcommands. Each Add*Command registers its options on the app and sets
// the callback that runs it; the callback stores the process exit code in *exit_code.
// The management commands (hosts, vms, migrate, migrations, migration, watch, cancel, plans,
// plan, shares) talk to ferryd; `global` holds the --server/--token/--output given before the
// command and must outlive parsing.
#pragma once

#include <CLI/CLI.hpp>

#include "cli/api_client.h"

namespace ferry::cli {

void AddConvertCommand(CLI::App& app, int* exit_code);
void AddInspectCommand(CLI::App& app, int* exit_code);
void AddCompareCommand(CLI::App& app, int* exit_code);
void AddServeCommand(CLI::App& app, int* exit_code);

void AddHostsCommand(CLI::App& app, const ServerArgs* global, int* exit_code);
void AddVmsCommand(CLI::App& app, const ServerArgs* global, int* exit_code);
void AddMigrateCommand(CLI::App& app, const ServerArgs* global, int* exit_code);
// migrations, migration, watch, cancel.
void AddMigrationsCommands(CLI::App& app, const ServerArgs* global, int* exit_code);
// plans, plan apply|validate|status|start|cancel|deploy|delete.
void AddPlanCommands(CLI::App& app, const ServerArgs* global, int* exit_code);
void AddSharesCommand(CLI::App& app, const ServerArgs* global, int* exit_code);

}  // namespace ferry::cli
