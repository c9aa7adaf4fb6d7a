// ferry vms [--host H] [--cached]: the VMs on ferryd's hosts (GET /api/v1/vms), read from
// the hosts now unless --cached; a host that could not be read is named on stderr, since its
// VMs are then the ones it had when last seen.
#include <chrono>
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
  bool cached = false;
};

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

int RunVms(const ServerArgs& global, const VmsArgs& a) {
  auto conn = ResolveConnection(global, a.local);
  if (!conn.ok()) return ReportError(OutputMode::kText, "vms", conn.status());
  ApiClient client(*conn);
  std::string path = "/api/v1/vms";
  std::string query;
  if (!a.host.empty()) query += "&host=" + api::UrlEncode(a.host);
  if (a.cached) query += "&cached=true";
  if (!query.empty()) path += "?" + query.substr(1);
  auto body = client.Get(path);
  if (!body.ok()) return ReportError(conn->mode, "vms", body.status());
  auto vms = ParseVmList(*body);
  if (!vms.ok()) return ReportError(conn->mode, "vms", vms.status());
  auto hosts = ParseVmListHosts(*body);
  if (!hosts.ok()) return ReportError(conn->mode, "vms", hosts.status());
  for (const HostRecord& h : *hosts) {
    if (h.status == "up") continue;
    std::string seen = h.last_seen_at_ms > 0 ? "its VMs are listed as last seen, " +
                                                   FormatAge(NowMs() - h.last_seen_at_ms) + " ago"
                                             : "it was never read";
    std::fprintf(stderr, "ferry vms: host %s is down (%s); %s\n", Printable(h.id).c_str(),
                 Printable(h.error).c_str(), seen.c_str());
  }
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
  cmd->add_flag("--cached", args->cached,
                "Answer from ferryd's periodic inventory instead of reading the hosts now");
  AddServerOptions(cmd, &args->local);
  cmd->callback([global, args, exit_code] { *exit_code = RunVms(*global, *args); });
}

}  // namespace ferry::cli
