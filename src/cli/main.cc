// `ferry`: the command line. Offline disk tools (convert, inspect, compare, serve), the lab,
// and the management commands over ferryd's REST API (hosts, vms, migrate, migrations,
// migration, watch, cancel, plans, plan, shares). Exit statuses: docs/cli.md.
#include <CLI/CLI.hpp>

#include "cli/commands.h"
#include "lab/lab_command.h"

int main(int argc, char** argv) {
  CLI::App app{"ferry: move virtual machines and their disks"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "ferry 0.1.0");
  int exit_code = 0;
  ferry::cli::ServerArgs server;  // --server/--token/--output before the command
  ferry::cli::AddGlobalServerOptions(app, &server);
  ferry::cli::AddConvertCommand(app, &exit_code);
  ferry::cli::AddInspectCommand(app, &exit_code);
  ferry::cli::AddCompareCommand(app, &exit_code);
  ferry::cli::AddServeCommand(app, &exit_code);
  ferry::cli::AddHostsCommand(app, &server, &exit_code);
  ferry::cli::AddVmsCommand(app, &server, &exit_code);
  ferry::cli::AddMigrateCommand(app, &server, &exit_code);
  ferry::cli::AddMigrationsCommands(app, &server, &exit_code);
  ferry::cli::AddPlanCommands(app, &server, &exit_code);
  ferry::cli::AddSharesCommand(app, &server, &exit_code);
  ferry::lab::AddLabCommand(app, &exit_code);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : 2;  // usage errors: exit 2, like kInvalidArgument
  }
  return exit_code;
}
