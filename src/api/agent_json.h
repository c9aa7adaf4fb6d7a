// JSON mapping of the agent API's types (docs/control-plane.md, "Agent API"): the hypervisor
// inventory (src/hypervisor/inventory.h), CPU checks, migration job specs, progress and
// results (src/agent/migration_job.h), and the agent's Job record. Field names are those of
// the C++ structs (already snake case); enums travel as their lower-case names.
//
// Parsing treats the text as UNTRUSTED (it comes from a peer or a request body): a wrong
// type, a missing required field, an unknown enum name, a negative or absurd number or an
// over-long list is kInvalidArgument naming the field path, e.g.
//   "jobs[2].progress.bytes_done: expected an unsigned integer".
// Unknown fields are ignored (a newer peer may send more). Required fields are listed at each
// type below; every other field may be absent and keeps the struct's default.
// The JSON library stays inside agent_json.cc.
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agent/cold_spec.h"
#include "agent/migration_job.h"
#include "common/status.h"
#include "hypervisor/inventory.h"
#include "hypervisor/operations.h"
#include "sources/share.h"

namespace ferry::api {

// Caps on lists in parsed input (a peer cannot make us hold unbounded lists of records).
constexpr size_t kMaxJsonListItems = 100000;
constexpr size_t kMaxJobEvents = 200;  // events a job keeps (the agent drops the oldest)

// GET /agent/v1/health.
struct AgentHealth {
  std::string host_id;  // required
  std::string version;
  std::string libvirt_uri;
  std::string migration_uri;
};

// GET /agent/v1/inventory: the host's inventory plus the address QEMU migration streams to
// this host use ("migration_uri" inside "host").
struct AgentInventory {
  hypervisor::Inventory inventory;
  std::string migration_uri;
};

// GET /agent/v1/vms/{name}/xml.
struct VmXml {
  std::string xml;      // required: the migratable live domain XML
  std::string cpu_xml;  // its <cpu> element ("" if the domain has none)
};

// POST /agent/v1/checks/cpu request: the guest's <cpu> element (or its whole domain XML) and,
// optionally, where it would run (virttype "qemu" for TCG guests: libvirt otherwise assumes
// "kvm" wherever /dev/kvm exists).
struct CpuCheckRequest {
  std::string cpu_xml;           // required, non-empty
  hypervisor::CpuTarget target;  // "virttype", "arch", "machine"; each optional
};

// POST /agent/v1/checks/platform request and answer.
struct PlatformCheckRequest {
  std::string arch;                                             // required, e.g. "x86_64"
  std::string machine;                                          // required, e.g. "pc-i440fx-7.2"
  hypervisor::Firmware firmware = hypervisor::Firmware::kBios;  // required: "bios" | "uefi"
};
struct PlatformCheck {
  bool machine_ok = false;   // required
  bool firmware_ok = false;  // required
  std::string message;
};

enum class AgentJobState { kRunning, kSucceeded, kFailed, kCancelled };
std::string_view AgentJobStateName(AgentJobState state);  // "running", "succeeded", ...
bool IsFinal(AgentJobState state);

struct AgentJobEvent {
  int64_t at_ms = 0;  // required
  std::string kind;   // required: "info", "warning", "phase", "state", "error"
  std::string message;
};

// A migration job as the agent reports it.
// Required: id, kind, vm, state, started_at_ms.
struct AgentJob {
  std::string id;
  agent::MigrationKind kind = agent::MigrationKind::kLive;
  std::string vm;
  AgentJobState state = AgentJobState::kRunning;
  agent::JobProgress progress;
  std::optional<agent::JobResult> result;  // set when succeeded
  Status error;                            // OK = none ("error": null)
  std::vector<AgentJobEvent> events;       // oldest first, at most kMaxJobEvents
  int64_t started_at_ms = 0;
  int64_t finished_at_ms = 0;  // 0 while running
};

// What the agent keeps in state_dir/jobs/<id>.json: the job and the spec it was started with
// (so a retried start after a restart is still recognized). {"version":1,"spec":..,"job":..}
struct AgentJobRecord {
  agent::MigrationJobSpec spec;
  AgentJob job;
};

// A job id is also a file name: 1-128 characters of [A-Za-z0-9._-], not starting with '.'.
bool IsValidJobId(std::string_view id);

// "live", "live-storage", "live-vsm", "quick", "reregister" (the wire names of the doc).
std::string_view MigrationKindWireName(agent::MigrationKind kind);
Result<agent::MigrationKind> MigrationKindFromWireName(std::string_view name);

// "identical", "superset", "incompatible", "error".
std::string_view CpuCompatibilityName(hypervisor::CpuCompatibility c);

// --- Cold migrations (docs/plans.md, "Agent API additions") ------------------------------

// GET /agent/v1/shares: {"shares": [ShareInfo]}.
struct ShareInfo {
  std::string name;  // required
  std::string path;
  bool writable = false;
};

// GET /agent/v1/shares/{name}/vms: {"vms": [ShareVm], "problems": [...]}.
struct ShareListing {
  std::vector<sources::ShareVm> vms;
  std::vector<std::string> problems;
};

// GET /agent/v1/pools/{name}/files: the names of the entries in a storage pool's folder (not
// recursive, hidden ones included, sorted), so that ferryd's plan validation can refuse a disk
// file name that is taken (docs/plans.md, "name_clash"). Required: pool, files.
struct PoolFiles {
  std::string pool;
  std::vector<std::string> files;
};

// --- Serialization -----------------------------------------------------------------------
std::string ToJson(const AgentHealth& health);
std::string ToJson(const AgentInventory& inventory);
std::string ToJson(const hypervisor::HostFacts& facts);
std::string ToJson(const hypervisor::VmInfo& vm);
std::string ToJson(const hypervisor::PoolInfo& pool);
std::string ToJson(const hypervisor::NetworkInfo& network);
std::string ToJson(const VmXml& xml);
// {"compatible","result","message"}.
std::string ToJson(const hypervisor::CpuCheck& check);
std::string ToJson(const PlatformCheckRequest& request);
std::string ToJson(const PlatformCheck& check);
std::string ToJson(const agent::MigrationJobSpec& spec);
std::string ToJson(const agent::JobProgress& progress);
std::string ToJson(const agent::JobResult& result);
std::string ToJson(const AgentJob& job);
std::string ToJson(const AgentJobRecord& record);
// {"jobs": [Job...]}.
std::string ToJson(const std::vector<AgentJob>& jobs);
std::string ToJson(const CpuCheckRequest& request);
std::string ToJson(const std::vector<ShareInfo>& shares);
std::string ToJson(const ShareListing& listing);
std::string ToJson(const sources::ShareVm& vm);
std::string ToJson(const agent::ExportSpec& spec);
std::string ToJson(const agent::ExportInfo& info);
std::string ToJson(const plan::TargetVm& vm);
std::string ToJson(const PoolFiles& files);

// --- Parsing (untrusted input) -------------------------------------------------------------
// On error *out is unspecified.
Status FromJson(std::string_view json, AgentHealth* out);
// Required: host.hostname, vms[].name, vms[].state, pools[].name, networks[].name.
Status FromJson(std::string_view json, AgentInventory* out);
Status FromJson(std::string_view json, hypervisor::HostFacts* out);
Status FromJson(std::string_view json, hypervisor::VmInfo* out);
Status FromJson(std::string_view json, hypervisor::PoolInfo* out);
Status FromJson(std::string_view json, hypervisor::NetworkInfo* out);
Status FromJson(std::string_view json, VmXml* out);
// Required: result (message optional); "compatible" must agree with result if present.
Status FromJson(std::string_view json, hypervisor::CpuCheck* out);
Status FromJson(std::string_view json, PlatformCheckRequest* out);
Status FromJson(std::string_view json, PlatformCheck* out);
// Required: id (IsValidJobId), kind, vm. Durations and rates are range-checked.
Status FromJson(std::string_view json, agent::MigrationJobSpec* out);
Status FromJson(std::string_view json, agent::JobProgress* out);
Status FromJson(std::string_view json, agent::JobResult* out);
Status FromJson(std::string_view json, AgentJob* out);
Status FromJson(std::string_view json, AgentJobRecord* out);
// {"jobs": [...]}.
Status FromJson(std::string_view json, std::vector<AgentJob>* out);
Status FromJson(std::string_view json, CpuCheckRequest* out);
Status FromJson(std::string_view json, std::vector<ShareInfo>* out);
Status FromJson(std::string_view json, ShareListing* out);
Status FromJson(std::string_view json, sources::ShareVm* out);
// Required: id (IsValidJobId) and exactly one of vm / share+share_vm.
Status FromJson(std::string_view json, agent::ExportSpec* out);
Status FromJson(std::string_view json, agent::ExportInfo* out);
Status FromJson(std::string_view json, plan::TargetVm* out);
Status FromJson(std::string_view json, PoolFiles* out);

}  // namespace ferry::api
