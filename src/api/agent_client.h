// AgentClient: the typed client of one ferry-agent's /agent/v1 API (docs/control-plane.md),
// used by ferryd. Each call is one HTTP request; answers are parsed as untrusted input
// (agent_json.h), so a malformed answer is kInvalidArgument naming the field.
//
// Errors: an error the agent answers comes back with its ErrorCode and message (a job the
// agent never saw: kNotFound; a wrong token: kPermissionDenied); an agent that cannot be
// reached is kIo naming the URL.
//
// Thread-safety: every method is const and may be called from several threads at once.
#pragma once

#include <string>
#include <vector>

#include "agent/migration_job.h"
#include "api/agent_json.h"
#include "api/http.h"
#include "common/status.h"
#include "hypervisor/inventory.h"
#include "hypervisor/operations.h"

namespace ferry::api {

class AgentClient {
 public:
  // url: "http://127.0.0.11:7801".
  AgentClient(std::string url, std::string token, HttpClientOptions options = {});

  const std::string& url() const { return http_.base_url(); }

  Result<AgentHealth> Health() const;
  Result<AgentInventory> Inventory() const;
  Result<hypervisor::VmInfo> GetVm(const std::string& name) const;
  Result<VmXml> GetVmXml(const std::string& name) const;
  // Can a guest with this <cpu> XML (or whole domain XML) run on the agent's host? `target`
  // says where (virttype "qemu" for TCG guests); empty fields: from the XML or libvirt's
  // defaults.
  Result<hypervisor::CpuCheck> CheckCpu(const std::string& cpu_xml,
                                        const hypervisor::CpuTarget& target = {}) const;
  Result<PlatformCheck> CheckPlatform(const PlatformCheckRequest& request) const;

  // Starts a migration job on the agent's host. Idempotent: starting the same spec (same id)
  // again returns the existing job; the same id with a different spec is kAlreadyExists.
  Result<AgentJob> StartJob(const agent::MigrationJobSpec& spec) const;
  Result<AgentJob> GetJob(const std::string& id) const;
  Result<std::vector<AgentJob>> ListJobs() const;
  // Asks the job to stop; returns the job (still running until the job has cleaned up, or
  // already final).
  Result<AgentJob> CancelJob(const std::string& id) const;
  // A cold job waiting in awaiting-deploy goes on.
  Result<AgentJob> ProceedJob(const std::string& id) const;

  // --- Cold migrations (docs/plans.md) ---
  Result<std::vector<ShareInfo>> ListShares() const;
  Result<ShareListing> ListShareVms(const std::string& share) const;
  // Idempotent by spec.id (same spec: the existing export).
  Result<agent::ExportInfo> CreateExport(const agent::ExportSpec& spec) const;
  Result<agent::ExportInfo> GetExport(const std::string& id) const;  // kNotFound
  Result<agent::ExportInfo> CloseExport(const std::string& id, bool restore_power) const;
  // GET /agent/v1/vms/{name}/description: a libvirt VM as a VmDescription.
  Result<sources::VmDescription> DescribeVm(const std::string& name) const;
  // GET /agent/v1/pools/{name}/files: the entries of a pool's folder (kNotFound: no pool).
  Result<PoolFiles> ListPoolFiles(const std::string& pool) const;

 private:
  template <typename T>
  Result<T> Decode(Result<std::string> body, const std::string& what) const;

  HttpClient http_;
};

}  // namespace ferry::api
