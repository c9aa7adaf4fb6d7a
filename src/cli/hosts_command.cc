// ferry hosts [--cached] [add ID --agent URL --agent-token T [--cluster C] [--name N] |
// remove ID | refresh ID]: the hosts ferryd manages (GET/POST/DELETE /api/v1/hosts...); the
// list is read from the hosts now unless --cached.
#include <cstdio>

#include "cli/api_client.h"
#include "cli/api_format.h"
#include "cli/commands.h"
#include "cli/output.h"

namespace ferry::cli {
namespace {

struct HostsArgs {
  ServerArgs local;
  std::string id, agent_url, agent_token, cluster, name;
  bool cached = false;
};

std::string HostPath(const std::string& id) { return "/api/v1/hosts/" + api::UrlEncode(id); }

int RunHostsList(const ServerArgs& global, const HostsArgs& a) {
  auto conn = ResolveConnection(global, a.local);
  if (!conn.ok()) return ReportError(OutputMode::kText, "hosts", conn.status());
  ApiClient client(*conn);
  auto body = client.Get(a.cached ? "/api/v1/hosts?cached=true" : "/api/v1/hosts");
  if (!body.ok()) return ReportError(conn->mode, "hosts", body.status());
  auto hosts = ParseHostList(*body);
  if (!hosts.ok()) return ReportError(conn->mode, "hosts", hosts.status());
  if (conn->mode == OutputMode::kJson) {
    std::vector<std::string> items;
    for (const HostRecord& h : *hosts) items.push_back(h.json);
    std::printf("%s\n", PrettyJson(JsonObject({{"hosts", JsonArray(items)}})).c_str());
  } else {
    std::printf("%s", FormatHostsTable(*hosts).c_str());
  }
  return 0;
}

// add, refresh: a call that answers one Host, printed as a one-row table or as JSON.
int RunHostCall(const ServerArgs& global, const HostsArgs& a, const std::string& command) {
  const std::string name = "hosts " + command;
  auto conn = ResolveConnection(global, a.local);
  if (!conn.ok()) return ReportError(OutputMode::kText, name, conn.status());
  ApiClient client(*conn);
  Result<std::string> body =
      command == "add" ? client.Post("/api/v1/hosts", HostCreateJson(a.id, a.name, a.cluster,
                                                                     a.agent_url, a.agent_token))
                       : client.Post(HostPath(a.id) + "/refresh", "{}");
  if (!body.ok()) return ReportError(conn->mode, name, body.status());
  auto host = ParseHost(*body);
  if (!host.ok()) return ReportError(conn->mode, name, host.status());
  if (conn->mode == OutputMode::kJson) {
    std::printf("%s\n", PrettyJson(host->json).c_str());
  } else {
    std::printf("%s", FormatHostsTable({*host}).c_str());
  }
  return 0;
}

int RunHostsRemove(const ServerArgs& global, const HostsArgs& a) {
  auto conn = ResolveConnection(global, a.local);
  if (!conn.ok()) return ReportError(OutputMode::kText, "hosts remove", conn.status());
  ApiClient client(*conn);
  auto body = client.Delete(HostPath(a.id));
  if (!body.ok()) return ReportError(conn->mode, "hosts remove", body.status());
  if (conn->mode == OutputMode::kJson) {
    std::printf("%s\n", JsonObject({{"removed", JsonString(a.id)}}).c_str());
  } else {
    std::printf("host %s removed\n", Printable(a.id).c_str());
  }
  return 0;
}

}  // namespace

void AddHostsCommand(CLI::App& app, const ServerArgs* global, int* exit_code) {
  auto args = std::make_shared<HostsArgs>();
  CLI::App* hosts = app.add_subcommand("hosts", "List, add, remove or refresh ferryd's hosts");
  AddServerOptions(hosts, &args->local);
  hosts->add_flag("--cached", args->cached,
                  "List from ferryd's periodic inventory instead of asking the agents now");
  hosts->require_subcommand(0, 1);

  CLI::App* add = hosts->add_subcommand("add", "Register a host (its ferry-agent)");
  add->add_option("ID", args->id, "Host id, e.g. host3")->required();
  add->add_option("--agent", args->agent_url, "The agent's URL, e.g. http://127.0.0.13:7801")
      ->required();
  add->add_option("--agent-token", args->agent_token, "The agent's bearer token")->required();
  add->add_option("--cluster", args->cluster, "Cluster the host belongs to");
  add->add_option("--name", args->name, "Display name (default: the id)");
  AddServerOptions(add, &args->local);
  add->callback([global, args, exit_code] { *exit_code = RunHostCall(*global, *args, "add"); });

  CLI::App* remove = hosts->add_subcommand("remove", "Forget a host (its VMs are not touched)");
  remove->add_option("ID", args->id, "Host id")->required();
  AddServerOptions(remove, &args->local);
  remove->callback([global, args, exit_code] { *exit_code = RunHostsRemove(*global, *args); });

  CLI::App* refresh = hosts->add_subcommand("refresh", "Read a host's inventory now");
  refresh->add_option("ID", args->id, "Host id")->required();
  AddServerOptions(refresh, &args->local);
  refresh->callback(
      [global, args, exit_code] { *exit_code = RunHostCall(*global, *args, "refresh"); });

  hosts->callback([hosts, global, args, exit_code] {
    if (hosts->get_subcommands().empty()) *exit_code = RunHostsList(*global, *args);
  });
}

}  // namespace ferry::cli
