// Migration planning: which transfer type moves a VM from its host to a target (the way
// System Center VMM shows a "transfer type" per move), and the checks that must all pass
// before anything moves (docs/migration.md, "Validation"). Pure logic over inventories and
// the results of the agents' CPU/platform checks, so it is unit-tested without hosts.
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "hypervisor/inventory.h"
#include "hypervisor/operations.h"
#include "server/agent_link.h"

namespace ferry::server {

struct MigrationRequest {
  std::vector<std::string> vms;
  std::string evacuate;  // a host whose every VM moves
  std::string source;    // optional: the VMs' host (found from the inventory otherwise)
  std::string to;        // target host ("" = same host: live-storage)
  std::string storage;   // target pool ("" = disks stay where they are)
  std::string type = "auto";
  int64_t max_downtime_ms = 300;
  uint64_t bandwidth = 0;  // bytes/s, 0 = no cap
  bool allow_postcopy = false;
  int priority = 0;
};

// Parses and checks a request body (untrusted): kInvalidArgument naming the field.
Result<MigrationRequest> ParseMigrationRequest(const std::string& json_text);
std::string MigrationRequestToJson(const MigrationRequest& request);

struct Check {
  std::string name;
  bool ok = false;
  std::string message;
};

// One host as the planner sees it.
struct HostView {
  std::string id;
  bool reachable = false;
  std::string error;  // why not reachable
  hypervisor::Inventory inventory;
};

struct PlanInput {
  const HostView* source = nullptr;
  const HostView* target = nullptr;  // == source for live-storage
  const hypervisor::VmInfo* vm = nullptr;
  const MigrationRequest* request = nullptr;
  // Results of the target agent's checks; nullopt = not asked (or the agent failed: then
  // `agent_error` says why).
  std::optional<hypervisor::CpuCheck> cpu;
  std::optional<api::PlatformCheck> platform;
  std::string agent_error;
};

struct MigrationPlan {
  std::string vm;
  std::string vm_uuid;
  std::string source;
  std::string target;
  std::string type;  // chosen transfer type ("" if none applies)
  std::vector<Check> checks;

  bool ok() const;
  // "cpu_compatible: ...; networks: ..." for the failed checks.
  std::string FailureSummary() const;
};

// The transfer types (agent::MigrationKind names) and "auto".
bool IsKnownType(const std::string& type);

// Chooses the type (if auto) and runs every check.
MigrationPlan PlanMigration(const PlanInput& in);

// Whether `path` lies in a pool `host` has (a pool whose target path is a folder of it).
const hypervisor::PoolInfo* PoolHolding(const hypervisor::Inventory& host,
                                        const std::string& path);

std::string PlanToJson(const MigrationPlan& plan);

}  // namespace ferry::server
