// ferry migrations [--all], ferry migration ID, ferry watch ID, ferry cancel ID [--wait]:
// reading and following ferryd's migrations (GET /api/v1/migrations..., POST .../cancel).
#include <cstdio>

#include "cli/api_client.h"
#include "cli/api_format.h"
#include "cli/commands.h"
#include "cli/output.h"
#include "cli/watch.h"

namespace ferry::cli {
namespace {

struct MigrationsArgs {
  ServerArgs local;
  std::string id;
  bool all = false;
  bool wait = false;
};

int RunList(const ServerArgs& global, const MigrationsArgs& a) {
  auto conn = ResolveConnection(global, a.local);
  if (!conn.ok()) return ReportError(OutputMode::kText, "migrations", conn.status());
  ApiClient client(*conn);
  auto body = client.Get(a.all ? "/api/v1/migrations" : "/api/v1/migrations?active=true");
  if (!body.ok()) return ReportError(conn->mode, "migrations", body.status());
  auto list = ParseMigrationList(*body);
  if (!list.ok()) return ReportError(conn->mode, "migrations", list.status());
  if (conn->mode == OutputMode::kJson) {
    std::vector<std::string> items;
    for (const MigrationRecord& m : *list) items.push_back(m.json);
    std::printf("%s\n", PrettyJson(JsonObject({{"migrations", JsonArray(items)}})).c_str());
  } else {
    std::printf("%s", FormatMigrationsTable(*list, WallClockMs()).c_str());
  }
  return 0;
}

Result<MigrationRecord> GetMigration(const ApiClient& client, const std::string& id) {
  FERRY_ASSIGN_OR_RETURN(std::string body, client.Get(MigrationPath(id)));
  return ParseMigration(body);
}

int RunShow(const ServerArgs& global, const MigrationsArgs& a) {
  auto conn = ResolveConnection(global, a.local);
  if (!conn.ok()) return ReportError(OutputMode::kText, "migration", conn.status());
  ApiClient client(*conn);
  auto m = GetMigration(client, a.id);
  if (!m.ok()) return ReportError(conn->mode, "migration", m.status());
  auto ev_body = client.Get(MigrationPath(a.id) + "/events?after=0");
  if (!ev_body.ok()) return ReportError(conn->mode, "migration", ev_body.status());
  auto events = ParseEventList(*ev_body);
  if (!events.ok()) return ReportError(conn->mode, "migration", events.status());
  if (conn->mode == OutputMode::kJson) {
    std::vector<std::string> items;
    for (const EventRecord& e : *events) items.push_back(e.json);
    std::printf(
        "%s\n",
        PrettyJson(JsonObject({{"migration", m->json}, {"events", JsonArray(items)}})).c_str());
  } else {
    std::printf("%s", FormatMigrationDetails(*m, *events, WallClockMs()).c_str());
  }
  return 0;
}

int RunWatch(const ServerArgs& global, const MigrationsArgs& a) {
  auto conn = ResolveConnection(global, a.local);
  if (!conn.ok()) return ReportError(OutputMode::kText, "watch", conn.status());
  ApiClient client(*conn);
  // One plain call first: an unknown id or an unreachable ferryd fails at once, not after
  // the watch's retry window.
  auto first = GetMigration(client, a.id);
  if (!first.ok()) return ReportError(conn->mode, "watch", first.status());
  auto finals = WatchMigrations(client, conn->mode, {a.id});
  if (!finals.ok()) return ReportError(conn->mode, "watch", finals.status());
  return ExitCodeForAll(*finals);
}

int RunCancel(const ServerArgs& global, const MigrationsArgs& a) {
  auto conn = ResolveConnection(global, a.local);
  if (!conn.ok()) return ReportError(OutputMode::kText, "cancel", conn.status());
  ApiClient client(*conn);
  auto body = client.Post(MigrationPath(a.id) + "/cancel", "{}");
  if (!body.ok()) return ReportError(conn->mode, "cancel", body.status());
  auto m = ParseMigration(*body);
  if (!m.ok()) return ReportError(conn->mode, "cancel", m.status());
  if (conn->mode == OutputMode::kJson) {
    std::printf("%s\n", a.wait ? m->json.c_str() : PrettyJson(m->json).c_str());
  } else {
    std::printf("%s (%s): %s\n", Printable(m->id).c_str(), Printable(m->vm).c_str(),
                Printable(m->state).c_str());
  }
  std::fflush(stdout);
  if (!a.wait) return 0;
  auto finals = WatchMigrations(client, conn->mode, {a.id});
  if (!finals.ok()) return ReportError(conn->mode, "cancel", finals.status());
  const MigrationRecord& end = finals->front();
  if (end.state == "cancelled") return 0;
  if (end.state == "completed") {
    std::fprintf(stderr, "ferry cancel: %s completed before the cancel took effect\n",
                 Printable(end.id).c_str());
    return 1;
  }
  return ExitCodeForOutcome(end);
}

}  // namespace

void AddMigrationsCommands(CLI::App& app, const ServerArgs* global, int* exit_code) {
  auto list = std::make_shared<MigrationsArgs>();
  CLI::App* cmd = app.add_subcommand("migrations", "List migrations (active ones by default)");
  cmd->add_flag("--all", list->all, "Also the finished ones");
  AddServerOptions(cmd, &list->local);
  cmd->callback([global, list, exit_code] { *exit_code = RunList(*global, *list); });

  auto show = std::make_shared<MigrationsArgs>();
  cmd = app.add_subcommand("migration", "Show one migration: state, result, events");
  cmd->add_option("ID", show->id, "Migration id")->required();
  AddServerOptions(cmd, &show->local);
  cmd->callback([global, show, exit_code] { *exit_code = RunShow(*global, *show); });

  auto watch = std::make_shared<MigrationsArgs>();
  cmd = app.add_subcommand("watch", "Follow a migration until it ends (exit status = outcome)");
  cmd->add_option("ID", watch->id, "Migration id")->required();
  AddServerOptions(cmd, &watch->local);
  cmd->callback([global, watch, exit_code] { *exit_code = RunWatch(*global, *watch); });

  auto cancel = std::make_shared<MigrationsArgs>();
  cmd = app.add_subcommand("cancel", "Cancel a migration (the VM stays on its source)");
  cmd->add_option("ID", cancel->id, "Migration id")->required();
  cmd->add_flag("--wait", cancel->wait, "Wait until the migration has ended");
  AddServerOptions(cmd, &cancel->local);
  cmd->callback([global, cancel, exit_code] { *exit_code = RunCancel(*global, *cancel); });
}

}  // namespace ferry::cli
