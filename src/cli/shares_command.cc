// ferry shares [--host H]: the VMs in the agents' export shares (GET /api/v1/shares), what a
// plan with source {type: share} can name.
#include <cstdio>

#include "cli/api_client.h"
#include "cli/api_format.h"
#include "cli/commands.h"
#include "cli/output.h"

namespace ferry::cli {
namespace {

struct SharesArgs {
  ServerArgs local;
  std::string host;
};

int RunShares(const ServerArgs& global, const SharesArgs& a) {
  auto conn = ResolveConnection(global, a.local);
  if (!conn.ok()) return ReportError(OutputMode::kText, "shares", conn.status());
  ApiClient client(*conn);
  std::string path = "/api/v1/shares";
  if (!a.host.empty()) path += "?host=" + api::UrlEncode(a.host);
  auto body = client.Get(path);
  if (!body.ok()) return ReportError(conn->mode, "shares", body.status());
  auto vms = ParseShareVmList(*body);
  if (!vms.ok()) return ReportError(conn->mode, "shares", vms.status());
  if (conn->mode == OutputMode::kJson) {
    std::vector<std::string> items;
    for (const ShareVmRecord& v : *vms) items.push_back(v.json);
    std::printf("%s\n", PrettyJson(JsonObject({{"vms", JsonArray(items)}})).c_str());
  } else {
    std::printf("%s", FormatShareVmsTable(*vms).c_str());
  }
  return 0;
}

}  // namespace

void AddSharesCommand(CLI::App& app, const ServerArgs* global, int* exit_code) {
  auto args = std::make_shared<SharesArgs>();
  CLI::App* cmd = app.add_subcommand("shares", "List the VMs in the agents' export shares");
  cmd->add_option("--host", args->host, "Only this host's shares");
  AddServerOptions(cmd, &args->local);
  cmd->callback([global, args, exit_code] { *exit_code = RunShares(*global, *args); });
}

}  // namespace ferry::cli
