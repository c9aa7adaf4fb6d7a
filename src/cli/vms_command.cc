// ferry vms [--host H]: the VMs in ferryd's inventory cache (GET /api/v1/vms).
#include <cstdio>

#include "cli/api_client.h"
#include "cli/api_format.h"
#include "cli/commands.h"
#include "cli/output.h"

namespace ferry::cli {
namespace {

struct VmsArgs {
  ServerArgs local;
  std::string host;
};

int RunVms(const ServerArgs& global, const VmsArgs& a) {
  auto conn = ResolveConnection(global, a.local);
  if (!conn.ok()) return ReportError(OutputMode::kText, "vms", conn.status());
  ApiClient client(*conn);
  std::string path = "/api/v1/vms";
  if (!a.host.empty()) path += "?host=" + api::UrlEncode(a.host);
  auto body = client.Get(path);
  if (!body.ok()) return ReportError(conn->mode, "vms", body.status());
  auto vms = ParseVmList(*body);
  if (!vms.ok()) return ReportError(conn->mode, "vms", vms.status());
  if (conn->mode == OutputMode::kJson) {
    std::vector<std::string> items;
    for (const VmRecord& v : *vms) items.push_back(v.json);
    std::printf("%s\n", PrettyJson(JsonObject({{"vms", JsonArray(items)}})).c_str());
  } else {
    std::printf("%s", FormatVmsTable(*vms).c_str());
  }
  return 0;
}

}  // namespace

void AddVmsCommand(CLI::App& app, const ServerArgs* global, int* exit_code) {
  auto args = std::make_shared<VmsArgs>();
  CLI::App* cmd = app.add_subcommand("vms", "List the VMs on ferryd's hosts");
  cmd->add_option("--host", args->host, "Only this host's VMs");
  AddServerOptions(cmd, &args->local);
  cmd->callback([global, args, exit_code] { *exit_code = RunVms(*global, *args); });
}

}  // namespace ferry::cli
