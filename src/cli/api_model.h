// What the `ferry` management commands read from ferryd's /api/v1 (docs/control-plane.md),
// as plain values, and the JSON mapping both ways (nlohmann::json stays in api_model.cc).
//
// ferryd's answers are untrusted input: every Parse* function checks each field it reads
// (type, range, required) and fails with kCorrupt naming the field's path
// ("migrations[2].progress.bytes_done: expected a non-negative integer, got string"); it
// never throws and never aborts. Absent or null optional fields take the defaults below.
// Each parsed record also keeps its object as compact JSON (`json`) so --output json can print
// exactly what the server said.
//
// Thread-safety: plain values and pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"

namespace ferry::cli {

struct HostFactsRecord {
  std::string hostname, uri, cpu_model, cpu_arch, libvirt_version, hypervisor, migration_uri;
  int64_t cpus = 0;
  uint64_t memory_bytes = 0;
  uint64_t free_memory_bytes = 0;
};

struct HostRecord {
  std::string id, name, cluster, agent_url, status;  // status: "up" | "down"
  int64_t last_seen_at_ms = 0;
  bool has_facts = false;  // false when ferryd sent "facts": {}
  HostFactsRecord facts;
  int64_t vm_count = 0;
  std::string error;  // why the last read failed (status "down")
  std::string json;
};

struct DiskRecord {
  std::string target, device, format, source_path, pool;
  uint64_t capacity_bytes = 0;
  uint64_t allocation_bytes = 0;
};

struct VmRecord {
  std::string host, name, uuid, state, firmware, machine_type;
  int64_t vcpus = 0;
  uint64_t memory_bytes = 0;
  std::vector<DiskRecord> disks;
  size_t nic_count = 0;
  std::string json;
};

struct CheckRecord {
  std::string vm;  // set when the server says which VM a check was about
  std::string name;
  bool ok = false;
  std::string message;
};

struct ProgressRecord {
  std::string phase;
  uint64_t bytes_total = 0, bytes_done = 0, bytes_remaining = 0, rate = 0, dirty_rate = 0;
  uint64_t iteration = 0;
  int64_t eta_ms = -1;  // -1 = not known
  int64_t downtime_limit_ms = 0;
  int64_t throttle_percent = 0;
  bool postcopy = false;
  std::optional<double> percent;  // 0..100
};

// A cold migration's boot check on the target (JobResult::BootCheck).
struct BootCheckRecord {
  bool checked = false;  // a marker was set and the VM was started
  bool ok = false;
  int64_t elapsed_ms = -1;  // start to marker
  std::string message;
};

struct ResultRecord {
  int64_t total_ms = 0;
  uint64_t bytes_sent = 0;
  int64_t qemu_downtime_ms = -1;   // -1 = not applicable
  int64_t guest_downtime_ms = -1;  // -1 = not measured
  std::vector<std::string> notes;
  std::string defined_vm;               // cold: the VM defined on the target
  std::optional<BootCheckRecord> boot;  // cold: absent when the server sent none
};

struct ErrorRecord {
  std::string code;  // wire name: "io", "cancelled", ...
  std::string message;
};

struct MigrationRecord {
  std::string id, vm, vm_uuid, source, target, type, state, phase;
  int64_t priority = 0;
  ProgressRecord progress;
  std::optional<ResultRecord> result;
  std::optional<ErrorRecord> error;
  int64_t created_at_ms = 0, updated_at_ms = 0;
  std::string json;

  // completed, failed or cancelled.
  bool IsFinal() const;
};

struct EventRecord {
  int64_t seq = 0;
  int64_t at_ms = 0;
  std::string kind;  // state, phase, progress, info, warning, error
  std::string message;
  std::string json;
};

struct PlanRecord {
  std::string vm, type;
  std::vector<CheckRecord> checks;
};

struct ValidationRecord {
  bool ok = false;
  std::vector<PlanRecord> plans;
  std::string json;
};

// A plan's VM (docs/plans.md, "ferryd API additions": Plan.vms[]).
struct PlanVmRecord {
  std::string vm, target_name;
  std::string migration;  // its migration's id ("" before the plan started)
  std::string state, phase;
  ProgressRecord progress;
  std::optional<ResultRecord> result;
  std::optional<ErrorRecord> error;
};

// A migration plan (POST/GET /api/v1/plans...). `json` keeps the whole record, document included.
struct PlanStatusRecord {
  std::string id, name;
  std::string state;  // ready, running, completed, failed, cancelled, partial
  int64_t created_at_ms = 0, updated_at_ms = 0;
  std::vector<PlanVmRecord> vms;
  std::string json;

