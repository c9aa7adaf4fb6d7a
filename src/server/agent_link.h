// AgentLink: what ferryd needs from one host's ferry-agent (docs/control-plane.md, "Agent
// API"). The real link is api::AgentClient over HTTP (MakeHttpAgentLink); unit tests of the
// scheduler use fakes. The value types are the API's own (api/agent_json.h).
//
// Thread-safety: implementations must allow concurrent calls.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "agent/migration_job.h"
#include "api/agent_json.h"
#include "common/status.h"
#include "hypervisor/inventory.h"
#include "hypervisor/operations.h"

namespace ferry::server {

class AgentLink {
 public:
  virtual ~AgentLink() = default;
  virtual Result<api::AgentHealth> Health() = 0;
  virtual Result<hypervisor::Inventory> Inventory() = 0;
  virtual Result<api::VmXml> GetVmXml(const std::string& vm) = 0;
  // `target`: where the guest would run (its domain type, arch, machine).
  virtual Result<hypervisor::CpuCheck> CheckCpu(const std::string& cpu_xml,
                                                const hypervisor::CpuTarget& target) = 0;
  virtual Result<api::PlatformCheck> CheckPlatform(const api::PlatformCheckRequest& request) = 0;
  // Idempotent by spec.id: starting a job the agent already has returns it.
  virtual Result<api::AgentJob> StartJob(const agent::MigrationJobSpec& spec) = 0;
  virtual Result<api::AgentJob> GetJob(const std::string& id) = 0;  // kNotFound if unknown
  virtual Result<api::AgentJob> CancelJob(const std::string& id) = 0;
  // Cold migrations (docs/plans.md). Links without them (the live-migration tests' fakes)
  // keep these defaults, which answer kUnsupported naming the call.
  virtual Result<api::AgentJob> ProceedJob(const std::string& id);
  virtual Result<std::vector<api::ShareInfo>> ListShares();
  virtual Result<api::ShareListing> ListShareVms(const std::string& share);
  // A libvirt VM's description (disks with their pools, NICs, firmware ...), for plans with
  // a kvm source: GET /agent/v1/vms/{name}/description.
  virtual Result<sources::VmDescription> DescribeVm(const std::string& vm);
  virtual Result<agent::ExportInfo> GetExport(const std::string& id);
  virtual Result<agent::ExportInfo> CloseExport(const std::string& id, bool restore_power);
  // The entry names in a target pool's folder (GET /agent/v1/pools/{name}/files), for the
  // plans' name_clash check.
  virtual Result<std::vector<std::string>> ListPoolFiles(const std::string& pool);
};

// Makes the link for an agent URL + token.
using AgentLinkFactory =
    std::function<std::unique_ptr<AgentLink>(const std::string& url, const std::string& token)>;

// The HTTP link (api::AgentClient underneath).
std::unique_ptr<AgentLink> MakeHttpAgentLink(const std::string& url, const std::string& token,
                                             int64_t timeout_ms);

}  // namespace ferry::server
