// AgentClient over HttpClient (see agent_client.h).
#include "api/agent_client.h"

#include <utility>

#include "sources/vm_description.h"

namespace ferry::api {

namespace {
constexpr char kPrefix[] = "/agent/v1";
}  // namespace

AgentClient::AgentClient(std::string url, std::string token, HttpClientOptions options)
    : http_(std::move(url), std::move(token), options) {}

template <typename T>
Result<T> AgentClient::Decode(Result<std::string> body, const std::string& what) const {
  if (!body.ok()) return std::move(body).status();
  T value{};
  Status s = FromJson(*body, &value);
  if (!s.ok()) return s.WithContext("agent " + url() + ": " + what + " answer");
  return value;
}

Result<AgentHealth> AgentClient::Health() const {
  return Decode<AgentHealth>(http_.Get(std::string(kPrefix) + "/health"), "health");
}

Result<AgentInventory> AgentClient::Inventory() const {
  return Decode<AgentInventory>(http_.Get(std::string(kPrefix) + "/inventory"), "inventory");
}

Result<hypervisor::VmInfo> AgentClient::GetVm(const std::string& name) const {
  return Decode<hypervisor::VmInfo>(http_.Get(std::string(kPrefix) + "/vms/" + UrlEncode(name)),
                                    "vm " + name);
}

Result<VmXml> AgentClient::GetVmXml(const std::string& name) const {
  return Decode<VmXml>(http_.Get(std::string(kPrefix) + "/vms/" + UrlEncode(name) + "/xml"),
                       "vm " + name + " xml");
}

Result<hypervisor::CpuCheck> AgentClient::CheckCpu(const std::string& cpu_xml,
                                                   const hypervisor::CpuTarget& target) const {
  return Decode<hypervisor::CpuCheck>(
      http_.Post(std::string(kPrefix) + "/checks/cpu", ToJson(CpuCheckRequest{cpu_xml, target})),
      "cpu check");
}

Result<PlatformCheck> AgentClient::CheckPlatform(const PlatformCheckRequest& request) const {
  return Decode<PlatformCheck>(
      http_.Post(std::string(kPrefix) + "/checks/platform", ToJson(request)), "platform check");
}

Result<AgentJob> AgentClient::StartJob(const agent::MigrationJobSpec& spec) const {
  return Decode<AgentJob>(http_.Post(std::string(kPrefix) + "/jobs", ToJson(spec)),
                          "start job " + spec.id);
}

Result<AgentJob> AgentClient::GetJob(const std::string& id) const {
  return Decode<AgentJob>(http_.Get(std::string(kPrefix) + "/jobs/" + UrlEncode(id)), "job " + id);
}

Result<std::vector<AgentJob>> AgentClient::ListJobs() const {
  return Decode<std::vector<AgentJob>>(http_.Get(std::string(kPrefix) + "/jobs"), "jobs");
}

Result<AgentJob> AgentClient::CancelJob(const std::string& id) const {
  return Decode<AgentJob>(
      http_.Post(std::string(kPrefix) + "/jobs/" + UrlEncode(id) + "/cancel", "{}"),
      "cancel job " + id);
}

Result<std::vector<ShareInfo>> AgentClient::ListShares() const {
  return Decode<std::vector<ShareInfo>>(http_.Get(std::string(kPrefix) + "/shares"), "shares");
}

Result<ShareListing> AgentClient::ListShareVms(const std::string& share) const {
  return Decode<ShareListing>(
      http_.Get(std::string(kPrefix) + "/shares/" + UrlEncode(share) + "/vms"),
      "share " + share + " vms");
}

Result<agent::ExportInfo> AgentClient::CreateExport(const agent::ExportSpec& spec) const {
  return Decode<agent::ExportInfo>(http_.Post(std::string(kPrefix) + "/exports", ToJson(spec)),
                                   "create export " + spec.id);
}

Result<agent::ExportInfo> AgentClient::GetExport(const std::string& id) const {
  return Decode<agent::ExportInfo>(http_.Get(std::string(kPrefix) + "/exports/" + UrlEncode(id)),
                                   "export " + id);
}

Result<agent::ExportInfo> AgentClient::CloseExport(const std::string& id,
                                                   bool restore_power) const {
  return Decode<agent::ExportInfo>(http_.Delete(std::string(kPrefix) + "/exports/" + UrlEncode(id) +
                                                "?restore_power=" + (restore_power ? "1" : "0")),
                                   "close export " + id);
}

Result<sources::VmDescription> AgentClient::DescribeVm(const std::string& name) const {
  Result<std::string> body =
      http_.Get(std::string(kPrefix) + "/vms/" + UrlEncode(name) + "/description");
  if (!body.ok()) return std::move(body).status();
  Result<sources::VmDescription> vm = sources::VmDescriptionFromJson(
      *body, "agent " + url() + ": vm " + name + " description answer");
  // A malformed answer is invalid_argument, as for every other answer (agent_client.h).
  if (!vm.ok()) return Status::InvalidArgument(vm.status().message());
  return vm;
}

Result<AgentJob> AgentClient::ProceedJob(const std::string& id) const {
  return Decode<AgentJob>(
      http_.Post(std::string(kPrefix) + "/jobs/" + UrlEncode(id) + "/proceed", "{}"),
      "proceed job " + id);
}

Result<PoolFiles> AgentClient::ListPoolFiles(const std::string& pool) const {
  return Decode<PoolFiles>(http_.Get(std::string(kPrefix) + "/pools/" + UrlEncode(pool) + "/files"),
                           "pool " + pool + " files");
}

}  // namespace ferry::api