  // completed, failed, cancelled or partial.
  bool IsFinal() const;
};

// A VM in an export share (GET /api/v1/shares: ShareVm + "host"), the description summed up.
struct ShareVmRecord {
  std::string host, id, share;
  std::string name, platform, firmware;  // the description's
  int64_t vcpus = 0;
  uint64_t memory_bytes = 0;
  size_t disk_count = 0;
  uint64_t disk_bytes = 0;  // total virtual size
  size_t nic_count = 0;
  std::vector<std::string> missing;  // what the plan must supply: vcpus, memory, firmware
  std::string json;
};

// GET /api/v1/hosts -> {"hosts": [...]}; GET/POST .../hosts/{id} -> a Host.
Result<std::vector<HostRecord>> ParseHostList(const std::string& body);
Result<HostRecord> ParseHost(const std::string& body);
// GET /api/v1/vms -> {"vms": [...], "hosts": [...]}.
Result<std::vector<VmRecord>> ParseVmList(const std::string& body);
// The hosts whose VMs that answer lists, as read for it ("hosts" may be absent: none).
Result<std::vector<HostRecord>> ParseVmListHosts(const std::string& body);
// {"migrations": [...]} (list and create answers) / one Migration.
Result<std::vector<MigrationRecord>> ParseMigrationList(const std::string& body);
Result<MigrationRecord> ParseMigration(const std::string& body);
// {"events": [...]}.
Result<std::vector<EventRecord>> ParseEventList(const std::string& body);
// POST .../migrations/validate -> {"plans": [...], "ok": bool}.
Result<ValidationRecord> ParseValidation(const std::string& body);
// The details object of a failed validation: {"checks": [...]}; plans are accepted too
// ({"plans": [{"vm","checks"}]}, and a migration plan's {"vms": [{"vm","checks"}]}),
// flattened with each check's vm set.
Result<std::vector<CheckRecord>> ParseValidationDetails(const std::string& details_json);
// GET /api/v1/plans -> {"plans": [...]}; GET/POST .../plans/{id}[/start|cancel|deploy] and
// POST /api/v1/plans -> a Plan.
Result<std::vector<PlanStatusRecord>> ParsePlanList(const std::string& body);
Result<PlanStatusRecord> ParsePlanStatus(const std::string& body);
// POST /api/v1/plans?validate_only=1 -> {"vms": [{"vm", "checks"}]} (into `plans`, type "");
// ok = every check passed (and the answer's own "ok", when it has one).
Result<ValidationRecord> ParsePlanValidation(const std::string& body);
// GET /api/v1/shares -> {"vms": [ShareVm + "host"]}.
Result<std::vector<ShareVmRecord>> ParseShareVmList(const std::string& body);

// The body of POST /api/v1/migrations (and /validate).
struct MigrationRequest {
  std::vector<std::string> vms;  // or:
  std::string evacuate;
  std::string to, storage, type, source;  // "" = not sent
  std::optional<int64_t> max_downtime_ms;
  std::optional<uint64_t> bandwidth;
  bool allow_postcopy = false;
  std::optional<int64_t> priority;
};
std::string MigrationRequestJson(const MigrationRequest& request);

// {"id","name","cluster","agent_url","agent_token"} for POST /api/v1/hosts.
std::string HostCreateJson(const std::string& id, const std::string& name,
                           const std::string& cluster, const std::string& agent_url,
                           const std::string& agent_token);

// Builds a JSON document from already-validated JSON texts, for --output json:
// JsonObject({{"migration", m.json}, {"events", JsonArray(...)}}). Values must be valid JSON.
std::string JsonArray(const std::vector<std::string>& items);
std::string JsonObject(const std::vector<std::pair<std::string, std::string>>& members);
// A JSON string literal.
std::string JsonString(const std::string& text);
// Re-indents valid JSON for people (2 spaces); returns the input if it does not parse.
std::string PrettyJson(const std::string& json);

}  // namespace ferry::cli
