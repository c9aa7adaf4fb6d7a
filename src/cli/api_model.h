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

struct ResultRecord {
  int64_t total_ms = 0;
  uint64_t bytes_sent = 0;
  int64_t qemu_downtime_ms = -1;   // -1 = not applicable
  int64_t guest_downtime_ms = -1;  // -1 = not measured
  std::vector<std::string> notes;
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
// ({"plans": [{"vm","checks"}]}), flattened with each check's vm set.
Result<std::vector<CheckRecord>> ParseValidationDetails(const std::string& details_json);

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
